import { getConnInfo as nodeConnInfo } from '@hono/node-server/conninfo'
import type { Environ, EnvironApp } from '@wsgiproxy/core'
import { environUrl, WsgiProxyError } from '@wsgiproxy/core'
import { Hono } from 'hono'
import type { ConnInfo } from 'hono/conninfo'
import { describe, expect, it } from 'vitest'
import { echoEnviron } from '@wsgiproxy/test-kit/servers'
import { recordingErrorHook } from '@wsgiproxy/test-kit/errors'
import type { MountOptions } from './mount.ts'
import { mount } from './mount.ts'

/** An app that records the environs it gets and answers them as JSON. */
function recording(): { app: EnvironApp; environs: Environ[] } {
  const environs: Environ[] = []
  return {
    environs,
    app: (environ) => {
      environs.push(environ)
      return echoEnviron(environ)
    },
  }
}

/** The only environ an app got. */
function only(environs: Environ[]): Environ {
  expect(environs).toHaveLength(1)
  const [environ] = environs
  if (environ === undefined) throw new Error('the app was not called')
  return environ
}

const quiet: MountOptions = { onError: () => {} }

/** A Hono app with the routes the SCRIPT_NAME / PATH_INFO table uses, all mounting `app`. */
function routes(app: EnvironApp): Hono {
  const handler = mount(app, quiet)
  const v1 = new Hono()
  v1.all('/api/*', handler)
  const root = new Hono()
  root.route('/v1', v1)
  root.route('/v2', new Hono().route('/inner', new Hono().all('/*', handler)))
  root.all('/api/*', handler)
  root.all('/users/:id/*', handler)
  root.all('/files/:name{.+\\.txt}/*', handler)
  root.all('/health', handler)
  root.all('/catch/*', handler)
  root.all('*', handler)
  return root
}

/** The REMOTE_ADDR an app mounted with these options gets, with this runtime env. */
async function remoteAddr(options: MountOptions, env?: object): Promise<unknown> {
  const { app, environs } = recording()
  await new Hono().all('/*', mount(app, options)).request('/', undefined, env)
  return only(environs).REMOTE_ADDR
}

/** A Hono app mounting `app` at /x/*, recording what reaches Hono's own error handler. */
function honoApp(
  app: EnvironApp,
  options: MountOptions = quiet,
): { hono: Hono; honoErrors: unknown[] } {
  const honoErrors: unknown[] = []
  const hono = new Hono().all('/x/*', mount(app, options))
  hono.onError((error, c) => {
    honoErrors.push(error)
    return c.text('hono error handler', 500)
  })
  return { hono, honoErrors }
}

const failing: EnvironApp = () => {
  throw new Error('exact reason')
}

const connInfo = (): ConnInfo => ({ remote: { address: '192.0.2.13', addressType: 'IPv4' } })

