import { describe, expect, it, vi } from 'vitest'
import type { AppResponse, Environ, EnvironApp, ToFetchHandlerOptions } from '@wsgiproxy/core'
import { WsgiProxyError, fromFetchHandler, toEnviron, toFetchHandler } from '@wsgiproxy/core'
import { findRemoteAddr } from '@wsgiproxy/core/adapter'
import { readText, settle, trackedBody } from '@wsgiproxy/test-kit/bodies'

/** An app that records the environs it gets and answers 200 with a text body. */
function recordingApp(text = 'ok'): { app: EnvironApp; environs: Environ[] } {
  const environs: Environ[] = []
  const app: EnvironApp = (environ) => {
    environs.push(environ)
    return { status: 200, headers: [['content-type', 'text/plain']], body: trackedBody(text).body }
  }
  return { app, environs }
}

/** The only environ an app got. */
function only(environs: Environ[]): Environ {
  expect(environs).toHaveLength(1)
  const [environ] = environs
  if (environ === undefined) throw new Error('the app was not called')
  return environ
}

/** An onError hook that records errors and lets the default response through. */
function quietErrors(): {
  onError: NonNullable<ToFetchHandlerOptions['onError']>
  errors: unknown[]
} {
  const errors: unknown[] = []
  return { onError: (error) => void errors.push(error), errors }
}

const failing: EnvironApp = () => {
  throw new Error('backend 10.0.0.5:5432 refused the connection')
}

