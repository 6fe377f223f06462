// Decoding the extra-key headers of a trusted request (docs/design.md §6), one step per function, in
// the order `decodeExtraKeys` runs them. Every failure is a WsgiProxyError naming the header; none
// echoes a key, a value or a parser's message (those stay in `cause`).
import type * as z from 'zod'
import { WsgiProxyError } from '../errors.ts'
import type { Environ } from '../types.ts'
import type { ExtraKeyKind, PickleCodec } from './extra-key-format.ts'
import {
  B64_PREFIX,
  extraKeyProblem,
  kindOf,
  MAX_ENCODED_VALUE_LENGTH,
  MAX_PROTOCOL_HEADERS,
  pollutionProblem,
  RAW_VALUE,
  RAW_VALUE_01,
} from './extra-key-format.ts'

const KIND_TITLE: Readonly<Record<ExtraKeyKind, string>> = {
  str: 'Str',
  unicode: 'Unicode',
  json: 'Json',
  pickle: 'Pickle',
}

// docs/design.md §3: `X-WSGIProxy-Str-N` arrives as `HTTP_X_WSGIPROXY_STR_N`.
const ENVIRON_PREFIX = 'HTTP_X_WSGIPROXY_'
const HEADER_ENVIRON_KEY = /^HTTP_X_WSGIPROXY_(STR|UNICODE|JSON|PICKLE)_/i
// N counts from 0 per kind, decimal without leading zeros, below MAX_PROTOCOL_HEADERS.
const HEADER_NUMBER = /^(?:0|[1-9][0-9]?)$/
// A bad N is shown only when it is digits: anything else the client chose is written "N".
const SHOWN_NUMBER = /^[0-9]{1,8}$/

// RFC 4648 §4: the standard alphabet, whole quanta, "=" padding only to complete the last one.
const BASE64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/
// The longest percent-encoded key (every character escaped) plus the separating space.
const MAX_HEADER_VALUE_LENGTH = MAX_ENCODED_VALUE_LENGTH + 1 + 3 * 128

// ignoreBOM: a leading U+FEFF is part of the value, not a byte-order mark to drop.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** One extra-key header found in an environ. */
export interface FoundHeader {
  /** Its environ key (`HTTP_X_WSGIPROXY_STR_0`). */
  environKey: string
  /** The kind its name gives. */
  kind: ExtraKeyKind
  /** Its N, as the client wrote it (not checked yet). */
  number: string
}

/**
 * Whether an environ key carries an extra-key header (`HTTP_X_WSGIPROXY_STR_*`, `_UNICODE_*`,
 * `_JSON_*`, `_PICKLE_*`).
 *
 * @param environKey - an environ key
 * @returns `true` for an extra-key header
 */
export function isExtraKeyHeaderKey(environKey: string): boolean {
  return environKey.startsWith(ENVIRON_PREFIX) && HEADER_ENVIRON_KEY.test(environKey)
}

/**
 * The extra-key headers of an environ, in environ order.
 *
 * @param environ - the environ of a trusted request
 * @returns the headers found, at most `MAX_PROTOCOL_HEADERS`; more is `TOO_MANY_HEADERS` (431)
 */
export function findExtraKeyHeaders(environ: Environ): FoundHeader[] {
  const found: FoundHeader[] = []
  for (const environKey of Object.keys(environ)) {
    if (!environKey.startsWith(ENVIRON_PREFIX)) continue
    const match = HEADER_ENVIRON_KEY.exec(environKey)
    if (match === null) continue
    const kind = (match[1] ?? '').toLowerCase() as ExtraKeyKind
    found.push({ environKey, kind, number: environKey.slice(match[0].length) })
  }
  if (found.length > MAX_PROTOCOL_HEADERS) {
    throw new WsgiProxyError(
      'TOO_MANY_HEADERS',
      `expected at most ${MAX_PROTOCOL_HEADERS} X-WSGIProxy-{Str,Unicode,Json,Pickle}-N headers (got ${found.length})`,
      { expose: true },
    )
  }
  return found
}

