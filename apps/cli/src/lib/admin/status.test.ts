import { describe, expect, it } from 'vitest'
import { formatStatus, statusUrl } from './status-command.ts'
import { mergeRoutes } from './status.ts'
import type { RouteReport, StatusReport, TargetReport } from './status.ts'

function target(href: string, state: TargetReport['state'], requests: number): TargetReport {
  return {
    href,
    weight: 1,
    state,
    inFlight: 1,
    requests,
    failures: 1,
    connectErrors: 0,
    ejections: 0,
  }
}

describe('mergeRoutes', () => {
  it('adds up the targets of every worker and keeps the worst state', () => {
    const one: RouteReport[] = [
      { path: '/api', kind: 'proxy', targets: [target('http://a', 'healthy', 3)], retries: 1 },
      { path: '/app', kind: 'spawn' },
    ]
    const two: RouteReport[] = [
      { path: '/api', kind: 'proxy', targets: [target('http://a', 'down', 4)], retries: 2 },
      { path: '/app', kind: 'spawn' },
    ]
    const spawner = {
      name: 'app',
      state: 'ready' as const,
      starts: 1,
      crashes: 0,
      queued: 0,
      lastError: null,
      backends: [{ pid: 10, port: 20, state: 'ready', inFlight: 0 }],
    }
    const merged = mergeRoutes([one, two], [{ path: '/app', kind: 'spawn', spawner }])
    expect(merged[0]).toEqual({
      path: '/api',
      kind: 'proxy',
      targets: [{ ...target('http://a', 'down', 7), inFlight: 2, failures: 2 }],
      retries: 3,
    })
    expect(merged[1]).toEqual({ path: '/app', kind: 'spawn', spawner })
    // The workers' reports are left as they were.
    expect(one[0]?.targets?.[0]?.requests).toBe(3)
  })

  it("gives the main process's spawn routes when no worker answered", () => {
    const spawn: RouteReport = { path: '/app', kind: 'spawn' }
    expect(mergeRoutes([], [spawn])).toEqual([spawn])
  })
})

describe('statusUrl', () => {
  it('takes an address or a URL', () => {
    expect(statusUrl('127.0.0.1:9464')).toBe('http://127.0.0.1:9464/status')
    expect(statusUrl('9464')).toBe('http://127.0.0.1:9464/status')
    expect(statusUrl('[::1]:9464')).toBe('http://[::1]:9464/status')
    expect(statusUrl('http://10.0.0.1:9464/metrics')).toBe('http://10.0.0.1:9464/status')
  })

  it('refuses anything else, naming the forms', () => {
    expect(() => statusUrl('localhost')).toThrow(
      'status: --admin must be host:port or an http:// URL such as http://127.0.0.1:9464 (got "localhost")',
    )
  })
})

describe('formatStatus', () => {
  const report: StatusReport = {
    pid: 99,
    generation: 2,
    url: 'http://127.0.0.1:8080',
    listening: true,
    routes: [
      {
        path: '/api',
        kind: 'proxy',
        targets: [target('http://a:1', 'healthy', 5), target('http://b:2', 'down', 6)],
      },
      {
        path: '/app',
        kind: 'spawn',
        name: 'app',
        spawner: {
          name: 'app',
          state: 'ready',
          starts: 1,
          crashes: 0,
          queued: 0,
          lastError: null,
          backends: [{ pid: 4242, port: 40001, state: 'ready', inFlight: 3 }],
        },
      },
      { path: '/echo', kind: 'echo' },
    ],
    readiness: {
      ready: false,
      reasons: [],
      routes: [{ path: '/api', kind: 'proxy', reason: 'no healthy target', worker: 7 }],
    },
    workers: [{ pid: 7, generation: 2, answered: true, ready: false }],
  }

  it('prints one row per target and backend, and what is not ready', () => {
    expect(formatStatus(report)).toBe(
      [
        'wsgiproxy pid 99, config generation 2, http://127.0.0.1:8080: NOT READY',
        'workers: 7 not ready',
        '',
        'ROUTE       KIND   TARGET               STATE    IN FLIGHT  REQUESTS  FAILURES  EJECTIONS',
        '/api        proxy  http://a:1           healthy  1          5         1         0',
        '                   http://b:2           down     1          6         1         0',
        '/app (app)  spawn  pid 4242 port 40001  ready    3',
        '/echo       echo   -',
        '',
        'not ready:',
        '  /api (worker 7): no healthy target',
        '',
      ].join('\n'),
    )
  })
})
