// The backend's side of the wsgiproxy signature profile (docs/design.md §7, docs/signing.md, "How the backend decides"): checks
// the one `wsgiproxy` signature of a request, step by step (_verify-fields.ts, _verify-message.ts).
import * as z from 'zod'
import { fn, parseOptions } from '../options.ts'
import type { Environ, ReplayStore } from '../types.ts'
import { createKeyring } from './_keyring.ts'
import {
  bodyDigestSchema,
  DEFAULT_MAX_AGE,
  describe,
  digestCap,
  keySourceSchema,
  maxAgeSchema,
} from './_signing-common.ts'
import { isStop, reject } from './_verify-common.ts'
import {
  checkComponents,
  checkDigestCoverage,
  checkParameters,
  findKey,
  parseSignatureFields,
  pickSignature,
  readSignatureFields,
} from './_verify-fields.ts'
import {
  buildBase,
  checkBody,
  checkMac,
  checkReplay,
  checkTimeWindow,
  replayTtl,
} from './_verify-message.ts'
import type { TimeWindow } from './_verify-message.ts'
import type { KeySource } from './profile.ts'
import { MemoryReplayStore } from './replay-store.ts'

/** Options of {@link createVerifier}. */
export interface VerifierOptions {
  /** The keys; all of them verify, chosen by `keyid`. At least one, each at least 32 bytes. */
  keys: KeySource
  /** The oldest signature accepted, in milliseconds since `created`. Default 60 000, allowed 1000-900 000. */
  maxAge?: number
  /** Allowed clock difference in both directions, in milliseconds. Default 30 000, allowed 0-300 000. */
  clockSkew?: number
  /**
   * Remembers nonces for `maxAge + 2 x clockSkew`. Default: a new in-memory store per verifier
   * (each replica has its own; share one store between replicas to stop cross-replica replays).
   */
  replayStore?: ReplayStore
  /** The clock, in milliseconds since the epoch. Default `Date.now`. */
  clock?: () => number
  /**
   * Require a covered `Content-Digest` and check it (sha-256 or sha-512) against the body,
   * buffered up to `maxBytes` (default 1 MiB; more is refused with 413). Default `false`.
   */
  bodyDigest?: boolean | { maxBytes?: number }
  /**
   * The `@authority` the signer signed, when a hop between them rewrites `Host` (RFC 9421
   * §7.4.3). Default: the request's `Host` (or `SERVER_NAME:SERVER_PORT`).
   */
  expectedAuthority?: string
  /** Accept secrets shorter than 32 bytes, with one `console.warn`. Default `false`. */
  allowWeakSecret?: boolean
}

/** Why a signature was refused; for logs and `onReject` only, never for the client (RFC 9421 §8.3). */
export type RejectReason =
  | 'malformed'
  | 'unknown_key'
  | 'stale'
  | 'future'
  | 'expired'
  | 'bad_mac'
  | 'replay'
  | 'coverage'
  | 'digest'
  | 'too_large'
  | 'store_full'
  | 'replay_store_unavailable'

/** What {@link Verifier.verify} decides. */
export type VerifyOutcome =
  | { status: 'absent' }
  | {
      status: 'valid'
      /** The key that verified. */
      keyid: string
      /** The lower-case field names the signature covers (derived components left out). */
      covered: ReadonlySet<string>
      /** Replacement for `wsgi.input` when the body was buffered to check its digest. */
      body?: AsyncIterable<Uint8Array> | null
    }
  | {
      status: 'invalid'
      /** The status to answer with. */
      httpStatus: 400 | 401 | 413 | 431 | 503
      /** The reason, for logs. */
      reason: RejectReason
      /** A precise explanation for logs and `onReject`; never sent to the client. */
      message: string
    }

/** Checks incoming signatures; see {@link createVerifier}. */
export interface Verifier {
  /**
   * Checks the `wsgiproxy` signature of a request. Never throws.
   *
   * @param environ - the request; its `wsgi.input` is read only when a digest is checked
   * @returns `absent`, `valid` or `invalid` with the status to answer
   */
  verify(environ: Environ): Promise<VerifyOutcome>
}

const DEFAULT_CLOCK_SKEW = 30_000

