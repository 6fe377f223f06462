// The wsgiproxy signature profile (DESIGN.md §7, signing.md §2.3-2.8): a narrow RFC 9421 profile
// with hmac-sha256, a nonce replay store and an optional RFC 9530 body digest.
import type { Dictionary, InnerList, Item } from 'structured-headers'
import { isInnerList, parseDictionary, Token } from 'structured-headers'
import * as z from 'zod'
import { environHost } from '../environ/environ.ts'
import { WsgiProxyError } from '../errors.ts'
import { fn, parseOptions } from '../_options.ts'
import { isProtocolHeader } from '../protocol/protocol.ts'
import { MemoryReplayStore } from './replay-store.ts'
import type { MessageView, SignatureParameters } from './signature.ts'
import {
  DERIVED_COMPONENTS,
  importHmacKey,
  signatureBase,
  signatureInputValue,
  signatureValue,
  signBase,
  verifyBase,
} from './signature.ts'
import type { Environ, ReplayCheck, ReplayStore, SigningKey } from '../types.ts'
import { environPath } from '../environ/url-path.ts'

/**
 * Where the keys come from: a list, or a function re-read on every request (a key file reloaded
 * by a watcher). The first key signs; every key verifies. Imported WebCrypto keys are cached by
 * `SigningKey` object identity, so a reload must produce new objects rather than mutate them.
 */
export type KeySource = readonly SigningKey[] | (() => readonly SigningKey[])

/** Options of {@link createSigner}. */
export interface SignerOptions {
  /** The keys; the first one signs. At least one, each at least 32 bytes. */
  keys: KeySource
  /**
   * How long a signature is valid, in milliseconds: `expires = created + maxAge / 1000` (whole
   * seconds). Default 60 000, allowed 1000-900 000. Verifiers enforce their own `maxAge` too.
   */
  maxAge?: number
  /** The clock, in milliseconds since the epoch. Default `Date.now`. */
  clock?: () => number
  /** Fills a byte array with random bytes, for the nonce. Default `crypto.getRandomValues`. */
  random?: (bytes: Uint8Array) => Uint8Array
  /**
   * Send and sign an RFC 9530 `Content-Digest: sha-256=:...:` of the body. The body is buffered
   * up to `maxBytes` (default 1 MiB); a larger one is refused with `BODY_TOO_LARGE` (413).
   * Default `false`: the body is streamed and not covered (rely on TLS or a private link).
   */
  bodyDigest?: boolean | { maxBytes?: number }
  /**
   * Accept secrets shorter than 32 bytes, with one `console.warn`. Default `false`: a short HMAC
   * key can be guessed (RFC 2104 §3), so such keys are refused.
   */
  allowWeakSecret?: boolean
}

/** A request to sign, as the proxy is about to send it. */
export interface SignableRequest {
  /** The method as it will be sent. */
  method: string
  /** The URL that will be passed to the transport: its host, path and query are signed. */
  url: URL
  /** The header lines that will be sent (any case). */
  headers: Array<[string, string]>
  /** The body that will be sent. */
  body: AsyncIterable<Uint8Array> | null
}

/** What {@link Signer.sign} gives back: the headers and the body to send instead. */
export interface SignedRequest {
  /** The header lines with `signature-input`, `signature` and maybe `content-digest` added. */
  headers: Array<[string, string]>
  /** The body to send: the buffered bytes when a digest was computed, else the body given. */
  body: AsyncIterable<Uint8Array> | null
}

/** Signs outgoing requests; see {@link createSigner}. */
export interface Signer {
  /**
   * Signs a request.
   *
   * @param request - what the transport will send
   * @returns the headers and body to send instead
   * @throws WsgiProxyError `BODY_TOO_LARGE` (413) when a digest is on and the body is over the
   *   cap, `INVALID_SIGNATURE_BASE` (400) when a covered value is not printable ASCII,
   *   `TOO_MANY_SIGNED_FIELDS` (500) when more than 32 components would be covered,
   *   `INVALID_OPTIONS` (500) when a key function returns an invalid key list
   */
  sign(request: SignableRequest): Promise<SignedRequest>
}

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

