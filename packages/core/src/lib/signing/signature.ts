// RFC 9421 HTTP Message Signatures: the generic layer (signature base, HMAC-SHA256 on WebCrypto).
// The wsgiproxy profile on top of it lives in signer.ts and verifier.ts (constants in profile.ts).
import type { InnerList, Item } from 'structured-headers'
import { serializeDictionary, serializeInnerList, serializeItem } from 'structured-headers'
import { WsgiProxyError } from '../errors.ts'
import { trimOws } from '../_text.ts'

/** The parts of a message the derived components come from. */
export interface MessageView {
  /** `@method`: the request method as sent (case-sensitive). */
  method: string
  /** `@authority`: the normalized `host[:port]` (lower-case, default port left out). */
  authority: string
  /** `@path`: the absolute path, percent-encoded as sent; `/` when empty. */
  path: string
  /** `@query`: the query with its leading `?`; `?` when there is none. */
  query: string
  /**
   * The value of a field, by lower-case name; repeated lines joined with `, `. `undefined` when
   * the message has no such field.
   */
  field(name: string): string | undefined
}

/** Signature parameters (`created`, `keyid`, ...) in the order they are serialized. */
export type SignatureParameters = ReadonlyArray<readonly [name: string, value: string | number]>

// RFC 9421 §2.2: the derived components this layer can produce.
/** The derived components {@link signatureBase} supports. */
export const DERIVED_COMPONENTS: readonly ['@method', '@authority', '@path', '@query'] = [
  '@method',
  '@authority',
  '@path',
  '@query',
] as const

// RFC 9421 §2.1: field names are lower-cased token characters.
const FIELD_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/
// RFC 9421 §2.5 step 4: the signature base is ASCII. HTAB is allowed inside field values; CR, LF
// and other controls are refused too, as a line break would let a value forge a base line.
const BASE_VALUE = /^[\t\x20-\x7E]*$/

const encoder = new TextEncoder()

/**
 * The `@signature-params` value: the covered components and the parameters serialized as a
 * Structured Fields inner list (RFC 9421 §2.3), for example
 * `("@method" "@path");created=1618884473;keyid="k"`.
 *
 * @param components - component identifiers (plain names, no component parameters)
 * @param parameters - signature parameters in order; numbers must be integers, strings ASCII
 * @returns the serialized inner list
 * @throws WsgiProxyError `INVALID_SIGNATURE_BASE` when a name or value cannot be serialized
 */
export function signatureParamsValue(
  components: readonly string[],
  parameters: SignatureParameters,
): string {
  return serializeStructured(() => serializeInnerList(innerList(components, parameters)))
}

/**
 * The `Signature-Input` field value for one signature: `label=(...);params`.
 *
 * @param label - the signature label (a Structured Fields key: `a-z0-9_-.*`, starting with a letter)
 * @param components - component identifiers
 * @param parameters - signature parameters in order
 * @returns the dictionary member serialized as a field value
 * @throws WsgiProxyError `INVALID_SIGNATURE_BASE` when something cannot be serialized
 */
export function signatureInputValue(
  label: string,
  components: readonly string[],
  parameters: SignatureParameters,
): string {
  return serializeStructured(() =>
    serializeDictionary(new Map([[label, innerList(components, parameters)]])),
  )
}

/**
 * The `Signature` field value for one signature: `label=:<base64>:`.
 *
 * @param label - the signature label
 * @param signature - the signature bytes
 * @returns the dictionary member serialized as a field value
 * @throws WsgiProxyError `INVALID_SIGNATURE_BASE` when the label is not a valid key
 */
export function signatureValue(label: string, signature: Uint8Array): string {
  const item: Item = [new Uint8Array(signature), new Map()]
  return serializeStructured(() => serializeDictionary(new Map([[label, item]])))
}

/**
 * Builds the signature base of RFC 9421 §2.5: one `"<component>": <value>` line per covered
 * component, then the `"@signature-params"` line, joined with LF and without a final newline.
 *
 * Field values are the view's values with leading and trailing whitespace removed (§2.1).
 * Supported derived components: `@method`, `@authority`, `@path`, `@query`.
 *
 * @param view - where the component values come from
 * @param components - covered component identifiers, in order (derived ones start with `@`)
 * @param parameters - signature parameters, in order
 * @returns the signature base
 * @throws WsgiProxyError `INVALID_SIGNATURE_BASE` when a covered field is missing, a component is
 *   unsupported or repeated, or a value is not printable ASCII (§2.5 step 4)
 * @example
 * signatureBase(view, ['@method', '@path'], [['created', 1618884473], ['keyid', 'k']])
 * // '"@method": POST\n"@path": /foo\n"@signature-params": ("@method" "@path");created=1618884473;keyid="k"'
 */
