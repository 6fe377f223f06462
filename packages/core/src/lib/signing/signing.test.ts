import { createHmac } from 'node:crypto'
import * as fc from 'fast-check'
import { httpbis } from 'http-message-signatures'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { toEnviron } from '../environ/environ.ts'
import { WsgiProxyError } from '../errors.ts'
import { MemoryReplayStore } from './replay-store.ts'
import type { MessageView, SignatureParameters } from './signature.ts'
import {
  importHmacKey,
  signatureBase,
  signatureInputValue,
  signatureValue,
  signBase,
} from './signature.ts'
import { MAX_COVERED_COMPONENTS } from './profile.ts'
import type { Signer, SignerOptions } from './signer.ts'
import { createSigner } from './signer.ts'
import type { Verifier, VerifierOptions, VerifyOutcome } from './verifier.ts'
import { createVerifier } from './verifier.ts'
import type { Environ, ReplayCheck, ReplayStore, SigningKey } from '../types.ts'
import { thrownProxyError } from '@wsgiproxy/test-kit/errors'
import { RFC_SECRET } from '@wsgiproxy/test-kit/rfc9421'

const KEY: SigningKey = { id: 'test-shared-secret', secret: RFC_SECRET }
const OTHER_KEY: SigningKey = { id: 'k-other', secret: new Uint8Array(32).fill(7) }
// `created` of the test vector below (a request signed once, its signature kept verbatim); tests
// run with a frozen clock.
const T = 1618884473
const EMPTY_DIGEST = 'sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:'
const encoder = new TextEncoder()

afterEach(() => {
  vi.restoreAllMocks()
})

interface TestRequest {
  method: string
  url: string
  headers: Array<[string, string]>
  body?: string | Uint8Array | null
}

/** The request of the test vector. */
function vectorRequest(): TestRequest {
  return {
    method: 'POST',
    url: 'http://backend.internal:8080/app/foo?x=1&y=two',
    headers: [
      ['Content-Type', 'application/json'],
      ['X-Forwarded-For', '192.0.2.123'],
      ['X-Forwarded-Server', 'www.example.com'],
      ['X-Forwarded-Scheme', 'https'],
      ['X-Forwarded-Script-Name', '/mount'],
      ['X-Traversal-Path', '/app'],
      ['X-WSGIProxy-Version', '0.2'],
      ['X-WSGIProxy-Str-0', 'REMOTE_USER alice'],
      ['X-WSGIProxy-Json-0', 'wsgiproxy.roles b64WyJhZG1pbiJd'],
    ],
    body: '{"hello": "world"}',
  }
}

/** A small signed request: a POST with a content type and two protocol headers. */
function basicRequest(): TestRequest {
  return {
    method: 'POST',
    url: 'http://backend.internal:8080/app/foo?x=1&y=two',
    headers: [
      ['content-type', 'text/plain'],
      ['x-forwarded-for', '192.0.2.123'],
      ['x-wsgiproxy-version', '0.2'],
    ],
    body: 'hello',
  }
}

/** A nonce source that gives 16 different bytes on every call. */
function counterRandom(): (bytes: Uint8Array) => Uint8Array {
  let n = 0
  return (bytes) => {
    n++
    for (let i = 0; i < bytes.length; i++) bytes[i] = (n * 31 + i) & 255
    return bytes
  }
}

function signer(options: Partial<SignerOptions> = {}): Signer {
  return createSigner({ keys: [KEY], clock: () => T * 1000, random: counterRandom(), ...options })
}

function verifier(options: Partial<VerifierOptions> = {}): Verifier {
  return createVerifier({
    keys: [KEY],
    clock: () => T * 1000,
    replayStore: new MemoryReplayStore({ clock: () => T * 1000 }),
    ...options,
  })
}

async function collect(body: AsyncIterable<Uint8Array> | null | undefined): Promise<string> {
  if (body === null || body === undefined) return ''
  const parts: Uint8Array[] = []
  for await (const chunk of body) parts.push(chunk)
  return new TextDecoder().decode(Buffer.concat(parts))
}

async function* chunks(...parts: Array<string | Uint8Array>): AsyncIterable<Uint8Array> {
  for (const part of parts) yield typeof part === 'string' ? encoder.encode(part) : part
}

function toBytes(body: string | Uint8Array): Uint8Array {
  return typeof body === 'string' ? encoder.encode(body) : body
}

/** The environ a backend builds for a request sent with these headers and body. */
function receivedEnviron(
  method: string,
  url: URL,
  headers: Array<[string, string]>,
  body: Uint8Array | null,
): Environ {
  const init = new Headers()
  for (const [name, value] of headers) init.append(name, value)
  // A Request built here drops Host unless given; the transport sends url.host.
  init.set('host', url.host)
  const request = new Request(url, {
    method,
    headers: init,
    ...(body === null ? {} : { body: new Uint8Array(body) }),
  })
  return toEnviron(request, { remoteAddr: '127.0.0.1' })
}

/** Signs a request and builds the environ the backend receives. */
async function signedEnviron(s: Signer, request: TestRequest): Promise<Environ> {
  const url = new URL(request.url)
  const body = request.body === undefined || request.body === null ? null : toBytes(request.body)
  const signed = await s.sign({
    method: request.method,
    url,
    headers: request.headers.map(([n, v]) => [n, v]),
    body: body === null ? null : chunks(body),
  })
  const sent = signed.body === null ? null : encoder.encode(await collect(signed.body))
  return receivedEnviron(request.method, url, signed.headers, sent)
}

/** A header value of a signed request by (lower-case) name. */
function header(headers: Array<[string, string]>, name: string): string | undefined {
  return headers.find(([n]) => n.toLowerCase() === name)?.[1]
}

/** A matcher for an `invalid` outcome with this status and reason. */
function invalid(httpStatus: number, reason: string): Record<string, unknown> {
  return { status: 'invalid', httpStatus, reason }
}

function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64')
}

async function rejected(promise: Promise<unknown>): Promise<WsgiProxyError> {
  const caught: unknown = await promise.then(
    () => undefined,
    (error: unknown) => error,
  )
  expect(caught).toBeInstanceOf(WsgiProxyError)
  return caught as WsgiProxyError
}

interface Crafted {
  components?: readonly string[]
  parameters?: SignatureParameters
  label?: string
  key?: SigningKey
  /** Replace the Signature-Input field after signing. */
  input?: (value: string) => string
  /** Replace the Signature field after signing. */
  signature?: (value: string) => string
}

const BASIC_COMPONENTS = [
  '@method',
  '@authority',
  '@path',
  '@query',
  'content-type',
  'x-forwarded-for',
]

function basicParameters(
  overrides: Record<string, string | number | undefined> = {},
): SignatureParameters {
  const values: Record<string, string | number | undefined> = {
    created: T,
    expires: T + 60,
    nonce: 'dGVzdC1ub25jZS0wMDAx',
    keyid: KEY.id,
    tag: 'wsgiproxy',
    ...overrides,
  }
  return Object.entries(values).filter(
    (entry): entry is [string, string | number] => entry[1] !== undefined,
  )
}

/**
 * Builds a received environ signed by hand with the generic layer, so the profile's policy can
 * be tested on signatures our signer would never produce (with a valid MAC).
 */
