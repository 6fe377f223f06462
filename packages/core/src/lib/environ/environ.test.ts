import * as fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { ToEnvironOptions, ToRequestOptions } from '@wsgiproxy/core'
import { WsgiProxyError, environUrl, toEnviron, toRequest } from '@wsgiproxy/core'
import { environHeaders, formatAuthority, unquotePath } from '@wsgiproxy/core/adapter'
import { makeEnviron } from '@wsgiproxy/test-kit/environ-fixture'
import { hasDotSegment } from './environ.ts'

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** Every chunk of a body, concatenated. */
async function readBytes(body: AsyncIterable<Uint8Array> | null): Promise<Uint8Array> {
  if (body === null) return new Uint8Array()
  const chunks: Uint8Array[] = []
  for await (const chunk of body) chunks.push(chunk)
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0))
  let offset = 0
  for (const chunk of chunks) {
    out.set(chunk, offset)
    offset += chunk.byteLength
  }
  return out
}

/** An async iterable of the given text chunks (not a ReadableStream). */
function chunked(...chunks: string[]): AsyncIterable<Uint8Array> {
  return {
    async *[Symbol.asyncIterator]() {
      for (const chunk of chunks) yield encoder.encode(chunk)
    },
  }
}

/** The error a function throws, for checking its fields. */
function thrown(run: () => unknown): unknown {
  try {
    run()
  } catch (error) {
    return error
  }
  throw new Error('expected the call to throw')
}

/** Request headers with `count` distinct fields. */
function manyHeaders(count: number): Array<[string, string]> {
  return Array.from({ length: count }, (_, i): [string, string] => [`x-h${i}`, String(i)])
}

