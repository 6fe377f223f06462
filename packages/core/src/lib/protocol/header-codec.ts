// The extra-key headers of the wsgiproxy wire protocol (docs/design.md §6):
// `X-WSGIProxy-{Str,Unicode,Json,Pickle}-N: <percent-encoded key> <value>`.
// The vocabulary both directions share is in extra-key-format.ts; the steps in _codec-encode.ts
// and _codec-decode.ts.
import type * as z from 'zod'
import { WsgiProxyError } from '../errors.ts'
import type { Environ } from '../types.ts'
import type { FoundHeader } from './_codec-decode.ts'
import {
  badHeader,
  checkSchema,
  claimHeaderNumber,
  decodeExtraValue,
  findExtraKeyHeaders,
  isExtraKeyHeaderKey,
  splitHeaderLine,
} from './_codec-decode.ts'
import {
  extraValueText,
  extraValueText01,
  invalidValue,
  toWireValue,
  toWireValue01,
} from './_codec-encode.ts'
import type { ExtraKeyKind, PickleCodec } from './extra-key-format.ts'
import {
  EXTRA_KEY_PATTERN,
  extraKeyProblem,
  MAX_ENCODED_VALUE_LENGTH,
  MAX_PROTOCOL_HEADERS,
} from './extra-key-format.ts'

// Defined beside the helpers that need them; still part of this module's API.
export type { ExtraKeyKind, PickleCodec }
export { EXTRA_KEY_PATTERN, MAX_ENCODED_VALUE_LENGTH, MAX_PROTOCOL_HEADERS }

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
   * (deserializing untrusted rich data is an attack surface; docs/design.md §6).
   */
  pickleCodec?: PickleCodec | undefined
  /**
   * Read the headers as a WSGIProxy 0.1 front sends them (docs/protocol.md): a line without a
   * space is a key with an empty value, raw values may hold DEL and UTF-8 bytes, and every value
   * is UTF-8 text, `str` ones too (invalid UTF-8 is still a 400). Default `false`.
   */
  wsgiproxy01?: boolean | undefined
  /**
   * Called for each `X-WSGIProxy-Pickle-N` header left undecoded because no `pickleCodec` is
   * configured, with the header's name and its key (`undefined` when the line has no valid key).
   */
  onPickleDropped?: ((header: string, key: string | undefined) => void) | undefined
}

// docs/design.md §6: the kinds in the order their headers are emitted.
const KINDS: readonly ExtraKeyKind[] = ['str', 'unicode', 'json', 'pickle']

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
 * Encodes one value for the wire (docs/design.md §6): as it is when it is printable ASCII, not empty,
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
  const text = extraValueText(kind, what, value, pickleCodec)
  return toWireValue(kind, what, text)
}

function encodeExtraValue01(
  kind: ExtraKeyKind,
  key: string,
  value: unknown,
  pickleCodec: PickleCodec | undefined,
): string {
  const what = `extra key ${JSON.stringify(key)}`
  return toWireValue01(kind, what, extraValueText01(kind, what, value, pickleCodec))
}

/**
 * The extra-key header lines for the configured keys present in the environ (not `undefined`),
 * kinds in the order str, unicode, json, pickle and keys in option order, numbered from 0 per
 * kind: `['x-wsgiproxy-str-0', 'REMOTE_USER bob']`.
 *
 * With `wsgiproxy01`, values are encoded for a WSGIProxy 0.1 receiver (docs/protocol.md): text
 * of every kind as raw UTF-8 unless it has control characters, leading or trailing whitespace or
 * starts with `b64`; JSON ASCII-only; the empty value as `b64`.
 *
 * @param environ - the environ to read the values from
 * @param keys - the keys to send, per kind
 * @param pickleCodec - serializes `pickle` values; required when `keys.pickle` is not empty
 * @param wsgiproxy01 - encode for a WSGIProxy 0.1 receiver. Default `false`.
 * @returns the header lines (lower-case names), at most {@link MAX_PROTOCOL_HEADERS}
 */
export function encodeExtraKeys(
  environ: Environ,
  keys: ExtraKeyLists,
  pickleCodec?: PickleCodec,
  wsgiproxy01 = false,
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
      const encoded = wsgiproxy01
        ? encodeExtraValue01(kind, key, value, pickleCodec)
        : encodeExtraValue(kind, key, value, pickleCodec)
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
  const found = findExtraKeyHeaders(environ)
  if (found.length === 0) return result

  const { jsonSchemas, pickleCodec, wsgiproxy01 = false, onPickleDropped } = options
  const numbers = new Set<string>()
  for (const each of found) {
    if (each.kind === 'pickle' && pickleCodec === undefined) {
      onPickleDropped?.(...droppedPickle(each, environ, wsgiproxy01))
      continue
    }
    const header = claimHeaderNumber(each, numbers)
    const { key, encoded } = splitHeaderLine(header, environ[each.environKey], wsgiproxy01)
    if (Object.hasOwn(result, key)) {
      throw badHeader(header, 'the key was already sent in another header')
    }
    let value = decodeExtraValue(header, each.kind, encoded, pickleCodec, wsgiproxy01)
    const schema =
      jsonSchemas !== undefined && Object.hasOwn(jsonSchemas, key) ? jsonSchemas[key] : undefined
    if (schema !== undefined) value = checkSchema(header, schema, value)
    result[key] = value
  }
  return result
}

// The header name and key of a pickle header nobody can decode, for the warning; a malformed
// one is named without its key (it is dropped all the same).
function droppedPickle(
  found: FoundHeader,
  environ: Environ,
  wsgiproxy01: boolean,
): [string, string | undefined] {
  const header = `X-WSGIProxy-Pickle-${/^[0-9]{1,8}$/.test(found.number) ? found.number : 'N'}`
  try {
    return [header, splitHeaderLine(header, environ[found.environKey], wsgiproxy01).key]
  } catch {
    return [header, undefined]
  }
}

/**
 * The environ keys of the extra-key headers present (`HTTP_X_WSGIPROXY_STR_*`, `_UNICODE_*`,
 * `_JSON_*`, `_PICKLE_*`), so that a receiver can strip them.
 *
 * @param environ - the environ to look at
 * @returns the keys, in environ order
 */
export function extraKeyHeaderKeys(environ: Environ): string[] {
  return Object.keys(environ).filter((key) => isExtraKeyHeaderKey(key))
}
