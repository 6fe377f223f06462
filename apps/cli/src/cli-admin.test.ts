// The admin listener of the serving commands (`admin.listen`, `--admin`): /metrics scraped and
// read with a Prometheus text parser after known traffic, /healthz, /readyz following a target
// that dies and comes back, /status and `wsgiproxy status`, a spawn route's backends, and
// `serve --workers 2` summing its workers. Real processes and sockets on 127.0.0.1 only.
import { createServer, request } from 'node:http'
import type { IncomingHttpHeaders, Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { getMetricsFromStream } from 'prom2javascript'
import type { PromData, PromHistogramData, PromMetrics } from 'prom2javascript'
import { afterEach, describe, expect, it } from 'vitest'
import { cleanup, runCli, startCli, startCountingUpstream, trackBackend } from './test/run-cli.ts'
import { spawnRoute, startsIn, tempDir, workersOf, writeConfig } from './test/workers.ts'

const servers = new Set<Server>()

afterEach(async () => {
  await cleanup()
  await Promise.all([...servers].map((server) => close(server)))
  servers.clear()
})

interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: string
}

// One request on a connection of its own (no keep-alive: with workers, each may go to another).
function send(url: string, method = 'GET', body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const outgoing = request(url, { method, agent: false, timeout: 20_000 }, (response) => {
      let text = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => (text += chunk))
      response.on('end', () =>
        resolve({ status: response.statusCode ?? 0, headers: response.headers, body: text }),
      )
      response.on('error', reject)
    })
    outgoing.on('error', reject)
    outgoing.on('timeout', () => outgoing.destroy(new Error('no answer in 20 s')))
    outgoing.end(body)
  })
}

// prom-client's event loop lag gauges are NaN when no sample came since the last scrape; the
// parser reads no NaN (Prometheus does, in any case), so those lines are left out.
const NAN_LAG = /^wsgiproxy_nodejs_eventloop_lag_\w+ Nan$/gm

// GET /metrics, read by a Prometheus text format parser (which also checks each histogram's
// +Inf bucket against its count). parse-prometheus-text-format 1.1.1 is not used: it merges the
// series of a histogram with labels into one (its issue #13).
async function scrape(admin: string): Promise<PromMetrics> {
  const answer = await send(`${admin}/metrics`)
  expect(answer.status).toBe(200)
  expect(answer.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/)
  return getMetricsFromStream(Readable.from([answer.body.replace(NAN_LAG, '')]))
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a)
  return keys.length === Object.keys(b).length && keys.every((key) => a[key] === b[key])
}

// The value of the series of `name` with exactly these labels, or `undefined`.
function valueOf(
  metrics: PromMetrics,
  name: string,
  labels: Record<string, string>,
): number | undefined {
  const data = (metrics[name]?.data ?? []) as PromData[]
  return data.find((sample) => sameLabels(sample.labels, labels))?.value
}

function histogramOf(
  metrics: PromMetrics,
  name: string,
  labels: Record<string, string>,
): PromHistogramData | undefined {
  const data = (metrics[name]?.data ?? []) as PromHistogramData[]
  return data.find((sample) => sameLabels(sample.labels, labels))
}

// A server on `port` (0: any) that answers every request; closed in afterEach.
async function listenOn(port: number, text: string): Promise<Server> {
  const server = createServer((req, res) => {
    req.resume()
    res.end(text)
  })
  servers.add(server)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', resolve)
  })
  return server
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  })
}

// A loopback port nothing listens on (it was free a moment ago).
async function freePort(): Promise<number> {
  const server = await listenOn(0, '')
  const { port } = server.address() as AddressInfo
  await close(server)
  servers.delete(server)
  return port
}

