// The extra-key headers of the wsgiproxy wire protocol (DESIGN.md §6):
// `X-WSGIProxy-{Str,Unicode,Json,Pickle}-N: <percent-encoded key> <value>`.
import type * as z from 'zod'
import { WsgiProxyError } from '../errors.ts'
import type { Environ } from '../types.ts'

/** How an extra key's value travels: byte string, text, JSON or a pickle codec's text. */
export type ExtraKeyKind = 'str' | 'unicode' | 'json' | 'pickle'

/** Serializes rich values for pickle keys (for example devalue); required for pickleKeys. */
export interface PickleCodec {
  /** Turns a value into text. */
  stringify(value: unknown): string
  /** Turns text from {@link PickleCodec.stringify} back into a value. */
  parse(text: string): unknown
}

/** The environ keys to send, per kind, in the order their headers are numbered. */
export interface ExtraKeyLists {
  /** Keys whose values are byte strings (every code unit 0–255): `X-WSGIProxy-Str-N`. */
  str?: readonly string[] | undefined
  /** Keys whose values are text, sent as UTF-8: `X-WSGIProxy-Unicode-N`. */
  unicode?: readonly string[] | undefined
  /** Keys whose values are sent as JSON: `X-WSGIProxy-Json-N`. */
  json?: readonly string[] | undefined
  /** Keys whose values are sent through a {@link PickleCodec}: `X-WSGIProxy-Pickle-N`. */
  pickle?: readonly string[] | undefined
}

/** Options of {@link decodeExtraKeys}. */
export interface DecodeExtraKeysOptions {
  /**
   * A zod schema per key; a decoded value must pass it and the parsed output is kept. It applies
   * whatever kind of header carried the key, so a sender cannot bypass it by switching kinds.
   * Default: none.
   */
  jsonSchemas?: Readonly<Record<string, z.ZodType>> | undefined
  /**
   * Decodes `X-WSGIProxy-Pickle-N` values. Default: none, and pickle headers are left undecoded
   * (deserializing untrusted rich data is an attack surface; DESIGN.md §6).
   */
  pickleCodec?: PickleCodec | undefined
}

// DESIGN.md §6: "Caps: 64 X-WSGIProxy-* headers" (the Str/Unicode/Json/Pickle-N ones).
/** At most this many `X-WSGIProxy-{Str,Unicode,Json,Pickle}-N` headers go with one request. */
export const MAX_PROTOCOL_HEADERS = 64

// DESIGN.md §6: "4 KiB per value", counted as it goes on the wire ("b64" + base64 included).
/** At most this many characters in one encoded value. */
export const MAX_ENCODED_VALUE_LENGTH = 4096

// DESIGN.md §6: extra keys are identifiers, dotted names or dashed names, at most 128 characters.
/** What an extra key looks like. */
export const EXTRA_KEY_PATTERN: RegExp = /^[A-Za-z_][A-Za-z0-9_.-]{0,127}$/

// DESIGN.md §6: keys that would pollute a prototype when merged into an object, or shadow a
// method every environ inherits (`environ.hasOwnProperty(...)`, `String(environ)`): `prototype`
// and the properties of Object.prototype (ECMA-262 §20.1.3, Annex B.2.2). A fixed list, so both
// sides refuse the same keys whatever their runtime adds.
const FORBIDDEN_KEYS: ReadonlySet<string> = new Set([
  'prototype',
  'constructor',
  'hasOwnProperty',
  'isPrototypeOf',
  'propertyIsEnumerable',
  'toLocaleString',
  'toString',
  'valueOf',
  '__proto__',
  '__defineGetter__',
  '__defineSetter__',
  '__lookupGetter__',
  '__lookupSetter__',
])

// DESIGN.md §3 and §6: keys the protocol restores itself (or PEP 3333 reserves); an extra key
// must not overwrite them.
const RESERVED_KEYS: ReadonlySet<string> = new Set([
  'REQUEST_METHOD',
  'SCRIPT_NAME',
  'PATH_INFO',
  'QUERY_STRING',
  'CONTENT_TYPE',
  'CONTENT_LENGTH',
  'SERVER_NAME',
  'SERVER_PORT',
  'SERVER_PROTOCOL',
  'REMOTE_ADDR',
])
const RESERVED_PREFIXES: readonly string[] = ['HTTP_', 'wsgi.', 'wsgiproxy.']

// DESIGN.md §6: the kinds in the order their headers are emitted, with the header name part.
const KINDS: readonly ExtraKeyKind[] = ['str', 'unicode', 'json', 'pickle']
const KIND_TITLE: Readonly<Record<ExtraKeyKind, string>> = {
  str: 'Str',
  unicode: 'Unicode',
  json: 'Json',
  pickle: 'Pickle',
}

