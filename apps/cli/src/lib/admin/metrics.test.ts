import type { AppResponse, EnvironApp, ReplayStore, UpgradableApp } from '@wsgiproxy/core'
import { MemoryReplayStore, WsgiProxyError } from '@wsgiproxy/core'
import { makeEnviron } from '@wsgiproxy/test-kit/environ-fixture'
import { APP, NODE, cleanupSpawners, spawner, waitFor } from '@wsgiproxy/test-kit/spawner-helpers'
import { afterEach, describe, expect, it } from 'vitest'
import {
  countReplayChecks,
  createMetrics,
  measureRequests,
  upstreamErrorCounter,
  watchSpawnerMetrics,
} from './metrics.ts'
import type { Metrics } from './metrics.ts'

// The value of one series of a metric, 0 when it has none.
async function valueOf(
  metric: Metrics[keyof Metrics],
  labels: Record<string, string>,
  name?: string,
): Promise<number> {
  const { values } = await (metric as Metrics['requests']).get()
  const found = values.find(
    (value) =>
      (name === undefined || (value as { metricName?: string }).metricName === name) &&
      Object.entries(labels).every(
        ([key, expected]) => (value.labels as Record<string, unknown>)[key] === expected,
      ),
  )
  return found?.value ?? 0
}

function environ(method: string): Parameters<EnvironApp>[0] {
  return {
    REQUEST_METHOD: method,
    SCRIPT_NAME: '/api',
    PATH_INFO: '/x',
  } as Parameters<EnvironApp>[0]
}

function body(...chunks: string[]): AsyncIterable<Uint8Array> {
  return (async function* () {
    for (const chunk of chunks) yield new TextEncoder().encode(chunk)
  })()
}

describe('measureRequests', () => {
  it('counts and times each request by method and status class', async () => {
    const metrics = await createMetrics()
    let status = 200
    const app = measureRequests<EnvironApp>(
      () => ({ status, headers: [], body: null }),
      '/api',
      metrics,
    )
    await app(environ('GET'))
    await app(environ('GET'))
    status = 503
    await app(environ('POST'))
    await app(environ('BREW'))
    const labels = { route: '/api', method: 'GET', status_class: '2xx' }
    expect(await valueOf(metrics.requests, labels)).toBe(2)
    expect(
      await valueOf(metrics.requests, { route: '/api', method: 'POST', status_class: '5xx' }),
    ).toBe(1)
    // A method outside the known ones is `other`: a client makes no new series.
    expect(
      await valueOf(metrics.requests, { route: '/api', method: 'other', status_class: '5xx' }),
    ).toBe(1)
    expect(
      await valueOf(metrics.duration, labels, 'wsgiproxy_request_duration_seconds_count'),
    ).toBe(2)
  })

  it('counts an app that throws as a 500 and passes the error on', async () => {
    const metrics = await createMetrics()
    const app = measureRequests<EnvironApp>(
      () => {
        throw new Error('broken')
      },
      '/api',
      metrics,
    )
    await expect(app(environ('GET'))).rejects.toThrow('broken')
    expect(
      await valueOf(metrics.requests, { route: '/api', method: 'GET', status_class: '5xx' }),
    ).toBe(1)
    expect(await valueOf(metrics.inFlight, { route: '/api' })).toBe(0)
  })

  it('counts a request in flight until its response body has ended', async () => {
    const metrics = await createMetrics()
    const app = measureRequests<EnvironApp>(
      () => ({ status: 200, headers: [], body: body('a', 'b') }),
      '/api',
      metrics,
    )
    const response = (await app(environ('GET'))) as AppResponse
    expect(await valueOf(metrics.inFlight, { route: '/api' })).toBe(1)
    const chunks: Uint8Array[] = []
    for await (const chunk of response.body ?? []) chunks.push(chunk)
    expect(chunks).toHaveLength(2)
    expect(await valueOf(metrics.inFlight, { route: '/api' })).toBe(0)
  })

  it('keeps prepareUpgrade', async () => {
    const metrics = await createMetrics()
    const prepared = { status: 501, headers: [], body: null }
    const source = Object.assign(() => ({ status: 200, headers: [], body: null }), {
      prepareUpgrade: async () => prepared,
    }) as unknown as UpgradableApp
    const app = measureRequests(source, '/', metrics)
    expect(await app.prepareUpgrade(environ('GET'))).toBe(prepared)
  })
})

