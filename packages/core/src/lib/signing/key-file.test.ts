import * as fc from 'fast-check'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { WsgiProxyError } from '../errors.ts'
import { MIN_SECRET_BYTES, formatKeyFile, parseKeyFile } from './key-file.ts'
import type { ParseKeyFileOptions } from './key-file.ts'
import type { SigningKey } from '../types.ts'

const bytes = (length: number, start = 0): Uint8Array =>
  Uint8Array.from({ length }, (_, index) => (start + index * 7) % 256)
const b64 = (secret: Uint8Array): string => btoa(String.fromCharCode(...secret))

const SECRET_A = bytes(32, 1)
const SECRET_B = bytes(64, 2)
const A = b64(SECRET_A)
const B = b64(SECRET_B)
const SHORT = b64(bytes(16, 3))
const BARE = 'a-legacy-shared-secret-of-forty-two-bytes!'

/** The error `parseKeyFile` throws; fails the test when it throws anything else or nothing. */
function parseError(text: string, options?: ParseKeyFileOptions): WsgiProxyError {
  let thrown: unknown
  try {
    parseKeyFile(text, options)
  } catch (error) {
    thrown = error
  }
  if (thrown instanceof WsgiProxyError) return thrown
  throw new Error(`expected a WsgiProxyError for ${JSON.stringify(text)}, got ${String(thrown)}`)
}

afterEach(() => {
  vi.restoreAllMocks()
})

describe('parseKeyFile', () => {
  it('reads key lines in order: the first signs, all verify', () => {
    expect(parseKeyFile(`k2026-11 base64:${A}\nk2026-05 base64:${B}\n`)).toEqual([
      { id: 'k2026-11', secret: SECRET_A },
      { id: 'k2026-05', secret: SECRET_B },
    ])
  })

  it.each([
    [
      'comments and blank lines',
      `# wsgiproxy keys v1\n\nk1 base64:${A}\n  # old\n\nk2 base64:${B}\n`,
    ],
    ['CRLF line ends', `# keys\r\nk1 base64:${A}\r\nk2 base64:${B}\r\n`],
    ['no trailing newline', `k1 base64:${A}\nk2 base64:${B}`],
    ['surrounding spaces and tabs', `  k1 base64:${A}  \n\tk2\t base64:${B}\t\n`],
    ['a comment only marks a key list', `# keys\n\n\nk1 base64:${A}\nk2 base64:${B}\n\n`],
  ])('reads a key list with %s', (_, text) => {
    expect(parseKeyFile(text)).toEqual([
      { id: 'k1', secret: SECRET_A },
      { id: 'k2', secret: SECRET_B },
    ])
  })

  it('accepts every key id character and 64-character ids', () => {
    const id = 'Az09._~-'.padEnd(64, 'x')
    expect(parseKeyFile(`${id} base64:${A}\n`)).toEqual([{ id, secret: SECRET_A }])
  })

  it.each([
    ['without a trailing newline', BARE, BARE],
    ['minus one trailing LF', `${BARE}\n`, BARE],
    ['minus one trailing CRLF', `${BARE}\r\n`, BARE],
  ])('reads a bare secret %s as key "default"', (_, text, secret) => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined)
    expect(parseKeyFile(text)).toEqual([
      { id: 'default', secret: new TextEncoder().encode(secret) },
    ])
    expect(warn).not.toHaveBeenCalled()
  })

  it('takes the UTF-8 bytes of a bare secret', () => {
    const text = 'Zoë 🙂 secret '.repeat(3).trim()
    vi.spyOn(console, 'warn').mockImplementation(() => undefined)
    const [key] = parseKeyFile(text)
    expect(key?.secret).toEqual(new TextEncoder().encode(text))
  })

  it('removes only one trailing newline from a bare secret and warns about the whitespace', () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined)
    expect(parseKeyFile(`${BARE}\n\n`)).toEqual([
      { id: 'default', secret: new TextEncoder().encode(`${BARE}\n`) },
    ])
    expect(warn).toHaveBeenCalledOnce()
    expect(String(warn.mock.calls[0]?.[0])).toMatch(/"default".*whitespace/)
    expect(String(warn.mock.calls[0]?.[0])).not.toContain(BARE)
  })

  it.each([
    ['an empty file', '', /the key file is empty/],
    ['a lone newline', '\n', /the key file is empty/],
    ['only whitespace', ' \t\r\n\n', /the key file is empty/],
    ['only comments', '# wsgiproxy keys v1 - the first active line signs\n\n', /has no keys/],
    [
      'a bare secret after a comment',
      `# my secret\n${BARE}\n`,
      /line 2: expected `keyid base64:secret` \(got one field\)/,
    ],
    ['a key line followed by junk', `k1 base64:${A}\n${BARE}\n`, /line 2: .*got one field/],
    ['a missing key id', `k1 base64:${A}\nbase64:${B}\n`, /line 2: .*the key id is missing/],
    ['three fields', `k1 base64:${A} ${B}\n`, /line 1: .*got 3 fields/],
    [
      'a secret without base64:',
      `k1 base64:${A}\nk2 hex:${B}\n`,
      /line 2: .*must start with base64:/,
    ],
    ['an inline comment', `k1 base64:${A} # current\n`, /line 1: .*got 4 fields/],
    ['an empty key', `k1 base64:${A}\nk2 base64:\n`, /line 2: key "k2" is empty/],
    [
      'a duplicate id',
      `k1 base64:${A}\nk2 base64:${B}\nk1 base64:${B}\n`,
      /line 3: duplicate key id "k1" \(first on line 1\)/,
    ],
    ['a key id with a slash', `k/1 base64:${A}\n`, /line 1: the key id must be 1-64 characters/],
    [
      'a 65-character key id',
      `${'k'.repeat(65)} base64:${A}\n`,
      /line 1: the key id .*got 65 characters/,
    ],
    [
      'base64url',
      `k1 base64:${A.replaceAll('+', '-').replaceAll('/', '_')}-_\n`,
      /line 1: key "k1" is not valid base64 .*not base64url/,
    ],
    [
      'missing padding',
      `k1 base64:${B.replace(/=+$/, '')}\n`,
      /line 1: key "k1" is not valid base64 .*padding/,
    ],
    [
      'non-zero padding bits',
      `k1 base64:${A.slice(0, -2)}B=\n`,
      /line 1: key "k1" is not valid base64/,
    ],
    [
      'a character outside the alphabet',
      `k1 base64:${A.slice(0, 8)}*${A.slice(9)}\n`,
      /line 1: key "k1" is not valid base64/,
    ],
    [
      'a short key',
      `k1 base64:${A}\nk2 base64:${SHORT}\n`,
      /line 2: key "k2" has 16 bytes; at least 32 random bytes are required/,
    ],
    ['a short bare secret', 'sixteen-bytes-ok\n', /the bare secret has 16 bytes; at least 32/],
  ])('refuses %s', (_, text, message) => {
    const error = parseError(text)
    expect(error.code).toBe('INVALID_KEY_FILE')
    expect(error.status).toBe(500)
    expect(error.expose).toBe(true)
    expect(error.message).toMatch(/^invalid key file: /)
    expect(error.message).toMatch(message)
    for (const secret of [A, B, SHORT, BARE, A.slice(0, 20), B.slice(0, 20)]) {
      expect(error.message).not.toContain(secret)
    }
  })

  it('accepts a short key with allowWeakSecret and warns naming the key id', () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined)
    const keys = parseKeyFile(`k1 base64:${A}\nweak-one base64:${SHORT}\n`, {
      allowWeakSecret: true,
    })
    expect(keys.map((key) => [key.id, key.secret.length])).toEqual([
      ['k1', 32],
      ['weak-one', 16],
    ])
    expect(warn).toHaveBeenCalledOnce()
    expect(String(warn.mock.calls[0]?.[0])).toMatch(/key "weak-one" has 16 bytes/)
    expect(String(warn.mock.calls[0]?.[0])).not.toContain(SHORT)
  })

  it('accepts a short bare secret with allowWeakSecret and warns naming "default"', () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined)
    expect(parseKeyFile('short-secret', { allowWeakSecret: true })).toEqual([
      { id: 'default', secret: new TextEncoder().encode('short-secret') },
    ])
    expect(warn).toHaveBeenCalledOnce()
    expect(String(warn.mock.calls[0]?.[0])).toMatch(/key "default" has 12 bytes/)
  })

  it('still refuses an empty key with allowWeakSecret', () => {
    expect(parseError('k1 base64:\n', { allowWeakSecret: true }).message).toMatch(/is empty/)
    expect(parseError('', { allowWeakSecret: true }).message).toMatch(/is empty/)
  })

  it('accepts exactly MIN_SECRET_BYTES bytes', () => {
    expect(MIN_SECRET_BYTES).toBe(32)
    const secret = bytes(MIN_SECRET_BYTES)
    expect(parseKeyFile(`k base64:${b64(secret)}`)).toEqual([{ id: 'k', secret }])
    expect(parseError(`k base64:${b64(bytes(MIN_SECRET_BYTES - 1))}`).code).toBe('INVALID_KEY_FILE')
  })

  it('refuses unknown or mistyped options with INVALID_OPTIONS', () => {
    const options = [{ allowWeakSecret: 'yes' }, { allowWeak: true }]
    for (const option of options) {
      expect(parseError(`k base64:${A}`, option as ParseKeyFileOptions).code).toBe(
        'INVALID_OPTIONS',
      )
    }
  })
})

