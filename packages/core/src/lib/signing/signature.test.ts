import { describe, expect, it } from 'vitest'
import { WsgiProxyError } from '../errors.ts'
import type { MessageView } from './signature.ts'
import {
  DERIVED_COMPONENTS,
  importHmacKey,
  signatureBase,
  signatureInputValue,
  signatureParamsValue,
  signatureValue,
  signBase,
  verifyBase,
} from './signature.ts'
import { thrownProxyError } from '@wsgiproxy/test-kit/errors'
import { fromBase64, RFC_SECRET } from '@wsgiproxy/test-kit/rfc9421'

// RFC 9421 Appendix B.2: the test-request message.
const TEST_REQUEST = {
  url: 'http://example.com/foo?param=Value&Pet=dog',
  method: 'POST',
  headers: {
    host: 'example.com',
    date: 'Tue, 20 Apr 2021 02:07:55 GMT',
    'content-type': 'application/json',
    'content-digest':
      'sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:',
    'content-length': '18',
  } as Record<string, string>,
}

const B25_BASE = [
  '"date": Tue, 20 Apr 2021 02:07:55 GMT',
  '"@authority": example.com',
  '"content-type": application/json',
  '"@signature-params": ("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"',
].join('\n')
const B25_COMPONENTS = ['date', '@authority', 'content-type']
const B25_PARAMETERS = [
  ['created', 1618884473],
  ['keyid', 'test-shared-secret'],
] as const
const B25_SIGNATURE = 'pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8='

/** A view of a Fetch Request, as RFC 9421 §2 derives components from it. */
function requestView(request: Request): MessageView {
  const url = new URL(request.url)
  return {
    method: request.method,
    authority: url.host,
    path: url.pathname || '/',
    query: `?${url.search.slice(1)}`,
    field: (name) => request.headers.get(name) ?? undefined,
  }
}

/** A view of the RFC test-request, built from its headers (optionally changed). */
function testRequestView(
  change: (headers: Record<string, string>) => void = () => {},
): MessageView {
  const headers = { ...TEST_REQUEST.headers }
  change(headers)
  return requestView(
    new Request(TEST_REQUEST.url, {
      method: TEST_REQUEST.method,
      headers,
      body: '{"hello": "world"}',
    }),
  )
}

/** A view with the given derived values and fields. */
function view(
  fields: Record<string, string> = {},
  derived: Partial<MessageView> = {},
): MessageView {
  return {
    method: 'GET',
    authority: 'example.com',
    path: '/',
    query: '?',
    field: (name) => fields[name],
    ...derived,
  }
}

function toBase64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes))
}

describe('RFC 9421 Appendix B.2.5 (hmac-sha256)', () => {
  it('builds the signature base byte for byte from the test request', () => {
    expect(signatureBase(testRequestView(), B25_COMPONENTS, B25_PARAMETERS)).toBe(B25_BASE)
  })

  it('signs the base to the published signature value', async () => {
    const key = await importHmacKey(RFC_SECRET)
    const signature = await signBase(B25_BASE, key)
    expect(toBase64(signature)).toBe(B25_SIGNATURE)
    expect(signature.byteLength).toBe(32)
  })

  it('serializes the published Signature-Input and Signature fields', () => {
    expect(signatureInputValue('sig-b25', B25_COMPONENTS, B25_PARAMETERS)).toBe(
      'sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"',
    )
    expect(signatureValue('sig-b25', fromBase64(B25_SIGNATURE))).toBe(
      'sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:',
    )
  })

  it('verifies the published signature', async () => {
    const key = await importHmacKey(RFC_SECRET)
    expect(await verifyBase(B25_BASE, fromBase64(B25_SIGNATURE), key)).toBe(true)
  })

  it('rejects a changed authority, a trailing newline, a truncated signature and a changed created', async () => {
    const key = await importHmacKey(RFC_SECRET)
    const signature = fromBase64(B25_SIGNATURE)
    expect(await verifyBase(B25_BASE.replace('example.com', 'example.org'), signature, key)).toBe(
      false,
    )
    expect(await verifyBase(`${B25_BASE}\n`, signature, key)).toBe(false)
    expect(await verifyBase(B25_BASE, signature.slice(0, 16), key)).toBe(false)
    expect(await verifyBase(B25_BASE.replace('1618884473', '1618884474'), signature, key)).toBe(
      false,
    )
    expect(await verifyBase(B25_BASE, new Uint8Array(0), key)).toBe(false)
  })

  it('refuses to build the base when the covered Date field is missing', () => {
    const error = thrownProxyError(() =>
      signatureBase(
        testRequestView((h) => delete h.date),
        B25_COMPONENTS,
        B25_PARAMETERS,
      ),
    )
    expect(error.code).toBe('INVALID_SIGNATURE_BASE')
    expect(error.message).toContain('"date" is missing')
  })
})

