// The extra-key vocabulary both directions of the codec share (docs/design.md §6): the kinds, the caps,
// what a key may be and what a value may look like on the wire. `header-codec.ts` re-exports the
// public names; the helpers below serve `_codec-encode.ts` and `_codec-decode.ts`.

/** How an extra key's value travels: byte string, text, JSON or a pickle codec's text. */
export type ExtraKeyKind = 'str' | 'unicode' | 'json' | 'pickle'

/** Serializes rich values for pickle keys (for example devalue); required for pickleKeys. */
export interface PickleCodec {
  /** Turns a value into text. */
  stringify(value: unknown): string
  /** Turns text from {@link PickleCodec.stringify} back into a value. */
  parse(text: string): unknown
}

// docs/design.md §6: "Caps: 64 X-WSGIProxy-* headers" (the Str/Unicode/Json/Pickle-N ones).
/** At most this many `X-WSGIProxy-{Str,Unicode,Json,Pickle}-N` headers go with one request. */
export const MAX_PROTOCOL_HEADERS = 64

// docs/design.md §6: "4 KiB per value", counted as it goes on the wire ("b64" + base64 included).
/** At most this many characters in one encoded value. */
export const MAX_ENCODED_VALUE_LENGTH = 4096

// docs/design.md §6: extra keys are identifiers, dotted names or dashed names, at most 128 characters.
/** What an extra key looks like. */
export const EXTRA_KEY_PATTERN: RegExp = /^[A-Za-z_][A-Za-z0-9_.-]{0,127}$/

// docs/design.md §6: keys that would pollute a prototype when merged into an object, or shadow a
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

// docs/design.md §3 and §6: keys the protocol restores itself (or PEP 3333 reserves); an extra key
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

// docs/design.md §6: a value goes as it is when it is printable ASCII (0x20-0x7E), not empty, with no
// leading or trailing space.
/** A value that travels as it is, without base64. */
export const RAW_VALUE: RegExp = /^[\x21-\x7E](?:[\x20-\x7E]*[\x21-\x7E])?$/

/**
 * A raw value as a WSGIProxy 0.1 front sends it: no control character (0x00-0x1F), no leading or
 * trailing space; DEL and bytes 0x80-0xFF (UTF-8) allowed. May be empty (the front's `KEY `).
 */
// oxlint-disable-next-line no-control-regex -- control characters are what it excludes
export const RAW_VALUE_01: RegExp = /^(?:[^\x00-\x20](?:[^\x00-\x1F]*[^\x00-\x20])?)?$/

/** What starts a base64-encoded value (and so what a raw value must not start with). */
export const B64_PREFIX = 'b64'

/**
 * Why a key cannot be an extra key: not {@link EXTRA_KEY_PATTERN}, a property of
 * `Object.prototype`, or a key the protocol sets itself.
 *
 * @param key - the key
 * @returns the problem, worded to follow "key", or `undefined` when the key is usable
 */
export function extraKeyProblem(key: string): string | undefined {
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

/**
 * Why a JSON value could pollute a prototype when merged into an object: JSON.parse makes
 * `"__proto__"` an own property, and `constructor.prototype` reaches a prototype too.
 *
 * @param value - a parsed JSON value
 * @returns the offending part (`a "__proto__" key`), or `undefined` when there is none
 */
export function pollutionProblem(value: unknown): string | undefined {
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

/**
 * A value's kind for messages, never the value itself: `null`, `an array` or its `typeof`.
 *
 * @param value - any value
 * @returns the kind
 */
export function kindOf(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  return typeof value
}