async function craftedEnviron(crafted: Crafted = {}): Promise<Environ> {
  const request = basicRequest()
  const url = new URL(request.url)
  const environ = receivedEnviron(request.method, url, request.headers, toBytes(request.body ?? ''))
  const fields = new Map(request.headers)
  const view: MessageView = {
    method: request.method,
    authority: url.host,
    path: url.pathname,
    query: `?${url.search.slice(1)}`,
    field: (name) => fields.get(name),
  }
  const components = crafted.components ?? BASIC_COMPONENTS
  const parameters = crafted.parameters ?? basicParameters()
  const label = crafted.label ?? 'wsgiproxy'
  const key = await importHmacKey((crafted.key ?? KEY).secret)
  const signature = await signBase(signatureBase(view, components, parameters), key)
  const input = signatureInputValue(label, components, parameters)
  const value = signatureValue(label, signature)
  environ.HTTP_SIGNATURE_INPUT = crafted.input ? crafted.input(input) : input
  environ.HTTP_SIGNATURE = crafted.signature ? crafted.signature(value) : value
  return environ
}

describe('createSigner', () => {
  it('reproduces the test vector byte for byte', async () => {
    const s = createSigner({
      keys: [KEY],
      clock: () => T * 1000,
      random: () => encoder.encode('test-nonce-0001'),
      bodyDigest: true,
    })
    const request = vectorRequest()
    const signed = await s.sign({
      method: request.method,
      url: new URL(request.url),
      headers: request.headers,
      body: chunks('{"hello": ', '"world"}'),
    })
    expect(header(signed.headers, 'content-digest')).toBe(
      'sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:',
    )
    expect(header(signed.headers, 'signature-input')).toBe(
      'wsgiproxy=("@method" "@authority" "@path" "@query" "content-type" "content-digest" "x-forwarded-for" "x-forwarded-server" "x-forwarded-scheme" "x-forwarded-script-name" "x-traversal-path" "x-wsgiproxy-version" "x-wsgiproxy-str-0" "x-wsgiproxy-json-0");created=1618884473;expires=1618884533;nonce="dGVzdC1ub25jZS0wMDAx";keyid="test-shared-secret";tag="wsgiproxy"',
    )
    expect(header(signed.headers, 'signature')).toBe(
      'wsgiproxy=:OmsUKY2B+DVMWgajis6s1EkKVYccVMHU3AVdrMc8xSI=:',
    )
    expect(await collect(signed.body)).toBe('{"hello": "world"}')
  })

  it('covers the derived components, content headers and protocol headers in header order, lower-case', async () => {
    const signed = await signer().sign({
      method: 'GET',
      url: new URL('http://b.test/x'),
      headers: [
        ['X-WSGIProxy-Version', '0.2'],
        ['Accept', 'text/html'],
        ['Content-Encoding', 'gzip'],
        ['Forwarded', 'for=192.0.2.1'],
        ['Content-Type', 'text/plain'],
        ['X-Forwarded-For', '192.0.2.1'],
      ],
      body: null,
    })
    expect(header(signed.headers, 'signature-input')).toMatch(
      /^wsgiproxy=\("@method" "@authority" "@path" "@query" "content-type" "content-encoding" "x-wsgiproxy-version" "forwarded" "x-forwarded-for"\);created=1618884473;expires=1618884533;nonce="[A-Za-z0-9_-]{22}";keyid="test-shared-secret";tag="wsgiproxy"$/,
    )
    expect(signed.body).toBeNull()
  })

  it('removes signature fields it was given and never covers them', async () => {
    const signed = await signer().sign({
      method: 'GET',
      url: new URL('http://b.test/x'),
      headers: [
        ['Signature', 'sig1=:AAAA:'],
        ['signature-input', 'sig1=();created=1'],
        ['x-forwarded-for', '192.0.2.1'],
      ],
      body: null,
    })
    expect(signed.headers.filter(([n]) => n.toLowerCase() === 'signature')).toHaveLength(1)
    expect(signed.headers.filter(([n]) => n.toLowerCase() === 'signature-input')).toHaveLength(1)
    expect(header(signed.headers, 'signature-input')).not.toContain('"signature')
    expect(header(signed.headers, 'signature')).toMatch(/^wsgiproxy=:[A-Za-z0-9+/]{43}=:$/)
  })

  it('signs repeated header lines joined with ", " and covers the name once', async () => {
    const environ = await signedEnviron(signer(), {
      method: 'GET',
      url: 'http://b.test/x',
      headers: [
        ['x-forwarded-for', '192.0.2.1'],
        ['x-forwarded-for', '192.0.2.2'],
      ],
    })
    expect(environ.HTTP_SIGNATURE_INPUT).toContain('"@query" "x-forwarded-for");')
    expect(await verifier().verify(environ)).toMatchObject({ status: 'valid' })
  })

  it('sets expires to created + maxAge and a 22-character base64url nonce of 16 random bytes', async () => {
    const random = vi.fn<(bytes: Uint8Array) => Uint8Array>((bytes) => bytes.fill(0xfb))
    const s = signer({ maxAge: 300_000, random })
    const signed = await s.sign({
      method: 'GET',
      url: new URL('http://b.test/'),
      headers: [],
      body: null,
    })
    expect(random).toHaveBeenCalledOnce()
    expect(random.mock.calls[0]?.[0]).toHaveLength(16)
    expect(header(signed.headers, 'signature-input')).toContain(
      `;created=${T};expires=${T + 300};nonce="-_v7-_v7-_v7-_v7-_v7-w";`,
    )
  })

  it('uses crypto.getRandomValues for nonces by default', async () => {
    const s = createSigner({ keys: [KEY] })
    const nonces = new Set<string>()
    for (let i = 0; i < 20; i++) {
      const signed = await s.sign({
        method: 'GET',
        url: new URL('http://b.test/'),
        headers: [],
        body: null,
      })
      nonces.add(/nonce="([^"]+)"/.exec(header(signed.headers, 'signature-input') ?? '')?.[1] ?? '')
    }
    expect(nonces.size).toBe(20)
  })

  it('signs the URL as the transport sends it: host lower-case without default port, raw query', async () => {
    const environ = await signedEnviron(signer(), {
      method: 'post',
      url: 'HTTP://Backend.Internal:80/a%2Fb/./c/../d?q=%20x&y',
      headers: [],
      body: '',
    })
    expect(environ.REQUEST_METHOD).toBe('POST')
    expect(await verifier().verify(environ)).toMatchObject({ status: 'valid' })
  })

  it('refuses to sign a non-ASCII covered value (E9) without echoing it', async () => {
    const error = await rejected(
      signer().sign({
        method: 'GET',
        url: new URL('http://b.test/'),
        headers: [['x-wsgiproxy-str-0', 'REMOTE_USER caf\u00e9']],
        body: null,
      }),
    )
    expect(error.code).toBe('INVALID_SIGNATURE_BASE')
    expect(error.message).toContain('x-wsgiproxy-str-0')
    expect(error.message).not.toContain('caf')
  })

  it(`refuses to cover more than ${MAX_COVERED_COMPONENTS} components`, async () => {
    const headers: Array<[string, string]> = Array.from({ length: 29 }, (_, i) => [
      `x-wsgiproxy-str-${i}`,
      `K${i} v`,
    ])
    const error = await rejected(
      signer().sign({ method: 'GET', url: new URL('http://b.test/'), headers, body: null }),
    )
    expect(error.code).toBe('TOO_MANY_SIGNED_FIELDS')
    headers.pop()
    await expect(
      signer().sign({ method: 'GET', url: new URL('http://b.test/'), headers, body: null }),
    ).resolves.toBeDefined()
  })

  describe('with bodyDigest', () => {
    it('sends the empty-string digest for a request without a body', async () => {
      const signed = await signer({ bodyDigest: true }).sign({
        method: 'GET',
        url: new URL('http://b.test/'),
        headers: [['content-digest', 'md5=:AAAA:']],
        body: null,
      })
      expect(signed.headers.filter(([n]) => n === 'content-digest')).toEqual([
        ['content-digest', EMPTY_DIGEST],
      ])
      expect(header(signed.headers, 'signature-input')).toContain('"@query" "content-digest");')
      expect(signed.body).toBeNull()
    })

    it('sends the empty-string digest for an empty body', async () => {
      const signed = await signer({ bodyDigest: true }).sign({
        method: 'POST',
        url: new URL('http://b.test/'),
        headers: [],
        body: chunks(),
      })
      expect(header(signed.headers, 'content-digest')).toBe(EMPTY_DIGEST)
      expect(await collect(signed.body)).toBe('')
    })

    it('refuses a body over maxBytes with BODY_TOO_LARGE (413) and stops reading it', async () => {
      let pulled = 0
      let returned = false
      const body: AsyncIterable<Uint8Array> = {
        [Symbol.asyncIterator]() {
          return {
            async next() {
              pulled++
              return { done: false, value: new Uint8Array(4) }
            },
            async return() {
              returned = true
              return { done: true, value: undefined }
            },
          }
        },
      }
      const error = await rejected(
        signer({ bodyDigest: { maxBytes: 10 } }).sign({
          method: 'POST',
          url: new URL('http://b.test/'),
          headers: [],
          body,
        }),
      )
      expect(error.code).toBe('BODY_TOO_LARGE')
      expect(error.status).toBe(413)
      expect(pulled).toBe(3)
      expect(returned).toBe(true)
    })

    it('accepts a body of exactly maxBytes', async () => {
      const signed = await signer({ bodyDigest: { maxBytes: 5 } }).sign({
        method: 'POST',
        url: new URL('http://b.test/'),
        headers: [],
        body: chunks('he', 'llo'),
      })
      expect(await collect(signed.body)).toBe('hello')
    })
  })

  describe('keys', () => {
    it('refuses an empty key list, a secret under 32 bytes, duplicate ids and bad ids', () => {
      for (const keys of [
        [],
        [{ id: 'k', secret: new Uint8Array(31) }],
        [KEY, { ...OTHER_KEY, id: KEY.id }],
        [{ id: 'has space', secret: RFC_SECRET }],
        [{ id: 'k', secret: 'not bytes' }],
        () => [],
      ]) {
        const error = thrownProxyError(() => createSigner({ keys: keys as SigningKey[] }))
        expect(error.code).toBe('INVALID_OPTIONS')
        expect(error.expose).toBe(true)
        expect(() => createVerifier({ keys: keys as SigningKey[] })).toThrow(WsgiProxyError)
      }
    })

    it('accepts a weak secret with allowWeakSecret and warns once', async () => {
      const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined)
      const weak: SigningKey = { id: 'weak', secret: encoder.encode('sekrit') }
      const s = signer({ keys: [weak], allowWeakSecret: true })
      const v = verifier({ keys: [weak], allowWeakSecret: true })
      expect(warn).toHaveBeenCalledTimes(2)
      expect(String(warn.mock.calls[0]?.[0])).toContain('"weak"')
      const environ = await signedEnviron(s, basicRequest())
      expect(await v.verify(environ)).toMatchObject({ status: 'valid', keyid: 'weak' })
      expect(warn).toHaveBeenCalledTimes(2)
    })

    it('refuses out-of-range durations (B6)', () => {
      for (const maxAge of [0, 999, 900_001, Number.POSITIVE_INFINITY, 1.5]) {
        expect(() => createSigner({ keys: [KEY], maxAge })).toThrow(/maxAge/)
        expect(() => createVerifier({ keys: [KEY], maxAge })).toThrow(/maxAge/)
      }
      for (const clockSkew of [-1, 300_001, Number.POSITIVE_INFINITY]) {
        expect(() => createVerifier({ keys: [KEY], clockSkew })).toThrow(/clockSkew/)
      }
      expect(() => createVerifier({ keys: [KEY], expectedAuthority: 'evil.test/x' })).toThrow(
        /expectedAuthority/,
      )
      expect(() => createVerifier({ keys: [KEY], replayStore: {} as ReplayStore })).toThrow(
        /replayStore/,
      )
    })

    it('re-reads a key function per request and signs with its first key', async () => {
      let keys: readonly SigningKey[] = [KEY]
      const s = signer({ keys: () => keys })
      const first = await s.sign({
        method: 'GET',
        url: new URL('http://b.test/'),
        headers: [],
        body: null,
      })
      keys = [OTHER_KEY, KEY]
      const second = await s.sign({
        method: 'GET',
        url: new URL('http://b.test/'),
        headers: [],
        body: null,
      })
      expect(header(first.headers, 'signature-input')).toContain('keyid="test-shared-secret"')
      expect(header(second.headers, 'signature-input')).toContain('keyid="k-other"')
    })

    it('fails a request when a key function starts returning an invalid list', async () => {
      let keys: readonly SigningKey[] = [KEY]
      const s = signer({ keys: () => keys })
      keys = []
      const error = await rejected(
        s.sign({ method: 'GET', url: new URL('http://b.test/'), headers: [], body: null }),
      )
      expect(error.code).toBe('INVALID_OPTIONS')
    })

    it('imports each key once (cached by object identity)', async () => {
      const importKey = vi.spyOn(crypto.subtle, 'importKey')
      const s = signer()
      for (let i = 0; i < 3; i++) {
        await s.sign({ method: 'GET', url: new URL('http://b.test/'), headers: [], body: null })
      }
      expect(importKey).toHaveBeenCalledOnce()
    })
  })
})

