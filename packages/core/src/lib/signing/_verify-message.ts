// Steps 7-11 of `createVerifier().verify` (docs/signing.md, "How the backend decides"), in the order it runs them:
// the time window, the signature base and MAC, the replay store and the body digest. Each returns
// what the next step needs, or a `Stop`; the order is observable through the reject reasons.
import { isInnerList } from 'structured-headers'
import { environHost } from '../environ/environ.ts'
import { environPath } from '../environ/url-path.ts'
import type { Environ, ReplayCheck, ReplayStore } from '../types.ts'
import { bytesIterable, describe, readBody, sha } from './_signing-common.ts'
import type { Stop } from './_verify-common.ts'
import { parseField, reject, stringValue } from './_verify-common.ts'
import type { MessageView } from './signature.ts'
import { signatureBase, verifyBase } from './signature.ts'

// RFC 9530 §2: the algorithms this profile accepts (§5: others are deprecated).
const DIGEST_ALGORITHMS: Readonly<Record<string, 'SHA-256' | 'SHA-512'>> = {
  'sha-256': 'SHA-256',
  'sha-512': 'SHA-512',
}

/** The verifier's time limits, in seconds (fractions allowed). */
export interface TimeWindow {
  maxAgeSeconds: number
  skewSeconds: number
}

/** Step 7: checks the time window, in seconds, bounds inclusive (docs/signing.md, "How the backend decides"). */
export function checkTimeWindow(
  { created, expires }: { created: number; expires: number },
  now: number,
  { maxAgeSeconds, skewSeconds }: TimeWindow,
): Stop | undefined {
  if (created > now + skewSeconds) {
    return reject(401, 'future', `created is ${created - now} s in the future`)
  }
  if (now - created > maxAgeSeconds + skewSeconds) {
    return reject(401, 'stale', `created is ${now - created} s old`)
  }
  if (expires < created) return reject(401, 'expired', 'expires is before created')
  if (expires - created > maxAgeSeconds) {
    return reject(
      401,
      'expired',
      `expires is ${expires - created} s after created (at most ${maxAgeSeconds})`,
    )
  }
  if (now > expires + skewSeconds) {
    return reject(401, 'expired', `the signature expired ${now - expires} s ago`)
  }
  return undefined
}

/** Step 8: rebuilds the signature base from the environ; `@signature-params` is re-serialized. */
export function buildBase(
  environ: Environ,
  expectedAuthority: string | undefined,
  components: readonly string[],
  parameters: ReadonlyArray<[string, string | number]>,
): { base: string } | Stop {
  try {
    return { base: signatureBase(environView(environ, expectedAuthority), components, parameters) }
  } catch (error) {
    return reject(401, 'malformed', `the signature base cannot be built: ${describe(error)}`)
  }
}

/** Step 9: checks the MAC, compared in constant time by WebCrypto. */
export async function checkMac(
  base: string,
  signature: Uint8Array<ArrayBuffer>,
  key: CryptoKey,
  keyid: string,
): Promise<Stop | undefined> {
  if (await verifyBase(base, signature, key)) return undefined
  return reject(401, 'bad_mac', `the signature does not verify with keyid ${JSON.stringify(keyid)}`)
}

/**
 * How long to keep a nonce, in milliseconds: until the last instant the time checks would still
 * accept the signature (at most maxAge + 2 x skew), so a replay can never outlive its nonce.
 */
export function replayTtl(
  { created, expires }: { created: number; expires: number },
  { maxAgeSeconds, skewSeconds }: TimeWindow,
  nowMs: number,
): number {
  const lastAccepted = Math.floor(Math.min(created + maxAgeSeconds, expires) + skewSeconds)
  return Math.max(1, (lastAccepted + 1) * 1000 - nowMs)
}

/**
 * Step 10: records the nonce; run only after the MAC verified, so forged requests cannot burn or
 * fill nonces. A full store is 503 `store_full`; a store that answers `unavailable`, throws, or
 * answers anything else is 503 `replay_store_unavailable` (fail closed: the nonce is unknown).
 */
