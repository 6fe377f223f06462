import { describe, expect, it } from 'vitest'
import { combineReadiness, readinessOf, routeProblem } from './readiness.ts'
import type { RouteReport, SpawnerReport, TargetReport } from './status.ts'

function target(href: string, state: TargetReport['state']): TargetReport {
  return {
    href,
    weight: 1,
    state,
    inFlight: 0,
    requests: 0,
    failures: 0,
    connectErrors: 0,
    ejections: 0,
  }
}

function spawner(state: SpawnerReport['state'], lastError: string | null = null): SpawnerReport {
  return { name: 'app', state, starts: 0, crashes: 0, queued: 0, lastError, backends: [] }
}

describe('routeProblem', () => {
  it('passes a pool with one healthy target among others down or ejected', () => {
    const route: RouteReport = {
      path: '/api',
      kind: 'proxy',
      targets: [
        target('http://a', 'down'),
        target('http://b', 'healthy'),
        target('http://c', 'ejected'),
      ],
    }
    expect(routeProblem(route)).toBeUndefined()
  })

  it('names every target of a pool without a healthy one', () => {
    const route: RouteReport = {
      path: '/api',
      kind: 'proxy',
      targets: [target('http://a', 'down'), target('http://b', 'ejected')],
    }
    expect(routeProblem(route)).toBe('no healthy target (http://a down, http://b ejected)')
  })

  it('passes a spawner that can start a backend, and one without a process', () => {
    for (const state of ['idle', 'starting', 'ready', 'stopping'] as const) {
      expect(routeProblem({ path: '/', kind: 'spawn', spawner: spawner(state) })).toBeUndefined()
    }
  })

  it('fails a spawner in backoff or closed, with its last error', () => {
    expect(
      routeProblem({ path: '/', kind: 'spawn', spawner: spawner('backoff', 'exited with code 1') }),
    ).toBe('spawner app is in backoff: exited with code 1')
    expect(routeProblem({ path: '/', kind: 'spawn', spawner: spawner('closed') })).toBe(
      'spawner app is in closed',
    )
  })

  it('passes routes with nothing to judge: one href, echo, a leasing spawn route', () => {
    expect(routeProblem({ path: '/', kind: 'proxy', href: 'http://a' })).toBeUndefined()
    expect(routeProblem({ path: '/', kind: 'echo' })).toBeUndefined()
    expect(routeProblem({ path: '/', kind: 'spawn' })).toBeUndefined()
  })
})

describe('readinessOf', () => {
  const down: RouteReport = { path: '/api', kind: 'proxy', targets: [target('http://a', 'down')] }

  it('is ready when the listener listens and every route is', () => {
    expect(readinessOf(true, [{ path: '/', kind: 'echo' }])).toEqual({
      ready: true,
      reasons: [],
      routes: [],
    })
  })

  it('is not ready while the listener does not listen', () => {
    expect(readinessOf(false, [])).toEqual({
      ready: false,
      reasons: ['the public listener does not listen'],
      routes: [],
    })
  })

  it('names the routes that are not ready, and the worker', () => {
    expect(readinessOf(true, [down], 42).routes).toEqual([
      { path: '/api', kind: 'proxy', reason: 'no healthy target (http://a down)', worker: 42 },
    ])
  })

  it('combines: ready only when every part is', () => {
    const ready = readinessOf(true, [])
    expect(combineReadiness([ready, ready]).ready).toBe(true)
    expect(combineReadiness([ready, readinessOf(true, [down])]).ready).toBe(false)
    expect(combineReadiness([ready], ['worker 7 is starting'])).toEqual({
      ready: false,
      reasons: ['worker 7 is starting'],
      routes: [],
    })
  })
})