/**
 * Checks a header's N (decimal 0–63 without leading zeros, not seen before for its kind) and
 * records it as seen.
 *
 * @param found - the header
 * @param seen - the `<kind> <N>` pairs seen so far on this request; `found`'s is added
 * @returns the header's name for messages (`X-WSGIProxy-Str-0`; a non-numeric N is written `N`)
 */
export function claimHeaderNumber(found: FoundHeader, seen: Set<string>): string {
  const { kind, number } = found
  const shownNumber = SHOWN_NUMBER.test(number) ? number : 'N'
  const header = `X-WSGIProxy-${KIND_TITLE[kind]}-${shownNumber}`
  if (!HEADER_NUMBER.test(number) || Number(number) >= MAX_PROTOCOL_HEADERS) {
    throw badHeader(
      header,
      `N must be a decimal 0-${MAX_PROTOCOL_HEADERS - 1} without leading zeros`,
    )
  }
  const numberKey = `${kind} ${number}`
  if (seen.has(numberKey)) throw badHeader(header, 'the header is sent twice')
  seen.add(numberKey)
  return header
}

/**
 * Splits a header's `<percent-encoded key> <value>` line, checking its length, the key's escapes
 * and that the key is one an extra key may be.
 *
 * @param header - the header's name, for messages
 * @param line - the header's environ value
 * @param wsgiproxy01 - read it as a WSGIProxy 0.1 front sends it: a line without a space is a key
 *   with an empty value (the front writes `KEY `, and the trailing space is lost on the wire)
 * @returns the decoded key and the still encoded value
 */
export function splitHeaderLine(
  header: string,
  line: unknown,
  wsgiproxy01 = false,
): { key: string; encoded: string } {
  if (typeof line !== 'string') throw badHeader(header, `expected a string (got ${kindOf(line)})`)
  if (line.length > MAX_HEADER_VALUE_LENGTH) throw headerTooLarge(header)
  let space = line.indexOf(' ')
  if (space === -1 && wsgiproxy01) space = line.length
  if (space === -1) throw badHeader(header, 'expected "<key> <value>" (got no space)')
  const encoded = line.slice(space + 1)
  if (encoded.length > MAX_ENCODED_VALUE_LENGTH) throw headerTooLarge(header)

  const key = percentDecode(line.slice(0, space))
  if (key === undefined)
    throw badHeader(header, 'expected a percent-encoded key (got a bad escape)')
  const problem = extraKeyProblem(key)
  if (problem !== undefined) throw badHeader(header, `the key ${problem}`)
  return { key, encoded }
}

/**
 * Decodes an encoded value for its kind: the text (raw, or base64 then UTF-8 unless `str`), then
 * JSON for `json` and `pickleCodec.parse` for `pickle`.
 *
 * @param header - the header's name, for messages
 * @param kind - the header's kind
 * @param encoded - the value as it came
 * @param pickleCodec - parses `pickle` values
 * @param wsgiproxy01 - read it as a WSGIProxy 0.1 front sends it: raw values may hold DEL and
 *   UTF-8 bytes, and every value's bytes are UTF-8 text, `str` ones too
 * @returns the value
 */
export function decodeExtraValue(
  header: string,
  kind: ExtraKeyKind,
  encoded: string,
  pickleCodec: PickleCodec | undefined,
  wsgiproxy01 = false,
): unknown {
  const text = wsgiproxy01 ? decodeText01(header, encoded) : decodeText(header, kind, encoded)
  if (kind === 'json') return parseJson(header, text)
  if (kind === 'pickle' && pickleCodec !== undefined) {
    try {
      return pickleCodec.parse(text)
    } catch (error) {
      throw badHeader(header, 'expected a value pickleCodec can parse', error)
    }
  }
  return text
}

/**
 * Checks a decoded value against its schema.
 *
 * @param header - the header's name, for messages
 * @param schema - the key's schema
 * @param value - the decoded value
 * @returns the schema's output
 */
export function checkSchema(header: string, schema: z.ZodType, value: unknown): unknown {
  let parsed: ReturnType<z.ZodType['safeParse']>
  try {
    parsed = schema.safeParse(value)
  } catch (error) {
    throw badHeader(header, 'expected a value its schema accepts (the schema threw)', error)
  }
  if (!parsed.success) throw badHeader(header, 'expected a value its schema accepts', parsed.error)
  return parsed.data
}