// RFC 9421 §2.2: the derived components every wsgiproxy signature covers, in this order.
const DERIVED: readonly string[] = DERIVED_COMPONENTS
// RFC 9530 §6.3: content fields signed alongside the digest.
const CONTENT_FIELDS = ['content-type', 'content-encoding'] as const
// RFC 9530 §2: the field, and the algorithms this profile accepts (§5: others are deprecated).
const CONTENT_DIGEST = 'content-digest'
const DIGEST_ALGORITHMS: Readonly<Record<string, 'SHA-256' | 'SHA-512'>> = {
  'sha-256': 'SHA-256',
  'sha-512': 'SHA-512',
}
const NONCE = /^[A-Za-z0-9_-]{16,64}$/
const NONCE_BYTES = 16
// Field names a signature may cover besides the content ones: protocol headers. No `_`, so a
// name maps to exactly one environ key.
const FIELD_NAME = /^[a-z0-9]+(?:-[a-z0-9]+)*$/
const KEY_ID = /^[\x21-\x7E]{1,256}$/
const MIN_SECRET_BYTES = 32
const DEFAULT_MAX_AGE = 60_000
const DEFAULT_CLOCK_SKEW = 30_000
const DEFAULT_MAX_BODY_BYTES = 1024 * 1024
// Fetch "normalize a method": these are upper-cased on the wire, so they are signed upper-case.
const NORMALIZED_METHODS = new Set(['DELETE', 'GET', 'HEAD', 'OPTIONS', 'POST', 'PUT'])
const ALLOWED_PARAMETERS = new Set(['created', 'expires', 'nonce', 'keyid', 'tag', 'alg'])

const keySourceSchema = z.custom<KeySource>(
  (value) => Array.isArray(value) || typeof value === 'function',
  'expected an array of keys or a function returning one',
)
const bodyDigestSchema = z.union([
  z.boolean(),
  z.strictObject({
    maxBytes: z
      .number()
      .int()
      .min(0)
      .max(2 ** 31 - 1)
      .optional(),
  }),
])
const maxAgeSchema = z.number().int('expected whole milliseconds').min(1000).max(900_000)

const signerOptions = z.strictObject({
  keys: keySourceSchema,
  maxAge: maxAgeSchema.optional(),
  clock: fn<() => number>().optional(),
  random: fn<(bytes: Uint8Array) => Uint8Array>().optional(),
  bodyDigest: bodyDigestSchema.optional(),
  allowWeakSecret: z.boolean().optional(),
})

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
 * Creates the front proxy's signer: signs each outgoing request with the first key, covering the
 * method, authority, path, query, content headers, the body digest (when on) and every protocol
 * header the proxy emits (DESIGN.md §7).
 *
 * The signer must sign exactly what is sent: the URL passed to the transport (its `host` is the
 * `@authority`, so the transport must send `Host` equal to `url.host`) and the headers as given.
 *
 * @param options - keys, validity window, clock, randomness, body digest
 * @returns the signer
 * @throws WsgiProxyError `INVALID_OPTIONS` for bad options, an empty key list or a weak key
 * @example
 * const signer = createSigner({ keys: parseKeyFile(text) })
 * const { headers, body } = await signer.sign({ method, url, headers: outgoing, body: input })
 */