describe('mount', () => {
  it.each([
    ['/api/users/1', '/api', '/users/1'],
    ['/api', '/api', ''],
    ['/api/', '/api', '/'],
    ['/api/a%2Fb/c', '/api', '/a/b/c'],
    ['/api/caf%C3%A9/x%20y', '/api', '/café/x y'],
    ['/api/100%25', '/api', '/100%'],
    ['/v1/api/x', '/v1/api', '/x'],
    ['/v1/api', '/v1/api', ''],
    ['/v2/inner/deep/er', '/v2/inner', '/deep/er'],
    ['/users/7/posts', '/users/7', '/posts'],
    ['/users/a%2Fb/posts/1', '/users/a/b', '/posts/1'],
    ['/users/caf%C3%A9/x', '/users/café', '/x'],
    ['/files/a/b.txt/meta', '/files/a/b.txt', '/meta'],
    ['/health', '/health', ''],
    ['/anything/else', '', '/anything/else'],
    ['/', '', '/'],
  ])('mounts %s as SCRIPT_NAME %j and PATH_INFO %j', async (path, scriptName, pathInfo) => {
    const { app, environs } = recording()
    const response = await routes(app).request(path)
    expect(response.status).toBe(200)
    const environ = only(environs)
    expect([environ.SCRIPT_NAME, environ.PATH_INFO]).toEqual([scriptName, pathInfo])
    // The raw path is kept, so the environ describes the URL exactly as received (%2F included).
    expect(environ['wsgiproxy.raw_path']).toBe(path)
    expect(environUrl(environ).pathname).toBe(path)
  })

  it('passes the query string raw and the method, headers and body', async () => {
    const { app, environs } = recording()
    const response = await routes(app).request('http://example.com:8080/api/x?a=1&b=%20&c', {
      method: 'POST',
      headers: { 'content-type': 'text/plain', 'x-custom': 'yes' },
      body: 'payload',
    })
    expect(response.status).toBe(200)
    const environ = only(environs)
    expect(environ).toMatchObject({
      REQUEST_METHOD: 'POST',
      QUERY_STRING: 'a=1&b=%20&c',
      CONTENT_TYPE: 'text/plain',
      HTTP_X_CUSTOM: 'yes',
      SERVER_NAME: 'example.com',
      SERVER_PORT: '8080',
      'wsgi.url_scheme': 'http',
    })
    expect(await new Response(environ['wsgi.input'] as ReadableStream).text()).toBe('payload')
  })

  it('sends the app response: status, reason, repeated Set-Cookie lines and body', async () => {
    const app = new Hono().all(
      '/x/*',
      mount(() => ({
        status: 201,
        statusText: 'Made It',
        headers: [
          ['set-cookie', 'a=1'],
          ['set-cookie', 'b=2'],
          ['content-type', 'text/plain'],
        ],
        body: new Response('made').body,
      })),
    )
    const response = await app.request('/x/y')
    expect(response.status).toBe(201)
    expect(response.statusText).toBe('Made It')
    expect(response.headers.getSetCookie()).toEqual(['a=1', 'b=2'])
    expect(await response.text()).toBe('made')
  })

  it('answers HEAD with the headers of the app response and no body', async () => {
    const { app, environs } = recording()
    const response = await routes(app).request('/api/x', { method: 'HEAD' })
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toBe('application/json')
    expect(await response.text()).toBe('')
    expect(only(environs).REQUEST_METHOD).toBe('HEAD')
  })

  describe('REMOTE_ADDR', () => {
    const nodeEnv = {
      incoming: {
        socket: { remoteAddress: '192.0.2.10', remotePort: 50000, remoteFamily: 'IPv4' },
      },
    }

    it('finds the peer address in the @hono/node-server, Bun and Deno env by default', async () => {
      expect(await remoteAddr({}, nodeEnv)).toBe('192.0.2.10')
      expect(await remoteAddr({}, { requestIP: () => ({ address: '2001:db8::1' }) })).toBe(
        '2001:db8::1',
      )
      expect(await remoteAddr({}, { remoteAddr: { hostname: '192.0.2.11' } })).toBe('192.0.2.11')
    })

    it('leaves REMOTE_ADDR out when the runtime gives no address', async () => {
      expect(await remoteAddr({})).toBeUndefined()
    })

    // hono/bun and hono/deno cannot be imported outside their runtime (they read the Bun or
    // Deno global on import); their helpers answer the same ConnInfo shape.
    it('takes the address from a Hono conninfo helper passed as getRemoteAddr', async () => {
      expect(await remoteAddr({ getRemoteAddr: nodeConnInfo }, nodeEnv)).toBe('192.0.2.10')
      expect(await remoteAddr({ getRemoteAddr: connInfo }, nodeEnv)).toBe('192.0.2.13')
      expect(await remoteAddr({ getRemoteAddr: () => ({ remote: {} }) }, nodeEnv)).toBeUndefined()
    })

    it('lets getRemoteAddr override the runtime address', async () => {
      const seen: unknown[] = []
      const address = await remoteAddr(
        {
          getRemoteAddr: (c) => {
            seen.push(c.req.path)
            return c.req.header('cf-connecting-ip')
          },
        },
        nodeEnv,
      )
      expect(seen).toEqual(['/'])
      expect(address).toBeUndefined()
    })
  })

  describe('errors', () => {
    it("answers an app that throws with 500 problem+json and a generic detail, never Hono's handler", async () => {
      const { hono, honoErrors } = honoApp(() => {
        throw new Error('database 10.0.0.5:5432 refused the connection')
      })
      const response = await hono.request('/x/y')
      expect(response.status).toBe(500)
      expect(response.headers.get('content-type')).toBe('application/problem+json')
      const text = await response.text()
      expect(JSON.parse(text)).toMatchObject({ status: 500, code: 'APP_ERROR' })
      expect(text).not.toContain('10.0.0.5')
      expect(honoErrors).toEqual([])
    })

    it('answers the status and code of a WsgiProxyError the app throws', async () => {
      const { hono } = honoApp(async () => {
        throw new WsgiProxyError('UPSTREAM_CONNECT_TIMEOUT', 'too slow')
      })
      const response = await hono.request('/x/y')
      expect(response.status).toBe(504)
      expect(await response.json()).toMatchObject({ code: 'UPSTREAM_CONNECT_TIMEOUT' })
    })

    it('answers 400 problem+json to a Host header that is not host[:port]', async () => {
      const { app, environs } = recording()
      const response = await honoApp(app).hono.request('/x/y', { headers: { host: 'a b' } })
      expect(response.status).toBe(400)
      expect(await response.json()).toMatchObject({ status: 400, code: 'BAD_REQUEST' })
      expect(environs).toEqual([])
    })

    it('answers 431 problem+json above maxHeaders', async () => {
      const { app, environs } = recording()
      const { hono } = honoApp(app, { ...quiet, maxHeaders: 2 })
      const response = await hono.request('/x/y', { headers: { a: '1', b: '2', c: '3' } })
      expect(response.status).toBe(431)
      expect(environs).toEqual([])
    })

    it('shows the error message with exposeErrors and sends what onError returns', async () => {
      const exposed = await honoApp(failing, { ...quiet, exposeErrors: true }).hono.request('/x/y')
      expect(await exposed.json()).toMatchObject({ detail: 'exact reason' })
      const errors: unknown[] = []
      const replaced = await honoApp(failing, {
        onError: (error, environ) => {
          expect(error).toBeInstanceOf(WsgiProxyError)
          errors.push([error.code, error.message, environ?.SCRIPT_NAME, environ?.PATH_INFO])
          return { status: 503, headers: [['retry-after', '5']], body: null }
        },
      }).hono.request('/x/y')
      expect(replaced.status).toBe(503)
      expect(replaced.headers.get('retry-after')).toBe('5')
      expect(errors).toEqual([['APP_ERROR', 'exact reason', '/x', '/y']])
    })

    it('calls onError without an environ for a request it cannot turn into one', async () => {
      const { app, environs } = recording()
      const { onError, calls } = recordingErrorHook()
      const { hono } = honoApp(app, {
        onError,
      })
      const response = await hono.request('/x/y', { headers: { host: 'a b' } })
      expect(response.status).toBe(421)
      expect(calls).toEqual([['BAD_REQUEST', undefined]])
      expect(environs).toEqual([])
    })

    it('answers 500 on a route whose wildcard does not follow "/"', async () => {
      const { app, environs } = recording()
      const errors: unknown[] = []
      const hono = new Hono().all(
        '/x*',
        mount(app, { onError: (error) => void errors.push(error) }),
      )
      const response = await hono.request('/xyz')
      expect(response.status).toBe(500)
      expect(environs).toEqual([])
      expect(String(errors[0])).toContain('mount() needs a route whose wildcard follows "/"')
    })

    it('answers 500 rather than a wrong split when the app routes on another path', async () => {
      const { app, environs } = recording()
      const errors: unknown[] = []
      // Host-based routing: the routed path is "/<host><path>", not the URL path.
      const hono = new Hono({
        getPath: (request) => `/${new URL(request.url).hostname}${new URL(request.url).pathname}`,
      })
      hono.all('/tenant.example/api/*', mount(app, { onError: (error) => void errors.push(error) }))
      const response = await hono.request('http://tenant.example/api/x')
      expect(response.status).toBe(500)
      expect(environs).toEqual([])
      expect(String(errors[0])).toContain('a custom getPath')
    })

    it('answers 400 to an encoded ".." segment that would climb out of the mount', async () => {
      const { app, environs } = recording()
      const response = await routes(app).request('/api/..%2Fsecret')
      expect(response.status).toBe(400)
      expect(environs).toEqual([])
    })
  })

  it('names mount and the option in option errors', () => {
    const { app } = recording()
    const message = (options: unknown): unknown => {
      let caught: unknown
      try {
        mount(app, options as MountOptions)
      } catch (error) {
        caught = error
      }
      expect(caught).toMatchObject({ code: 'INVALID_OPTIONS' })
      return (caught as Error).message
    }
    expect(message({ maxHeaders: 0 })).toMatch(/^invalid options: mount\.maxHeaders: /)
    expect(message({ onError: 'log' })).toBe('invalid options: mount.onError: expected a function')
    expect(message({ getRemoteAddr: 'x-real-ip' })).toBe(
      'invalid options: mount.getRemoteAddr: expected a function',
    )
    expect(message({ exposeErrors: 'yes' })).toMatch(/^invalid options: mount\.exposeErrors: /)
    expect(message({ scriptName: '/x' })).toMatch(/^invalid options: mount: .*"scriptName"/)
  })
})