// DESIGN.md §3: `X-WSGIProxy-Str-N` arrives as `HTTP_X_WSGIPROXY_STR_N`.
const ENVIRON_PREFIX = 'HTTP_X_WSGIPROXY_'
const HEADER_ENVIRON_KEY = /^HTTP_X_WSGIPROXY_(STR|UNICODE|JSON|PICKLE)_/i
// N counts from 0 per kind, decimal without leading zeros, below MAX_PROTOCOL_HEADERS.
const HEADER_NUMBER = /^(?:0|[1-9][0-9]?)$/
// A bad N is shown only when it is digits: anything else the client chose is written "N".
const SHOWN_NUMBER = /^[0-9]{1,8}$/

// DESIGN.md §6: a value goes as it is when it is printable ASCII (0x20-0x7E), not empty, with no
// leading or trailing space.
const RAW_VALUE = /^[\x21-\x7E](?:[\x20-\x7E]*[\x21-\x7E])?$/
const B64_PREFIX = 'b64'
// RFC 4648 §4: the standard alphabet, whole quanta, "=" padding only to complete the last one.
const BASE64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/
// The longest percent-encoded key (every character escaped) plus the separating space.
const MAX_HEADER_VALUE_LENGTH = MAX_ENCODED_VALUE_LENGTH + 1 + 3 * 128
// The most bytes whose "b64" + base64 form fits MAX_ENCODED_VALUE_LENGTH.
const MAX_B64_BYTES = Math.floor((MAX_ENCODED_VALUE_LENGTH - B64_PREFIX.length) / 4) * 3

const BEYOND_LATIN1 = /[\u0100-\uFFFF]/
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

const encoder = new TextEncoder()
// ignoreBOM: a leading U+FEFF is part of the value, not a byte-order mark to drop.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/**
 * Checks that a configured extra key can travel: it matches {@link EXTRA_KEY_PATTERN}, is not
 * `prototype` or a property of `Object.prototype` (`__proto__`, `constructor`, `hasOwnProperty`,
 * `toString`, `valueOf`, `__defineGetter__`, ...), and is not a key the protocol restores itself
 * (`REQUEST_METHOD`, `SCRIPT_NAME`, `PATH_INFO`, `QUERY_STRING`, `CONTENT_TYPE`,
 * `CONTENT_LENGTH`, `SERVER_NAME`, `SERVER_PORT`, `SERVER_PROTOCOL`, `REMOTE_ADDR`, `HTTP_*`,
 * `wsgi.*`, `wsgiproxy.*`). `REMOTE_USER` is allowed.
 *
 * @param key - the environ key
 * @param option - the option it came from, for the message (`createProxyApp.stringKeys`)
 * @returns nothing; throws `WsgiProxyError('INVALID_OPTIONS')` when the key is not usable
 */
export function assertExtraKey(key: string, option: string): void {
  const problem = typeof key === 'string' ? extraKeyProblem(key) : 'must be a string'
  if (problem === undefined) return
  const shown = typeof key === 'string' ? JSON.stringify(key) : typeof key
  throw new WsgiProxyError(
    'INVALID_OPTIONS',
    `invalid options: ${option} key ${problem} (got ${shown})`,
    {
      expose: true,
    },
  )
}

/**
 * Encodes one value for the wire (DESIGN.md §6): as it is when it is printable ASCII, not empty,
 * without leading or trailing space and not starting with `b64`; otherwise `b64` + standard
 * base64 of its bytes. `str` values are byte strings (every code unit at most 0xFF); `unicode`
 * values are sent as UTF-8; `json` values as the UTF-8 of `JSON.stringify`; `pickle` values as
 * the UTF-8 of `pickleCodec.stringify`. The empty string is written `b64`.
 *
 * @param kind - how the value travels
 * @param key - the environ key, for messages
 * @param value - the value to encode
 * @param pickleCodec - serializes `pickle` values; required for that kind
 * @returns the encoded value, at most {@link MAX_ENCODED_VALUE_LENGTH} characters
 * @example
 * encodeExtraValue('unicode', 'name', 'José') // 'b64Sm9zw6k='
 */
