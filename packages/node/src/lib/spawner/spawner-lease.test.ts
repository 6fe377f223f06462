// Leases: a spawner lends its backend to requests another app (or process) forwards, and
// createLeasedSpawnerApp is that app. The spawner counts leased requests in flight like its own.
import { afterEach, describe, expect, it, vi } from 'vitest'
import { closeAll, send } from '@wsgiproxy/test-kit/servers'
import { APP, NODE, cleanupSpawners, spawner, waitFor } from '@wsgiproxy/test-kit/spawner-helpers'
import { serve } from '../http/serve.ts'
import { createLeasedSpawnerApp } from './leased-app.ts'
import { SpawnerError } from './spawner-error.ts'
import type { SpawnerLease } from './spawner.ts'

// Real processes on a loaded 2-core machine: more than Vitest's default 5 s per test and hook.
vi.setConfig({ testTimeout: 20_000, hookTimeout: 20_000 })

const served: Array<{ close(): Promise<void> }> = []

afterEach(async () => {
  await Promise.all(served.splice(0).map((server) => server.close()))
  await closeAll()
  await cleanupSpawners()
})

describe('spawner.lease()', () => {
  it('starts one backend for leases taken together and counts them in flight', async () => {
    const backend = spawner({ command: [NODE, APP] })
    const leases = await Promise.all(Array.from({ length: 5 }, () => backend.lease()))
    expect(new Set(leases.map((lease) => lease.pid))).toEqual(new Set([backend.status().pid]))
    expect(leases[0]).toMatchObject({ host: '127.0.0.1', port: backend.status().port })
    expect(backend.status()).toMatchObject({ starts: 1, inFlight: 5 })
    for (const lease of leases) lease.release()
    // Idempotent: a second release does not count down again.
    leases[0]?.release()
    expect(backend.status().inFlight).toBe(0)
  })

  it('holds off the idle stop while a lease is held', async () => {
    const backend = spawner({ command: [NODE, APP], idleTimeout: 100 })
    const lease = await backend.lease()
    const idle = vi.fn<() => void>()
    backend.on('idle', idle)
    // A control with the same idle timeout, started after: its idle stop comes later than the
    // leased backend's would have without the lease.
    const control = spawner({ command: [NODE, APP], idleTimeout: 100 })
    await control.start()
    await new Promise((resolve) => control.once('idle', resolve))
    expect(idle).not.toHaveBeenCalled()
    expect(backend.status().state).toBe('ready')
    lease.release()
    await waitFor(() => idle.mock.calls.length === 1, {
      timeout: 10_000,
      message: 'the idle stop after the release',
    })
  })

  it('gives a pool the least busy instance', async () => {
    const pool = spawner({ command: [NODE, APP], instances: { min: 2, max: 2 } })
    await pool.start()
    const first = await pool.lease()
    const second = await pool.lease()
    expect(first.pid).not.toBe(second.pid)
    first.release()
    second.release()
  })

  it('rejects with the failure the app would answer', async () => {
    const backend = spawner({ command: [NODE, APP], env: { EXIT_ON_START: '3' } })
    const failure = await backend.lease().catch((error: unknown) => error)
    expect(failure).toBeInstanceOf(SpawnerError)
    expect(failure).toMatchObject({ code: 'BACKEND_EXITED', status: 502 })
  })
})

describe('createLeasedSpawnerApp', () => {
  it('forwards to the leased backend with the protocol headers and releases at the body end', async () => {
    const backend = spawner({ command: [NODE, APP] })
    const taken: SpawnerLease[] = []
    const app = createLeasedSpawnerApp({
      lease: async (signal) => {
        const lease = await backend.lease(signal)
        taken.push(lease)
        return lease
      },
    })
    const server = await serve(app, { port: 0, scriptName: '/front' })
    served.push(server)
    const response = await send(server.url, { path: '/front/items?x=1' })
    expect(response.status).toBe(200)
    const seen = JSON.parse(response.body.toString()) as {
      pid: number
      url: string
      headers: Record<string, string>
    }
    expect(seen.pid).toBe(backend.status().pid)
    expect(seen.url).toBe('/items?x=1')
    expect(seen.headers).toMatchObject({
      'x-forwarded-script-name': '/front',
      'x-forwarded-for': '127.0.0.1',
      'x-wsgiproxy-version': '0.2',
    })
    expect(taken).toHaveLength(1)
    await waitFor(() => backend.status().inFlight === 0, {
      timeout: 10_000,
      message: 'the release',
    })
  })

  it('answers a failed lease as the spawner app does (status, code, Retry-After)', async () => {
    const app = createLeasedSpawnerApp({
      lease: () =>
        Promise.reject(
          new SpawnerError('BACKEND_BACKOFF', 'the backend failed to start twice', {
            retryAfter: 7,
            expose: true,
          }),
        ),
    })
    const server = await serve(app, { port: 0 })
    served.push(server)
    const response = await send(server.url)
    expect(response.status).toBe(503)
    expect(response.headers['retry-after']).toBe('7')
    expect(response.body.toString()).toMatch(/BACKEND_BACKOFF/)
  })
})