describe('toEnviron', () => {
  it('does not ask a GET or HEAD request for its body, which some servers build on demand', () => {
    // @hono/node-server makes a whole undici Request the first time `body` is read; a GET or
    // HEAD Request has none by the Fetch standard, so the environ does not ask.
    const reads: string[] = []
    const watched = (method: string, body?: string): Request => {
      const request = new Request('http://front.test/p', { method, ...(body ? { body } : {}) })
      const real = request.body
      Object.defineProperty(request, 'body', {
        get: () => {
          reads.push(method)
          return real
        },
      })
      return request
    }
    expect(toEnviron(watched('GET'))['wsgi.input']).toBeNull()
    expect(toEnviron(watched('HEAD'))['wsgi.input']).toBeNull()
    expect(toEnviron(watched('POST', 'x'))['wsgi.input']).not.toBeNull()
    expect(reads).toEqual(['POST'])
  })

  it('maps method, path, query, server and scheme', () => {
    const env = toEnviron(new Request('https://example.com:8443/a/b?x=1&y', { method: 'DELETE' }))
    expect(env).toMatchObject({
      REQUEST_METHOD: 'DELETE',
      SCRIPT_NAME: '',
      PATH_INFO: '/a/b',
      QUERY_STRING: 'x=1&y',
      SERVER_NAME: 'example.com',
      SERVER_PORT: '8443',
      SERVER_PROTOCOL: 'HTTP/1.1',
      'wsgi.url_scheme': 'https',
      'wsgi.input': null,
    })
  })

  it('percent-decodes PATH_INFO, including %2F, %25, non-ASCII and empty segments', () => {
    const env = toEnviron(new Request('http://example.com/a%2Fb/%25//%E2%82%AC/%c3%bc/'))
    expect(env.PATH_INFO).toBe('/a/b/%//€/ü/')
  })

  it('keeps the path as received in wsgiproxy.raw_path', () => {
    const env = toEnviron(new Request('http://example.com/a%2Fb/%25//%E2%82%AC'))
    expect(env['wsgiproxy.raw_path']).toBe('/a%2Fb/%25//%E2%82%AC')
  })

  it.each([
    ['/api', 'http://example.com/api/users/1', '/api', '/users/1'],
    ['/api', 'http://example.com/api', '/api', ''],
    ['/api', 'http://example.com/api/', '/api', '/'],
    ['/api/', 'http://example.com/api/x', '/api', '/x'],
    ['/', 'http://example.com/x', '', '/x'],
    ['', 'http://example.com/x', '', '/x'],
    ['/a/b', 'http://example.com/a/b/c%2Fd', '/a/b', '/c/d'],
    ['/ü', 'http://example.com/%C3%BC/x', '/ü', '/x'],
    ['/a b', 'http://example.com/a%20b/c', '/a b', '/c'],
  ])('splits with scriptName %j: %s → %j + %j', (scriptName, url, script, info) => {
    const env = toEnviron(new Request(url), { scriptName })
    expect([env.SCRIPT_NAME, env.PATH_INFO]).toEqual([script, info])
  })

  it.each(['http://example.com/apix', 'http://example.com/ap', 'http://example.com/other/api'])(
    'throws NOT_FOUND for %s outside scriptName "/api"',
    (url) => {
      const error = thrown(() => toEnviron(new Request(url), { scriptName: '/api' }))
      expect(error).toBeInstanceOf(WsgiProxyError)
      expect(error).toMatchObject({ code: 'NOT_FOUND', status: 404 })
    },
  )

  it('keeps the query string raw', () => {
    const env = toEnviron(new Request('http://example.com/?a=%20b&c=d%2Fe&&x+y=%25'))
    expect(env.QUERY_STRING).toBe('a=%20b&c=d%2Fe&&x+y=%25')
  })

  it('maps headers to HTTP_* keys and joins repeats with ", "', () => {
    const env = toEnviron(
      new Request('http://example.com/', {
        headers: [
          ['Accept', 'text/html'],
          ['accept', 'application/json'],
          ['X-Custom-Thing', 'v'],
        ],
      }),
    )
    expect(env.HTTP_ACCEPT).toBe('text/html, application/json')
    expect(env.HTTP_X_CUSTOM_THING).toBe('v')
  })

  it('joins repeated set-cookie lines, which Headers keeps separate', () => {
    const env = toEnviron(
      new Request('http://example.com/', {
        headers: [
          ['set-cookie', 'a=1'],
          ['set-cookie', 'b=2'],
        ],
      }),
    )
    expect(env.HTTP_SET_COOKIE).toBe('a=1, b=2')
  })

  it('sets CONTENT_TYPE and CONTENT_LENGTH, not as HTTP_* keys', () => {
    const env = toEnviron(
      new Request('http://example.com/', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': '2' },
        body: '{}',
      }),
    )
    expect(env.CONTENT_TYPE).toBe('application/json')
    expect(env.CONTENT_LENGTH).toBe('2')
    expect(env).not.toHaveProperty('HTTP_CONTENT_TYPE')
    expect(env).not.toHaveProperty('HTTP_CONTENT_LENGTH')
  })

  it('drops header names that contain "_"', () => {
    const env = toEnviron(
      new Request('http://example.com/', { headers: { x_forwarded_for: '10.0.0.1', 'x-a': '1' } }),
    )
    expect(env).not.toHaveProperty('HTTP_X_FORWARDED_FOR')
    expect(env.HTTP_X_A).toBe('1')
  })

  it('does not let an "_" name overwrite the "-" name it collides with', () => {
    const env = toEnviron(
      new Request('http://example.com/', { headers: { 'x-user': 'alice', x_user: 'admin' } }),
    )
    expect(env.HTTP_X_USER).toBe('alice')
  })

  it.each([
    ['http://example.com/', undefined, 'example.com', '80'],
    ['https://example.com/', undefined, 'example.com', '443'],
    ['http://example.com:8080/', undefined, 'example.com', '8080'],
    ['http://[::1]:3000/', undefined, '::1', '3000'],
    ['https://[2001:db8::1]/', undefined, '2001:db8::1', '443'],
    ['http://example.com/', 'other.test:81', 'other.test', '81'],
    ['http://example.com/', 'other.test', 'other.test', '80'],
    ['https://example.com/', 'other.test', 'other.test', '443'],
    ['http://example.com/', '[::1]:8443', '::1', '8443'],
    ['http://example.com/', '[fe80::1]', 'fe80::1', '80'],
    ['http://example.com/', '192.0.2.1:8000', '192.0.2.1', '8000'],
  ])('finds SERVER_NAME and SERVER_PORT for %s with Host %j', (url, host, name, port) => {
    const init: RequestInit = host === undefined ? {} : { headers: { host } }
    const env = toEnviron(new Request(url, init))
    expect([env.SERVER_NAME, env.SERVER_PORT]).toEqual([name, port])
  })

  it('keeps the Host header as HTTP_HOST', () => {
    const env = toEnviron(new Request('http://example.com/', { headers: { host: '[::1]:8443' } }))
    expect(env.HTTP_HOST).toBe('[::1]:8443')
  })

  it('sets REMOTE_ADDR from the remoteAddr option and leaves it out otherwise', () => {
    const request = new Request('http://example.com/')
    expect(toEnviron(request, { remoteAddr: '2001:db8::7' }).REMOTE_ADDR).toBe('2001:db8::7')
    expect(toEnviron(request)).not.toHaveProperty('REMOTE_ADDR')
  })

  it('streams the request body as wsgi.input', async () => {
    const env = toEnviron(new Request('http://example.com/', { method: 'PUT', body: 'hello' }))
    expect(decoder.decode(await readBytes(env['wsgi.input']))).toBe('hello')
  })

  it('uses the request signal unless one is given', () => {
    const request = new Request('http://example.com/')
    expect(toEnviron(request)['wsgiproxy.signal']).toBe(request.signal)
    const signal = new AbortController().signal
    expect(toEnviron(request, { signal })['wsgiproxy.signal']).toBe(signal)
  })

  it('accepts 100 header fields by default', () => {
    const env = toEnviron(new Request('http://example.com/', { headers: manyHeaders(100) }))
    expect(env.HTTP_X_H99).toBe('99')
  })

  it('throws TOO_MANY_HEADERS above 100 header fields by default', () => {
    const error = thrown(() =>
      toEnviron(new Request('http://example.com/', { headers: manyHeaders(101) })),
    )
    expect(error).toBeInstanceOf(WsgiProxyError)
    expect(error).toMatchObject({ code: 'TOO_MANY_HEADERS', status: 431 })
  })

  it('throws TOO_MANY_HEADERS above the maxHeaders option', () => {
    const request = new Request('http://example.com/', { headers: manyHeaders(3) })
    expect(toEnviron(request, { maxHeaders: 3 }).HTTP_X_H2).toBe('2')
    expect(thrown(() => toEnviron(request, { maxHeaders: 2 }))).toMatchObject({
      code: 'TOO_MANY_HEADERS',
    })
  })

  it.each([
    ['scriptName', { scriptName: 'api' }],
    ['scriptName', { scriptName: 1 }],
    ['remoteAddr', { remoteAddr: 127 }],
    ['signal', { signal: 'abort' }],
    ['maxHeaders', { maxHeaders: 0 }],
    ['maxHeaders', { maxHeaders: 2.5 }],
    ['remoteaddr', { remoteaddr: '10.0.0.1' }],
  ])('throws INVALID_OPTIONS naming %s', (name, options) => {
    const request = new Request('http://example.com/api')
    const error = thrown(() => toEnviron(request, options as unknown as ToEnvironOptions))
    expect(error).toBeInstanceOf(WsgiProxyError)
    expect(error).toMatchObject({ code: 'INVALID_OPTIONS' })
    expect((error as Error).message).toContain(name)
  })
})