export function encodeExtraValue(
  kind: ExtraKeyKind,
  key: string,
  value: unknown,
  pickleCodec?: PickleCodec,
): string {
  const what = `extra key ${JSON.stringify(key)}`
  let text: string
  if (kind === 'str' || kind === 'unicode') {
    if (typeof value !== 'string') {
      throw invalidValue(`${what} (${kind}) must be a string (got ${kindOf(value)})`)
    }
    text = value
  } else if (kind === 'json') {
    let json: unknown
    try {
      json = JSON.stringify(value)
    } catch (error) {
      throw invalidValue(
        `${what} (json) must be serializable as JSON (got ${kindOf(value)})`,
        error,
      )
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
    text = json
  } else {
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
    text = pickled
  }

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

/**
 * The extra-key header lines for the configured keys present in the environ (not `undefined`),
 * kinds in the order str, unicode, json, pickle and keys in option order, numbered from 0 per
 * kind: `['x-wsgiproxy-str-0', 'REMOTE_USER bob']`.
 *
 * @param environ - the environ to read the values from
 * @param keys - the keys to send, per kind
 * @param pickleCodec - serializes `pickle` values; required when `keys.pickle` is not empty
 * @returns the header lines (lower-case names), at most {@link MAX_PROTOCOL_HEADERS}
 */
export function encodeExtraKeys(
  environ: Environ,
  keys: ExtraKeyLists,
  pickleCodec?: PickleCodec,
): Array<[string, string]> {
  const lines: Array<[string, string]> = []
  const seen = new Set<string>()
  for (const kind of KINDS) {
    const list = keys[kind] ?? []
    const name = `x-wsgiproxy-${kind}-`
    let n = 0
    for (const key of list) {
      assertExtraKey(key, `${kind} keys`)
      if (seen.has(key)) {
        throw new WsgiProxyError(
          'INVALID_OPTIONS',
          `invalid options: extra key ${JSON.stringify(key)} is configured twice`,
          { expose: true },
        )
      }
      seen.add(key)
      const value = environ[key]
      if (value === undefined) continue
      if (lines.length === MAX_PROTOCOL_HEADERS) {
        throw invalidValue(
          `expected at most ${MAX_PROTOCOL_HEADERS} extra-key headers (got more with ${JSON.stringify(key)})`,
        )
      }
      const encoded = encodeExtraValue(kind, key, value, pickleCodec)
      lines.push([`${name}${n}`, `${encodeURIComponent(key)} ${encoded}`])
      n++
    }
  }
  return lines
}

/**
 * Decodes every `X-WSGIProxy-{Str,Unicode,Json,Pickle}-N` header of an environ
 * (`HTTP_X_WSGIPROXY_STR_0`, ...) into a record key -> value, strictly: a malformed header,
 * key or value, a key {@link assertExtraKey} refuses (`toString`, `hasOwnProperty`, `HTTP_*`,
 * ...), bad base64, invalid UTF-8, JSON with `__proto__` or `constructor.prototype`, a key sent
 * twice or a value failing its schema is a `BAD_REQUEST` (400) whose message names the header
 * and never echoes its value, its key or a parser's or schema's message (those stay in `cause`,
 * which problem responses never show); more than {@link MAX_PROTOCOL_HEADERS} headers is
 * `TOO_MANY_HEADERS` (431) and a value longer than {@link MAX_ENCODED_VALUE_LENGTH} is
 * `HEADER_TOO_LARGE` (431). Throws nothing but `WsgiProxyError`. The environ is not modified.
 *
 * @param environ - the environ of a trusted request
 * @param options - schemas per key and the pickle codec
 * @returns a null-prototype record of the decoded keys
 */
export function decodeExtraKeys(
  environ: Environ,
  options: DecodeExtraKeysOptions = {},
): Record<string, unknown> {
  const result = Object.create(null) as Record<string, unknown>
  const found: Array<{ environKey: string; kind: ExtraKeyKind; number: string }> = []
  for (const environKey of Object.keys(environ)) {
    if (!environKey.startsWith(ENVIRON_PREFIX)) continue
    const match = HEADER_ENVIRON_KEY.exec(environKey)
    if (match === null) continue
    const kind = (match[1] ?? '').toLowerCase() as ExtraKeyKind
    found.push({ environKey, kind, number: environKey.slice(match[0].length) })
  }
  if (found.length === 0) return result
  if (found.length > MAX_PROTOCOL_HEADERS) {
    throw new WsgiProxyError(
      'TOO_MANY_HEADERS',
      `expected at most ${MAX_PROTOCOL_HEADERS} X-WSGIProxy-{Str,Unicode,Json,Pickle}-N headers (got ${found.length})`,
      { expose: true },
    )
  }

  const { jsonSchemas, pickleCodec } = options
  const numbers = new Set<string>()
  for (const { environKey, kind, number } of found) {
    if (kind === 'pickle' && pickleCodec === undefined) continue
    const shownNumber = SHOWN_NUMBER.test(number) ? number : 'N'
    const header = `X-WSGIProxy-${KIND_TITLE[kind]}-${shownNumber}`
    if (!HEADER_NUMBER.test(number) || Number(number) >= MAX_PROTOCOL_HEADERS) {
      throw badHeader(
        header,
        `N must be a decimal 0-${MAX_PROTOCOL_HEADERS - 1} without leading zeros`,
      )
    }
    const numberKey = `${kind} ${number}`
    if (numbers.has(numberKey)) throw badHeader(header, 'the header is sent twice')
    numbers.add(numberKey)

    const line = environ[environKey]
    if (typeof line !== 'string') throw badHeader(header, `expected a string (got ${kindOf(line)})`)
    if (line.length > MAX_HEADER_VALUE_LENGTH) throw headerTooLarge(header)
    const space = line.indexOf(' ')
    if (space === -1) throw badHeader(header, 'expected "<key> <value>" (got no space)')
    const encoded = line.slice(space + 1)
    if (encoded.length > MAX_ENCODED_VALUE_LENGTH) throw headerTooLarge(header)

    const key = percentDecode(line.slice(0, space))
    if (key === undefined)
      throw badHeader(header, 'expected a percent-encoded key (got a bad escape)')
    const problem = extraKeyProblem(key)
    if (problem !== undefined) throw badHeader(header, `the key ${problem}`)
    if (Object.hasOwn(result, key))
      throw badHeader(header, 'the key was already sent in another header')

    const text = decodeText(header, kind, encoded)
    let value: unknown
    if (kind === 'json') value = parseJson(header, text)
    else if (kind === 'pickle' && pickleCodec !== undefined) {
      try {
        value = pickleCodec.parse(text)
      } catch (error) {
        throw badHeader(header, 'expected a value pickleCodec can parse', error)
      }
    } else value = text

    const schema =
      jsonSchemas !== undefined && Object.hasOwn(jsonSchemas, key) ? jsonSchemas[key] : undefined
    if (schema !== undefined) value = checkSchema(header, schema, value)
    result[key] = value
  }
  return result
}

/**
 * The environ keys of the extra-key headers present (`HTTP_X_WSGIPROXY_STR_*`, `_UNICODE_*`,
 * `_JSON_*`, `_PICKLE_*`), so that a receiver can strip them.
 *
 * @param environ - the environ to look at
 * @returns the keys, in environ order
 */
export function extraKeyHeaderKeys(environ: Environ): string[] {
  return Object.keys(environ).filter(
    (key) => key.startsWith(ENVIRON_PREFIX) && HEADER_ENVIRON_KEY.test(key),
  )
}

function extraKeyProblem(key: string): string | undefined {
  if (!EXTRA_KEY_PATTERN.test(key)) {
    return 'must be a letter or "_" then letters, digits, "_", "." or "-", at most 128 characters'
  }
  if (FORBIDDEN_KEYS.has(key)) {
    return 'must not be prototype or a property of Object.prototype (__proto__, constructor, hasOwnProperty, toString, ...)'
  }
  if (RESERVED_KEYS.has(key) || RESERVED_PREFIXES.some((prefix) => key.startsWith(prefix))) {
    return 'must not be a key the protocol sets itself (CGI keys, HTTP_*, wsgi.*, wsgiproxy.*)'
  }
  return undefined
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
  const bytes = new Uint8Array(binary.length)
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
  try {
    return utf8.decode(bytes)
  } catch (error) {
    throw badHeader(header, 'expected UTF-8 after base64 decoding', error)
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

// JSON.parse makes "__proto__" an own property; merged into an object it would set a prototype.
function pollutionProblem(value: unknown): string | undefined {
  const stack: unknown[] = [value]
  while (stack.length > 0) {
    const item = stack.pop()
    if (typeof item !== 'object' || item === null) continue
    if (Array.isArray(item)) {
      for (const element of item) stack.push(element)
      continue
    }
    const record = item as Record<string, unknown>
    if (Object.hasOwn(record, '__proto__')) return 'a "__proto__" key'
    const constructor = Object.hasOwn(record, 'constructor') ? record['constructor'] : undefined
    if (typeof constructor === 'object' && constructor !== null) {
      if (Object.hasOwn(constructor, 'prototype')) return '"constructor"."prototype"'
    }
    for (const child of Object.values(record)) stack.push(child)
  }
  return undefined
}

function checkSchema(header: string, schema: z.ZodType, value: unknown): unknown {
  let parsed: ReturnType<z.ZodType['safeParse']>
  try {
    parsed = schema.safeParse(value)
  } catch (error) {
    throw badHeader(header, 'expected a value its schema accepts (the schema threw)', error)
  }
  if (!parsed.success) throw badHeader(header, 'expected a value its schema accepts', parsed.error)
  return parsed.data
}

function badHeader(header: string, problem: string, cause?: unknown): WsgiProxyError {
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

function invalidValue(message: string, cause?: unknown): WsgiProxyError {
  return new WsgiProxyError('INVALID_EXTRA_VALUE', message, { cause })
}

function tooLong(what: string): WsgiProxyError {
  return invalidValue(
    `${what} encodes to more than ${MAX_ENCODED_VALUE_LENGTH} characters (DESIGN.md §6 cap)`,
  )
}

function kindOf(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  return typeof value
}