describe('signatureBase', () => {
  it('reproduces the RFC 9421 B.2.1 minimal base (no components)', () => {
    const base = signatureBase(
      testRequestView(),
      [],
      [
        ['created', 1618884473],
        ['keyid', 'test-key-rsa-pss'],
        ['nonce', 'b3k2pp5k7z-50gnwp.yemd'],
      ],
    )
    expect(base).toBe(
      '"@signature-params": ();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd"',
    )
  })

  it('reproduces the RFC 9421 B.2.3 base (derived components and fields)', () => {
    const components = [
      'date',
      '@method',
      '@path',
      '@query',
      '@authority',
      'content-type',
      'content-digest',
      'content-length',
    ]
    const base = signatureBase(testRequestView(), components, [
      ['created', 1618884473],
      ['keyid', 'test-key-rsa-pss'],
    ])
    expect(base).toBe(
      [
        '"date": Tue, 20 Apr 2021 02:07:55 GMT',
        '"@method": POST',
        '"@path": /foo',
        '"@query": ?param=Value&Pet=dog',
        '"@authority": example.com',
        '"content-type": application/json',
        '"content-digest": sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:',
        '"content-length": 18',
        '"@signature-params": ("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss"',
      ].join('\n'),
    )
  })

  it('serializes parameters in the given order (RFC 9421 §2.3 example)', () => {
    expect(
      signatureParamsValue(
        ['@target-uri', '@authority', 'date', 'cache-control'],
        [
          ['keyid', 'test-key-rsa-pss'],
          ['alg', 'rsa-pss-sha512'],
          ['created', 1618884475],
          ['expires', 1618884775],
        ],
      ),
    ).toBe(
      '("@target-uri" "@authority" "date" "cache-control");keyid="test-key-rsa-pss";alg="rsa-pss-sha512";created=1618884475;expires=1618884775',
    )
  })

  it('strips leading and trailing whitespace from field values and keeps inner whitespace (RFC 9421 §2.1)', () => {
    const base = signatureBase(
      view({
        'x-ows-header': '   Leading and trailing whitespace. \t',
        'example-dict': 'a=1,    b=2;x=1;y=2,   c=(a   b   c)',
        'cache-control': 'max-age=60, must-revalidate',
      }),
      ['x-ows-header', 'example-dict', 'cache-control'],
      [],
    )
    expect(base.split('\n').slice(0, 3)).toEqual([
      '"x-ows-header": Leading and trailing whitespace.',
      '"example-dict": a=1,    b=2;x=1;y=2,   c=(a   b   c)',
      '"cache-control": max-age=60, must-revalidate',
    ])
  })

  it('writes an empty field with one trailing space', () => {
    expect(signatureBase(view({ 'x-empty-header': '' }), ['x-empty-header'], [])).toBe(
      '"x-empty-header": \n"@signature-params": ("x-empty-header")',
    )
  })

  it('gives the RFC 9421 §2.2 derived values', () => {
    const base = signatureBase(
      requestView(new Request('http://www.example.com/path?param=value', { method: 'POST' })),
      [...DERIVED_COMPONENTS],
      [],
    )
    expect(base.split('\n').slice(0, 4)).toEqual([
      '"@method": POST',
      '"@authority": www.example.com',
      '"@path": /path',
      '"@query": ?param=value',
    ])
    const empty = signatureBase(requestView(new Request('http://h/p')), ['@query'], [])
    expect(empty.split('\n')[0]).toBe('"@query": ?')
  })

  it('refuses non-ASCII, CR, LF and NUL in any component value (RFC 9421 §2.5 step 4)', () => {
    for (const value of ['caf\u00e9', 'a\r\n"@method": GET', 'a\nb', 'a\u0000b', '\u20ac']) {
      const error = thrownProxyError(() => signatureBase(view({ 'x-a': value }), ['x-a'], []))
      expect(error.code).toBe('INVALID_SIGNATURE_BASE')
      expect(error.status).toBe(400)
      expect(error.message).not.toContain(value)
    }
    expect(() => signatureBase(view({}, { path: '/caf\u00e9' }), ['@path'], [])).toThrow(
      WsgiProxyError,
    )
  })

  it('accepts HTAB inside a field value', () => {
    expect(signatureBase(view({ 'x-a': 'a\tb' }), ['x-a'], [])).toContain('"x-a": a\tb\n')
  })

  it('refuses repeated, unsupported derived and upper-case components', () => {
    expect(() => signatureBase(view(), ['@method', '@method'], [])).toThrow(/covered twice/)
    expect(() => signatureBase(view(), ['@target-uri'], [])).toThrow(/not supported/)
    expect(() => signatureBase(view(), ['@signature-params'], [])).toThrow(/not supported/)
    expect(() => signatureBase(view({ Date: 'x' }), ['Date'], [])).toThrow(/lower-case/)
  })

  it('refuses parameters that Structured Fields cannot carry', () => {
    expect(() => signatureBase(view(), [], [['created', 1.5]])).toThrow(/integer/)
    expect(() => signatureBase(view(), [], [['keyid', 'caf\u00e9']])).toThrow(WsgiProxyError)
    expect(() => signatureBase(view(), [], [['Bad', 1]])).toThrow(WsgiProxyError)
    expect(() => signatureValue('Bad', new Uint8Array(1))).toThrow(WsgiProxyError)
  })
})

describe('importHmacKey', () => {
  it('imports a non-extractable HMAC SHA-256 key usable only to sign and verify', async () => {
    const key = await importHmacKey(RFC_SECRET)
    expect(key.extractable).toBe(false)
    expect(key.algorithm).toMatchObject({ name: 'HMAC', hash: { name: 'SHA-256' } })
    expect(key.usages.toSorted()).toEqual(['sign', 'verify'])
    await expect(crypto.subtle.exportKey('raw', key)).rejects.toThrow(/extractable/)
  })

  it('copies the secret, so later changes to the array do not change the key', async () => {
    const secret = new Uint8Array(RFC_SECRET)
    const key = await importHmacKey(secret)
    secret.fill(0)
    expect(toBase64(await signBase(B25_BASE, key))).toBe(B25_SIGNATURE)
  })

  it('refuses an empty secret', async () => {
    await expect(importHmacKey(new Uint8Array(0))).rejects.toThrow(/[Zz]ero-length/)
  })
})