describe('createVerifier', () => {
  it('accepts a signed request and reports the key and the covered fields (A1)', async () => {
    const environ = await signedEnviron(signer({ bodyDigest: true }), vectorRequest())
    const outcome = await verifier({ clock: () => 1618884480_000, bodyDigest: true }).verify(
      environ,
    )
    expect(outcome).toMatchObject({ status: 'valid', keyid: 'test-shared-secret' })
    if (outcome.status !== 'valid') throw new Error('unreachable')
    expect([...outcome.covered]).toEqual([
      'content-type',
      'content-digest',
      'x-forwarded-for',
      'x-forwarded-server',
      'x-forwarded-scheme',
      'x-forwarded-script-name',
      'x-traversal-path',
      'x-wsgiproxy-version',
      'x-wsgiproxy-str-0',
      'x-wsgiproxy-json-0',
    ])
    expect(await collect(outcome.body)).toBe('{"hello": "world"}')
  })

  it('leaves the body alone and sets no replacement when digests are off', async () => {
    const environ = await signedEnviron(signer(), basicRequest())
    const outcome = await verifier().verify(environ)
    expect(outcome.status).toBe('valid')
    expect(outcome).not.toHaveProperty('body')
    expect(await collect(environ['wsgi.input'])).toBe('hello')
  })

  it('checks the MAC with crypto.subtle.verify (H6)', async () => {
    const verify = vi.spyOn(crypto.subtle, 'verify')
    const environ = await signedEnviron(signer(), basicRequest())
    expect((await verifier().verify(environ)).status).toBe('valid')
    expect(verify).toHaveBeenCalledOnce()
    expect(verify.mock.calls[0]?.[0]).toBe('HMAC')
  })

  describe('absent signatures', () => {
    it('answers absent when there are no signature fields', async () => {
      const environ = receivedEnviron('GET', new URL('http://b.test/'), [], null)
      expect(await verifier().verify(environ)).toEqual({ status: 'absent' })
    })

    it('answers absent when only signatures with another tag are present (RFC 9421 §7.2.6)', async () => {
      const environ = await craftedEnviron({
        label: 'other',
        parameters: basicParameters({ tag: 'web-bot-auth' }),
      })
      expect(await verifier().verify(environ)).toEqual({ status: 'absent' })
    })

    it('refuses a member labelled "wsgiproxy" without the tag', async () => {
      const environ = await craftedEnviron({ parameters: basicParameters({ tag: undefined }) })
      expect(await verifier().verify(environ)).toMatchObject(invalid(401, 'malformed'))
    })

    it('refuses a "wsgiproxy" Signature member without a Signature-Input', async () => {
      const environ = await craftedEnviron()
      delete environ.HTTP_SIGNATURE_INPUT
      expect(await verifier().verify(environ)).toMatchObject(invalid(401, 'malformed'))
    })
  })

  describe('integrity', () => {
    const tamper: Array<[string, (environ: Environ) => void]> = [
      [
        'the path (A2)',
        (e) => ((e.PATH_INFO = '/app/admin'), (e['wsgiproxy.raw_path'] = '/app/admin')),
      ],
      ['the method (A3)', (e) => (e.REQUEST_METHOD = 'PUT')],
      ['a query value (A4)', (e) => (e.QUERY_STRING = 'x=1&y=three')],
      ['an added query parameter (A4)', (e) => (e.QUERY_STRING = 'x=1&y=two&admin=1')],
      ['the authority (A5)', (e) => (e.HTTP_HOST = 'evil.test:8080')],
      ['the port of the authority (A5)', (e) => (e.HTTP_HOST = 'backend.internal:8081')],
      ['a covered header (A6)', (e) => (e.HTTP_X_FORWARDED_FOR = '10.0.0.1')],
      ['a covered header by a duplicate line (A7)', (e) => (e.HTTP_X_FORWARDED_FOR += ', 6.6.6.6')],
      ['the content type', (e) => (e.CONTENT_TYPE = 'text/html')],
    ]
    for (const [what, change] of tamper) {
      it(`refuses a request with a tampered ${what} with 401 bad_mac`, async () => {
        const environ = await signedEnviron(signer(), basicRequest())
        change(environ)
        expect(await verifier().verify(environ)).toMatchObject(invalid(401, 'bad_mac'))
      })
    }

    it('refuses a request whose covered header was removed', async () => {
      const environ = await signedEnviron(signer(), basicRequest())
      delete environ.HTTP_X_FORWARDED_FOR
      const outcome = await verifier().verify(environ)
      expect(outcome).toMatchObject(invalid(401, 'malformed'))
      expect(outcome).toMatchObject({
        message: expect.stringContaining('"x-forwarded-for" is missing'),
      })
    })

    it('accepts a rewritten Host when expectedAuthority names what the signer signed (A5)', async () => {
      const environ = await signedEnviron(signer(), basicRequest())
      environ.HTTP_HOST = 'public.example:443'
      expect(await verifier().verify(environ)).toMatchObject(invalid(401, 'bad_mac'))
      const outcome = await verifier({ expectedAuthority: 'Backend.Internal:8080' }).verify(environ)
      expect(outcome.status).toBe('valid')
    })

    it('uses SERVER_NAME and SERVER_PORT when there is no Host', async () => {
      const environ = await signedEnviron(signer(), basicRequest())
      delete environ.HTTP_HOST
      expect(environ.SERVER_NAME).toBe('backend.internal')
      expect((await verifier().verify(environ)).status).toBe('valid')
    })

    it('still verifies with an unsigned extra protocol header, which is not reported as covered (A8)', async () => {
      const environ = await signedEnviron(signer(), basicRequest())
      environ.HTTP_X_WSGIPROXY_STR_1 = 'REMOTE_USER root'
      const outcome = await verifier().verify(environ)
      expect(outcome.status).toBe('valid')
      if (outcome.status !== 'valid') throw new Error('unreachable')
      expect(outcome.covered.has('x-wsgiproxy-str-1')).toBe(false)
      expect(outcome.covered.has('x-forwarded-for')).toBe(true)
    })

    it('refuses an altered Signature-Input (A9)', async () => {
      const environ = await signedEnviron(signer(), basicRequest())
      const input = environ.HTTP_SIGNATURE_INPUT ?? ''
      const alterations: Array<[(s: string) => string, string]> = [
        [(s) => s.replace(' "x-forwarded-for"', ''), 'bad_mac'],
        [(s) => s.replace(`created=${T}`, `created=${T + 1}`), 'bad_mac'],
        [(s) => s.replace(`expires=${T + 60}`, `expires=${T + 59}`), 'bad_mac'],
        [(s) => s.replace('tag="wsgiproxy"', 'tag="wsgiproxy2"'), 'malformed'],
      ]
      for (const [alter, reason] of alterations) {
        environ.HTTP_SIGNATURE_INPUT = alter(input)
        expect(environ.HTTP_SIGNATURE_INPUT).not.toBe(input)
        expect(await verifier().verify(environ)).toMatchObject(invalid(401, reason))
      }
    })

    it('accepts extra whitespace inside the inner list: the params are re-serialized (A10)', async () => {
      const environ = await signedEnviron(signer(), basicRequest())
      environ.HTTP_SIGNATURE_INPUT = (environ.HTTP_SIGNATURE_INPUT ?? '')
        .replace('("@method" "@authority"', '(  "@method"    "@authority"')
        .replace(';nonce', '; nonce')
      expect((await verifier().verify(environ)).status).toBe('valid')
    })

    it('refuses a truncated, empty, non-base64 or missing signature with 401, never throwing (A11)', async () => {
      const variants: Array<[(s: string) => string, string]> = [
        [(s) => s.replace(/:([A-Za-z0-9+/]{22})[^:]*:/, ':$1==:'), 'bad_mac'],
        [() => 'wsgiproxy=::', 'bad_mac'],
        [() => 'wsgiproxy=:!!!!:', 'malformed'],
        [() => 'wsgiproxy="not bytes"', 'malformed'],
        [() => 'other=:AAAA:', 'malformed'],
        [(s) => `${s};x=1`, 'malformed'],
      ]
      for (const [change, reason] of variants) {
        const environ = await craftedEnviron({ signature: change })
        expect(await verifier().verify(environ)).toMatchObject(invalid(401, reason))
      }
      const environ = await craftedEnviron()
      delete environ.HTTP_SIGNATURE
      expect(await verifier().verify(environ)).toMatchObject(invalid(401, 'malformed'))
    })

    it('refuses two members tagged "wsgiproxy" (A12)', async () => {
      const environ = await craftedEnviron()
      const input = environ.HTTP_SIGNATURE_INPUT ?? ''
      environ.HTTP_SIGNATURE_INPUT = `${input}, second=${input.slice('wsgiproxy='.length)}`
      environ.HTTP_SIGNATURE = `${environ.HTTP_SIGNATURE}, second=${(environ.HTTP_SIGNATURE ?? '').slice('wsgiproxy='.length)}`
      const outcome = await verifier().verify(environ)
      expect(outcome).toMatchObject(invalid(401, 'malformed'))
      expect(outcome).toMatchObject({ message: expect.stringContaining('2 members') })
    })

    it('accepts the wsgiproxy signature next to a foreign one', async () => {
      const environ = await craftedEnviron()
      environ.HTTP_SIGNATURE_INPUT = `sig1=("@method");created=1;keyid="x", ${environ.HTTP_SIGNATURE_INPUT}`
      environ.HTTP_SIGNATURE = `sig1=:AAAA:, ${environ.HTTP_SIGNATURE}`
      expect((await verifier().verify(environ)).status).toBe('valid')
    })

    it('refuses an unknown keyid with 401 unknown_key (A13)', async () => {
      const environ = await craftedEnviron({
        key: OTHER_KEY,
        parameters: basicParameters({ keyid: OTHER_KEY.id }),
      })
      expect(await verifier().verify(environ)).toMatchObject(invalid(401, 'unknown_key'))
      expect((await verifier({ keys: [KEY, OTHER_KEY] }).verify(environ)).status).toBe('valid')
    })

    it('refuses alg other than hmac-sha256 and accepts hmac-sha256 (A13)', async () => {
      for (const alg of ['rsa-pss-sha512', 'hmac-sha512', 'HMAC-SHA256']) {
        const environ = await craftedEnviron({ parameters: [...basicParameters(), ['alg', alg]] })
        expect(await verifier().verify(environ)).toMatchObject(invalid(401, 'malformed'))
      }
      const environ = await craftedEnviron({
        parameters: [...basicParameters(), ['alg', 'hmac-sha256']],
      })
      expect((await verifier().verify(environ)).status).toBe('valid')
    })

    it('refuses parameters outside the profile', async () => {
      const environ = await craftedEnviron({ parameters: [...basicParameters(), ['foo', 'bar']] })
      expect(await verifier().verify(environ)).toMatchObject(invalid(401, 'malformed'))
    })

    it('refuses components with parameters, unknown derived components and other fields (A14)', async () => {
      const variants: Array<(s: string) => string> = [
        (s) => s.replace('"x-forwarded-for"', '"x-forwarded-for";bs'),
        (s) => s.replace('"x-forwarded-for"', '"x-forwarded-for";sf'),
        (s) => s.replace('"@query"', '"@query";req'),
        (s) => s.replace('"x-forwarded-for"', '"@query-param";name="x"'),
        (s) => s.replace('"x-forwarded-for"', '"@foo"'),
        (s) => s.replace('"x-forwarded-for"', '"date"'),
        (s) => s.replace('"x-forwarded-for"', '"signature"'),
        (s) => s.replace('"x-forwarded-for"', '"X-Forwarded-For"'),
        (s) => s.replace('"x-forwarded-for"', '"x-wsgiproxy-str_0"'),
        (s) => s.replace('"x-forwarded-for"', 'x-forwarded-for'),
        (s) => s.replace('"x-forwarded-for"', '"@method"'),
      ]
      for (const change of variants) {
        const environ = await craftedEnviron({ input: change })
        expect(await verifier().verify(environ)).toMatchObject(invalid(401, 'coverage'))
      }
    })

    it('refuses a signature that does not cover all four derived components (A15)', async () => {
      for (const missing of ['@method', '@authority', '@path', '@query']) {
        const environ = await craftedEnviron({
          components: BASIC_COMPONENTS.filter((c) => c !== missing),
        })
        const outcome = await verifier().verify(environ)
        expect(outcome).toMatchObject(invalid(401, 'coverage'))
        expect(outcome).toMatchObject({ message: expect.stringContaining(missing) })
      }
    })

    it(`refuses more than ${MAX_COVERED_COMPONENTS} components (F3)`, async () => {
      const extra = Array.from({ length: 29 }, (_, i) => `x-wsgiproxy-str-${i}`)
      const environ = await craftedEnviron({
        input: (s) => s.replace('"x-forwarded-for"', extra.map((n) => `"${n}"`).join(' ')),
      })
      expect(await verifier().verify(environ)).toMatchObject(invalid(401, 'coverage'))
    })

    it('refuses a covered value with non-ASCII (A16)', async () => {
      const request = basicRequest()
      const url = new URL(request.url)
      const environ = await signedEnviron(signer(), request)
      // What a runtime hands over for a raw Latin-1 byte 0xE9 in a header line.
      const raw = receivedEnviron('POST', url, [['x-forwarded-for', '192.0.2.1\u00e9']], null)
      environ.HTTP_X_FORWARDED_FOR = raw.HTTP_X_FORWARDED_FOR
      expect(environ.HTTP_X_FORWARDED_FOR).toBe('192.0.2.1\u00e9')
      const outcome = await verifier().verify(environ)
      expect(outcome).toMatchObject(invalid(401, 'malformed'))
      expect(outcome).toMatchObject({ message: expect.stringContaining('not printable ASCII') })
    })

    it('refuses a forged MAC (A17)', async () => {
      const environ = await craftedEnviron({
        key: { id: KEY.id, secret: new Uint8Array(64).fill(1) },
      })
      expect(await verifier().verify(environ)).toMatchObject(invalid(401, 'bad_mac'))
    })
  })

  describe('parsing and caps', () => {
    it('refuses Signature or Signature-Input over 8 KiB with 431 before parsing', async () => {
      const environ = await signedEnviron(signer(), basicRequest())
      const long = `${environ.HTTP_SIGNATURE_INPUT}, ${'x'.repeat(8192)}`
      expect(await verifier().verify({ ...environ, HTTP_SIGNATURE_INPUT: long })).toMatchObject(
        invalid(431, 'too_large'),
      )
      expect(
        await verifier().verify({ ...environ, HTTP_SIGNATURE: `a=:${'A'.repeat(8192)}:` }),
      ).toMatchObject(invalid(431, 'too_large'))
    })

    it('refuses malformed Structured Fields with 401 malformed', async () => {
      const environ = await signedEnviron(signer(), basicRequest())
      const inputs = [
        'wsgiproxy=("@method" "@authority"',
        'wsgiproxy=("@method");created=1,',
        'Wsgiproxy=()',
        'wsgiproxy=("@méthod")',
        'wsgiproxy=();tag="wsgiproxy";;',
      ]
      for (const input of inputs) {
        expect(await verifier().verify({ ...environ, HTTP_SIGNATURE_INPUT: input })).toMatchObject(
          invalid(401, 'malformed'),
        )
      }
      expect(
        await verifier().verify({ ...environ, HTTP_SIGNATURE: 'wsgiproxy=:abc' }),
      ).toMatchObject(invalid(401, 'malformed'))
      expect(
        await verifier().verify({ ...environ, HTTP_SIGNATURE: 'keyId="k",signature="x"' }),
      ).toMatchObject(invalid(401, 'malformed'))
    })

    it('refuses a tagged member that is not an inner list', async () => {
      const environ = await craftedEnviron({ input: () => 'wsgiproxy=?1;tag="wsgiproxy"' })
      expect(await verifier().verify(environ)).toMatchObject(invalid(401, 'malformed'))
    })

    it('never throws: an unexpected failure becomes 401 malformed', async () => {
      const environ = await signedEnviron(signer(), basicRequest())
      const broken = new Proxy(environ, {
        get(target, key) {
          if (key === 'REQUEST_METHOD') throw new Error('boom')
          return Reflect.get(target, key)
        },
      })
      const outcome = await verifier().verify(broken)
      expect(outcome).toMatchObject(invalid(401, 'malformed'))
      expect(outcome).toMatchObject({ message: expect.stringContaining('boom') })
    })
  })

  describe('freshness', () => {
    it('refuses a signature created 61 s ago with skew 0 and accepts one 60 s old', async () => {
      expect(await verifyAt(T + 61, { clockSkew: 0 })).toMatchObject(invalid(401, 'stale'))
      expect((await verifyAt(T + 60, { clockSkew: 0 })).status).toBe('valid')
    })

    it('refuses created older than maxAge + skew (B1) and accepts the inclusive bound (B2)', async () => {
      expect(await verifyAt(T + 91)).toMatchObject(invalid(401, 'stale'))
      expect((await verifyAt(T + 90)).status).toBe('valid')
      expect((await verifyAt(T + 90_999 / 1000)).status).toBe('valid')
    })

    it('refuses created 31 s in the future with the default skew (B3) and accepts 30 s', async () => {
      expect(await verifyAt(T - 31)).toMatchObject(invalid(401, 'future'))
      expect((await verifyAt(T - 30)).status).toBe('valid')
    })

    it('refuses an expired signature, expires before created and a window over maxAge (B4)', async () => {
      const expired = await craftedEnviron({ parameters: basicParameters({ expires: T + 10 }) })
      expect(await verifier({ clock: () => (T + 41) * 1000 }).verify(expired)).toMatchObject(
        invalid(401, 'expired'),
      )
      expect((await verifier({ clock: () => (T + 40) * 1000 }).verify(expired)).status).toBe(
        'valid',
      )
      const backwards = await craftedEnviron({ parameters: basicParameters({ expires: T - 1 }) })
      const outcome = await verifier().verify(backwards)
      expect(outcome).toMatchObject(invalid(401, 'expired'))
      expect(outcome).toMatchObject({ message: expect.stringContaining('before created') })
      const long = await craftedEnviron({ parameters: basicParameters({ expires: T + 61 }) })
      expect(await verifier().verify(long)).toMatchObject(invalid(401, 'expired'))
    })

    it('refuses created or expires missing, decimal, a string or negative (B5)', async () => {
      const variants: Array<Record<string, string | number | undefined>> = [
        { created: undefined },
        { expires: undefined },
        { created: String(T) },
        { created: -1 },
        { expires: -1 },
      ]
      for (const overrides of variants) {
        const environ = await craftedEnviron({ parameters: basicParameters(overrides) })
        expect(await verifier().verify(environ)).toMatchObject(invalid(401, 'malformed'))
      }
      const decimal = await craftedEnviron({
        input: (s) => s.replace(`created=${T}`, 'created=1.5'),
      })
      expect(await verifier().verify(decimal)).toMatchObject(invalid(401, 'malformed'))
    })

    it('checks the window against the verifier maxAge, not the signer one', async () => {
      const environ = await signedEnviron(signer({ maxAge: 300_000 }), basicRequest())
      expect(await verifier().verify(environ)).toMatchObject(invalid(401, 'expired'))
      const outcome = await verifier({ maxAge: 300_000, clock: () => (T + 320) * 1000 }).verify(
        environ,
      )
      expect(outcome.status).toBe('valid')
    })
  })

  describe('replay', () => {
    it('accepts a request once and refuses the replay with 401 replay (C1)', async () => {
      const v = verifier()
      const environ = await signedEnviron(signer(), basicRequest())
      expect((await v.verify(environ)).status).toBe('valid')
      expect(await v.verify(environ)).toMatchObject(invalid(401, 'replay'))
    })

    it('records keyid + NUL + nonce until the signature can no longer pass the time checks', async () => {
      const calls: Array<[string, number]> = []
      const store: ReplayStore = {
        async checkAndSet(key, ttlMs) {
          calls.push([key, ttlMs])
          return 'fresh'
        },
      }
      const environ = await craftedEnviron()
      expect(
        (await verifier({ replayStore: store, clockSkew: 10_000 }).verify(environ)).status,
      ).toBe('valid')
      // Verified at `created`: acceptable through created + maxAge + skew = +70 s, so kept 71 s.
      expect(calls).toEqual([['test-shared-secret\u0000dGVzdC1ub25jZS0wMDAx', 71_000]])
    })

    it('refuses a replay at the very end of the window when the verifier clock lags', async () => {
      let now = (T - 30) * 1000
      const v = createVerifier({ keys: [KEY], clock: () => now })
      const environ = await signedEnviron(signer(), basicRequest())
      expect((await v.verify(environ)).status).toBe('valid')
      now = (T + 90) * 1000 + 500
      expect((await v.verify(environ)).status).toBe('invalid')
    })

    it('uses a MemoryReplayStore by default', async () => {
      const v = createVerifier({ keys: [KEY], clock: () => T * 1000 })
      const environ = await signedEnviron(signer(), basicRequest())
      expect((await v.verify(environ)).status).toBe('valid')
      expect(await v.verify(environ)).toMatchObject(invalid(401, 'replay'))
    })

    it('refuses a missing, short or badly formed nonce (C3)', async () => {
      for (const nonce of [
        undefined,
        'abcdefgh',
        'abcdefghijklmnop"',
        'abcdefgh.ijklmnop',
        'a'.repeat(65),
      ]) {
        const environ = await craftedEnviron({ parameters: basicParameters({ nonce }) })
        expect(await verifier().verify(environ)).toMatchObject(invalid(401, 'malformed'))
      }
    })

    it('answers 503 store_full when the store is full (C4)', async () => {
      const full: ReplayStore = { checkAndSet: async (): Promise<ReplayCheck> => 'full' }
      const environ = await signedEnviron(signer(), basicRequest())
      expect(await verifier({ replayStore: full }).verify(environ)).toMatchObject(
        invalid(503, 'store_full'),
      )
    })

    it('answers 503 replay_store_unavailable when the store is unreachable, fails or answers nonsense (C4)', async () => {
      const unavailable: ReplayStore = {
        checkAndSet: async (): Promise<ReplayCheck> => 'unavailable',
      }
      const failing: ReplayStore = {
        checkAndSet: async () => {
          throw new Error('redis down')
        },
      }
      const odd = { checkAndSet: async () => 'maybe' } as unknown as ReplayStore
      const messages: string[] = []
      for (const replayStore of [unavailable, failing, odd]) {
        const environ = await signedEnviron(signer(), basicRequest())
        const outcome = await verifier({ replayStore }).verify(environ)
        expect(outcome).toMatchObject(invalid(503, 'replay_store_unavailable'))
        if (outcome.status === 'invalid') messages.push(outcome.message)
      }
      expect(messages).toEqual([
        'the replay store cannot be reached',
        'the replay store failed: redis down',
        'the replay store gave an answer that is not a ReplayCheck ("maybe")',
      ])
    })

    it('does not record the nonce of a request whose MAC fails (C5)', async () => {
      const v = verifier()
      const forged = await craftedEnviron({
        key: { id: KEY.id, secret: new Uint8Array(64).fill(1) },
      })
      expect(await v.verify(forged)).toMatchObject(invalid(401, 'bad_mac'))
      const genuine = await craftedEnviron()
      expect(genuine.HTTP_SIGNATURE_INPUT).toBe(forged.HTTP_SIGNATURE_INPUT)
      expect((await v.verify(genuine)).status).toBe('valid')
    })

    it('refuses a replay to another replica sharing the store (C6)', async () => {
      const shared = new MemoryReplayStore({ clock: () => T * 1000 })
      const environ = await signedEnviron(signer(), basicRequest())
      expect((await verifier({ replayStore: shared }).verify(environ)).status).toBe('valid')
      expect(await verifier({ replayStore: shared }).verify(environ)).toMatchObject(
        invalid(401, 'replay'),
      )
    })
  })

  describe('keys', () => {
    it('accepts both keys during a rotation and refuses the old one once removed (H3)', async () => {
      let keys: readonly SigningKey[] = [OTHER_KEY, KEY]
      const v = verifier({ keys: () => keys })
      const withOld = await signedEnviron(signer(), basicRequest())
      const withNew = await signedEnviron(signer({ keys: [OTHER_KEY] }), basicRequest())
      expect((await v.verify(withNew)).status).toBe('valid')
      expect((await v.verify(withOld)).status).toBe('valid')
      keys = [OTHER_KEY]
      expect(await v.verify(withOld)).toMatchObject(invalid(401, 'unknown_key'))
    })

    it('refuses every request while a key function returns an invalid list', async () => {
      let keys: readonly SigningKey[] = [KEY]
      const v = verifier({ keys: () => keys })
      keys = [{ id: 'short', secret: new Uint8Array(8) }]
      const outcome = await v.verify(await signedEnviron(signer(), basicRequest()))
      expect(outcome).toMatchObject(invalid(401, 'unknown_key'))
      expect(outcome).toMatchObject({ message: expect.stringContaining('key set is invalid') })
    })
  })

  describe('body digest', () => {
    it('replaces the body with the buffered bytes after checking the digest', async () => {
      const environ = await signedEnviron(signer({ bodyDigest: true }), basicRequest())
      const outcome = await verifier({ bodyDigest: true }).verify(environ)
      expect(outcome.status).toBe('valid')
      if (outcome.status !== 'valid') throw new Error('unreachable')
      expect(await collect(outcome.body)).toBe('hello')
    })

    it('accepts a GET without a body and gives a null body back', async () => {
      const environ = await signedEnviron(signer({ bodyDigest: true }), {
        method: 'GET',
        url: 'http://b.test/',
        headers: [],
      })
      expect(environ['wsgi.input']).toBeNull()
      expect(await verifier({ bodyDigest: true }).verify(environ)).toMatchObject({
        status: 'valid',
        body: null,
      })
    })

    it('refuses a swapped body with 400 digest although the signature verifies (F6)', async () => {
      const environ = await signedEnviron(signer({ bodyDigest: true }), basicRequest())
      environ['wsgi.input'] = chunks('jello')
      expect(await verifier({ bodyDigest: true }).verify(environ)).toMatchObject(
        invalid(400, 'digest'),
      )
      const added = await signedEnviron(signer({ bodyDigest: true }), {
        method: 'POST',
        url: 'http://b.test/',
        headers: [],
        body: '',
      })
      added['wsgi.input'] = chunks('x')
      expect(await verifier({ bodyDigest: true }).verify(added)).toMatchObject(
        invalid(400, 'digest'),
      )
    })

    it('refuses a body over the cap with 413 too_large (F5)', async () => {
      const environ = await signedEnviron(signer({ bodyDigest: true }), basicRequest())
      expect(await verifier({ bodyDigest: { maxBytes: 4 } }).verify(environ)).toMatchObject(
        invalid(413, 'too_large'),
      )
      const streamed = await signedEnviron(signer({ bodyDigest: true }), basicRequest())
      delete streamed.CONTENT_LENGTH
      expect(await verifier({ bodyDigest: { maxBytes: 4 } }).verify(streamed)).toMatchObject(
        invalid(413, 'too_large'),
      )
    })

    it('requires content-digest to be covered', async () => {
      const environ = await signedEnviron(signer(), basicRequest())
      const outcome = await verifier({ bodyDigest: true }).verify(environ)
      expect(outcome).toMatchObject(invalid(401, 'coverage'))
      expect(outcome).toMatchObject({ message: expect.stringContaining('content-digest') })
    })

    it('accepts sha-512 and refuses md5 or sha only (F7)', async () => {
      const body = encoder.encode('hello')
      const sha512 = toBase64(new Uint8Array(await crypto.subtle.digest('SHA-512', body)))
      for (const digest of [
        `sha-512=:${sha512}:`,
        `md5=:XUFAKrxLKna5cZ2REBfFkg==:, sha-512=:${sha512}:`,
      ]) {
        expect((await digestOutcome(digest)).status).toBe('valid')
      }
      for (const digest of [
        'md5=:XUFAKrxLKna5cZ2REBfFkg==:',
        'sha=:qvTGHdzF6KLavt4PO0gs2a6pQ00=:',
      ]) {
        expect(await digestOutcome(digest)).toMatchObject(invalid(401, 'digest'))
      }
    })

    it('refuses a malformed Content-Digest or a non-byte-sequence member with 400 digest', async () => {
      expect(await digestOutcome('sha-256=:abc')).toMatchObject(invalid(400, 'digest'))
      expect(await digestOutcome('sha-256="abc"')).toMatchObject(invalid(400, 'digest'))
    })
  })
})

