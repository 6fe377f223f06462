// The public constants of the wsgiproxy signature profile (docs/design.md §7, docs/signing.md),
// shared by the signer and the verifier.
import type { SigningKey } from '../types.ts'

/**
 * Where the keys come from: a list, or a function re-read on every request (a key file reloaded
 * by a watcher). The first key signs; every key verifies. Imported WebCrypto keys are cached by
 * `SigningKey` object identity, so a reload must produce new objects rather than mutate them.
 */
export type KeySource = readonly SigningKey[] | (() => readonly SigningKey[])

// The profile's label and `tag` (docs/signing.md, "What is signed").
/** The signature label and the value of its `tag` parameter. */
export const SIGNATURE_TAG = 'wsgiproxy'

// RFC 9421 §3.3.3: the one algorithm of the profile.
/** The only `alg` a verifier accepts (the signer leaves it out). */
export const SIGNATURE_ALGORITHM = 'hmac-sha256'

/** The most components one signature may cover (docs/signing.md, "How the backend decides"). */
export const MAX_COVERED_COMPONENTS = 32

/** The longest `Signature` or `Signature-Input` value accepted, in characters (docs/signing.md, "How the backend decides"). */
export const MAX_SIGNATURE_FIELD_LENGTH = 8192