describe('toFetchHandler', () => {
  it('passes the request to the app as an environ and sends its response', async () => {
    const { app, environs } = recordingApp('hello')
    const handler = toFetchHandler(app, { scriptName: '/api' })
    const response = await handler(
      new Request('https://example.com/api/x%2Fy?q=1', {
        method: 'POST',
        headers: { 'x-a': '1', 'content-type': 'text/plain' },
        body: 'payload',
      }),
    )
    expect(response.status).toBe(200)
    expect(await response.text()).toBe('hello')
    const environ = only(environs)
    expect(environ).toMatchObject({
      REQUEST_METHOD: 'POST',
      SCRIPT_NAME: '/api',
      PATH_INFO: '/x/y',
      QUERY_STRING: 'q=1',
      CONTENT_TYPE: 'text/plain',
      HTTP_X_A: '1',
      SERVER_NAME: 'example.com',
      SERVER_PORT: '443',
      'wsgi.url_scheme': 'https',
    })
    expect(await readText(environ['wsgi.input'])).toBe('payload')
  })

  it.each([
    ['@hono/node-server', { incoming: { socket: { remoteAddress: '192.0.2.10' } } }, '192.0.2.10'],
    [
      'Deno',
      { remoteAddr: { hostname: '2001:db8::10', port: 5000, transport: 'tcp' } },
      '2001:db8::10',
    ],
    ['a fromFetchHandler environ', { environ: { REMOTE_ADDR: '198.51.100.10' } }, '198.51.100.10'],
  ])('finds REMOTE_ADDR in the context of %s', async (_, context, address) => {
    const { app, environs } = recordingApp()
    await toFetchHandler(app)(new Request('http://example.com/'), context)
    expect(only(environs).REMOTE_ADDR).toBe(address)
  })

  it('finds REMOTE_ADDR with Bun server.requestIP(request)', async () => {
    const { app, environs } = recordingApp()
    const request = new Request('http://example.com/')
    const asked: Request[] = []
    const server = {
      requestIP(this: unknown, req: Request) {
        expect(this).toBe(server)
        asked.push(req)
        return { address: '203.0.113.10', family: 'IPv4', port: 5000 }
      },
    }
    await toFetchHandler(app)(request, server)
    expect(asked).toEqual([request])
    expect(only(environs).REMOTE_ADDR).toBe('203.0.113.10')
  })

  it.each([
    ['no context', undefined],
    ['null', null],
    ['a string', 'context'],
    ['an unknown shape', { socket: {} }],
    ['a Bun server without an address', { requestIP: () => null }],
  ])('leaves REMOTE_ADDR out for %s', async (_, context) => {
    const { app, environs } = recordingApp()
    await toFetchHandler(app)(new Request('http://example.com/'), context)
    expect(only(environs)).not.toHaveProperty('REMOTE_ADDR')
  })

  it('lets getRemoteAddr override the lookup by shape', async () => {
    const { app, environs } = recordingApp()
    const calls: Array<[Request, unknown]> = []
    const handler = toFetchHandler(app, {
      getRemoteAddr: (request, context) => {
        calls.push([request, context])
        return '198.51.100.77'
      },
    })
    const request = new Request('http://example.com/')
    const context = { incoming: { socket: { remoteAddress: '192.0.2.10' } } }
    await handler(request, context)
    expect(calls).toEqual([[request, context]])
    expect(only(environs).REMOTE_ADDR).toBe('198.51.100.77')
  })

  it('leaves REMOTE_ADDR out when getRemoteAddr finds none', async () => {
    const { app, environs } = recordingApp()
    const handler = toFetchHandler(app, { getRemoteAddr: () => undefined })
    await handler(new Request('http://example.com/'), {
      incoming: { socket: { remoteAddress: '192.0.2.10' } },
    })
    expect(only(environs)).not.toHaveProperty('REMOTE_ADDR')
  })

  it('sends the app response headers, several Set-Cookie lines and reason phrase', async () => {
    const handler = toFetchHandler(() => ({
      status: 201,
      statusText: 'Made It',
      headers: [
        ['set-cookie', 'a=1'],
        ['set-cookie', 'b=2'],
        ['location', '/x'],
      ],
      body: null,
    }))
    const response = await handler(new Request('http://example.com/'))
    expect([response.status, response.statusText]).toEqual([201, 'Made It'])
    expect(response.headers.getSetCookie()).toEqual(['a=1', 'b=2'])
    expect(response.headers.get('location')).toBe('/x')
  })

  it('sends a HEAD response without a body and releases the app body', async () => {
    const { body, released } = trackedBody('hello')
    const handler = toFetchHandler(() => ({
      status: 200,
      headers: [
        ['content-type', 'text/plain'],
        ['content-length', '5'],
      ],
      body,
    }))
    const response = await handler(new Request('http://example.com/', { method: 'HEAD' }))
    expect(response.status).toBe(200)
    expect(response.body).toBeNull()
    expect(response.headers.get('content-length')).toBe('5')
    await settle()
    expect(released()).toBe(true)
  })

  it('answers an app that throws with a 500 problem+json response and a generic detail', async () => {
    const { onError, errors } = quietErrors()
    const response = await toFetchHandler(failing, { onError })(new Request('http://example.com/'))
    expect(response.status).toBe(500)
    expect(response.headers.get('content-type')).toBe('application/problem+json')
    const text = await response.text()
    expect(text).not.toContain('10.0.0.5')
    expect(JSON.parse(text)).toMatchObject({
      status: 500,
      code: 'APP_ERROR',
      detail: 'the proxy could not handle the request',
    })
    expect(errors).toHaveLength(1)
  })

  it('answers an app that rejects with a 500 problem+json response', async () => {
    const { onError } = quietErrors()
    const handler = toFetchHandler(() => Promise.reject(new Error('nope')), { onError })
    const response = await handler(new Request('http://example.com/'))
    expect(response.status).toBe(500)
    expect(response.headers.get('content-type')).toBe('application/problem+json')
  })

  it('shows the error message with exposeErrors', async () => {
    const { onError } = quietErrors()
    const handler = toFetchHandler(failing, { onError, exposeErrors: true })
    const problem = (await (await handler(new Request('http://example.com/'))).json()) as {
      detail: string
    }
    expect(problem.detail).toContain('backend 10.0.0.5:5432 refused the connection')
  })

  it('answers the status of a WsgiProxyError the app throws', async () => {
    const { onError } = quietErrors()
    const handler = toFetchHandler(
      () => {
        throw new WsgiProxyError('UPSTREAM_HEADERS_TIMEOUT', 'upstream 10.0.0.5 timed out')
      },
      { onError },
    )
    const response = await handler(new Request('http://example.com/'))
    expect(response.status).toBe(504)
    expect(await response.text()).not.toContain('10.0.0.5')
  })

  it('passes the error as an APP_ERROR WsgiProxyError and the environ to onError', async () => {
    const { onError, errors } = quietErrors()
    const seen: Array<Environ | undefined> = []
    await toFetchHandler(failing, {
      onError: (error, environ) => {
        seen.push(environ)
        return onError(error, environ)
      },
    })(new Request('http://example.com/some/path'))
    expect(seen).toEqual([expect.objectContaining({ PATH_INFO: '/some/path' })])
    expect(errors).toEqual([expect.any(WsgiProxyError)])
    expect(errors[0]).toMatchObject({
      code: 'APP_ERROR',
      message: expect.stringContaining('refused'),
      cause: expect.any(Error),
    })
  })

  it('passes no environ to onError when the request cannot become one', async () => {
    const seen: unknown[] = []
    const handler = toFetchHandler(failing, {
      maxHeaders: 1,
      onError: (error, environ) => void seen.push(error, environ),
    })
    const response = await handler(
      new Request('http://example.com/', { headers: { a: '1', b: '2' } }),
    )
    expect(response.status).toBe(431)
    expect(seen).toEqual([expect.objectContaining({ code: 'TOO_MANY_HEADERS' }), undefined])
  })

  it('sends the response onError returns', async () => {
    const handler = toFetchHandler(failing, {
      onError: async () => ({
        status: 503,
        headers: [['retry-after', '5']],
        body: trackedBody('later').body,
      }),
    })
    const response = await handler(new Request('http://example.com/'))
    expect(response.status).toBe(503)
    expect(response.headers.get('retry-after')).toBe('5')
    expect(await response.text()).toBe('later')
  })

  it.each([
    [
      'throws',
      () => {
        throw new Error('hook failed')
      },
    ],
    ['rejects', () => Promise.reject(new Error('hook failed'))],
  ])('sends a fixed 500 when onError %s', async (_, onError) => {
    const response = await toFetchHandler(failing, { onError })(new Request('http://example.com/'))
    expect(response.status).toBe(500)
    expect(response.headers.get('content-type')).toBe('text/plain; charset=utf-8')
    expect(await response.text()).toBe('Internal Server Error')
  })

  it('answers 404 problem+json outside scriptName without calling the app', async () => {
    const { app, environs } = recordingApp()
    const { onError } = quietErrors()
    const handler = toFetchHandler(app, { scriptName: '/api', onError })
    const response = await handler(new Request('http://example.com/other'))
    expect(response.status).toBe(404)
    expect(await response.json()).toMatchObject({ status: 404, code: 'NOT_FOUND' })
    expect(environs).toHaveLength(0)
  })

  it('asks a scriptName function for the mount prefix of each request', async () => {
    const { app, environs } = recordingApp()
    const calls: Array<[string, unknown]> = []
    const handler = toFetchHandler(app, {
      scriptName: (request, context) => {
        calls.push([request.url, context])
        // decoded, as SCRIPT_NAME is
        return new URL(request.url).pathname.startsWith('/users/7') ? '/users/7' : '/a/b'
      },
    })
    await handler(new Request('http://example.com/users/7/x'), 'ctx')
    await handler(new Request('http://example.com/a%2Fb/c%2Fd'))
    expect(calls).toEqual([
      ['http://example.com/users/7/x', 'ctx'],
      ['http://example.com/a%2Fb/c%2Fd', undefined],
    ])
    expect(environs.map((e) => [e.SCRIPT_NAME, e.PATH_INFO])).toEqual([
      ['/users/7', '/x'],
      ['/a/b', '/c/d'],
    ])
  })

  it.each([
    ['a path without a leading "/"', 'api'],
    ['a value that is not a string', 42],
  ])('answers 500 when the scriptName function answers %s', async (_, answer) => {
    const { app, environs } = recordingApp()
    const { onError, errors } = quietErrors()
    const scriptName = (() => answer) as () => string
    const response = await toFetchHandler(app, { scriptName, onError })(
      new Request('http://example.com/api/x'),
    )
    expect(response.status).toBe(500)
    expect(environs).toHaveLength(0)
    expect(String(errors[0])).toContain('toFetchHandler.scriptName must answer')
  })

  it('answers 431 problem+json above maxHeaders without calling the app', async () => {
    const { app, environs } = recordingApp()
    const { onError } = quietErrors()
    const handler = toFetchHandler(app, { maxHeaders: 2, onError })
    const request = new Request('http://example.com/', {
      headers: { 'x-a': '1', 'x-b': '2', 'x-c': '3' },
    })
    const response = await handler(request)
    expect(response.status).toBe(431)
    expect(await response.json()).toMatchObject({ status: 431, code: 'TOO_MANY_HEADERS' })
    expect(environs).toHaveLength(0)
  })

  it('answers 500 when getRemoteAddr throws', async () => {
    const { app } = recordingApp()
    const { onError } = quietErrors()
    const handler = toFetchHandler(app, {
      onError,
      getRemoteAddr: () => {
        throw new Error('lookup failed')
      },
    })
    expect((await handler(new Request('http://example.com/'))).status).toBe(500)
  })

  it('answers 502 when the app answers a status a Response cannot hold', async () => {
    const handler = toFetchHandler(() => ({ status: 101, headers: [], body: null }))
    const response = await handler(new Request('http://example.com/'))
    expect(response.status).toBe(502)
    expect(response.headers.get('content-type')).toBe('application/problem+json')
  })

  it('answers 500 when the app resolves with no response', async () => {
    const { onError } = quietErrors()
    const app = (() => undefined) as unknown as EnvironApp
    const response = await toFetchHandler(app, { onError })(new Request('http://example.com/'))
    expect(response.status).toBe(500)
  })

  it('answers 5xx when the app answers a body stream that is already locked', async () => {
    const { onError } = quietErrors()
    const stream = new Response('used').body
    stream?.getReader()
    const handler = toFetchHandler(() => ({ status: 200, headers: [], body: stream }), { onError })
    const response = await handler(new Request('http://example.com/'))
    expect([500, 502]).toContain(response.status)
  })

  it('logs errors of status 500 and above to console.error by default, not 4xx', async () => {
    const log = vi.spyOn(console, 'error').mockImplementation(() => undefined)
    try {
      await toFetchHandler(failing)(new Request('http://example.com/'))
      expect(log).toHaveBeenCalledTimes(1)
      await toFetchHandler(failing, { scriptName: '/api' })(new Request('http://example.com/x'))
      expect(log).toHaveBeenCalledTimes(1)
    } finally {
      log.mockRestore()
    }
  })

  it.each([
    ['scriptName', { scriptName: 'api' }],
    ['scriptName', { scriptName: 7 }],
    ['maxHeaders', { maxHeaders: 0 }],
    ['maxHeaders', { maxHeaders: 1.5 }],
    ['exposeErrors', { exposeErrors: 'yes' }],
    ['onError', { onError: 'log' }],
    ['getRemoteAddr', { getRemoteAddr: '127.0.0.1' }],
    ['remoteAddr', { remoteAddr: '127.0.0.1' }],
  ])('throws INVALID_OPTIONS naming %s', (name, options) => {
    const { app } = recordingApp()
    let error: unknown
    try {
      toFetchHandler(app, options as unknown as ToFetchHandlerOptions)
    } catch (caught) {
      error = caught
    }
    expect(error).toBeInstanceOf(WsgiProxyError)
    expect(error).toMatchObject({ code: 'INVALID_OPTIONS' })
    expect((error as Error).message).toContain(name)
  })
})