describe('formatKeyFile', () => {
  it('writes one `keyid base64:secret` line per key with a trailing newline', () => {
    expect(
      formatKeyFile([
        { id: 'k2', secret: SECRET_B },
        { id: 'k1', secret: SECRET_A },
      ]),
    ).toBe(`k2 base64:${B}\nk1 base64:${A}\n`)
  })

  it('round-trips through parseKeyFile', () => {
    const keyId = fc.stringMatching(/^[A-Za-z0-9._~-]{1,64}$/)
    const keyList = fc.uniqueArray(
      fc.record({ id: keyId, secret: fc.uint8Array({ minLength: 32, maxLength: 200 }) }),
      { minLength: 1, maxLength: 8, selector: (key) => key.id },
    )
    fc.assert(
      fc.property(keyList, (keys: SigningKey[]) => {
        expect(parseKeyFile(formatKeyFile(keys))).toEqual(keys)
      }),
    )
  })

  it.each([
    ['no keys', []],
    ['an invalid id', [{ id: 'k 1', secret: SECRET_A }]],
    [
      'a duplicate id',
      [
        { id: 'k', secret: SECRET_A },
        { id: 'k', secret: SECRET_B },
      ],
    ],
    ['an empty secret', [{ id: 'k', secret: new Uint8Array() }]],
    ['a secret that is not bytes', [{ id: 'k', secret: A }]],
  ])('refuses %s with INVALID_OPTIONS', (_, keys) => {
    expect(() => formatKeyFile(keys as unknown as SigningKey[])).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTIONS' }),
    )
  })
})
