// The front proxy's side of the wsgiproxy signature profile (docs/design.md §7, docs/signing.md, "What is signed"): signs
// each outgoing request with hmac-sha256, a fresh nonce and an optional RFC 9530 body digest.
import * as z from 'zod'
import { WsgiProxyError } from '../errors.ts'
import { fn, parseOptions } from '../options.ts'
import { isProtocolHeader } from '../protocol/protocol.ts'
import type { SigningKey } from '../types.ts'
import { createKeyring } from './_keyring.ts'
import {
  bodyDigestSchema,
  bytesIterable,
  CONTENT_DIGEST,
  CONTENT_FIELDS,
  DEFAULT_MAX_AGE,
  DERIVED,
  digestCap,
  isSignatureField,
  keySourceSchema,
  maxAgeSchema,
  readBody,
  sha,
} from './_signing-common.ts'
import type { KeySource } from './profile.ts'
import { MAX_COVERED_COMPONENTS, SIGNATURE_TAG } from './profile.ts'
import type { MessageView, SignatureParameters } from './signature.ts'
import { signatureBase, signatureInputValue, signatureValue, signBase } from './signature.ts'

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

const NONCE_BYTES = 16
// Fetch "normalize a method": these are upper-cased on the wire, so they are signed upper-case.
const NORMALIZED_METHODS = new Set(['DELETE', 'GET', 'HEAD', 'OPTIONS', 'POST', 'PUT'])

const signerOptions = z.strictObject({
  keys: keySourceSchema,
  maxAge: maxAgeSchema.optional(),
  clock: fn<() => number>().optional(),
  random: fn<(bytes: Uint8Array) => Uint8Array>().optional(),
  bodyDigest: bodyDigestSchema.optional(),
  allowWeakSecret: z.boolean().optional(),
})

/**
 * Creates the front proxy's signer: signs each outgoing request with the first key, covering the
 * method, authority, path, query, content headers, the body digest (when on) and every protocol
 * header the proxy emits (docs/design.md §7).
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
      const body =
        maxBodyBytes === undefined
          ? request.body
          : await addBodyDigest(headers, request.body, maxBodyBytes)
      const fields = toFieldMap(headers)
      const components = componentsToSign(fields, maxBodyBytes !== undefined)
      const created = Math.floor(clock() / 1000)
      const parameters: SignatureParameters = [
        ['created', created],
        ['expires', created + maxAgeSeconds],
        ['nonce', toBase64Url(random(new Uint8Array(NONCE_BYTES)))],
        ['keyid', key.id],
        ['tag', SIGNATURE_TAG],
      ]
      const base = signatureBase(requestView(request, fields), components, parameters)
      const signature = await signBase(base, await keys.cryptoKey(key))
      headers.push(
        ['signature-input', signatureInputValue(SIGNATURE_TAG, components, parameters)],
        ['signature', signatureValue(SIGNATURE_TAG, signature)],
      )
      return { headers, body }
    },
  }
}

/** Buffers the body, replaces any `Content-Digest` in `headers` with its sha-256 and returns the body to send. */
async function addBodyDigest(
  headers: Array<[string, string]>,
  body: AsyncIterable<Uint8Array> | null,
  maxBodyBytes: number,
): Promise<AsyncIterable<Uint8Array> | null> {
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
  return body === null ? null : bytesIterable(bytes)
}

/** The header lines as lower-case names to values, repeated lines joined with `, `. */
function toFieldMap(headers: Array<[string, string]>): Map<string, string> {
  const fields = new Map<string, string>()
  for (const [name, value] of headers) {
    const lower = name.toLowerCase()
    const previous = fields.get(lower)
    fields.set(lower, previous === undefined ? value : `${previous}, ${value}`)
  }
  return fields
}

/** The components to cover: derived ones, content fields, the digest and protocol headers. */
function componentsToSign(fields: ReadonlyMap<string, string>, digest: boolean): string[] {
  const components: string[] = [...DERIVED]
  for (const name of CONTENT_FIELDS) if (fields.has(name)) components.push(name)
  if (digest) components.push(CONTENT_DIGEST)
  for (const name of fields.keys()) {
    if (isProtocolHeader(name) && !isSignatureField(name)) components.push(name)
  }
  if (components.length > MAX_COVERED_COMPONENTS) {
    throw new WsgiProxyError(
      'TOO_MANY_SIGNED_FIELDS',
      `a signature covers at most ${MAX_COVERED_COMPONENTS} components (this request needs ${components.length}); forward fewer extra keys`,
    )
  }
  return components
}

/** The message view of a request about to be sent: exactly what the transport will send. */
function requestView(request: SignableRequest, fields: ReadonlyMap<string, string>): MessageView {
  const url = request.url
  return {
    method: normalizeMethod(request.method),
    authority: url.host,
    path: url.pathname || '/',
    query: `?${url.search.slice(1)}`,
    field: (name) => fields.get(name),
  }
}

/** Upper-cases the methods Fetch normalizes, leaving others as they are. */
function normalizeMethod(method: string): string {
  const upper = method.toUpperCase()
  return NORMALIZED_METHODS.has(upper) ? upper : method
}

/** Removes every line of a header, by lower-case name. */
function removeHeader(headers: Array<[string, string]>, lowerName: string): void {
  for (let i = headers.length - 1; i >= 0; i--) {
    if (headers[i]?.[0].toLowerCase() === lowerName) headers.splice(i, 1)
  }
}

/** Standard base64 with padding. */
function toBase64(bytes: Uint8Array): string {
  let binary = ''
  for (const byte of bytes) binary += String.fromCharCode(byte)
  return btoa(binary)
}

/** Base64url without padding (RFC 4648 §5), for the nonce. */
function toBase64Url(bytes: Uint8Array): string {
  return toBase64(bytes).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '')
}