/** Verifies, with digests required, a hand-signed request whose covered Content-Digest is `digest`. */
async function digestOutcome(digest: string): Promise<VerifyOutcome> {
  const request = basicRequest()
  request.headers.push(['content-digest', digest])
  const url = new URL(request.url)
  const environ = receivedEnviron(request.method, url, request.headers, toBytes(request.body ?? ''))
  const fields = new Map(request.headers)
  const components = [...BASIC_COMPONENTS, 'content-digest']
  const parameters = basicParameters()
  const view: MessageView = {
    method: request.method,
    authority: url.host,
    path: url.pathname,
    query: `?${url.search.slice(1)}`,
    field: (name) => fields.get(name),
  }
  const signature = await signBase(
    signatureBase(view, components, parameters),
    await importHmacKey(KEY.secret),
  )
  environ.HTTP_SIGNATURE_INPUT = signatureInputValue('wsgiproxy', components, parameters)
  environ.HTTP_SIGNATURE = signatureValue('wsgiproxy', signature)
  return verifier({ bodyDigest: true }).verify(environ)
}

/** Verifies a freshly signed request (created = T) at `seconds`. */
async function verifyAt(
  seconds: number,
  options: Partial<VerifierOptions> = {},
): Promise<VerifyOutcome> {
  const environ = await signedEnviron(signer(), basicRequest())
  return verifier({ clock: () => seconds * 1000, ...options }).verify(environ)
}