describe('findRemoteAddr', () => {
  it('finds the address in each runtime shape and answers undefined for anything else', () => {
    const request = new Request('http://example.com/')
    const bun = { requestIP: (r: Request) => (r === request ? { address: '192.0.2.3' } : null) }
    expect(findRemoteAddr(request, { incoming: { socket: { remoteAddress: '192.0.2.1' } } })).toBe(
      '192.0.2.1',
    )
    expect(findRemoteAddr(request, { remoteAddr: { hostname: '192.0.2.2' } })).toBe('192.0.2.2')
    expect(findRemoteAddr(request, bun)).toBe('192.0.2.3')
    expect(findRemoteAddr(request, undefined)).toBeUndefined()
    expect(findRemoteAddr(request, { incoming: {} })).toBeUndefined()
  })
})

describe('fromFetchHandler', () => {
  it('calls the handler with toRequest(environ) and { environ }', async () => {
    const environ = toEnviron(
      new Request('http://example.com/api/a%2Fb?x=%20', {
        method: 'PUT',
        headers: { 'x-a': '1', 'content-type': 'text/plain' },
        body: 'payload',
      }),
      { scriptName: '/api', remoteAddr: '192.0.2.1' },
    )
    const calls: Array<{ request: Request; context: { environ: Environ }; body: string }> = []
    const app = fromFetchHandler(async (request, context) => {
      calls.push({ request, context, body: await request.text() })
      return new Response('done')
    })
    await app(environ)
    expect(calls).toHaveLength(1)
    const [call] = calls
    expect(call?.context.environ).toBe(environ)
    expect(call?.request.method).toBe('PUT')
    expect(call?.request.url).toBe('http://example.com/api/a%2Fb?x=%20')
    expect(call?.request.headers.get('x-a')).toBe('1')
    expect(call?.request.headers.get('content-type')).toBe('text/plain')
    expect(call?.body).toBe('payload')
  })

  it('answers the handler response as an AppResponse', async () => {
    const app = fromFetchHandler(() => {
      const headers = new Headers([['content-type', 'text/plain']])
      headers.append('set-cookie', 'a=1')
      headers.append('set-cookie', 'b=2')
      return new Response('body', { status: 207, statusText: 'Multi', headers })
    })
    const response: AppResponse = await app(toEnviron(new Request('http://example.com/')))
    expect(response.status).toBe(207)
    expect(response.statusText).toBe('Multi')
    expect(response.headers).toEqual([
      ['content-type', 'text/plain'],
      ['set-cookie', 'a=1'],
      ['set-cookie', 'b=2'],
    ])
    expect(await readText(response.body)).toBe('body')
  })

  it('rejects when the handler rejects', async () => {
    const app = fromFetchHandler(() => Promise.reject(new Error('handler failed')))
    await expect(app(toEnviron(new Request('http://example.com/')))).rejects.toThrow(
      'handler failed',
    )
  })

  it('serves a fetch handler through toFetchHandler with the path, body and client address', async () => {
    const seen: Array<{ url: string; body: string; remoteAddr: unknown }> = []
    const inner = fromFetchHandler(async (request, { environ }) => {
      seen.push({ url: request.url, body: await request.text(), remoteAddr: environ.REMOTE_ADDR })
      return new Response('echo', { headers: [['set-cookie', 'a=1']] })
    })
    const handler = toFetchHandler(inner)
    const response = await handler(
      new Request('http://example.com/a%2Fb/%E2%82%AC?q', { method: 'POST', body: 'data' }),
      { remoteAddr: { hostname: '2001:db8::1' } },
    )
    expect(await response.text()).toBe('echo')
    expect(response.headers.getSetCookie()).toEqual(['a=1'])
    expect(seen).toEqual([
      { url: 'http://example.com/a%2Fb/%E2%82%AC?q', body: 'data', remoteAddr: '2001:db8::1' },
    ])
  })

  it('lets a nested toFetchHandler find REMOTE_ADDR in { environ }', async () => {
    const { app, environs } = recordingApp()
    const outer = toFetchHandler(fromFetchHandler(toFetchHandler(app)))
    await outer(new Request('http://example.com/'), {
      incoming: { socket: { remoteAddress: '192.0.2.99' } },
    })
    expect(only(environs).REMOTE_ADDR).toBe('192.0.2.99')
  })
})