export function createSigner(options: SignerOptions): Signer {
  const opts = parseOptions<SignerOptions>(signerOptions, options, 'createSigner')
  const keys = createKeyring(opts.keys, opts.allowWeakSecret ?? false, 'createSigner')
  const maxAgeSeconds = Math.floor((opts.maxAge ?? DEFAULT_MAX_AGE) / 1000)
  const clock = opts.clock ?? Date.now
  const random: (bytes: Uint8Array<ArrayBuffer>) => Uint8Array =
    opts.random ?? ((bytes) => crypto.getRandomValues(bytes))
  const maxBodyBytes = digestCap(opts.bodyDigest)

  return {
    async sign(request) {
      const { list } = keys.current()
      const key = list[0] as SigningKey
      const headers = request.headers.filter(([name]) => !isSignatureField(name.toLowerCase()))
      let body = request.body
      if (maxBodyBytes !== undefined) {
        const bytes = await readBody(body, maxBodyBytes)
        if (bytes === undefined) {
          throw new WsgiProxyError(
            'BODY_TOO_LARGE',
            `the request body is larger than ${maxBodyBytes} bytes and cannot be digested`,
            { expose: true },
          )
        }
        const digest = `sha-256=:${toBase64(await sha(bytes, 'SHA-256'))}:`
        removeHeader(headers, CONTENT_DIGEST)
        headers.push([CONTENT_DIGEST, digest])
        body = body === null ? null : bytesIterable(bytes)
      }

      const fields = new Map<string, string>()
      for (const [name, value] of headers) {
        const lower = name.toLowerCase()
        const previous = fields.get(lower)
        fields.set(lower, previous === undefined ? value : `${previous}, ${value}`)
      }
      const components: string[] = [...DERIVED]
      for (const name of CONTENT_FIELDS) if (fields.has(name)) components.push(name)
      if (maxBodyBytes !== undefined) components.push(CONTENT_DIGEST)
      for (const name of fields.keys()) {
        if (isProtocolHeader(name) && !isSignatureField(name)) components.push(name)
      }
      if (components.length > MAX_COVERED_COMPONENTS) {
        throw new WsgiProxyError(
          'TOO_MANY_SIGNED_FIELDS',
          `a signature covers at most ${MAX_COVERED_COMPONENTS} components (this request needs ${components.length}); forward fewer extra keys`,
        )
      }

      const created = Math.floor(clock() / 1000)
      const parameters: SignatureParameters = [
        ['created', created],
        ['expires', created + maxAgeSeconds],
        ['nonce', toBase64Url(random(new Uint8Array(NONCE_BYTES)))],
        ['keyid', key.id],
        ['tag', SIGNATURE_TAG],
      ]
      const url = request.url
      const view: MessageView = {
        method: normalizeMethod(request.method),
        authority: url.host,
        path: url.pathname || '/',
        query: `?${url.search.slice(1)}`,
        field: (name) => fields.get(name),
      }
      const base = signatureBase(view, components, parameters)
      const signature = await signBase(base, await keys.cryptoKey(key))
      headers.push(
        ['signature-input', signatureInputValue(SIGNATURE_TAG, components, parameters)],
        ['signature', signatureValue(SIGNATURE_TAG, signature)],
      )
      return { headers, body }
    },
  }
}