describe('toRequest', () => {
  it('builds the URL from the scheme, HTTP_HOST, path and query', () => {
    const request = toRequest(
      makeEnviron({
        'wsgi.url_scheme': 'https',
        HTTP_HOST: 'example.com:8443',
        SCRIPT_NAME: '/api',
        PATH_INFO: '/users/1',
        QUERY_STRING: 'a=%20&b',
      }),
    )
    expect(request.url).toBe('https://example.com:8443/api/users/1?a=%20&b')
  })

  it.each([
    ['http', 'example.com', '80', 'http://example.com/'],
    ['http', 'example.com', '8080', 'http://example.com:8080/'],
    ['https', 'example.com', '443', 'https://example.com/'],
    ['https', 'example.com', '80', 'https://example.com:80/'],
    ['http', '::1', '3000', 'http://[::1]:3000/'],
    ['https', '2001:db8::1', '443', 'https://[2001:db8::1]/'],
  ] as const)(
    'uses SERVER_NAME and SERVER_PORT without HTTP_HOST (%s %s %s)',
    (scheme, name, port, url) => {
      const request = toRequest(
        makeEnviron({ 'wsgi.url_scheme': scheme, SERVER_NAME: name, SERVER_PORT: port }),
      )
      expect(request.url).toBe(url)
    },
  )

  it('quotes a decoded path that has no raw path', () => {
    const request = toRequest(makeEnviron({ SCRIPT_NAME: '/a b', PATH_INFO: '/ü/100%/x?' }))
    expect(new URL(request.url).pathname).toBe('/a%20b/%C3%BC/100%25/x%3F')
  })

  it('uses "/" when SCRIPT_NAME and PATH_INFO are empty', () => {
    expect(toRequest(makeEnviron({ PATH_INFO: '' })).url).toBe('http://example.com/')
  })

  it('sends HTTP_* keys, CONTENT_TYPE and CONTENT_LENGTH as headers', () => {
    const request = toRequest(
      makeEnviron({
        REQUEST_METHOD: 'POST',
        HTTP_X_CUSTOM_THING: 'v',
        HTTP_ACCEPT: 'a, b',
        CONTENT_TYPE: 'text/plain',
        CONTENT_LENGTH: '5',
        'wsgi.input': chunked('hello'),
      }),
    )
    expect([...request.headers]).toEqual([
      ['accept', 'a, b'],
      ['content-length', '5'],
      ['content-type', 'text/plain'],
      ['x-custom-thing', 'v'],
    ])
  })

  it('streams an async-iterable wsgi.input as the body', async () => {
    const request = toRequest(
      makeEnviron({ REQUEST_METHOD: 'POST', 'wsgi.input': chunked('he', 'll', 'o') }),
    )
    expect(await request.text()).toBe('hello')
  })

  it.each(['GET', 'HEAD'])('sends no body for %s even when wsgi.input is set', (method) => {
    const request = toRequest(makeEnviron({ REQUEST_METHOD: method, 'wsgi.input': chunked('x') }))
    expect(request.method).toBe(method)
    expect(request.body).toBeNull()
  })

  it('follows wsgiproxy.signal, or the signal option when given', () => {
    const fromEnviron = new AbortController()
    const fromOption = new AbortController()
    const env = makeEnviron({ 'wsgiproxy.signal': fromEnviron.signal })
    const first = toRequest(env)
    const second = toRequest(env, { signal: fromOption.signal })
    fromOption.abort()
    expect(first.signal.aborted).toBe(false)
    expect(second.signal.aborted).toBe(true)
    fromEnviron.abort()
    expect(first.signal.aborted).toBe(true)
  })

  it.each([
    ['an invalid method', { REQUEST_METHOD: 'GET POST' }],
    ['an invalid header value', { HTTP_X_A: 'a\r\nb' }],
    ['an invalid host', { HTTP_HOST: 'exa mple.com' }],
  ])('throws BAD_REQUEST for %s', (_, overrides) => {
    const error = thrown(() => toRequest(makeEnviron(overrides)))
    expect(error).toBeInstanceOf(WsgiProxyError)
    expect(error).toMatchObject({ code: 'BAD_REQUEST', status: 400 })
  })

  it('throws INVALID_OPTIONS naming signal when it is not an AbortSignal', () => {
    const options = { signal: 'abort' } as unknown as ToRequestOptions
    const error = thrown(() => toRequest(makeEnviron(), options))
    expect(error).toBeInstanceOf(WsgiProxyError)
    expect(error).toMatchObject({ code: 'INVALID_OPTIONS' })
    expect((error as Error).message).toContain('signal')
  })
})