export function signatureBase(
  view: MessageView,
  components: readonly string[],
  parameters: SignatureParameters,
): string {
  const seen = new Set<string>()
  const lines: string[] = []
  for (const name of components) {
    if (seen.has(name)) throw baseError(`the component "${name}" is covered twice`)
    seen.add(name)
    const value = componentValue(view, name)
    if (!BASE_VALUE.test(value)) {
      throw baseError(`the component "${name}" has a value that is not printable ASCII`)
    }
    lines.push(`${serializeStructured(() => serializeItem([name, new Map()]))}: ${value}`)
  }
  lines.push(`"@signature-params": ${signatureParamsValue(components, parameters)}`)
  return lines.join('\n')
}

/**
 * Imports an HMAC-SHA256 key for {@link signBase} and {@link verifyBase}: non-extractable, usable
 * only to sign and verify. The bytes are copied.
 *
 * @param secret - the shared secret (WebCrypto refuses an empty one)
 * @returns the key
 */
export function importHmacKey(secret: Uint8Array): Promise<CryptoKey> {
  return crypto.subtle.importKey(
    'raw',
    new Uint8Array(secret),
    { name: 'HMAC', hash: 'SHA-256' },
    false,
    ['sign', 'verify'],
  )
}

/**
 * Signs a signature base with HMAC-SHA256 (RFC 9421 §3.3.3).
 *
 * @param base - the signature base from {@link signatureBase}
 * @param key - a key from {@link importHmacKey}
 * @returns the 32 signature bytes
 */
export async function signBase(base: string, key: CryptoKey): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign('HMAC', key, encoder.encode(base)))
}

/**
 * Checks an HMAC-SHA256 signature over a signature base with `crypto.subtle.verify`, which
 * compares in constant time and answers `false` (never throws) for a wrong length.
 *
 * @param base - the signature base rebuilt from the received message
 * @param signature - the received signature bytes
 * @param key - a key from {@link importHmacKey}
 * @returns whether the signature matches
 */
export function verifyBase(base: string, signature: Uint8Array, key: CryptoKey): Promise<boolean> {
  return crypto.subtle.verify('HMAC', key, new Uint8Array(signature), encoder.encode(base))
}

function componentValue(view: MessageView, name: string): string {
  switch (name) {
    case '@method':
      return view.method
    case '@authority':
      return view.authority
    case '@path':
      return view.path
    case '@query':
      return view.query
    default:
  }
  if (name.startsWith('@')) throw baseError(`the derived component "${name}" is not supported`)
  if (!FIELD_NAME.test(name)) {
    throw baseError(`the component "${name}" is not a lower-case field name`)
  }
  const value = view.field(name)
  if (value === undefined) throw baseError(`the covered field "${name}" is missing`)
  // RFC 9421 §2.1: leading and trailing whitespace of a field value is not part of it. Trimmed
  // in linear time: the value is client input, reached before the MAC is checked.
  return trimOws(value)
}

function innerList(components: readonly string[], parameters: SignatureParameters): InnerList {
  const params = new Map<string, string | number>()
  for (const [name, value] of parameters) {
    if (typeof value === 'number' && !Number.isSafeInteger(value)) {
      throw baseError(`the signature parameter "${name}" must be an integer (got ${value})`)
    }
    params.set(name, value)
  }
  return [components.map((name): Item => [name, new Map()]), params]
}

function serializeStructured(serialize: () => string): string {
  try {
    return serialize()
  } catch (error) {
    if (error instanceof WsgiProxyError) throw error
    // The parser's message may quote the value; it stays in `cause`, out of the exposed message.
    throw baseError('the signature cannot be serialized as Structured Fields', error)
  }
}

function baseError(message: string, cause?: unknown): WsgiProxyError {
  return new WsgiProxyError('INVALID_SIGNATURE_BASE', message, {
    expose: true,
    ...(cause === undefined ? {} : { cause }),
  })
}