export async function checkReplay(
  store: ReplayStore,
  nonceKey: string,
  ttl: number,
): Promise<Stop | undefined> {
  let check: ReplayCheck
  try {
    check = await store.checkAndSet(nonceKey, ttl)
  } catch (error) {
    return reject(503, 'replay_store_unavailable', `the replay store failed: ${describe(error)}`)
  }
  if (check === 'fresh') return undefined
  if (check === 'replay') return reject(401, 'replay', 'the nonce was already used')
  if (check === 'full') return reject(503, 'store_full', 'the replay store is full')
  if (check === 'unavailable') {
    return reject(503, 'replay_store_unavailable', 'the replay store cannot be reached')
  }
  return reject(
    503,
    'replay_store_unavailable',
    `the replay store gave an answer that is not a ReplayCheck (${JSON.stringify(check)})`,
  )
}

/** Step 11: buffers the body up to the cap and checks its RFC 9530 digest; returns the body to pass on. */
export async function checkBody(
  environ: Environ,
  maxBodyBytes: number,
): Promise<{ body: AsyncIterable<Uint8Array> | null } | Stop> {
  const requestBody = environ['wsgi.input']
  const declared = stringValue(environ.CONTENT_LENGTH)
  if (declared !== undefined && /^\d+$/.test(declared) && Number(declared) > maxBodyBytes) {
    return reject(
      413,
      'too_large',
      `Content-Length ${declared} is over the digest cap of ${maxBodyBytes} bytes`,
    )
  }
  const bytes = await readBody(requestBody, maxBodyBytes)
  if (bytes === undefined) {
    return reject(413, 'too_large', `the body is over the digest cap of ${maxBodyBytes} bytes`)
  }
  const mismatch = await checkDigest(stringValue(environ.HTTP_CONTENT_DIGEST), bytes)
  if (mismatch !== undefined) return mismatch
  return { body: requestBody === null ? null : bytesIterable(bytes) }
}

/** Checks a `Content-Digest` value: every sha-256 or sha-512 member must match, at least one present. */
async function checkDigest(
  field: string | undefined,
  body: Uint8Array<ArrayBuffer>,
): Promise<Stop | undefined> {
  if (field === undefined) return reject(401, 'digest', 'Content-Digest is missing')
  const members = parseField(field)
  if (members === undefined) {
    return reject(400, 'digest', 'Content-Digest is not a valid Structured Fields dictionary')
  }
  let checked = 0
  for (const [name, member] of members) {
    const algorithm = DIGEST_ALGORITHMS[name]
    if (algorithm === undefined) continue
    if (isInnerList(member) || !(member[0] instanceof ArrayBuffer)) {
      return reject(400, 'digest', `Content-Digest member "${name}" is not a byte sequence`)
    }
    if (!equalBytes(new Uint8Array(member[0]), await sha(body, algorithm))) {
      return reject(400, 'digest', `Content-Digest ${name} does not match the body`)
    }
    checked++
  }
  if (checked === 0) return reject(401, 'digest', 'Content-Digest has no sha-256 or sha-512 member')
  return undefined
}

/** The message view of a received request (docs/signing.md, "What is signed": both ends normalize alike). */
function environView(environ: Environ, expectedAuthority: string | undefined): MessageView {
  const scheme = environ['wsgi.url_scheme']
  return {
    method: environ.REQUEST_METHOD,
    authority: new URL(`${scheme}://${expectedAuthority ?? environHost(environ)}`).host,
    path: environPath(environ) || '/',
    query: `?${environ.QUERY_STRING}`,
    field(name) {
      if (name === 'content-type') return stringValue(environ.CONTENT_TYPE)
      if (name === 'content-length') return stringValue(environ.CONTENT_LENGTH)
      return stringValue(environ[`HTTP_${name.toUpperCase().replaceAll('-', '_')}`])
    },
  }
}

/** Compares two byte arrays without an early exit. */
function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false
  let difference = 0
  for (let i = 0; i < a.byteLength; i++) difference |= (a[i] ?? 0) ^ (b[i] ?? 0)
  return difference === 0
}