/**
 * The error for a malformed extra-key header: `BAD_REQUEST` (400), exposed, naming the header.
 *
 * @param header - the header's name
 * @param problem - what was expected, never the value itself
 * @param cause - the underlying error, if any (never shown to clients)
 * @returns the error to throw
 */
export function badHeader(header: string, problem: string, cause?: unknown): WsgiProxyError {
  return new WsgiProxyError('BAD_REQUEST', `invalid ${header} header: ${problem}`, {
    cause,
    expose: true,
  })
}

function headerTooLarge(header: string): WsgiProxyError {
  return new WsgiProxyError(
    'HEADER_TOO_LARGE',
    `invalid ${header} header: expected a value of at most ${MAX_ENCODED_VALUE_LENGTH} characters`,
    { expose: true },
  )
}

function percentDecode(raw: string): string | undefined {
  if (!raw.includes('%')) return raw
  try {
    return decodeURIComponent(raw)
  } catch {
    return undefined
  }
}

function decodeText(header: string, kind: ExtraKeyKind, encoded: string): string {
  if (!encoded.startsWith(B64_PREFIX)) {
    if (RAW_VALUE.test(encoded)) return encoded
    throw badHeader(
      header,
      'expected printable ASCII without leading or trailing space, or "b64" and base64',
    )
  }
  const base64 = encoded.slice(B64_PREFIX.length)
  if (!isCanonicalBase64(base64)) {
    throw badHeader(header, 'expected canonical standard base64 after "b64" (RFC 4648 §4)')
  }
  const binary = atob(base64)
  // A str value is a byte string: one code unit per byte, as atob gives it.
  if (kind === 'str') return binary
  return utf8Text(header, binary, 'expected UTF-8 after base64 decoding')
}

// WSGIProxy 0.1 (docs/protocol.md): raw values are the UTF-8 bytes of the text (a header value
// arrives one code unit per byte), b64 ones base64 of them; every kind is text.
function decodeText01(header: string, encoded: string): string {
  if (encoded.startsWith(B64_PREFIX)) {
    const base64 = encoded.slice(B64_PREFIX.length)
    if (!isCanonicalBase64(base64)) {
      throw badHeader(header, 'expected canonical standard base64 after "b64" (RFC 4648 §4)')
    }
    return utf8Text(header, atob(base64), 'expected UTF-8 after base64 decoding')
  }
  if (!RAW_VALUE_01.test(encoded)) {
    throw badHeader(
      header,
      'expected a value without control characters or leading or trailing space, or "b64" and base64',
    )
  }
  return utf8Text(header, encoded, 'expected UTF-8')
}

// A byte string (one code unit per byte, each 0-255) read as UTF-8.
function utf8Text(header: string, binary: string, problem: string): string {
  // ASCII needs no decoding; a code unit above 255 is not a byte.
  if (!/[\u0080-\uFFFF]/.test(binary)) return binary
  if (/[\u0100-\uFFFF]/.test(binary))
    throw badHeader(header, `${problem} (got a code unit above 255)`)
  const bytes = new Uint8Array(binary.length)
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
  try {
    return utf8.decode(bytes)
  } catch (error) {
    throw badHeader(header, problem, error)
  }
}

// RFC 4648 §3.5: canonical encodings set the pad bits to zero; §4: the standard alphabet.
function isCanonicalBase64(text: string): boolean {
  if (!BASE64.test(text)) return false
  if (text.endsWith('=='))
    return (BASE64_ALPHABET.indexOf(text.charAt(text.length - 3)) & 0x0f) === 0
  if (text.endsWith('='))
    return (BASE64_ALPHABET.indexOf(text.charAt(text.length - 2)) & 0x03) === 0
  return true
}

function parseJson(header: string, text: string): unknown {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    // The parser's message quotes the input: it stays in `cause`, never in the exposed message.
    throw badHeader(header, 'expected JSON (got text JSON.parse refuses)', error)
  }
  const problem = pollutionProblem(value)
  if (problem !== undefined) throw badHeader(header, `expected JSON without ${problem}`)
  return value
}