const hmacSign = async (data: Buffer): Promise<Buffer> =>
  createHmac('sha256', Buffer.from(RFC_SECRET)).update(data).digest()
const keyLookup = async (params: { keyid?: string }) =>
  params.keyid === KEY.id
    ? {
        id: KEY.id,
        algs: ['hmac-sha256'],
        verify: async (data: Buffer, signature: Buffer) =>
          createHmac('sha256', Buffer.from(RFC_SECRET)).update(data).digest().equals(signature),
      }
    : null

function record(headers: Array<[string, string]>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, value] of headers) {
    const lower = name.toLowerCase()
    out[lower] = out[lower] === undefined ? value : `${out[lower]}, ${value}`
  }
  return out
}

describe('interop with http-message-signatures', () => {
  it('verifies our signatures with theirs', async () => {
    const s = createSigner({ keys: [KEY], bodyDigest: true })
    const request = vectorRequest()
    const url = new URL(request.url)
    const signed = await s.sign({
      method: request.method,
      url,
      headers: request.headers,
      body: chunks('{"hello": "world"}'),
    })
    const result = await httpbis.verifyMessage(
      {
        keyLookup,
        requiredFields: ['@method', '@authority', '@path', '@query', 'x-forwarded-for'],
      },
      { method: request.method, url: request.url, headers: record(signed.headers) },
    )
    // verifyMessage answers null when it finds no signature: only `true` is success.
    expect(result).toBe(true)
    const tampered = record(signed.headers)
    tampered['x-forwarded-for'] = '10.0.0.1'
    const tamperedResult = await httpbis
      .verifyMessage({ keyLookup }, { method: request.method, url: request.url, headers: tampered })
      .catch(() => false)
    expect(tamperedResult).not.toBe(true)
  })

  for (const withAlg of [false, true]) {
    it(`verifies their signatures with ours${withAlg ? ' (with alg="hmac-sha256")' : ''}`, async () => {
      const request = vectorRequest()
      const fields = [
        '@method',
        '@authority',
        '@path',
        '@query',
        'content-type',
        'x-forwarded-for',
        'x-forwarded-server',
        'x-wsgiproxy-str-0',
      ]
      const signed = await httpbis.signMessage(
        {
          key: { id: KEY.id, alg: 'hmac-sha256', sign: hmacSign },
          name: 'wsgiproxy',
          fields,
          params: withAlg
            ? ['created', 'expires', 'nonce', 'keyid', 'alg', 'tag']
            : ['created', 'expires', 'nonce', 'keyid', 'tag'],
          paramValues: {
            created: new Date(T * 1000),
            expires: new Date((T + 60) * 1000),
            nonce: 'dGVzdC1ub25jZS0wMDAx',
            tag: 'wsgiproxy',
          },
        },
        { method: request.method, url: request.url, headers: record(request.headers) },
      )
      const url = new URL(request.url)
      const environ = receivedEnviron(
        request.method,
        url,
        Object.entries(signed.headers).map(([n, v]) => [n, String(v)]),
        encoder.encode('{"hello": "world"}'),
      )
      expect(environ.HTTP_SIGNATURE_INPUT).toContain(withAlg ? ';alg="hmac-sha256";' : ';keyid=')
      const outcome = await verifier().verify(environ)
      expect(outcome).toMatchObject({ status: 'valid', keyid: KEY.id })
      environ.PATH_INFO = '/app/admin'
      environ['wsgiproxy.raw_path'] = '/app/admin'
      expect(await verifier().verify(environ)).toMatchObject(invalid(401, 'bad_mac'))
    })
  }
})