/** Round-trip cases: the request, its body bytes (or null), and toEnviron options. */
const ROUND_TRIPS: Array<[string, () => Request, string | null, ToEnvironOptions?]> = [
  ['a plain GET', () => new Request('http://example.com/'), null],
  [
    'a POST with a body and a content type',
    () =>
      new Request('http://example.com/form', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'a=1&b=2',
      }),
    'a=1&b=2',
  ],
  [
    '%2F, %25, non-ASCII and empty segments',
    () => new Request('http://example.com/a%2Fb/%25//%E2%82%AC/%c3%bc/%FF/x%zz/'),
    null,
  ],
  [
    'a scriptName split across %2F',
    () => new Request('http://example.com/api/b%2Fc/d%20e'),
    null,
    { scriptName: '/api' },
  ],
  [
    'a scriptName that is the whole path',
    () => new Request('http://example.com/api'),
    null,
    { scriptName: '/api' },
  ],
  ['an IPv6 literal', () => new Request('http://[2001:db8::1]:8080/x'), null],
  ['https on the default port', () => new Request('https://example.com:443/x'), null],
  ['https on another port', () => new Request('https://example.com:8443/x'), null],
  ['a raw query', () => new Request('http://example.com/p?a=%20&b=%2F&c&d=%E2%82%AC+x'), null],
  [
    'a Host header equal to the URL authority',
    () => new Request('http://[::1]:8080/x', { headers: { host: '[::1]:8080' } }),
    null,
  ],
  [
    'repeated headers',
    () =>
      new Request('http://example.com/', {
        headers: [
          ['accept', 'a'],
          ['accept', 'b'],
          ['x-one', '1'],
        ],
      }),
    null,
  ],
  [
    'a lower-case method outside the normalized set',
    () => new Request('http://example.com/', { method: 'patch', body: 'p' }),
    'p',
  ],
  [
    'a content-length header',
    () =>
      new Request('http://example.com/', {
        method: 'PUT',
        headers: { 'content-length': '3' },
        body: encoder.encode('abc'),
      }),
    'abc',
  ],
]

