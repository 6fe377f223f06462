// spawn() over real sockets: a Hono app on @hono/node-server whose route starts a Python WSGI
// backend (the test kit's wsgi_echo.py fixture) on the first request.
import { WsgiProxyError } from '@wsgiproxy/core'
import { Hono } from 'hono'
import { afterEach, describe, expect, it } from 'vitest'
import { closeAll, send } from '@wsgiproxy/test-kit/servers'
import type { SpawnHandler, SpawnOptions } from '../node.ts'
import { spawn } from '../node.ts'
import { serveHono } from '@wsgiproxy/test-kit/serve-hono'
import { WSGI_APP as echoBackend } from '@wsgiproxy/test-kit/spawner-helpers'
import { recordingErrorHook } from '@wsgiproxy/test-kit/errors'

const handlers: SpawnHandler[] = []

function pythonBackend(options: { idleTimeout?: number } = {}): SpawnHandler {
  const handler = spawn({
    command: ['python3', echoBackend, '__PORT__'],
    name: 'echo',
    logger: false,
    orphanGuard: false,
    ...options,
  })
  handlers.push(handler)
  return handler
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe('spawn (@wsgiproxy/hono/node)', () => {
  afterEach(async () => {
    await Promise.all(handlers.splice(0).map((h) => h.close()))
    await closeAll()
  })

  it('starts the backend on the first request and forwards the route prefix as SCRIPT_NAME', async () => {
    const py = pythonBackend()
    const app = new Hono()
    app.all('/py/*', py)
    const front = await serveHono(app)
    expect(py.spawner.status()).toMatchObject({ state: 'idle', pid: null, starts: 0 })

    const res = await send(front.origin, { path: '/py/hello/world?x=1' })
    expect(res.status).toBe(200)
    const seen = JSON.parse(res.body.toString()) as Record<string, unknown>
    expect(seen).toMatchObject({
      SCRIPT_NAME: '/py',
      PATH_INFO: '/hello/world',
      QUERY_STRING: 'x=1',
      REMOTE_ADDR: '127.0.0.1',
      HTTP_HOST: `127.0.0.1:${front.port}`,
      version: '0.2',
    })
    expect(py.spawner.status()).toMatchObject({ state: 'ready', starts: 1, pid: seen['pid'] })

    const again = await send(front.origin, { path: '/py/' })
    expect(JSON.parse(again.body.toString())).toMatchObject({ pid: seen['pid'], PATH_INFO: '/' })
    expect(py.spawner.status().starts).toBe(1)
  })

  it('sees a nested route prefix as SCRIPT_NAME', async () => {
    const py = pythonBackend()
    const api = new Hono()
    api.all('/legacy/*', py)
    const app = new Hono().route('/v1', api)
    const front = await serveHono(app)
    const res = await send(front.origin, { path: '/v1/legacy/a%20b' })
    expect(JSON.parse(res.body.toString())).toMatchObject({
      SCRIPT_NAME: '/v1/legacy',
      PATH_INFO: '/a b',
    })
  })

  it('leaves no process after close(), and answers 503 afterwards', async () => {
    const py = pythonBackend()
    const app = new Hono()
    app.all('/py/*', py)
    const front = await serveHono(app)
    const res = await send(front.origin, { path: '/py/' })
    const { pid } = JSON.parse(res.body.toString()) as { pid: number }
    expect(alive(pid)).toBe(true)

    await py.close()
    expect(alive(pid)).toBe(false)
    expect(py.spawner.status().state).toBe('closed')
    const after = await send(front.origin, { path: '/py/' })
    expect(after.status).toBe(503)
  })

  it('stops the backend when idle and starts it again on the next request', async () => {
    const py = pythonBackend({ idleTimeout: 200 })
    const app = new Hono()
    app.all('/py/*', py)
    const front = await serveHono(app)
    const first = JSON.parse((await send(front.origin, { path: '/py/' })).body.toString()) as {
      pid: number
    }
    await expect.poll(() => py.spawner.status().state, { timeout: 3_000 }).toBe('idle')
    expect(alive(first.pid)).toBe(false)
    const second = JSON.parse((await send(front.origin, { path: '/py/' })).body.toString()) as {
      pid: number
    }
    expect(second.pid).not.toBe(first.pid)
    expect(py.spawner.status().starts).toBe(2)
  })

  describe('onError', () => {
    it("is called with the spawner's error and the environ, and its response is sent", async () => {
      const calls: unknown[] = []
      const crashing = spawn({
        command: [process.execPath, '-e', 'process.exit(3)'],
        name: 'crashing',
        logger: false,
        orphanGuard: false,
        onError: (error, environ) => {
          expect(error).toBeInstanceOf(WsgiProxyError)
          calls.push([error.status, environ?.SCRIPT_NAME, environ?.PATH_INFO])
          return { status: 503, headers: [['x-hook', 'yes']], body: null }
        },
      })
      handlers.push(crashing)
      const response = await new Hono().all('/py/*', crashing).request('/py/x')
      expect(response.status).toBe(503)
      expect(response.headers.get('x-hook')).toBe('yes')
      expect(calls).toEqual([[502, '/py', '/x']])
    })

    it('is called without an environ for a request that cannot become one', async () => {
      const { onError, calls } = recordingErrorHook()
      const py = spawn({
        command: ['python3', echoBackend, '__PORT__'],
        logger: false,
        orphanGuard: false,
        onError,
      })
      handlers.push(py)
      const response = await new Hono()
        .all('/py/*', py)
        .request('/py/x', { headers: { host: 'a b' } })
      expect(response.status).toBe(421)
      expect(calls).toEqual([['BAD_REQUEST', undefined]])
      expect(py.spawner.status().starts).toBe(0)
    })
  })

  it.each([
    [{ maxHeaders: 0 }, /^invalid options: spawn\.maxHeaders: /],
    [
      { getRemoteAddr: 'x-real-ip' },
      /^invalid options: spawn\.getRemoteAddr: expected a function$/,
    ],
    [{ onError: 'log' }, /^invalid options: spawn\.onError: expected a function$/],
    [{ exposeErrors: 1 }, /^invalid options: spawn\.exposeErrors: /],
  ])('names spawn and the option in the error for %j, starting nothing', (options, message) => {
    let caught: unknown
    try {
      handlers.push(
        spawn({ command: ['python3', echoBackend, '__PORT__'], ...options } as SpawnOptions),
      )
    } catch (error) {
      caught = error
    }
    expect(caught).toMatchObject({
      code: 'INVALID_OPTIONS',
      message: expect.stringMatching(message),
    })
  })
})
