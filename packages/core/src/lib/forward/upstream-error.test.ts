import { describe, expect, it } from 'vitest'
import { WsgiProxyError } from '../errors.ts'
import { mayRetry, toUpstreamError } from './upstream-error.ts'

const url = new URL('http://10.0.0.5:8080/path?q=1')

/** An error with a system or undici `code`, as undici's dispatcher and Bun's fetch throw. */
function coded(message: string, code: string, ErrorType = Error): Error {
  return Object.assign(new ErrorType(message), { code })
}

/** Node's fetch: `TypeError('fetch failed')` with the real failure as its cause. */
function nodeFetchFailure(cause: unknown): TypeError {
  return new TypeError('fetch failed', { cause })
}

describe('toUpstreamError', () => {
  it.each([
    ['undici', coded('connect ECONNREFUSED 10.0.0.5:8080', 'ECONNREFUSED')],
    ['Node fetch', nodeFetchFailure(coded('connect ECONNREFUSED 10.0.0.5:8080', 'ECONNREFUSED'))],
  ])('maps a refused connection from %s to 502 UPSTREAM_UNREACHABLE', (_client, failure) => {
    const error = toUpstreamError(failure, url)
    expect(error).toMatchObject({ code: 'UPSTREAM_UNREACHABLE', status: 502, expose: false })
    expect(error.message).toBe(
      'cannot reach http://10.0.0.5:8080: connect ECONNREFUSED 10.0.0.5:8080',
    )
    expect(error.cause).toBe(failure)
  })

  it.each([
    ['a name that does not resolve', coded('getaddrinfo ENOTFOUND h', 'ENOTFOUND')],
    ['a missing unix socket', coded('connect ENOENT /run/app.sock', 'ENOENT')],
    ['a unix socket this process may not open', coded('connect EACCES /run/app.sock', 'EACCES')],
    ['Bun', coded('ECONNREFUSED: Unable to connect.', 'ECONNREFUSED', TypeError)],
    [
      'Deno',
      nodeFetchFailure(
        new Error(
          'error sending request for url (http://10.0.0.5:8080/): client error (Connect): tcp connect error: Connection refused (os error 111)',
        ),
      ),
    ],
  ])('maps %s to UPSTREAM_UNREACHABLE', (_case, failure) => {
    expect(toUpstreamError(failure, url).code).toBe('UPSTREAM_UNREACHABLE')
  })

  it.each([
    ['Node fetch', nodeFetchFailure(new TypeError('bad port'))],
    ['Deno fetch', new TypeError('Fetch failed: Requests to port 8080 are blocked')],
  ])('names the Node transport when %s refuses a blocked port', (_client, failure) => {
    const error = toUpstreamError(failure, url)
    expect(error.code).toBe('UPSTREAM_UNREACHABLE')
    expect(error.message).toContain('fetch refuses to connect to port 8080')
    expect(error.message).toContain('undiciTransport()')
  })

  it.each([
    ['on the error', coded('request body length mismatch', 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH')],
    [
      'on the cause',
      nodeFetchFailure(
        coded('request body length mismatch', 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH'),
      ),
    ],
  ])(
    'answers 400 with a shown message for a body that does not match its Content-Length (code %s)',
    (_where, failure) => {
      expect(toUpstreamError(failure, url)).toMatchObject({
        code: 'BAD_REQUEST',
        status: 400,
        expose: true,
        message: 'the request body does not match its Content-Length',
      })
    },
  )

  it('answers 400 without showing the message for a request undici cannot send', () => {
    const error = toUpstreamError(coded('invalid header value', 'UND_ERR_INVALID_ARG'), url)
    expect(error).toMatchObject({ code: 'BAD_REQUEST', status: 400, expose: false })
    expect(error.message).toBe('the request cannot be sent: invalid header value')
  })

  it.each([
    [
      'UND_ERR_CONNECT_TIMEOUT',
      'UPSTREAM_CONNECT_TIMEOUT',
      'connecting to http://10.0.0.5:8080 timed out',
    ],
    [
      'UND_ERR_HEADERS_TIMEOUT',
      'UPSTREAM_HEADERS_TIMEOUT',
      'no response headers from http://10.0.0.5:8080',
    ],
  ])('maps %s to 504 %s', (code, expected, message) => {
    for (const failure of [coded('timeout', code), nodeFetchFailure(coded('timeout', code))]) {
      expect(toUpstreamError(failure, url)).toMatchObject({ code: expected, status: 504, message })
    }
  })

  it.each([
    [
      'an HPE_ code',
      coded('Response does not match the HTTP/1.1 protocol', 'HPE_INVALID_CONSTANT'),
    ],
    [
      'an HTTPParserError without a code',
      Object.assign(new Error('Response does not match the HTTP/1.1 protocol'), {
        name: 'HTTPParserError',
      }),
    ],
    [
      "a parser error in Node fetch's cause",
      nodeFetchFailure(
        coded('Response does not match the HTTP/1.1 protocol', 'HPE_INVALID_CONSTANT'),
      ),
    ],
  ])('maps %s to 502 UPSTREAM_INVALID_RESPONSE', (_case, failure) => {
    const error = toUpstreamError(failure, url)
    expect(error.code).toBe('UPSTREAM_INVALID_RESPONSE')
    expect(error.message).toBe(
      'http://10.0.0.5:8080 sent an invalid response: Response does not match the HTTP/1.1 protocol',
    )
  })

  it.each([
    ['undici', coded('other side closed', 'UND_ERR_SOCKET')],
    ['Node fetch', nodeFetchFailure(coded('other side closed', 'UND_ERR_SOCKET'))],
    [
      'Deno',
      nodeFetchFailure(
        new Error('error sending request: connection closed before message completed'),
      ),
    ],
  ])(
    'maps anything else from %s to 502 UPSTREAM_RESET with the failure as detail',
    (client, failure) => {
      const error = toUpstreamError(failure, url)
      expect(error.code).toBe('UPSTREAM_RESET')
      expect(error.message).toBe(
        client === 'Deno'
          ? 'request to http://10.0.0.5:8080 failed: error sending request: connection closed before message completed'
          : 'request to http://10.0.0.5:8080 failed: other side closed',
      )
    },
  )

  it('reads a thrown value that is not an error', () => {
    expect(toUpstreamError('boom', url).message).toBe(
      'request to http://10.0.0.5:8080 failed: boom',
    )
    expect(toUpstreamError(undefined, url).code).toBe('UPSTREAM_RESET')
  })

  it('passes a WsgiProxyError through unchanged', () => {
    const own = new WsgiProxyError('METHOD_NOT_SUPPORTED', 'no TRACE')
    expect(toUpstreamError(own, url)).toBe(own)
  })

  it("gives a cancelled request's reason, or CLIENT_ABORTED for a reason of another kind", () => {
    const failure = coded('other side closed', 'UND_ERR_SOCKET')
    const timeout = new WsgiProxyError('UPSTREAM_HEADERS_TIMEOUT', 'no headers within 10 ms')
    expect(toUpstreamError(failure, url, { aborted: true, reason: timeout })).toBe(timeout)
    const controller = new AbortController()
    controller.abort()
    const aborted = toUpstreamError(failure, url, controller.signal)
    expect(aborted).toMatchObject({
      code: 'CLIENT_ABORTED',
      status: 499,
      message: 'the request was aborted',
    })
    expect(aborted.cause).toBe(failure)
    expect(toUpstreamError(failure, url, new AbortController().signal).code).toBe('UPSTREAM_RESET')
  })
})

describe('mayRetry', () => {
  const closed = [
    coded('other side closed', 'UND_ERR_SOCKET'),
    coded('read ECONNRESET', 'ECONNRESET'),
    nodeFetchFailure(coded('write EPIPE', 'EPIPE')),
  ]

  it.each(['GET', 'HEAD', 'OPTIONS'])(
    'sends a bodiless %s once more when its connection closed or was reset',
    (method) => {
      for (const error of closed) expect(mayRetry(method, false, error, 1)).toBe(true)
    },
  )

  it('sends a request again only once', () => {
    expect(mayRetry('GET', false, closed[0], 2)).toBe(false)
  })

  it('never sends again a request with a body, or with a method that is not GET, HEAD or OPTIONS', () => {
    expect(mayRetry('GET', true, closed[0], 1)).toBe(false)
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'get']) {
      expect(mayRetry(method, false, closed[0], 1)).toBe(false)
    }
  })

  it('never sends again after another failure or a cancellation', () => {
    expect(mayRetry('GET', false, coded('connect ECONNREFUSED', 'ECONNREFUSED'), 1)).toBe(false)
    expect(mayRetry('GET', false, new Error('no code'), 1)).toBe(false)
    const controller = new AbortController()
    controller.abort()
    expect(mayRetry('GET', false, closed[0], 1, controller.signal)).toBe(false)
    expect(mayRetry('GET', false, closed[0], 1, new AbortController().signal)).toBe(true)
  })
})