/** What a round trip must keep: method, URL, header lines and body bytes (read unless given). */
async function summary(request: Request, body?: Uint8Array | null) {
  const bytes = body === undefined ? new Uint8Array(await request.arrayBuffer()) : body
  return {
    method: request.method,
    url: new URL(request.url).href,
    headers: [...request.headers],
    body: [...(bytes ?? [])],
  }
}

describe('toRequest(toEnviron(request))', () => {
  it.each(ROUND_TRIPS)('keeps %s', async (_, make, body, options) => {
    const original = make()
    const expected = await summary(original, body === null ? null : encoder.encode(body))
    const copy = toRequest(toEnviron(original, options))
    expect(await summary(copy)).toEqual(expected)
  })

  it('drops a bare "?" (QUERY_STRING cannot tell it from no query, as in PEP 3333)', () => {
    const original = new Request('http://example.com/p?')
    expect(toEnviron(original).QUERY_STRING).toBe('')
    expect(toRequest(toEnviron(original)).url).toBe('http://example.com/p')
  })

  it('keeps method, URL, headers and body bytes for any request (property)', async () => {
    await fc.assert(
      fc.asyncProperty(roundTripRequest(), async ({ method, url, headers, body, cut }) => {
        const init: RequestInit = { method, headers }
        const withBody = body !== null && method !== 'GET' && method !== 'HEAD'
        if (withBody) init.body = body.slice()
        const original = new Request(url, init)
        // Mount at a decoded prefix of the path, cut at a segment boundary.
        const segments = new URL(original.url).pathname.split('/')
        const scriptName = unquotePath(segments.slice(0, cut % segments.length).join('/'))
        const options: ToEnvironOptions = scriptName.startsWith('/') ? { scriptName } : {}
        const expected = await summary(original, withBody ? body : null)
        const copy = toRequest(toEnviron(original, options))
        expect(await summary(copy)).toEqual(expected)
      }),
      { numRuns: 200 },
    )
  })
})

// Headers a Request refuses, that carry meaning for the connection or the URL, or that
// Headers iterates specially (several set-cookie lines stay separate).
const SPECIAL_HEADERS = new Set([
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'proxy-connection',
  'upgrade',
  'te',
  'trailer',
  'expect',
  'set-cookie',
])

