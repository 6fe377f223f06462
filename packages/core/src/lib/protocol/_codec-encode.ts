// Encoding one extra-key value (docs/design.md §6) in two steps: the value as text for its kind, then
// that text as it goes on the wire (as it is, or "b64" + base64 of its bytes).
import { WsgiProxyError } from '../errors.ts'
import type { ExtraKeyKind, PickleCodec } from './extra-key-format.ts'
import {
  B64_PREFIX,
  kindOf,
  MAX_ENCODED_VALUE_LENGTH,
  pollutionProblem,
  RAW_VALUE,
} from './extra-key-format.ts'

// The most bytes whose "b64" + base64 form fits MAX_ENCODED_VALUE_LENGTH.
const MAX_B64_BYTES = Math.floor((MAX_ENCODED_VALUE_LENGTH - B64_PREFIX.length) / 4) * 3

const BEYOND_LATIN1 = /[\u0100-\uFFFF]/
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

const encoder = new TextEncoder()

/**
 * The text a value travels as: `str` and `unicode` values as they are (strings only), `json`
 * values as `JSON.stringify` gives them (without `__proto__` or `constructor.prototype`), any
 * other kind through `pickleCodec.stringify`.
 *
 * @param kind - how the value travels
 * @param what - the key as messages name it (`extra key "name"`)
 * @param value - the value to encode
 * @param pickleCodec - serializes `pickle` values; required for that kind
 * @returns the text to put on the wire
 */
export function extraValueText(
  kind: ExtraKeyKind,
  what: string,
  value: unknown,
  pickleCodec: PickleCodec | undefined,
): string {
  if (kind === 'str' || kind === 'unicode') {
    if (typeof value !== 'string') {
      throw invalidValue(`${what} (${kind}) must be a string (got ${kindOf(value)})`)
    }
    return value
  }
  if (kind === 'json') return jsonText(what, value)
  return pickleText(what, value, pickleCodec)
}

/**
 * The wire form of a value's text: as it is when it is printable ASCII, not empty, without
 * leading or trailing space and not starting with `b64`; otherwise `b64` + standard base64 of its
 * bytes (the code units of a `str` byte string, the UTF-8 of any other kind).
 *
 * @param kind - how the value travels
 * @param what - the key as messages name it (`extra key "name"`)
 * @param text - the value's text, from {@link extraValueText}
 * @returns the encoded value, at most `MAX_ENCODED_VALUE_LENGTH` characters
 */
export function toWireValue(kind: ExtraKeyKind, what: string, text: string): string {
  // Every encoding is at least as long as the text (UTF-8 bytes >= UTF-16 code units).
  if (text.length > MAX_ENCODED_VALUE_LENGTH) throw tooLong(what)
  if (text !== '' && RAW_VALUE.test(text) && !text.startsWith(B64_PREFIX)) return text

  let binary: string
  if (kind === 'str') {
    if (BEYOND_LATIN1.test(text)) {
      throw invalidValue(
        `${what} (str) must be a byte string, every code unit 0-255 (got a wider one)`,
      )
    }
    binary = text
  } else {
    // TextEncoder would turn a lone surrogate into U+FFFD; refuse rather than change the value.
    if (LONE_SURROGATE.test(text)) {
      throw invalidValue(`${what} (${kind}) must be well-formed unicode (got a lone surrogate)`)
    }
    const bytes = encoder.encode(text)
    if (bytes.length > MAX_B64_BYTES) throw tooLong(what)
    binary = ''
    for (const byte of bytes) binary += String.fromCharCode(byte)
  }
  if (binary.length > MAX_B64_BYTES) throw tooLong(what)
  return B64_PREFIX + btoa(binary)
}

// WSGIProxy 0.1 sends these as b64: control characters (and DEL, which no HTTP library lets into
// a header value), leading or trailing whitespace, a value starting with "b64", the empty value.
// oxlint-disable-next-line no-control-regex -- control characters are the point
const NEEDS_B64_01 = /[\x00-\x1F\x7F]|^\s|\s$|^b64|^$/