// Polls `url` until it answers `status`; the bound is generous next to what it takes (see the
// callers).
async function pollFor(url: string, status: number, timeoutMs: number): Promise<Answer> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const answer = await send(url)
    if (answer.status === status) return answer
    if (Date.now() > deadline) {
      throw new Error(`${url} still answers ${answer.status} (wanted ${status}): ${answer.body}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

// The labels of a target of the /api pool.
function target(port: number): { route: string; target: string } {
  return { route: '/api', target: `http://127.0.0.1:${port}` }
}

async function adminUrlOf(cli: Awaited<ReturnType<typeof startCli>>): Promise<string> {
  const match = await cli.waitFor(/admin listening on (http:\/\/[\d.:]+)/)
  return match[1] ?? ''
}

describe('serve with admin.listen', () => {
  it('counts known traffic in /metrics, follows a dying target in /readyz, and reports /status', async () => {
    const dir = tempDir()
    const file = join(dir, 'wsgiproxy.config.json')
    const a = await startCountingUpstream('A')
    const b = await startCountingUpstream('B')
    const solo = await listenOn(0, 'solo')
    const soloPort = (solo.address() as AddressInfo).port
    const dead = await freePort()
    const config = {
      admin: { listen: '127.0.0.1:0' },
      routes: [
        {
          path: '/api',
          type: 'proxy',
          href: [`http://127.0.0.1:${a.port}`, `http://127.0.0.1:${b.port}`],
        },
        // A pool of one target with an active health check: down after one failed check.
        {
          path: '/solo',
          type: 'proxy',
          href: `http://127.0.0.1:${soloPort}`,
          healthCheck: {
            path: '/health',
            interval: '100ms',
            timeout: '1s',
            healthyThreshold: 1,
            unhealthyThreshold: 1,
          },
        },
        { path: '/dead', type: 'proxy', href: `http://127.0.0.1:${dead}` },
        { path: '/echo', type: 'echo' },
      ],
    }
    writeConfig(file, config)
    const cli = await startCli(['serve'], dir)
    const admin = await adminUrlOf(cli)
    expect(new URL(admin).port).not.toBe(new URL(cli.url).port)
    // The admin line comes after the public one (which tools read first).
    expect(cli.stderr().indexOf('serve listening on')).toBeLessThan(
      cli.stderr().indexOf('admin listening on'),
    )

    // Known traffic: 7 GETs and 3 POSTs through the pool, 2 echoes, 2 unmatched paths (one of
    // them /metrics on the public port: it is no route there, not the metrics), 2 502s.
    for (let i = 0; i < 7; i++) expect((await send(`${cli.url}/api/get/${i}`)).status).toBe(200)
    for (let i = 0; i < 3; i++) {
      expect((await send(`${cli.url}/api/post`, 'POST', `body ${i}`)).status).toBe(200)
    }
    for (let i = 0; i < 2; i++) expect((await send(`${cli.url}/echo/`)).status).toBe(200)
    expect((await send(`${cli.url}/nothing`)).status).toBe(404)
    const publicMetrics = await send(`${cli.url}/metrics`)
    expect(publicMetrics.status).toBe(404)
    expect(publicMetrics.body).not.toContain('wsgiproxy_requests_total')
    for (let i = 0; i < 2; i++) expect((await send(`${cli.url}/dead/`)).status).toBe(502)

    const metrics = await scrape(admin)
    const requests = (route: string, method: string, statusClass: string) =>
      valueOf(metrics, 'wsgiproxy_requests_total', { route, method, status_class: statusClass })
    expect(requests('/api', 'GET', '2xx')).toBe(7)
    expect(requests('/api', 'POST', '2xx')).toBe(3)
    expect(requests('/echo', 'GET', '2xx')).toBe(2)
    expect(requests('-', 'GET', '4xx')).toBe(2)
    expect(requests('/dead', 'GET', '5xx')).toBe(2)
    expect(metrics.wsgiproxy_requests_total?.data).toHaveLength(5)
    const getDuration = histogramOf(metrics, 'wsgiproxy_request_duration_seconds', {
      route: '/api',
      method: 'GET',
      status_class: '2xx',
    })
    expect(getDuration?.count).toBe(7)
    expect(getDuration?.buckets['+Inf']).toBe(7)
    expect(getDuration?.sum).toBeGreaterThan(0)
    // Cumulative: the counts never fall as the bounds grow (an object puts "1", "5"... first).
    const counts = Object.entries(getDuration?.buckets ?? {})
      .toSorted(
        ([x], [y]) => Number(x.replace('+Inf', 'Infinity')) - Number(y.replace('+Inf', 'Infinity')),
      )
      .map(([, count]) => count)
    expect(counts).toHaveLength(14)
    expect(counts).toEqual(counts.toSorted((x, y) => x - y))
    expect(
      histogramOf(metrics, 'wsgiproxy_request_duration_seconds', {
        route: '/api',
        method: 'POST',
        status_class: '2xx',
      })?.count,
    ).toBe(3)
    expect(valueOf(metrics, 'wsgiproxy_requests_in_flight', { route: '/api' })).toBe(0)
    // Per pool target, as the targets counted them.
    expect(a.hits() + b.hits()).toBe(10)
    expect(valueOf(metrics, 'wsgiproxy_upstream_requests_total', target(a.port))).toBe(a.hits())
    expect(valueOf(metrics, 'wsgiproxy_upstream_requests_total', target(b.port))).toBe(b.hits())
    expect(valueOf(metrics, 'wsgiproxy_upstream_failures_total', target(a.port))).toBe(0)
    expect(valueOf(metrics, 'wsgiproxy_upstream_connect_errors_total', target(a.port))).toBe(0)
    expect(valueOf(metrics, 'wsgiproxy_upstream_ejections_total', target(a.port))).toBe(0)
    expect(valueOf(metrics, 'wsgiproxy_upstream_in_flight', target(a.port))).toBe(0)
    expect(valueOf(metrics, 'wsgiproxy_upstream_healthy', target(a.port))).toBe(1)
    expect(valueOf(metrics, 'wsgiproxy_upstream_retries_total', { route: '/api' })).toBe(0)
    // The single href's failures, by code.
    expect(
      valueOf(metrics, 'wsgiproxy_upstream_errors_total', {
        route: '/dead',
        code: 'UPSTREAM_UNREACHABLE',
      }),
    ).toBe(2)
    // prom-client's process metrics, prefixed.
    expect(metrics.wsgiproxy_process_cpu_user_seconds_total?.type).toBe('counter')
    expect(metrics.wsgiproxy_nodejs_heap_size_used_bytes?.type).toBe('gauge')

    // The other endpoints, and only GET and HEAD.
    expect(await send(`${admin}/healthz`)).toMatchObject({ status: 200, body: 'ok\n' })
    expect(await send(`${admin}/healthz`, 'HEAD')).toMatchObject({ status: 200, body: '' })
    const post = await send(`${admin}/metrics`, 'POST')
    expect(post.status).toBe(405)
    expect(post.headers.allow).toBe('GET, HEAD')
    expect((await send(`${admin}/api/get/1`)).status).toBe(404)
    expect(await send(`${admin}/readyz`)).toMatchObject({ status: 200, body: 'ok\n' })

    const status = JSON.parse((await send(`${admin}/status`)).body) as {
      generation: number
      routes: Array<{ path: string; kind: string; href?: string; targets?: unknown[] }>
    }
    expect(status.generation).toBe(1)
    expect(status.routes.map((route) => [route.path, route.kind])).toEqual([
      ['/api', 'proxy'],
      ['/solo', 'proxy'],
      ['/dead', 'proxy'],
      ['/echo', 'echo'],
    ])
    expect(status.routes[0]?.targets).toEqual([
      expect.objectContaining({ href: `http://127.0.0.1:${a.port}`, state: 'healthy' }),
      expect.objectContaining({ href: `http://127.0.0.1:${b.port}`, state: 'healthy' }),
    ])
    expect(status.routes[2]?.href).toBe(`http://127.0.0.1:${dead}`)

    const printed = await runCli(['status', '--admin', admin])
    expect(printed.code).toBe(0)
    expect(printed.stdout).toMatch(/: ready\n/)
    for (const text of ['/api', `http://127.0.0.1:${a.port}`, '/solo', '/dead', '/echo']) {
      expect(printed.stdout).toContain(text)
    }
    expect(printed.stdout).toMatch(new RegExp(`http://127\\.0\\.0\\.1:${b.port} +healthy`))
    const json = await runCli(['status', '--admin', new URL(admin).host, '--json'])
    expect(JSON.parse(json.stdout)).toMatchObject({
      routes: status.routes.map(({ path }) => ({ path })),
    })

    // The only target of /solo dies: one failed check (100 ms apart) takes it down; measured
    // at about 110 ms here (and as long to come back), polled for up to 10 s.
    await close(solo)
    const unready = await pollFor(`${admin}/readyz`, 503, 10_000)
    expect(JSON.parse(unready.body)).toEqual({
      ready: false,
      reasons: [],
      routes: [
        {
          path: '/solo',
          kind: 'proxy',
          reason: `no healthy target (http://127.0.0.1:${soloPort} down)`,
        },
      ],
    })
    const down = await scrape(admin)
    expect(
      valueOf(down, 'wsgiproxy_upstream_healthy', {
        route: '/solo',
        target: `http://127.0.0.1:${soloPort}`,
      }),
    ).toBe(0)
    const notReady = await runCli(['status', '--admin', admin])
    expect(notReady.stdout).toContain('NOT READY')
    expect(notReady.stdout).toContain('/solo: no healthy target')
    // It comes back on the same port: one passed check brings it up.
    await listenOn(soloPort, 'solo')
    await pollFor(`${admin}/readyz`, 200, 10_000)

    // A reload keeps the counters (the route label is the path) and counts a generation.
    writeConfig(file, config)
    process.kill(cli.pid, 'SIGHUP')
    await cli.waitFor(/config reloaded/)
    expect((await send(`${cli.url}/api/again`)).status).toBe(200)
    const after = await scrape(admin)
    expect(
      valueOf(after, 'wsgiproxy_requests_total', {
        route: '/api',
        method: 'GET',
        status_class: '2xx',
      }),
    ).toBe(8)
    expect(JSON.parse((await send(`${admin}/status`)).body)).toMatchObject({ generation: 2 })

    cli.child.kill('SIGTERM')
    expect(await cli.exited).toBe(0)
    // The admin listener has closed with the server.
    await expect(send(`${admin}/healthz`)).rejects.toThrow(/ECONNREFUSED/)
  })

  it("shows a spawn route's backend in /metrics and /status", async () => {
    const dir = tempDir()
    const starts = join(dir, 'starts')
    writeConfig(join(dir, 'wsgiproxy.config.json'), {
      admin: { listen: '127.0.0.1:0' },
      routes: [spawnRoute('/app', starts)],
    })
    const cli = await startCli(['serve'], dir)
    const admin = await adminUrlOf(cli)
    // No backend yet: the spawner can start one, so the route is ready.
    expect((await send(`${admin}/readyz`)).status).toBe(200)
    const before = await scrape(admin)
    expect(valueOf(before, 'wsgiproxy_spawner_instances', { route: '/app', state: 'ready' })).toBe(
      0,
    )
    expect(valueOf(before, 'wsgiproxy_spawner_spawns_total', { route: '/app' })).toBe(0)

    expect((await send(`${cli.url}/app/`)).status).toBe(200)
    const [pid] = startsIn(starts)
    trackBackend(pid as number)
    const metrics = await scrape(admin)
    expect(valueOf(metrics, 'wsgiproxy_spawner_instances', { route: '/app', state: 'ready' })).toBe(
      1,
    )
    expect(
      valueOf(metrics, 'wsgiproxy_spawner_instances', { route: '/app', state: 'starting' }),
    ).toBe(0)
    expect(valueOf(metrics, 'wsgiproxy_spawner_spawns_total', { route: '/app' })).toBe(1)
    expect(valueOf(metrics, 'wsgiproxy_spawner_crashes_total', { route: '/app' })).toBe(0)
    expect(
      valueOf(metrics, 'wsgiproxy_requests_total', {
        route: '/app',
        method: 'GET',
        status_class: '2xx',
      }),
    ).toBe(1)
    const status = JSON.parse((await send(`${admin}/status`)).body) as {
      routes: Array<{
        spawner?: { state: string; backends: Array<{ pid: number; state: string }> }
      }>
    }
    expect(status.routes[0]?.spawner).toMatchObject({
      state: 'ready',
      backends: [{ pid, state: 'ready' }],
    })
    const printed = await runCli(['status', '--admin', admin])
    expect(printed.stdout).toMatch(new RegExp(`/app +spawn +pid ${pid} port \\d+ +ready`))

    cli.child.kill('SIGTERM')
    expect(await cli.exited).toBe(0)
  })
})

describe('the admin flag and the status command', () => {
  it('serves the admin endpoints of proxy --admin', async () => {
    const upstream = await startCountingUpstream('up')
    const cli = await startCli([
      'proxy',
      '--listen',
      '127.0.0.1:0',
      '--admin',
      '127.0.0.1:0',
      `http://127.0.0.1:${upstream.port}`,
    ])
    const admin = await adminUrlOf(cli)
    for (let i = 0; i < 3; i++) expect((await send(`${cli.url}/x`)).status).toBe(200)
    const metrics = await scrape(admin)
    expect(
      valueOf(metrics, 'wsgiproxy_requests_total', {
        route: '/',
        method: 'GET',
        status_class: '2xx',
      }),
    ).toBe(3)
    expect((await send(`${admin}/readyz`)).status).toBe(200)
  })

  it('refuses the public port as the admin address', async () => {
    const result = await runCli([
      'proxy',
      '--listen',
      '127.0.0.1:45123',
      '--admin',
      '127.0.0.1:45123',
      'http://127.0.0.1:1',
    ])
    expect(result.code).toBe(1)
    expect(result.stderr).toContain('--admin must not be the public port 45123')
  })

  it('says to start the server with --admin when nothing answers', async () => {
    const port = await freePort()
    const result = await runCli(['status', '--admin', `127.0.0.1:${port}`])
    expect(result.code).toBe(1)
    expect(result.stderr).toContain(
      `nothing answers on http://127.0.0.1:${port}/status (ECONNREFUSED)`,
    )
    expect(result.stderr).toContain(`start the server with --admin 127.0.0.1:${port}`)
  })
})

describe('serve --workers 2 with admin.listen', () => {
  it("sums both workers' requests and reports their routes and the main process's backends", async () => {
    const dir = tempDir()
    const starts = join(dir, 'starts')
    const upstream = await startCountingUpstream('up')
    writeConfig(join(dir, 'wsgiproxy.config.json'), {
      admin: { listen: '127.0.0.1:0' },
      routes: [
        { path: '/', type: 'proxy', href: `http://127.0.0.1:${upstream.port}` },
        spawnRoute('/app', starts),
      ],
    })
    const cli = await startCli(['serve', '--workers', '2'], dir)
    const admin = await adminUrlOf(cli)
    const workers = workersOf(cli.pid)
    expect(workers).toHaveLength(2)

    // 40 requests, each on a connection of its own, 8 at a time: each worker counts the ones it
    // accepted.
    const total = 40
    for (let sent = 0; sent < total; sent += 8) {
      const answers = await Promise.all(
        Array.from({ length: 8 }, (_, i) => send(`${cli.url}/n/${sent + i}`)),
      )
      expect(answers.map((answer) => answer.status)).toEqual(Array(8).fill(200))
    }
    expect((await send(`${cli.url}/app/`)).status).toBe(200)
    const [pid] = startsIn(starts)
    trackBackend(pid as number)

    const metrics = await scrape(admin)
    expect(upstream.hits()).toBe(total)
    expect(
      valueOf(metrics, 'wsgiproxy_requests_total', {
        route: '/',
        method: 'GET',
        status_class: '2xx',
      }),
    ).toBe(total)
    expect(
      histogramOf(metrics, 'wsgiproxy_request_duration_seconds', {
        route: '/',
        method: 'GET',
        status_class: '2xx',
      })?.count,
    ).toBe(total)
    expect(
      valueOf(metrics, 'wsgiproxy_requests_total', {
        route: '/app',
        method: 'GET',
        status_class: '2xx',
      }),
    ).toBe(1)
    // The backend is the main process's: its spawner metrics come from there.
    expect(valueOf(metrics, 'wsgiproxy_spawner_instances', { route: '/app', state: 'ready' })).toBe(
      1,
    )
    expect(valueOf(metrics, 'wsgiproxy_spawner_spawns_total', { route: '/app' })).toBe(1)

    const status = JSON.parse((await send(`${admin}/status`)).body) as {
      pid: number
      routes: Array<{ path: string; spawner?: { backends: Array<{ pid: number }> } }>
      workers: Array<{ pid: number; answered: boolean; ready: boolean }>
      readiness: { ready: boolean }
    }
    expect(status.pid).toBe(cli.pid)
    expect(status.routes.map((route) => route.path)).toEqual(['/', '/app'])
    expect(status.routes[1]?.spawner?.backends.map((backend) => backend.pid)).toEqual([pid])
    expect(status.workers.map((worker) => worker.pid).toSorted()).toEqual(workers.toSorted())
    expect(status.workers.every((worker) => worker.answered && worker.ready)).toBe(true)
    expect(status.readiness.ready).toBe(true)
    expect((await send(`${admin}/readyz`)).status).toBe(200)
    const printed = await runCli(['status', '--admin', admin])
    expect(printed.stdout).toContain(`workers: ${status.workers[0]?.pid} ready`)

    cli.child.kill('SIGTERM')
    expect(await cli.exited).toBe(0)
  })
})
