// The public constants of the wsgiproxy signature profile (DESIGN.md §7, signing.md §2.3-2.8),
// shared by the signer and the verifier.
import type { SigningKey } from '../types.ts'

/**
 * Where the keys come from: a list, or a function re-read on every request (a key file reloaded
 * by a watcher). The first key signs; every key verifies. Imported WebCrypto keys are cached by
 * `SigningKey` object identity, so a reload must produce new objects rather than mutate them.
 */
export type KeySource = readonly SigningKey[] | (() => readonly SigningKey[])

// The profile's label and `tag` (signing.md §2.3).
/** The signature label and the value of its `tag` parameter. */
export const SIGNATURE_TAG = 'wsgiproxy'

// RFC 9421 §3.3.3: the one algorithm of the profile.
/** The only `alg` a verifier accepts (the signer leaves it out). */
export const SIGNATURE_ALGORITHM = 'hmac-sha256'

/** The most components one signature may cover (signing.md §2.4 step 5). */
export const MAX_COVERED_COMPONENTS = 32

/** The longest `Signature` or `Signature-Input` value accepted, in characters (signing.md §2.4). */
export const MAX_SIGNATURE_FIELD_LENGTH = 8192