interface GeneratedRequest {
  method: string
  segments: string[]
  query: string
  headers: Array<[string, string]>
}

describe('sign/verify properties', () => {
  const token = fc.stringMatching(/^[A-Za-z0-9]{1,8}$/)
  const printable = fc.stringMatching(/^[\x21-\x7E](?:[\x20-\x7E]{0,30}[\x21-\x7E])?$/)
  const requestArb: fc.Arbitrary<GeneratedRequest> = fc.record({
    method: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'PROPFIND'),
    segments: fc.array(fc.stringMatching(/^[A-Za-z0-9_~-]{1,8}$/), { maxLength: 4 }),
    query: fc.stringMatching(/^[A-Za-z0-9=&_-]{0,16}$/),
    headers: fc.uniqueArray(
      fc.tuple(
        fc.constantFrom(
          'x-forwarded-for',
          'x-forwarded-server',
          'x-forwarded-scheme',
          'x-traversal-path',
          'x-wsgiproxy-version',
          'x-wsgiproxy-str-0',
          'x-wsgiproxy-json-1',
          'forwarded',
          'content-type',
        ),
        printable,
      ),
      { selector: ([name]) => name, maxLength: 5 },
    ),
  })

  function toTest(r: GeneratedRequest): TestRequest {
    return {
      method: r.method,
      url: `http://backend.test:8080/${r.segments.join('/')}${r.query === '' ? '' : `?${r.query}`}`,
      headers: r.headers,
      body: r.method === 'GET' || r.method === 'OPTIONS' ? null : 'body',
    }
  }

  it('verify(sign(request)) is valid for arbitrary requests', async () => {
    const s = signer()
    const v = verifier()
    await fc.assert(
      fc.asyncProperty(requestArb, async (r) => {
        const outcome = await v.verify(await signedEnviron(s, toTest(r)))
        expect(outcome.status).toBe('valid')
      }),
      { numRuns: 150 },
    )
  })

  it('changing one byte of a covered component makes the signature invalid', async () => {
    const s = signer()
    const v = verifier()
    await fc.assert(
      fc.asyncProperty(requestArb, fc.nat(), fc.nat(), token, async (r, which, at, replacement) => {
        const environ = await signedEnviron(s, toTest(r))
        const targets: Array<[string, string, (value: string) => void]> = [
          ['method', environ.REQUEST_METHOD, (value) => (environ.REQUEST_METHOD = value)],
          [
            'path',
            environ.PATH_INFO,
            (value) => {
              environ.PATH_INFO = value
              delete environ['wsgiproxy.raw_path']
            },
          ],
          ['query', environ.QUERY_STRING, (value) => (environ.QUERY_STRING = value)],
        ]
        for (const [name] of r.headers) {
          const key =
            name === 'content-type'
              ? 'CONTENT_TYPE'
              : `HTTP_${name.toUpperCase().replaceAll('-', '_')}`
          targets.push([name, String(environ[key]), (value) => (environ[key] = value)])
        }
        const candidates = targets.filter(([, value]) => value.length > 0)
        const [, value, set] = candidates[which % candidates.length] as (typeof targets)[number]
        const i = at % value.length
        // A different character of the same kind keeps the value well-formed but changes one byte.
        const char = [...replacement].find((c) => c !== value[i]) ?? (value[i] === 'Z' ? 'Y' : 'Z')
        set(value.slice(0, i) + char + value.slice(i + 1))
        const outcome = await v.verify(environ)
        expect(outcome).toMatchObject(invalid(401, 'bad_mac'))
      }),
      { numRuns: 150 },
    )
  })
})