/**
 * Creates the backend's verifier: accepts a request when it carries exactly one `wsgiproxy`
 * signature that follows the profile, is fresh, verifies with the key its `keyid` names, and
 * whose nonce was not seen before (DESIGN.md §7, signing.md §2.4).
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

  async function verify(environ: Environ): Promise<VerifyOutcome> {
    const inputField = stringValue(environ.HTTP_SIGNATURE_INPUT)
    const signatureField = stringValue(environ.HTTP_SIGNATURE)
    // 1. Caps before any parsing.
    for (const [name, value] of [
      ['Signature-Input', inputField],
      ['Signature', signatureField],
    ] as const) {
      if (value !== undefined && value.length > MAX_SIGNATURE_FIELD_LENGTH) {
        return reject(
          431,
          'too_large',
          `${name} is ${value.length} characters long (at most ${MAX_SIGNATURE_FIELD_LENGTH})`,
        )
      }
    }
    if (inputField === undefined && signatureField === undefined) return { status: 'absent' }

    // 2. Strict Structured Fields parsing (RFC 9421 §7.5.3: a parse error is an invalid signature).
    const inputs = parseField(inputField)
    if (inputs === undefined) {
      return reject(401, 'malformed', 'Signature-Input is not a valid Structured Fields dictionary')
    }
    const signatures = parseField(signatureField)
    if (signatures === undefined) {
      return reject(401, 'malformed', 'Signature is not a valid Structured Fields dictionary')
    }

    // 3. Exactly one member tagged "wsgiproxy"; other signatures are ignored (RFC 9421 §7.2.6).
    const labels = [...inputs].filter(([, member]) => isTagged(member)).map(([label]) => label)
    if (labels.length === 0) {
      if (inputs.has(SIGNATURE_TAG) || signatures.has(SIGNATURE_TAG)) {
        return reject(
          401,
          'malformed',
          `the "${SIGNATURE_TAG}" signature has no tag="${SIGNATURE_TAG}" in Signature-Input`,
        )
      }
      return { status: 'absent' }
    }
    if (labels.length > 1) {
      return reject(
        401,
        'malformed',
        `Signature-Input has ${labels.length} members with tag="${SIGNATURE_TAG}" (expected one)`,
      )
    }
    const label = labels[0] as string
    const input = inputs.get(label) as Item | InnerList
    if (!isInnerList(input)) {
      return reject(401, 'malformed', `Signature-Input member "${label}" is not an inner list`)
    }
    const signatureMember = signatures.get(label)
    if (
      signatureMember === undefined ||
      isInnerList(signatureMember) ||
      !(signatureMember[0] instanceof ArrayBuffer) ||
      signatureMember[1].size > 0
    ) {
      return reject(401, 'malformed', `Signature has no byte sequence member "${label}"`)
    }
    const signature = new Uint8Array(signatureMember[0])

    // 4. Parameter policy.
    const [items, params] = input
    const parameters: Array<[string, string | number]> = []
    for (const [name, value] of params) {
      if (!ALLOWED_PARAMETERS.has(name)) {
        return reject(401, 'malformed', `the signature parameter "${name}" is not allowed`)
      }
      if (typeof value !== 'string' && typeof value !== 'number') {
        return reject(401, 'malformed', `the signature parameter "${name}" has the wrong type`)
      }
      parameters.push([name, value])
    }
    const created = params.get('created')
    const expires = params.get('expires')
    const nonce = params.get('nonce')
    const keyid = params.get('keyid')
    const alg = params.get('alg')
    if (!isTimestamp(created)) {
      return reject(401, 'malformed', '"created" must be a non-negative integer')
    }
    if (!isTimestamp(expires)) {
      return reject(401, 'malformed', '"expires" must be a non-negative integer')
    }
    if (typeof nonce !== 'string' || !NONCE.test(nonce)) {
      return reject(401, 'malformed', '"nonce" must be 16-64 characters of [A-Za-z0-9_-]')
    }
    if (params.get('tag') !== SIGNATURE_TAG) {
      return reject(401, 'malformed', `"tag" must be the string "${SIGNATURE_TAG}"`)
    }
    if (alg !== undefined && alg !== SIGNATURE_ALGORITHM) {
      return reject(401, 'malformed', `"alg" must be "${SIGNATURE_ALGORITHM}" when present`)
    }
    if (typeof keyid !== 'string') return reject(401, 'malformed', '"keyid" must be a string')
    const { byId, invalid } = keys.current()
    const key = byId.get(keyid)
    if (key === undefined) {
      return reject(
        401,
        'unknown_key',
        invalid === undefined
          ? `unknown keyid ${JSON.stringify(keyid)}`
          : `the key set is invalid: ${invalid}`,
      )
    }

    // 5. Component policy.
    if (items.length > MAX_COVERED_COMPONENTS) {
      return reject(
        401,
        'coverage',
        `the signature covers ${items.length} components (at most ${MAX_COVERED_COMPONENTS})`,
      )
    }
    const components: string[] = []
    const covered = new Set<string>()
    for (const [name, itemParams] of items) {
      if (typeof name !== 'string' || itemParams.size > 0) {
        return reject(
          401,
          'coverage',
          'every covered component must be a plain string without parameters',
        )
      }
      if (components.includes(name)) {
        return reject(401, 'coverage', `the component "${name}" is covered twice`)
      }
      if (!DERIVED.includes(name)) {
        if (!isCoverableField(name)) {
          return reject(401, 'coverage', `the component "${name}" is not allowed`)
        }
        covered.add(name)
      }
      components.push(name)
    }
    for (const name of DERIVED) {
      if (!components.includes(name)) {
        return reject(401, 'coverage', `the signature does not cover "${name}"`)
      }
    }
    if (maxBodyBytes !== undefined && !covered.has(CONTENT_DIGEST)) {
      return reject(
        401,
        'coverage',
        'a body digest is required but the signature does not cover content-digest',
      )
    }
    // RFC 9530 §6.3: a digest protects the bytes, not how they are read; with digests on, the
    // content headers present must be signed too.
    if (maxBodyBytes !== undefined) {
      for (const [name, value] of [
        ['content-type', environ.CONTENT_TYPE],
        ['content-encoding', environ.HTTP_CONTENT_ENCODING],
      ] as const) {
        if (value !== undefined && !covered.has(name)) {
          return reject(401, 'coverage', `the signature does not cover the ${name} the request has`)
        }
      }
    }

    // 6. Time window, in seconds, bounds inclusive (signing.md §2.4 step 6).
    const now = Math.floor(clock() / 1000)
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

    // 7. Signature base rebuilt from the environ; @signature-params is re-serialized.
    let base: string
    try {
      base = signatureBase(environView(environ, expectedAuthority), components, parameters)
    } catch (error) {
      return reject(401, 'malformed', `the signature base cannot be built: ${describe(error)}`)
    }

    // 8. MAC, compared in constant time by WebCrypto.
    if (!(await verifyBase(base, signature, await keys.cryptoKey(key)))) {
      return reject(
        401,
        'bad_mac',
        `the signature does not verify with keyid ${JSON.stringify(keyid)}`,
      )
    }

    // 9. Replay, only after the MAC verified so forged requests cannot burn or fill nonces. The
    // nonce is kept until the last instant the time checks would still accept the signature
    // (at most maxAge + 2 x skew), so a replay can never outlive its nonce.
    const lastAccepted = Math.floor(Math.min(created + maxAgeSeconds, expires) + skewSeconds)
    const replayTtl = Math.max(1, (lastAccepted + 1) * 1000 - clock())
    let check: ReplayCheck
    try {
      check = await store.checkAndSet(`${keyid}\u0000${nonce}`, replayTtl)
    } catch (error) {
      return reject(503, 'store_full', `the replay store failed: ${describe(error)}`)
    }
    if (check === 'replay') return reject(401, 'replay', 'the nonce was already used')
    if (check !== 'fresh') {
      return reject(
        503,
        'store_full',
        `the replay store cannot record the nonce (${String(check)})`,
      )
    }

    if (maxBodyBytes === undefined) return { status: 'valid', keyid, covered }

    // 10. Body digest (RFC 9530), over the buffered body.
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
    return {
      status: 'valid',
      keyid,
      covered,
      body: requestBody === null ? null : bytesIterable(bytes),
    }
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

/** Validated keys, re-read per request from a function source, and their imported CryptoKeys. */
interface Keyring {
  current(): {
    list: readonly SigningKey[]
    byId: ReadonlyMap<string, SigningKey>
    invalid?: string
  }
  cryptoKey(key: SigningKey): Promise<CryptoKey>
}

