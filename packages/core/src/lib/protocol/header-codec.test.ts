import * as fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import * as z from 'zod'
import { WsgiProxyError } from '../errors.ts'
import { createProxyApp } from '../forward/proxy-app.ts'
import type { ExtraKeyKind, PickleCodec } from './header-codec.ts'
import {
  assertExtraKey,
  decodeExtraKeys,
  encodeExtraKeys,
  encodeExtraValue,
  EXTRA_KEY_PATTERN,
  extraKeyHeaderKeys,
  MAX_ENCODED_VALUE_LENGTH,
  MAX_PROTOCOL_HEADERS,
} from './header-codec.ts'
import type { Environ } from '../types.ts'
import { makeEnviron } from '@wsgiproxy/test-kit/environ-fixture'
import { thrownProxyError } from '@wsgiproxy/test-kit/errors'

/** The environ a receiver builds from header lines: `x-wsgiproxy-str-0` -> `HTTP_X_WSGIPROXY_STR_0`. */
function receivedEnviron(lines: Array<[string, string]>): Environ {
  const extra: Record<string, string> = {}
  for (const [name, value] of lines)
    extra[`HTTP_${name.toUpperCase().replaceAll('-', '_')}`] = value
  return makeEnviron(extra)
}

// A JSON-text codec standing in for devalue: enough to show the pickle path works.
const jsonPickle: PickleCodec = {
  stringify: (value) => JSON.stringify({ pickled: value }),
  parse: (text) => (JSON.parse(text) as { pickled: unknown }).pickled,
}

/** Encodes one value of a kind under key `k` and decodes it again. */
function roundTrip(kind: ExtraKeyKind, value: unknown): unknown {
  const lines = encodeExtraKeys(makeEnviron({ k: value }), { [kind]: ['k'] }, jsonPickle)
  return decodeExtraKeys(receivedEnviron(lines), { pickleCodec: jsonPickle })['k']
}

/** What decodeExtraKeys throws for the given environ keys (fails when it returns). */
function decodeError(
  extra: Record<string, unknown>,
  options?: Parameters<typeof decodeExtraKeys>[1],
): WsgiProxyError {
  // `extra` may hold what no Environ allows (a non-string HTTP_* value), to test the rejection.
  return thrownProxyError(() => decodeExtraKeys(makeEnviron(extra as Partial<Environ>), options))
}

// Well-formed strings only: a lone surrogate has no UTF-8 form, so it cannot round-trip.
const wellFormed = fc
  .string({ unit: 'binary' })
  .filter((s) => !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s))
/** Whether a JSON value has a "__proto__" key or a "constructor" object with "prototype". */
function pollutes(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false
  if (Array.isArray(value)) return value.some(pollutes)
  const record = value as Record<string, unknown>
  if (Object.hasOwn(record, '__proto__')) return true
  const ctor = Object.hasOwn(record, 'constructor') ? record['constructor'] : undefined
  if (typeof ctor === 'object' && ctor !== null && Object.hasOwn(ctor, 'prototype')) return true
  return Object.values(record).some(pollutes)
}

/** What a call gives: its result, or the code of the WsgiProxyError it throws (else rethrows). */
function outcome(call: () => unknown): unknown {
  try {
    return call()
  } catch (error) {
    if (error instanceof WsgiProxyError) return error.code
    throw error
  }
}

const byteString = fc
  .array(fc.integer({ min: 0, max: 255 }), { maxLength: 64 })
  .map((codes) => String.fromCharCode(...codes))

describe('EXTRA_KEY_PATTERN', () => {
  it('accepts identifiers, dotted and dashed names up to 128 characters', () => {
    expect(EXTRA_KEY_PATTERN.test('REMOTE_USER')).toBe(true)
    expect(EXTRA_KEY_PATTERN.test('app.user-id')).toBe(true)
    expect(EXTRA_KEY_PATTERN.test(`a${'b'.repeat(127)}`)).toBe(true)
    expect(EXTRA_KEY_PATTERN.test(`a${'b'.repeat(128)}`)).toBe(false)
  })
})