const verifierOptions = z.strictObject({
  keys: keySourceSchema,
  maxAge: maxAgeSchema.optional(),
  clockSkew: z.number().int('expected whole milliseconds').min(0).max(300_000).optional(),
  replayStore: z
    .custom<ReplayStore>(
      (value) =>
        typeof value === 'object' &&
        value !== null &&
        typeof (value as ReplayStore).checkAndSet === 'function',
      'expected an object with a checkAndSet method',
    )
    .optional(),
  clock: fn<() => number>().optional(),
  bodyDigest: bodyDigestSchema.optional(),
  expectedAuthority: z
    .string()
    .refine((host) => isAuthority(host), 'expected host[:port]')
    .optional(),
  allowWeakSecret: z.boolean().optional(),
})

/**
 * Creates the backend's verifier: accepts a request when it carries exactly one `wsgiproxy`
 * signature that follows the profile, is fresh, verifies with the key its `keyid` names, and
 * whose nonce was not seen before (docs/design.md §7, docs/signing.md, "How the backend decides").
 *
 * The checks run in this order, cheapest first: field caps (431), Structured Fields parsing,
 * parameter and component policy, time window, signature base, MAC, replay store (the nonce is
 * recorded only after the MAC verified), body digest. `verify` never throws.
 *
 * @param options - keys, time window, replay store, body digest, expected authority
 * @returns the verifier
 * @throws WsgiProxyError `INVALID_OPTIONS` for bad options, an empty key list or a weak key
 * @example
 * const verifier = createVerifier({ keys: parseKeyFile(text) })
 * const outcome = await verifier.verify(environ)
 * if (outcome.status === 'invalid') console.warn(outcome.reason, outcome.message)
 */
export function createVerifier(options: VerifierOptions): Verifier {
  const opts = parseOptions<VerifierOptions>(verifierOptions, options, 'createVerifier')
  const keys = createKeyring(opts.keys, opts.allowWeakSecret ?? false, 'createVerifier')
  const maxAge = opts.maxAge ?? DEFAULT_MAX_AGE
  const skew = opts.clockSkew ?? DEFAULT_CLOCK_SKEW
  const maxAgeSeconds = maxAge / 1000
  const skewSeconds = skew / 1000
  const clock = opts.clock ?? Date.now
  const store = opts.replayStore ?? new MemoryReplayStore({ clock })
  const maxBodyBytes = digestCap(opts.bodyDigest)
  const expectedAuthority = opts.expectedAuthority
  const timeWindow: TimeWindow = { maxAgeSeconds, skewSeconds }

  async function verify(environ: Environ): Promise<VerifyOutcome> {
    const fields = readSignatureFields(environ)
    if (isStop(fields)) return fields
    const parsed = parseSignatureFields(fields)
    if (isStop(parsed)) return parsed
    const picked = pickSignature(parsed)
    if (isStop(picked)) return picked
    const [items, params] = picked.input
    const checked = checkParameters(params)
    if (isStop(checked)) return checked
    const { keyid, nonce } = checked
    const found = findKey(keys, keyid)
    if (isStop(found)) return found
    const coverage = checkComponents(items)
    if (isStop(coverage)) return coverage
    const { components, covered } = coverage
    const uncovered = maxBodyBytes === undefined ? undefined : checkDigestCoverage(covered, environ)
    if (uncovered !== undefined) return uncovered
    const outdated = checkTimeWindow(checked, Math.floor(clock() / 1000), timeWindow)
    if (outdated !== undefined) return outdated
    const built = buildBase(environ, expectedAuthority, components, checked.parameters)
    if (isStop(built)) return built
    const cryptoKey = await keys.cryptoKey(found.key)
    const forged = await checkMac(built.base, picked.signature, cryptoKey, keyid)
    if (forged !== undefined) return forged
    const ttl = replayTtl(checked, timeWindow, clock())
    const replayed = await checkReplay(store, `${keyid}\u0000${nonce}`, ttl)
    if (replayed !== undefined) return replayed
    if (maxBodyBytes === undefined) return { status: 'valid', keyid, covered }
    const read = await checkBody(environ, maxBodyBytes)
    if (isStop(read)) return read
    return { status: 'valid', keyid, covered, body: read.body }
  }

  return {
    async verify(environ) {
      try {
        return await verify(environ)
      } catch (error) {
        return reject(401, 'malformed', `unexpected error while verifying: ${describe(error)}`)
      }
    },
  }
}

/** Whether a string is a plain `host[:port]`. */
function isAuthority(host: string): boolean {
  try {
    return new URL(`http://${host}`).host !== '' && /^[A-Za-z0-9\-._~[\]:]+$/.test(host)
  } catch {
    return false
  }
}