function createKeyring(source: KeySource, allowWeak: boolean, what: string): Keyring {
  const validated = new WeakMap<readonly SigningKey[], ReadonlyMap<string, SigningKey>>()
  const cryptoKeys = new WeakMap<SigningKey, Promise<CryptoKey>>()
  let warned = false
  const warn = (message: string): void => {
    if (warned) return
    warned = true
    console.warn(`wsgiproxy ${what}: ${message}`)
  }
  const read = (): readonly SigningKey[] => (typeof source === 'function' ? source() : source)
  const index = (list: readonly SigningKey[]): ReadonlyMap<string, SigningKey> => {
    let byId = validated.get(list)
    if (byId === undefined) {
      byId = validateKeys(list, allowWeak, warn)
      validated.set(list, byId)
    }
    return byId
  }
  try {
    index(read())
  } catch (error) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      `invalid options: ${what}.keys: ${describe(error)}`,
      {
        cause: error,
        expose: true,
      },
    )
  }
  return {
    current() {
      try {
        const list = read()
        return { list, byId: index(list) }
      } catch (error) {
        if (what === 'createSigner') {
          throw new WsgiProxyError(
            'INVALID_OPTIONS',
            `the signing keys are invalid: ${describe(error)}`,
            {
              cause: error,
            },
          )
        }
        return { list: [], byId: new Map(), invalid: describe(error) }
      }
    },
    cryptoKey(key) {
      let imported = cryptoKeys.get(key)
      if (imported === undefined) {
        imported = importHmacKey(key.secret)
        cryptoKeys.set(key, imported)
        // A failed import is not cached, so a later request can try again.
        imported.catch(() => cryptoKeys.delete(key))
      }
      return imported
    },
  }
}

function validateKeys(
  list: unknown,
  allowWeak: boolean,
  warn: (message: string) => void,
): ReadonlyMap<string, SigningKey> {
  if (!Array.isArray(list)) throw new Error('expected an array of keys')
  if (list.length === 0) throw new Error('expected at least one key (got an empty list)')
  const byId = new Map<string, SigningKey>()
  for (const [i, key] of (list as unknown[]).entries()) {
    if (typeof key !== 'object' || key === null) throw new Error(`key ${i} is not an object`)
    const { id, secret } = key as Partial<SigningKey>
    if (typeof id !== 'string' || !KEY_ID.test(id)) {
      throw new Error(`key ${i} must have an id of 1-256 printable ASCII characters without spaces`)
    }
    if (!(secret instanceof Uint8Array) || secret.length === 0) {
      throw new Error(`key ${JSON.stringify(id)} must have a non-empty Uint8Array secret`)
    }
    if (byId.has(id)) throw new Error(`the key id ${JSON.stringify(id)} is used twice`)
    if (secret.length < MIN_SECRET_BYTES) {
      if (!allowWeak) {
        throw new Error(
          `key ${JSON.stringify(id)} has ${secret.length} secret bytes (at least ${MIN_SECRET_BYTES}; allowWeakSecret accepts it)`,
        )
      }
      warn(
        `key ${JSON.stringify(id)} has only ${secret.length} secret bytes; use at least ${MIN_SECRET_BYTES} random bytes`,
      )
    }
    byId.set(id, key as SigningKey)
  }
  return byId
}