describe('assertExtraKey', () => {
  it.each(['REMOTE_USER', 'user', '_private', 'app.session', 'x-id', 'HTTPS', 'wsgi', 'http_x'])(
    'accepts %j',
    (key) => {
      expect(() => assertExtraKey(key, 'stringKeys')).not.toThrow()
    },
  )

  it.each([
    '',
    '1abc',
    'a b',
    'é',
    `a${'b'.repeat(128)}`,
    '__proto__',
    'constructor',
    'prototype',
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
    'HTTP_HOST',
    'HTTP_X_WSGIPROXY_STR_0',
    'wsgi.input',
    'wsgi.url_scheme',
    'wsgiproxy.raw_path',
    ...Object.getOwnPropertyNames(Object.prototype).filter(
      (key) => key !== '__proto__' && key !== 'constructor',
    ),
  ])('rejects %j with an exposed INVALID_OPTIONS error naming the option', (key) => {
    let error: unknown
    try {
      assertExtraKey(key, 'createProxyApp.stringKeys')
    } catch (caught) {
      error = caught
    }
    expect(error).toBeInstanceOf(WsgiProxyError)
    expect(error).toMatchObject({ code: 'INVALID_OPTIONS', expose: true })
    expect((error as Error).message).toContain('createProxyApp.stringKeys')
  })

  it('makes createProxyApp refuse an Object.prototype member as a key of any kind', () => {
    for (const option of ['stringKeys', 'unicodeKeys', 'jsonKeys'] as const) {
      for (const key of ['hasOwnProperty', 'toString', 'valueOf', '__defineGetter__']) {
        expect(() => createProxyApp({ href: 'http://backend.test/', [option]: [key] })).toThrow(
          expect.objectContaining({ code: 'INVALID_OPTIONS' }),
        )
      }
    }
  })
})

describe('encodeExtraValue', () => {
  it.each<[ExtraKeyKind, unknown, string]>([
    ['str', 'plain ASCII, with inner spaces!', 'plain ASCII, with inner spaces!'],
    ['unicode', 'bob', 'bob'],
    ['str', '', 'b64'],
    ['unicode', '', 'b64'],
    ['str', 'b64abc', 'b64YjY0YWJj'],
    ['str', 'B64abc', 'B64abc'],
    ['str', '  padded  ', 'b64ICBwYWRkZWQgIA=='],
    ['str', 'a\nb', 'b64YQpi'],
    ['str', '\u0000', 'b64AA=='],
    ['str', 'é', 'b646Q=='],
    ['str', '\u00ff\u0080', 'b64/4A='],
    ['unicode', 'é', 'b64w6k='],
    ['unicode', '日本', 'b645pel5pys'],
    ['unicode', '😀', 'b648J+YgA=='],
    ['unicode', '\uFEFFx', 'b6477u/eA=='],
    ['json', 1, '1'],
    ['json', null, 'null'],
    ['json', 'b64', '"b64"'],
    ['json', { a: [1, { b: 'x y' }], c: null }, '{"a":[1,{"b":"x y"}],"c":null}'],
    ['json', { a: [1, { b: 'é' }], c: null }, 'b64eyJhIjpbMSx7ImIiOiLDqSJ9XSwiYyI6bnVsbH0='],
    ['json', 'line\nbreak', '"line\\nbreak"'],
    ['pickle', [1, 2], '{"pickled":[1,2]}'],
  ])('encodes %s %j as %j', (kind, value, encoded) => {
    expect(encodeExtraValue(kind, 'k', value, jsonPickle)).toBe(encoded)
  })

  it('keeps a 3 KiB ASCII string raw and round-trips it', () => {
    const value = 'x'.repeat(3 * 1024)
    expect(encodeExtraValue('str', 'k', value)).toBe(value)
    expect(roundTrip('str', value)).toBe(value)
    expect(roundTrip('unicode', value)).toBe(value)
  })

  it('accepts a value of exactly the cap and rejects one character more', () => {
    expect(encodeExtraValue('str', 'k', 'x'.repeat(MAX_ENCODED_VALUE_LENGTH))).toHaveLength(
      MAX_ENCODED_VALUE_LENGTH,
    )
    expect(() => encodeExtraValue('str', 'k', 'x'.repeat(MAX_ENCODED_VALUE_LENGTH + 1))).toThrow(
      WsgiProxyError,
    )
  })

  it('rejects a value whose base64 form exceeds the cap, naming the key', () => {
    // 3069 bytes are the most "b64" + base64 can carry in 4096 characters.
    expect(encodeExtraValue('str', 'k', '\n'.repeat(3069))).toHaveLength(4095)
    expect(() => encodeExtraValue('str', 'big_key', '\n'.repeat(3070))).toThrow(/"big_key"/)
    expect(() => encodeExtraValue('unicode', 'k', 'é'.repeat(1600))).toThrow(WsgiProxyError)
  })

  it('rejects a str value with a code unit above 0xFF', () => {
    expect(() => encodeExtraValue('str', 'name', 'Ā')).toThrow(
      expect.objectContaining({ code: 'INVALID_EXTRA_VALUE', status: 500 }),
    )
  })

  it('rejects a unicode value with a lone surrogate instead of changing it', () => {
    expect(() => encodeExtraValue('unicode', 'k', 'a\uD800b')).toThrow(WsgiProxyError)
  })

  it('rejects non-strings for str and unicode keys', () => {
    expect(() => encodeExtraValue('str', 'k', 1)).toThrow(/must be a string \(got number\)/)
    expect(() => encodeExtraValue('unicode', 'k', null)).toThrow(WsgiProxyError)
  })

  it.each([
    ['undefined', undefined],
    ['a function', () => 1],
    ['a bigint', 1n],
    ['a symbol', Symbol('s')],
  ])('rejects %s for a json key', (_, value) => {
    expect(() => encodeExtraValue('json', 'k', value)).toThrow(
      expect.objectContaining({ code: 'INVALID_EXTRA_VALUE' }),
    )
  })

  it.each([
    ['a "__proto__" key', JSON.parse('{"a":[{"__proto__":{"admin":true}}]}') as unknown],
    ['"constructor"."prototype"', { constructor: { prototype: { admin: true } } }],
  ])('rejects json with %s, which the receiver would refuse', (_, value) => {
    expect(() => encodeExtraValue('json', 'k', value)).toThrow(
      expect.objectContaining({ code: 'INVALID_EXTRA_VALUE' }),
    )
  })

  it('accepts json with "prototype" or "__proto__" as plain strings', () => {
    expect(encodeExtraValue('json', 'k', { prototype: '__proto__' })).toBe(
      '{"prototype":"__proto__"}',
    )
  })

  it('rejects a cyclic json value', () => {
    const cyclic: Record<string, unknown> = {}
    cyclic['self'] = cyclic
    expect(() => encodeExtraValue('json', 'k', cyclic)).toThrow(WsgiProxyError)
  })

  it('requires a pickle codec for pickle keys and wraps its failures', () => {
    expect(() => encodeExtraValue('pickle', 'k', 1)).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTIONS' }),
    )
    const broken: PickleCodec = {
      stringify: () => {
        throw new Error('boom')
      },
      parse: () => null,
    }
    expect(() => encodeExtraValue('pickle', 'k', 1, broken)).toThrow(WsgiProxyError)
  })
})

