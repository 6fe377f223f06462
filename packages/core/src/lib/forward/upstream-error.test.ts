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

/** An OpenSSL error as Node reports it: a long message, the short `reason` beside it. */
function openssl(code: string, reason: string): Error {
  const message = `80CCA77D517F0000:error:0A00045C:SSL routines:ssl3_read_bytes:${reason}:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 116\n`
  return Object.assign(new Error(message), { code, reason, library: 'SSL routines' })
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

  describe('a failed TLS handshake', () => {
    const tlsUrl = new URL('https://10.0.0.5:8443/path')

    it.each([
      [
        'undici',
        coded('unable to verify the first certificate', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'),
      ],
      [
        'Node fetch',
        nodeFetchFailure(
          coded('unable to verify the first certificate', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'),
        ),
      ],
    ])('maps a certificate not trusted from %s to 502 UPSTREAM_TLS_FAILED', (_client, failure) => {
      const error = toUpstreamError(failure, tlsUrl)
      expect(error).toMatchObject({ code: 'UPSTREAM_TLS_FAILED', status: 502, expose: false })
      expect(error.message).toBe(
        'the TLS handshake with https://10.0.0.5:8443 failed: its certificate is not trusted (UNABLE_TO_VERIFY_LEAF_SIGNATURE: unable to verify the first certificate); trust the CA that issued it with undiciTransport({ tls: { ca } })',
      )
      expect(error.cause).toBe(failure)
    })

    it.each([
      ['DEPTH_ZERO_SELF_SIGNED_CERT', 'self-signed certificate', 'is not trusted'],
      [
        'SELF_SIGNED_CERT_IN_CHAIN',
        'self-signed certificate in certificate chain',
        'is not trusted',
      ],
      [
        'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
        'unable to get local issuer certificate',
        'is not trusted',
      ],
      ['CERT_HAS_EXPIRED', 'certificate has expired', 'is out of date'],
      ['CERT_NOT_YET_VALID', 'certificate is not yet valid', 'is out of date'],
      [
        'ERR_TLS_CERT_ALTNAME_INVALID',
        "Hostname/IP does not match certificate's altnames: IP: 10.0.0.5 is not in the cert's list: ",
        'tls: { servername }',
      ],
    ])('maps %s to UPSTREAM_TLS_FAILED saying what to change', (code, message, says) => {
      const error = toUpstreamError(coded(message, code), tlsUrl)
      expect(error.code).toBe('UPSTREAM_TLS_FAILED')
      expect(error.message).toContain(`(${code}: ${message})`)
      expect(error.message).toContain(says)
    })

    const withCertificate =
      'give one that its CA issued with undiciTransport({ tls: { cert, key } })'
    it.each([
      [
        'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED',
        'tlsv13 alert certificate required',
        'it requires a client certificate',
        '; give one with undiciTransport({ tls: { cert, key } })',
      ],
      [
        'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE',
        'sslv3 alert bad certificate',
        'it refused the client certificate',
        `; ${withCertificate}`,
      ],
      [
        'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA',
        'tlsv1 alert unknown ca',
        'it refused the client certificate',
        `; ${withCertificate}`,
      ],
      [
        'ERR_SSL_WRONG_VERSION_NUMBER',
        'wrong version number',
        'it does not speak TLS on this port',
        '; forward to http:// if it is a plain HTTP upstream',
      ],
      [
        'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE',
        'sslv3 alert handshake failure',
        'it refused the handshake',
        '; it may require a client certificate (undiciTransport({ tls: { cert, key } })), or accept no TLS version or cipher that the client offers',
      ],
      ['ERR_SSL_UNSUPPORTED_PROTOCOL', 'unsupported protocol', 'the handshake failed', ''],
    ])(
      'maps the OpenSSL error %s to UPSTREAM_TLS_FAILED with its short reason',
      (code, reason, problem, fix) => {
        const error = toUpstreamError(openssl(code, reason), tlsUrl)
        expect(error.code).toBe('UPSTREAM_TLS_FAILED')
        expect(error.message).toBe(
          `the TLS handshake with https://10.0.0.5:8443 failed: ${problem} (${code}: ${reason})${fix}`,
        )
      },
    )

    it('maps a reset during the handshake to UPSTREAM_TLS_FAILED, any other reset to UPSTREAM_RESET', () => {
      const handshake = coded(
        'Client network socket disconnected before secure TLS connection was established',
        'ECONNRESET',
      )
      expect(toUpstreamError(handshake, tlsUrl).message).toContain(
        'it closed the connection during the handshake, as a server does that refuses the client certificate',
      )
      expect(toUpstreamError(nodeFetchFailure(handshake), tlsUrl).code).toBe('UPSTREAM_TLS_FAILED')
      expect(toUpstreamError(coded('read ECONNRESET', 'ECONNRESET'), tlsUrl).code).toBe(
        'UPSTREAM_RESET',
      )
    })

    it.each([
      'error sending request for url (https://10.0.0.5:8443/path): client error (Connect): invalid peer certificate: UnknownIssuer',
      'error sending request for url (https://10.0.0.5:8443/path): client error (Connect): received fatal alert: CertificateRequired',
    ])("maps Deno's %s to UPSTREAM_TLS_FAILED, not UPSTREAM_UNREACHABLE", (message) => {
      expect(toUpstreamError(nodeFetchFailure(new Error(message)), tlsUrl).code).toBe(
        'UPSTREAM_TLS_FAILED',
      )
    })
  })

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

  it('never sends again after a failed TLS handshake, a reset during it included', () => {
    const handshakeReset = coded(
      'Client network socket disconnected before secure TLS connection was established',
      'ECONNRESET',
    )
    expect(mayRetry('GET', false, handshakeReset, 1)).toBe(false)
    expect(mayRetry('GET', false, nodeFetchFailure(handshakeReset), 1)).toBe(false)
    const alert = coded(
      'tlsv13 alert certificate required',
      'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED',
    )
    expect(mayRetry('GET', false, alert, 1)).toBe(false)
    const refused = new WsgiProxyError('UPSTREAM_TLS_FAILED', 'the TLS handshake failed')
    expect(mayRetry('GET', false, refused, 1)).toBe(false)
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