/** The message view of a received request (signing.md §2.3: both ends normalize alike). */
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

async function checkDigest(
  field: string | undefined,
  body: Uint8Array<ArrayBuffer>,
): Promise<VerifyOutcome | undefined> {
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

function reject(
  httpStatus: 400 | 401 | 413 | 431 | 503,
  reason: RejectReason,
  message: string,
): VerifyOutcome {
  return { status: 'invalid', httpStatus, reason, message }
}

function parseField(value: string | undefined): Dictionary | undefined {
  if (value === undefined) return new Map()
  try {
    return parseDictionary(value)
  } catch {
    return undefined
  }
}

function isTagged(member: Item | InnerList): boolean {
  const tag = member[1].get('tag')
  return tag === SIGNATURE_TAG || (tag instanceof Token && tag.toString() === SIGNATURE_TAG)
}

function isCoverableField(name: string): boolean {
  if (!FIELD_NAME.test(name)) return false
  if (name === CONTENT_DIGEST || (CONTENT_FIELDS as readonly string[]).includes(name)) return true
  return isProtocolHeader(name) && !isSignatureField(name)
}

function isSignatureField(lowerName: string): boolean {
  return lowerName === 'signature' || lowerName === 'signature-input'
}

function isTimestamp(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}

function isAuthority(host: string): boolean {
  try {
    return new URL(`http://${host}`).host !== '' && /^[A-Za-z0-9\-._~[\]:]+$/.test(host)
  } catch {
    return false
  }
}

function digestCap(option: boolean | { maxBytes?: number } | undefined): number | undefined {
  if (option === undefined || option === false) return undefined
  if (option === true) return DEFAULT_MAX_BODY_BYTES
  return option.maxBytes ?? DEFAULT_MAX_BODY_BYTES
}

function normalizeMethod(method: string): string {
  const upper = method.toUpperCase()
  return NORMALIZED_METHODS.has(upper) ? upper : method
}

function removeHeader(headers: Array<[string, string]>, lowerName: string): void {
  for (let i = headers.length - 1; i >= 0; i--) {
    if (headers[i]?.[0].toLowerCase() === lowerName) headers.splice(i, 1)
  }
}

function stringValue(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined
}

/** Reads a body into one array; `undefined` when it has more than `maxBytes` bytes (the rest is cancelled). */
async function readBody(
  body: AsyncIterable<Uint8Array> | null,
  maxBytes: number,
): Promise<Uint8Array<ArrayBuffer> | undefined> {
  const chunks: Uint8Array[] = []
  let total = 0
  if (body !== null) {
    // Leaving the loop early calls the iterator's return(), which cancels a stream.
    for await (const chunk of body) {
      total += chunk.byteLength
      if (total > maxBytes) return undefined
      chunks.push(chunk)
    }
  }
  const bytes = new Uint8Array(total)
  let offset = 0
  for (const chunk of chunks) {
    bytes.set(chunk, offset)
    offset += chunk.byteLength
  }
  return bytes
}

function bytesIterable(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  return {
    async *[Symbol.asyncIterator]() {
      if (bytes.byteLength > 0) yield bytes
    },
  }
}

async function sha(
  bytes: Uint8Array<ArrayBuffer>,
  algorithm: 'SHA-256' | 'SHA-512',
): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest(algorithm, bytes))
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false
  let difference = 0
  for (let i = 0; i < a.byteLength; i++) difference |= (a[i] ?? 0) ^ (b[i] ?? 0)
  return difference === 0
}

function toBase64(bytes: Uint8Array): string {
  let binary = ''
  for (const byte of bytes) binary += String.fromCharCode(byte)
  return btoa(binary)
}

function toBase64Url(bytes: Uint8Array): string {
  return toBase64(bytes).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '')
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