describe('encodeExtraKeys', () => {
  it('emits present keys in option order, numbered from 0 per kind', () => {
    const environ = makeEnviron({ REMOTE_USER: 'bob', b: 'x', c: 'y', 'app.ctx': { id: 1 } })
    const lines = encodeExtraKeys(environ, {
      str: ['REMOTE_USER', 'missing', 'c'],
      unicode: ['b'],
      json: ['app.ctx'],
      pickle: [],
    })
    expect(lines).toEqual([
      ['x-wsgiproxy-str-0', 'REMOTE_USER bob'],
      ['x-wsgiproxy-str-1', 'c y'],
      ['x-wsgiproxy-unicode-0', 'b x'],
      ['x-wsgiproxy-json-0', 'app.ctx {"id":1}'],
    ])
  })

  it('sends a present null but skips undefined', () => {
    const lines = encodeExtraKeys(makeEnviron({ a: null, b: undefined }), { json: ['a', 'b'] })
    expect(lines).toEqual([['x-wsgiproxy-json-0', 'a null']])
  })

  it('rejects a key configured twice', () => {
    expect(() => encodeExtraKeys(makeEnviron({ a: '1' }), { str: ['a'], json: ['a'] })).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTIONS' }),
    )
  })

  it('rejects a reserved key', () => {
    expect(() => encodeExtraKeys(makeEnviron(), { str: ['PATH_INFO'] })).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTIONS' }),
    )
  })

  it(`rejects more than ${MAX_PROTOCOL_HEADERS} lines`, () => {
    const extra: Record<string, string> = {}
    const keys: string[] = []
    for (let i = 0; i <= MAX_PROTOCOL_HEADERS; i++) {
      extra[`k${i}`] = 'v'
      keys.push(`k${i}`)
    }
    expect(encodeExtraKeys(makeEnviron(extra), { str: keys.slice(0, 64) })).toHaveLength(64)
    expect(() => encodeExtraKeys(makeEnviron(extra), { str: keys })).toThrow(
      expect.objectContaining({ code: 'INVALID_EXTRA_VALUE' }),
    )
  })
})