/**
 * The text a value travels as to a WSGIProxy 0.1 receiver (docs/protocol.md): `str` values are
 * text too (any code point, sent as UTF-8) and `json` is ASCII-only, non-ASCII escaped as
 * `\uXXXX` as Python's `json.dumps` writes it.
 *
 * @param kind - how the value travels
 * @param what - the key as messages name it (`extra key "name"`)
 * @param value - the value to encode
 * @param pickleCodec - serializes `pickle` values; required for that kind
 * @returns the value's text
 */
export function extraValueText01(
  kind: ExtraKeyKind,
  what: string,
  value: unknown,
  pickleCodec: PickleCodec | undefined,
): string {
  const text = extraValueText(kind, what, value, pickleCodec)
  if (kind !== 'json') return text
  return text.replace(
    /[\u0080-\uFFFF]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
  )
}

/**
 * The wire form of a value's text for a WSGIProxy 0.1 receiver: its UTF-8 bytes as they are (one
 * code unit per byte) unless {@link NEEDS_B64_01} says `b64` + base64 of them. The empty value is
 * `b64`: the 0.1 middleware cannot parse the `KEY ` a 0.1 front writes.
 *
 * @param kind - how the value travels
 * @param what - the key as messages name it (`extra key "name"`)
 * @param text - the value's text, from {@link extraValueText01}
 * @returns the encoded value, at most `MAX_ENCODED_VALUE_LENGTH` characters
 */
export function toWireValue01(kind: ExtraKeyKind, what: string, text: string): string {
  if (text.length > MAX_ENCODED_VALUE_LENGTH) throw tooLong(what)
  if (LONE_SURROGATE.test(text)) {
    throw invalidValue(`${what} (${kind}) must be well-formed unicode (got a lone surrogate)`)
  }
  let binary = ''
  for (const byte of encoder.encode(text)) binary += String.fromCharCode(byte)
  const wire = NEEDS_B64_01.test(text) ? B64_PREFIX + btoa(binary) : binary
  if (wire.length > MAX_ENCODED_VALUE_LENGTH) throw tooLong(what)
  return wire
}

/**
 * The error for a value that cannot be sent (`INVALID_EXTRA_VALUE`): a sender's problem, so its
 * message is not exposed to clients.
 *
 * @param message - what was expected and what was got
 * @param cause - the underlying error, if any
 * @returns the error to throw
 */
export function invalidValue(message: string, cause?: unknown): WsgiProxyError {
  return new WsgiProxyError('INVALID_EXTRA_VALUE', message, { cause })
}

function jsonText(what: string, value: unknown): string {
  let json: unknown
  try {
    json = JSON.stringify(value)
  } catch (error) {
    throw invalidValue(`${what} (json) must be serializable as JSON (got ${kindOf(value)})`, error)
  }
  if (typeof json !== 'string') {
    throw invalidValue(`${what} (json) must be serializable as JSON (got ${kindOf(value)})`)
  }
  // The receiver refuses these (prototype pollution); fail here, where the cause is known.
  const problem =
    json.includes('__proto__') || json.includes('prototype')
      ? pollutionProblem(JSON.parse(json))
      : undefined
  if (problem !== undefined) {
    throw invalidValue(`${what} (json) must not contain ${problem}`)
  }
  return json
}

function pickleText(what: string, value: unknown, pickleCodec: PickleCodec | undefined): string {
  if (pickleCodec === undefined) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      `invalid options: pickle ${what} needs a pickleCodec (JavaScript has no pickle)`,
      { expose: true },
    )
  }
  let pickled: unknown
  try {
    pickled = pickleCodec.stringify(value)
  } catch (error) {
    throw invalidValue(`${what} (pickle) could not be serialized by pickleCodec`, error)
  }
  if (typeof pickled !== 'string') {
    throw invalidValue(
      `${what} (pickle): pickleCodec.stringify must return a string (got ${kindOf(pickled)})`,
    )
  }
  return pickled
}

function tooLong(what: string): WsgiProxyError {
  return invalidValue(
    `${what} encodes to more than ${MAX_ENCODED_VALUE_LENGTH} characters (docs/design.md §6 cap)`,
  )
}
