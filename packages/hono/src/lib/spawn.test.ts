// spawn() over real sockets: a Hono app on @hono/node-server whose route starts a Python WSGI
// backend (the node package's wsgi_echo.py fixture) on the first request.
import { fileURLToPath } from 'node:url'
import { Hono } from 'hono'
import { afterEach, describe, expect, it } from 'vitest'
import { closeAll, send } from '../../../core/src/test/servers.ts'
import type { SpawnHandler } from '../node.ts'
import { spawn } from '../node.ts'
import { serveHono } from '../test/serve-hono.ts'

const echoBackend = fileURLToPath(
  new URL('../../../node/src/test/fixtures/wsgi_echo.py', import.meta.url),
)

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
})