describe('countReplayChecks', () => {
  it('counts each answer of the store, and a throw as error', async () => {
    const metrics = await createMetrics()
    const store = countReplayChecks(new MemoryReplayStore(), '/echo', metrics)
    expect(await store.checkAndSet('k\0n1', 60_000)).toBe('fresh')
    expect(await store.checkAndSet('k\0n1', 60_000)).toBe('replay')
    expect(await store.checkAndSet('k\0n2', 60_000)).toBe('fresh')
    const broken: ReplayStore = {
      checkAndSet: () => Promise.reject(new Error('down')),
    }
    await expect(countReplayChecks(broken, '/echo', metrics).checkAndSet('x', 1)).rejects.toThrow(
      'down',
    )
    const count = (result: string) => valueOf(metrics.replayChecks, { route: '/echo', result })
    expect([await count('fresh'), await count('replay'), await count('error')]).toEqual([2, 1, 1])
  })
})

describe('upstreamErrorCounter', () => {
  it('counts errors answered with a 5xx by code, not a client that went away', async () => {
    const metrics = await createMetrics()
    const count = upstreamErrorCounter(metrics, '/api')
    count?.(new WsgiProxyError('UPSTREAM_UNREACHABLE', 'refused'))
    count?.(new WsgiProxyError('UPSTREAM_UNREACHABLE', 'refused'))
    count?.(new WsgiProxyError('CLIENT_ABORTED', 'gone'))
    expect(
      await valueOf(metrics.upstreamErrors, { route: '/api', code: 'UPSTREAM_UNREACHABLE' }),
    ).toBe(2)
    expect(await valueOf(metrics.upstreamErrors, { route: '/api', code: 'CLIENT_ABORTED' })).toBe(0)
    expect(upstreamErrorCounter(undefined, '/api')).toBeUndefined()
  })
})

describe('watchSpawnerMetrics', () => {
  afterEach(cleanupSpawners)

  it('does not count a backend that exits before it is ready as a crash', async () => {
    const metrics = await createMetrics()
    const backend = spawner({ command: [NODE, APP], env: { EXIT_ON_START: '3' } })
    watchSpawnerMetrics(backend, '/app', metrics)
    const errors: string[] = []
    backend.on('error', (error) => errors.push(error.code))
    await expect(backend.start()).rejects.toThrow('before it was ready')
    expect(errors).toEqual(['BACKEND_EXITED'])
    expect(await valueOf(metrics.spawns, { route: '/app' })).toBe(1)
    expect(await valueOf(metrics.crashes, { route: '/app' })).toBe(0)
  })

  it('counts a ready backend that exits on its own once, and not one stopped for being idle', async () => {
    const metrics = await createMetrics()
    const backend = spawner({ command: [NODE, APP], idleTimeout: 300 })
    watchSpawnerMetrics(backend, '/app', metrics)
    await backend.start()
    const crashed = await backend.app(makeEnviron({ PATH_INFO: '/crash' }))
    expect(crashed.status).toBe(502)
    await waitFor(() => backend.status().state === 'idle', { message: 'the crash' })
    expect(backend.status().crashes).toBe(1)
    expect(await valueOf(metrics.crashes, { route: '/app' })).toBe(1)
    await backend.start()
    await waitFor(() => backend.status().state === 'idle', { message: 'the idle stop' })
    expect(await valueOf(metrics.idleStops, { route: '/app' })).toBe(1)
    expect(await valueOf(metrics.spawns, { route: '/app' })).toBe(2)
    expect(await valueOf(metrics.crashes, { route: '/app' })).toBe(1)
  })
})