describe('decodeExtraKeys', () => {
  it('decodes every kind into a null-prototype record and leaves the environ alone', () => {
    const environ = makeEnviron({
      HTTP_X_WSGIPROXY_STR_0: 'REMOTE_USER bob',
      HTTP_X_WSGIPROXY_STR_1: 'raw b646Q==',
      HTTP_X_WSGIPROXY_UNICODE_0: 'name b645pel5pys',
      HTTP_X_WSGIPROXY_JSON_0: 'app.ctx {"id":1,"tags":["a"]}',
      HTTP_X_WSGIPROXY_UNICODE_1: 'empty b64',
      HTTP_X_WSGIPROXY_PICKLE_0: 'rich {"pickled":[1,2]}',
      HTTP_X_WSGIPROXY_VERSION: '0.2',
    })
    const before = { ...environ }
    const result = decodeExtraKeys(environ, { pickleCodec: jsonPickle })
    expect(Object.getPrototypeOf(result)).toBeNull()
    expect({ ...result }).toEqual({
      REMOTE_USER: 'bob',
      raw: 'é',
      name: '日本',
      'app.ctx': { id: 1, tags: ['a'] },
      empty: '',
      rich: [1, 2],
    })
    expect(environ).toEqual(before)
  })

  it('decodes "b64" as an empty string and rejects it as JSON', () => {
    expect(decodeExtraKeys(makeEnviron({ HTTP_X_WSGIPROXY_STR_0: 'a b64' }))['a']).toBe('')
    expect(decodeError({ HTTP_X_WSGIPROXY_JSON_0: 'a b64' }).status).toBe(400)
  })

  it('percent-decodes the key', () => {
    const result = decodeExtraKeys(makeEnviron({ HTTP_X_WSGIPROXY_STR_0: '%41pp.user x' }))
    expect(result['App.user']).toBe('x')
  })

  it('accepts the kind in any case, as header names are case-insensitive', () => {
    const result = decodeExtraKeys(makeEnviron({ HTTP_X_WSGIPROXY_Str_0: 'a 1' }))
    expect(result['a']).toBe('1')
  })

  it('leaves pickle headers undecoded without a codec', () => {
    const environ = makeEnviron({
      HTTP_X_WSGIPROXY_PICKLE_0: 'rich not-even-valid',
      HTTP_X_WSGIPROXY_STR_0: 'a 1',
    })
    expect({ ...decodeExtraKeys(environ) }).toEqual({ a: '1' })
  })

  it('returns the parsed output of a schema', () => {
    const jsonSchemas = { n: z.string().transform((s) => s.length) }
    const result = decodeExtraKeys(makeEnviron({ HTTP_X_WSGIPROXY_JSON_0: 'n "abc"' }), {
      jsonSchemas,
    })
    expect(result['n']).toBe(3)
  })

  it('applies a schema whatever kind carried the key', () => {
    const jsonSchemas = { n: z.number() }
    const error = decodeError({ HTTP_X_WSGIPROXY_STR_0: 'n 1' }, { jsonSchemas })
    expect(error).toMatchObject({ code: 'BAD_REQUEST', status: 400 })
  })

  it('ignores schemas inherited from a prototype', () => {
    const jsonSchemas = Object.create({ n: z.number() }) as Record<string, z.ZodType>
    const result = decodeExtraKeys(makeEnviron({ HTTP_X_WSGIPROXY_JSON_0: 'n "x"' }), {
      jsonSchemas,
    })
    expect(result['n']).toBe('x')
  })

  // Decoded keys are merged into the environ, a plain object: `toString` or `hasOwnProperty`
  // there would shadow the method every environ inherits.
  it.each([...Object.getOwnPropertyNames(Object.prototype), 'prototype'])(
    'refuses the key %s, named after an Object.prototype member, with a 400',
    (key) => {
      for (const header of ['HTTP_X_WSGIPROXY_STR_0', 'HTTP_X_WSGIPROXY_JSON_0']) {
        const error = decodeError({ [header]: `${encodeURIComponent(key)} 1` })
        expect(error).toMatchObject({ code: 'BAD_REQUEST', status: 400, expose: true })
        expect(error.message).toMatch(/must not be prototype or a property of Object\.prototype/)
      }
    },
  )

  it.each<[string, Record<string, unknown>, Parameters<typeof decodeExtraKeys>[1]?]>([
    ['a bad base64 character', { HTTP_X_WSGIPROXY_STR_0: 'k b64QQ-=' }],
    ['base64url', { HTTP_X_WSGIPROXY_STR_0: 'k b64_w==' }],
    ['base64 of the wrong length', { HTTP_X_WSGIPROXY_STR_0: 'k b64QQ=' }],
    ['missing padding', { HTTP_X_WSGIPROXY_STR_0: 'k b64QQ' }],
    ['too much padding', { HTTP_X_WSGIPROXY_STR_0: 'k b64QUI==' }],
    ['padding in the middle', { HTTP_X_WSGIPROXY_STR_0: 'k b64QQ==QUJD' }],
    ['non-zero unused bits (==)', { HTTP_X_WSGIPROXY_STR_0: 'k b64QR==' }],
    ['non-zero unused bits (=)', { HTTP_X_WSGIPROXY_STR_0: 'k b64QUJ=' }],
    ['whitespace in base64', { HTTP_X_WSGIPROXY_STR_0: 'k b64QU JD' }],
    ['invalid UTF-8', { HTTP_X_WSGIPROXY_UNICODE_0: 'k b64ww==' }],
    ['an overlong UTF-8 form', { HTTP_X_WSGIPROXY_UNICODE_0: 'k b64wK8=' }],
    ['a UTF-8 surrogate', { HTTP_X_WSGIPROXY_JSON_0: 'k b647aCA' }],
    ['invalid JSON', { HTTP_X_WSGIPROXY_JSON_0: 'k {a:1}' }],
    ['JSON with "__proto__"', { HTTP_X_WSGIPROXY_JSON_0: 'k {"__proto__":{"admin":true}}' }],
    ['nested "__proto__"', { HTTP_X_WSGIPROXY_JSON_0: 'k [1,{"a":{"__proto__":1}}]' }],
    ['escaped "__proto__"', { HTTP_X_WSGIPROXY_JSON_0: 'k {"\\u005f_proto__":1}' }],
    [
      '"constructor"."prototype"',
      { HTTP_X_WSGIPROXY_JSON_0: 'k {"constructor":{"prototype":{}}}' },
    ],
    ['a control character', { HTTP_X_WSGIPROXY_STR_0: 'k a\tb' }],
    ['non-ASCII raw', { HTTP_X_WSGIPROXY_UNICODE_0: 'k é' }],
    ['a trailing space', { HTTP_X_WSGIPROXY_STR_0: 'k a ' }],
    ['two spaces', { HTTP_X_WSGIPROXY_STR_0: 'k  a' }],
    ['an empty value', { HTTP_X_WSGIPROXY_STR_0: 'k ' }],
    ['no space', { HTTP_X_WSGIPROXY_STR_0: 'kvalue' }],
    ['an empty key', { HTTP_X_WSGIPROXY_STR_0: ' v' }],
    ['a key starting with a digit', { HTTP_X_WSGIPROXY_STR_0: '1abc v' }],
    ['the key __proto__', { HTTP_X_WSGIPROXY_JSON_0: '__proto__ {}' }],
    ['the key constructor', { HTTP_X_WSGIPROXY_STR_0: 'constructor v' }],
    ['the key wsgi.input', { HTTP_X_WSGIPROXY_STR_0: 'wsgi.input v' }],
    ['the key PATH_INFO', { HTTP_X_WSGIPROXY_STR_0: 'PATH_INFO /admin' }],
    ['the key HTTP_HOST', { HTTP_X_WSGIPROXY_STR_0: 'HTTP_HOST evil' }],
    ['the key REMOTE_ADDR', { HTTP_X_WSGIPROXY_STR_0: 'REMOTE_ADDR 10.0.0.1' }],
    ['a key with a space', { HTTP_X_WSGIPROXY_STR_0: 'a%20b v' }],
    ['a bad percent escape', { HTTP_X_WSGIPROXY_STR_0: 'a%zz v' }],
    ['a percent-encoded invalid UTF-8 key', { HTTP_X_WSGIPROXY_STR_0: 'a%C3 v' }],
    ['N with a leading zero', { HTTP_X_WSGIPROXY_STR_01: 'k v' }],
    ['N not a number', { HTTP_X_WSGIPROXY_STR_x: 'k v' }],
    ['N of 64', { HTTP_X_WSGIPROXY_STR_64: 'k v' }],
    ['N empty', { HTTP_X_WSGIPROXY_STR_: 'k v' }],
    ['N negative', { 'HTTP_X_WSGIPROXY_STR_-1': 'k v' }],
    ['the same header twice', { HTTP_X_WSGIPROXY_STR_0: 'a v', HTTP_X_WSGIPROXY_str_0: 'b v' }],
    ['the same key twice', { HTTP_X_WSGIPROXY_STR_0: 'k v', HTTP_X_WSGIPROXY_STR_1: 'k w' }],
    [
      'the same key in two kinds',
      { HTTP_X_WSGIPROXY_STR_0: 'k v', HTTP_X_WSGIPROXY_JSON_0: 'k 1' },
    ],
    ['a value that is not a string', { HTTP_X_WSGIPROXY_STR_0: 42 }],
    [
      'a value a schema rejects',
      { HTTP_X_WSGIPROXY_JSON_0: 'n "x"' },
      { jsonSchemas: { n: z.number() } },
    ],
    [
      'a value a pickle codec cannot parse',
      { HTTP_X_WSGIPROXY_PICKLE_0: 'k {' },
      { pickleCodec: jsonPickle },
    ],
  ])('rejects %s with a 400 naming the header', (_, extra, options) => {
    const error = decodeError(extra, options)
    expect(error).toMatchObject({ code: 'BAD_REQUEST', status: 400, expose: true })
    expect(error.message).toMatch(/X-WSGIProxy-(?:Str|Unicode|Json|Pickle)-/)
  })

  it('names the header without echoing its value', () => {
    const secret = 'SECRET-TOKEN'
    const error = decodeError({
      HTTP_X_WSGIPROXY_STR_0: 'a 1',
      HTTP_X_WSGIPROXY_JSON_2: `k {"${secret}":`,
    })
    expect(error.message).toContain('X-WSGIProxy-Json-2')
    expect(error.message).not.toContain(secret)
    const keyError = decodeError({ HTTP_X_WSGIPROXY_UNICODE_5: `${secret}%20x v` })
    expect(keyError.message).toContain('X-WSGIProxy-Unicode-5')
    expect(keyError.message).not.toContain(secret)
  })

  it('wraps a schema that throws', () => {
    const jsonSchemas = {
      n: z.number().transform(() => {
        throw new Error('schema bug')
      }),
    }
    expect(decodeError({ HTTP_X_WSGIPROXY_JSON_0: 'n 1' }, { jsonSchemas }).status).toBe(400)
  })

  it('keeps the ZodError as the cause of a schema rejection', () => {
    const error = decodeError(
      { HTTP_X_WSGIPROXY_JSON_0: 'n "x"' },
      { jsonSchemas: { n: z.number() } },
    )
    expect(error.cause).toBeInstanceOf(z.ZodError)
  })

  it('accepts "constructor" as a plain JSON key', () => {
    const result = decodeExtraKeys(
      makeEnviron({ HTTP_X_WSGIPROXY_JSON_0: 'k {"constructor":"x","a":{"constructor":[1]}}' }),
    )
    expect(result['k']).toEqual({ constructor: 'x', a: { constructor: [1] } })
  })

  it('answers 431 for a value longer than the cap', () => {
    const error = decodeError({
      HTTP_X_WSGIPROXY_STR_3: `k ${'x'.repeat(MAX_ENCODED_VALUE_LENGTH + 1)}`,
    })
    expect(error).toMatchObject({ code: 'HEADER_TOO_LARGE', status: 431, expose: true })
    expect(error.message).toContain('X-WSGIProxy-Str-3')
  })

  it('answers 431 for a huge header without a space', () => {
    const error = decodeError({ HTTP_X_WSGIPROXY_STR_0: 'x'.repeat(100_000) })
    expect(error.status).toBe(431)
  })

  it('accepts a value of exactly the cap', () => {
    const value = 'x'.repeat(MAX_ENCODED_VALUE_LENGTH)
    expect(decodeExtraKeys(makeEnviron({ HTTP_X_WSGIPROXY_STR_0: `k ${value}` }))['k']).toBe(value)
  })

  it(`answers 431 for more than ${MAX_PROTOCOL_HEADERS} headers, pickle ones included`, () => {
    const extra: Record<string, string> = {}
    for (let i = 0; i < MAX_PROTOCOL_HEADERS; i++) extra[`HTTP_X_WSGIPROXY_STR_${i}`] = `k${i} v`
    expect(Object.keys(decodeExtraKeys(makeEnviron(extra)))).toHaveLength(MAX_PROTOCOL_HEADERS)
    extra['HTTP_X_WSGIPROXY_PICKLE_0'] = 'p v'
    const error = decodeError(extra)
    expect(error).toMatchObject({ code: 'TOO_MANY_HEADERS', status: 431, expose: true })
  })

  it('round-trips well-formed strings as unicode (property)', () => {
    fc.assert(
      fc.property(wellFormed, (value) => {
        expect(roundTrip('unicode', value)).toBe(value)
      }),
    )
  })

  it('round-trips byte strings as str (property)', () => {
    fc.assert(
      fc.property(byteString, (value) => {
        expect(roundTrip('str', value)).toBe(value)
      }),
    )
  })

  it('round-trips JSON values and refuses prototype keys at the sender (property)', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        // JSON has no -0: it comes back as 0.
        const expected = pollutes(value) ? 'INVALID_EXTRA_VALUE' : JSON.parse(JSON.stringify(value))
        expect(outcome(() => roundTrip('json', value))).toEqual(expected)
      }),
    )
  })

  it('round-trips values through a pickle codec (property)', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 2 }), (value) => {
        expect(roundTrip('pickle', value)).toEqual(JSON.parse(JSON.stringify(value)))
      }),
    )
  })

  it('returns or throws a 400/431 WsgiProxyError for any header strings (property)', () => {
    const kind = fc.constantFrom('STR', 'UNICODE', 'JSON', 'PICKLE', 'Str', 'json')
    const number = fc.oneof(fc.nat({ max: 70 }).map(String), fc.string({ maxLength: 3 }))
    const base64 = fc
      .uint8Array({ maxLength: 12 })
      .map((bytes) => btoa(String.fromCharCode(...bytes)))
    const key = fc.oneof(
      fc.constantFrom('k', 'REMOTE_USER', '__proto__', 'a%20b', '%41', 'wsgi.x', ''),
      fc.string({ maxLength: 6 }),
    )
    const value = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 20 }),
      base64.map((b) => `b64${b}`),
      fc.string({ maxLength: 12 }).map((s) => `b64${s}`),
      fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v) ?? ''),
    )
    const line = fc.oneof(
      fc.tuple(key, fc.constantFrom(' ', '  ', ''), value).map((parts) => parts.join('')),
      fc.string({ unit: 'binary', maxLength: 30 }),
    )
    const header = fc.tuple(kind, number, line)
    fc.assert(
      fc.property(fc.array(header, { maxLength: 6 }), fc.boolean(), (headers, withCodec) => {
        const extra: Record<string, string> = {}
        for (const [k, n, v] of headers) extra[`HTTP_X_WSGIPROXY_${k}_${n}`] = v
        const options = withCodec ? { pickleCodec: jsonPickle } : {}
        // A foreign exception is rethrown by outcome() and fails the property.
        const result = outcome(() => {
          decodeExtraKeys(makeEnviron(extra), options)
          return 'returned'
        })
        expect(['returned', 'BAD_REQUEST', 'TOO_MANY_HEADERS', 'HEADER_TOO_LARGE']).toContain(
          result,
        )
      }),
      { numRuns: 500 },
    )
  })
})

describe('extraKeyHeaderKeys', () => {
  it('lists the environ keys of extra-key headers only', () => {
    const environ = makeEnviron({
      HTTP_X_WSGIPROXY_STR_0: 'a 1',
      HTTP_X_WSGIPROXY_UNICODE_x: 'bad',
      HTTP_X_WSGIPROXY_JSON_1: 'b 2',
      HTTP_X_WSGIPROXY_PICKLE_0: 'c 3',
      HTTP_X_WSGIPROXY_VERSION: '0.2',
      HTTP_X_WSGIPROXY_STRING: 'x',
      HTTP_HOST: 'example.com',
    })
    expect(extraKeyHeaderKeys(environ)).toEqual([
      'HTTP_X_WSGIPROXY_STR_0',
      'HTTP_X_WSGIPROXY_UNICODE_x',
      'HTTP_X_WSGIPROXY_JSON_1',
      'HTTP_X_WSGIPROXY_PICKLE_0',
    ])
  })
})
