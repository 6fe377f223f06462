import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { createSigner } from '@wsgiproxy/core'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { WebSocket } from 'ws'
import { closeAll, send } from '@wsgiproxy/test-kit/servers'
import {
  APP,
  NODE,
  WSGI_APP,
  cleanupSpawners,
  serveSpawner,
  spawner,
  waitFor,
} from '@wsgiproxy/test-kit/spawner-helpers'

// Real processes on a loaded 2-core machine: more than Vitest's default 5 s per test and hook.
vi.setConfig({ testTimeout: 20_000, hookTimeout: 20_000 })

afterEach(async () => {
  await closeAll()
  await cleanupSpawners()
})

// Node's own fixture: it imports the built packages.
const SIGNED_BACKEND = fileURLToPath(
  new URL('../../test/fixtures/signed-backend.mjs', import.meta.url),
)

describe('createSpawner forwarding', () => {
  it('serves a Python WSGI backend (wsgiref) that sees the script name, client and scheme', async () => {
    const backend = spawner({ command: ['python3', WSGI_APP, '__PORT__'] })
    const front = await serveSpawner(backend, { scriptName: '/front' })
    const response = await send(front.origin, { path: '/front/hello/world?x=1' })
    expect(response.status).toBe(200)
    const seen = JSON.parse(response.body.toString()) as Record<string, unknown>
    expect(seen).toMatchObject({
      python: 3,
      SCRIPT_NAME: '/front',
      PATH_INFO: '/hello/world',
      QUERY_STRING: 'x=1',
      REMOTE_ADDR: '127.0.0.1',
      HTTP_HOST: `127.0.0.1:${front.port}`,
      'wsgi.url_scheme': 'http',
      version: '0.2',
    })
    expect(seen.pid).toBe(backend.status().pid)
    // PYTHONUNBUFFERED: the startup line arrives while the backend runs, prefixed.
    const port = backend.status().port
    expect(backend.logs.map((l) => l.line)).toContain(
      `[python3 ${seen.pid}] serving WSGI on 127.0.0.1:${port}`,
    )
  })

  it('signs what it forwards for a backend running proxyMiddleware with a verifier', async () => {
    const secret = randomBytes(32)
    const keys = [{ id: 'spawner-test', secret: new Uint8Array(secret) }]
    const env = { SIGNING_SECRET: secret.toString('base64') }
    const signed = spawner({
      name: 'signed',
      command: [NODE, SIGNED_BACKEND],
      env,
      signer: createSigner({ keys }),
    })
    const unsigned = spawner({ name: 'unsigned', command: [NODE, SIGNED_BACKEND], env })
    const front = await serveSpawner(signed, { scriptName: '/app' })
    const response = await send(front.origin, { path: '/app/items?id=7' })
    expect(response.status).toBe(200)
    const environ = JSON.parse(response.body.toString()) as Record<string, string>
    expect(environ).toMatchObject({
      SCRIPT_NAME: '/app',
      PATH_INFO: '/items',
      QUERY_STRING: 'id=7',
      REMOTE_ADDR: '127.0.0.1',
      HTTP_HOST: `127.0.0.1:${front.port}`,
      'wsgi.url_scheme': 'http',
    })
    const refused = await send((await serveSpawner(unsigned)).origin)
    expect(refused.status).toBe(401)
  })

  it('forwards WebSocket upgrades and counts an open one as work in flight', async () => {
    const backend = spawner({ command: [NODE, APP], idleTimeout: 200, env: { WEBSOCKET: '1' } })
    const front = await serveSpawner(backend)
    const socket = new WebSocket(`ws://127.0.0.1:${front.port}/chat`)
    const next = (): Promise<string> =>
      new Promise((resolve) => socket.once('message', (data) => resolve(String(data))))
    const hello = JSON.parse(await next()) as { pid: number; headers: Record<string, string> }
    expect(hello.pid).toBe(backend.status().pid)
    expect(hello.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(hello.headers['x-wsgiproxy-version']).toBe('0.2')
    socket.send('ping')
    expect(await next()).toBe('ping')
    expect(backend.status().inFlight).toBe(1)
    // Well past the idle timeout, the open connection keeps the backend running.
    await new Promise((resolve) => setTimeout(resolve, 600))
    expect(backend.status()).toMatchObject({ state: 'ready', pid: hello.pid })
    socket.close()
    await waitFor(() => backend.status().state === 'idle', { message: 'the idle stop' })
  })
})