function roundTripRequest() {
  const method = fc.oneof(
    fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH'),
    fc
      .stringMatching(/^[A-Z][A-Z0-9-]{0,11}$/)
      .filter((m) => !['CONNECT', 'TRACE', 'TRACK'].includes(m)),
  )
  const origin = fc.constantFrom(
    'http://example.com',
    'https://example.com',
    'http://example.com:8080',
    'https://example.com:8443',
    'http://127.0.0.1:3000',
    'http://[::1]:8080',
    'https://[2001:db8::1]',
  )
  const segment = fc.oneof(
    fc
      .string({ unit: 'binary', maxLength: 8 })
      // A "." or ".." segment with ";" parameters is refused (hasDotSegment), not kept.
      .filter((text) => !/^\.\.?;/.test(text))
      .map(encodeURIComponent),
    fc.constantFrom('', '%2F', '%2f', '%25', 'a%2Fb', '%252F', '%E2%82%AC'),
  )
  const query = fc
    .array(fc.tuple(fc.string({ unit: 'binary' }), fc.string({ unit: 'binary' })), {
      maxLength: 4,
    })
    .map((pairs) =>
      pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&'),
    )
  const headerName = fc
    .stringMatching(/^[a-z0-9!#$%&'*+.^`|~-]{1,16}$/)
    .filter((name) => !SPECIAL_HEADERS.has(name))
  // Not empty: Headers joins a repeated empty value as "a, ", which no header value can hold.
  const headerValue = fc.stringMatching(/^[\x21-\x7e](?:[\x20-\x7e]{0,30}[\x21-\x7e])?$/)
  return fc.record({
    method,
    url: fc
      .tuple(origin, fc.array(segment, { maxLength: 6 }), query)
      .map(([o, segments, q]) => `${o}/${segments.join('/')}${q === '' ? '' : `?${q}`}`),
    headers: fc.array(fc.tuple(headerName, headerValue), { maxLength: 12 }),
    body: fc.option(fc.uint8Array({ maxLength: 64 }), { nil: null }),
    cut: fc.nat(),
  })
}

describe('environHeaders', () => {
  it('lists HTTP_* keys as lower-case names with "-", then content-type and content-length', () => {
    const env = makeEnviron({
      CONTENT_LENGTH: '2',
      HTTP_X_FORWARDED_FOR: '192.0.2.1',
      CONTENT_TYPE: 'application/json',
      HTTP_ACCEPT: 'a, b',
    })
    expect(environHeaders(env)).toEqual([
      ['x-forwarded-for', '192.0.2.1'],
      ['accept', 'a, b'],
      ['content-type', 'application/json'],
      ['content-length', '2'],
    ])
  })

  it('skips HTTP_* keys that hold no string', () => {
    const env = makeEnviron({ HTTP_X_A: undefined, HTTP_X_B: 'b' })
    expect(environHeaders(env)).toEqual([['x-b', 'b']])
  })

  it('lists no header for an environ without header keys', () => {
    expect(environHeaders(makeEnviron())).toEqual([])
  })
})

describe('environUrl', () => {
  it('gives back the URL of the request the environ was built from, %2F and all', () => {
    const href = 'https://example.com:8443/a%2Fb/caf%C3%A9?x=1&y=%20'
    expect(environUrl(toEnviron(new Request(href))).href).toBe(href)
  })

  it('uses SERVER_NAME and SERVER_PORT without HTTP_HOST, and "/" for an empty path', () => {
    const env = makeEnviron({ SERVER_NAME: '::1', SERVER_PORT: '8080', PATH_INFO: '' })
    delete env.HTTP_HOST
    expect(environUrl(env).href).toBe('http://[::1]:8080/')
  })

  it('follows SCRIPT_NAME and PATH_INFO moved by a middleware', () => {
    const env = toEnviron(new Request('http://example.com/myapp/x%2Fy'))
    expect(environUrl({ ...env, SCRIPT_NAME: '/front', PATH_INFO: '/x/y' }).pathname).toBe(
      '/front/x%2Fy',
    )
  })

  it('throws BAD_REQUEST when the host is not a valid host[:port]', () => {
    const error = thrown(() => environUrl(makeEnviron({ HTTP_HOST: 'a b' })))
    expect(error).toBeInstanceOf(WsgiProxyError)
    expect(error).toMatchObject({ code: 'BAD_REQUEST' })
  })
})

describe('formatAuthority', () => {
  it.each([
    ['example.com', '80', 'http', 'example.com'],
    ['example.com', '443', 'https', 'example.com'],
    ['example.com', '443', 'http', 'example.com:443'],
    ['example.com', '80', 'https', 'example.com:80'],
    ['example.com', '8080', 'http', 'example.com:8080'],
    ['example.com', '', 'http', 'example.com'],
    ['192.0.2.1', '8000', 'http', '192.0.2.1:8000'],
    ['::1', '8080', 'http', '[::1]:8080'],
    ['2001:db8::1', '443', 'https', '[2001:db8::1]'],
    ['[::1]', '81', 'http', '[::1]:81'],
  ])('formats %j port %j (%s) as %j', (name, port, scheme, authority) => {
    expect(formatAuthority(name, port, scheme)).toBe(authority)
  })
})

describe('toEnviron hostile input', () => {
  it.each(['example.com/admin?', '127.0.0.1#', '[::1]evil', 'a:99999', 'a:-1', 'a b', 'fe80::1'])(
    'refuses the Host %j with BAD_REQUEST',
    (host) => {
      const request = new Request('http://example.com/', { headers: { host } })
      expect(() => toEnviron(request)).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }))
    },
  )

  it('accepts names, IPv4 and bracketed IPv6 hosts with ports', () => {
    for (const host of ['example.com', 'a-b.example:8080', '10.0.0.1:1', '[::1]:443', 'x_y']) {
      const request = new Request('http://example.com/', { headers: { host } })
      expect(toEnviron(request).HTTP_HOST).toBe(host)
    }
  })

  it('refuses a path whose %2F makes a ".." segment, so it cannot climb out of a mount', () => {
    const request = new Request('http://example.com/public%2F..%2Fadmin')
    expect(() => toEnviron(request, { scriptName: '/public' })).toThrow(
      expect.objectContaining({ code: 'BAD_REQUEST' }),
    )
    expect(toEnviron(new Request('http://example.com/a%2F..b')).PATH_INFO).toBe('/a/..b')
  })

  // Tomcat and Jetty strip ";" path parameters before resolving dot segments, so /base/..;/admin
  // is /admin there; the URL parser leaves such segments alone.
  it.each([
    '/public/..;/admin',
    '/public/..;x=1/admin',
    '/public/.;/admin',
    '/public/%2e%2e;x/admin',
    '/public/%2E.;/admin',
    '/public/..%3B/admin',
    '/public/..;',
  ])('refuses the path %s, whose segment is a dot segment with parameters', (path) => {
    const request = new Request(`http://example.com${path}`)
    expect(() => toEnviron(request, { scriptName: '/public' })).toThrow(
      expect.objectContaining({ code: 'BAD_REQUEST', expose: true }),
    )
    expect(() => toEnviron(request)).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }))
  })

  it('keeps ";" parameters on other segments and dots inside names', () => {
    for (const path of ['/a;b=c/d', '/...;x', '/a..;/b', '/.x;y', '/;/..a']) {
      expect(toEnviron(new Request(`http://example.com${path}`)).PATH_INFO).toBe(path)
    }
  })
})

describe('hasDotSegment', () => {
  it.each(['.', '..', '/.', '/..', '/a/./b', '/a/../b', '/a/..', '/..;', '/a/.;x/b', '/a/..;/b'])(
    'is true for %j',
    (path) => {
      expect(hasDotSegment(path)).toBe(true)
    },
  )

  it.each([
    '',
    '/',
    '/a',
    '/...',
    '/.../b',
    '/a.',
    '/.a',
    '/..a',
    '/a..;',
    '/...;',
    '/;..',
    '/a;./b',
  ])('is false for %j', (path) => {
    expect(hasDotSegment(path)).toBe(false)
  })
})
