// Runs the benchmark command end to end in smoke mode: every server is started as its own
// process, checked for correct proxying, loaded briefly and stopped. Then the HTTPS and HTTP/2
// servers once more, checked over TLS and h2 without any load.
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createBenchCertificate } from './lib/certificate.ts'
import type { BenchCertificate } from './lib/certificate.ts'
import { detectH2load } from './lib/h2load.ts'
import { POOL_SERVERS } from './lib/pool-servers.ts'
import type { ServerProcess, startServerProcess as StartServerProcess } from './lib/processes.ts'
import type { Cell } from './lib/report.ts'
import { measures, originOf, POOL_UPSTREAMS, verifyServer, WORKLOADS } from './lib/run.ts'
import { SERVERS } from './lib/servers.ts'
import { SIGNING_SERVERS } from './lib/signing-servers.ts'
import { TLS_SERVERS } from './lib/tls-servers.ts'

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url))
// The built module, so that it starts the built `serve-one.js` beside it, as a real run does.
const PROCESSES = new URL('../dist/lib/processes.js', import.meta.url).href
const ALL_SERVERS = [...SERVERS, ...POOL_SERVERS, ...TLS_SERVERS, ...SIGNING_SERVERS]
// Without h2load the run skips the HTTP/2 workload (and says so); the servers are still checked below.
const HAS_H2LOAD = detectH2load() !== undefined
const RUN_WORKLOADS = WORKLOADS.filter((w) => HAS_H2LOAD || w.front !== 'h2')
const dir = mkdtempSync(join(tmpdir(), 'wsgiproxy-bench-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe('pnpm bench --smoke', () => {
  let cells: Cell[] = []
  let stdout = ''
  beforeAll(async () => {
    if (!existsSync(MAIN)) throw new Error('apps/bench is not built: run `pnpm build` first')
    const out = join(dir, 'smoke.json')
    stdout = await new Promise<string>((resolve, reject) => {
      execFile(
        process.execPath,
        [MAIN, '--smoke', '--out', out],
        { timeout: 100_000 },
        (error, stdoutText, err) => {
          if (error) reject(new Error(`${error.message}\n${err}`, { cause: error }))
          else resolve(stdoutText)
        },
      )
    })
    cells = (JSON.parse(readFileSync(out, 'utf8')) as { cells: Cell[] }).cells
  }, 120_000)

  it('measures every server on each of its workloads without errors and writes the JSON', () => {
    const expected = ALL_SERVERS.flatMap((s) =>
      RUN_WORKLOADS.filter((w) => measures(s, w)).map((w) => `${s.id} ${w.id}`),
    )
    expect(cells.map((c) => `${c.server} ${c.workload}`).toSorted()).toEqual(expected.toSorted())
    for (const cell of cells) {
      expect(cell.samples, `${cell.server} ${cell.workload}`).toHaveLength(1)
      const [sample] = cell.samples
      expect(sample?.errors, `${cell.server} ${cell.workload}`).toBe(0)
      expect(sample?.badStatus, `${cell.server} ${cell.workload}`).toBe(0)
      expect(sample?.rate, `${cell.server} ${cell.workload}`).toBeGreaterThan(0)
    }
    const shown = ALL_SERVERS.filter((server) => HAS_H2LOAD || server.front !== 'h2')
    expect(shown.filter((server) => !stdout.includes(`| ${server.label} |`))).toEqual([])
    expect(stdout).toContain('### Targets')
    expect(stdout).toContain('### HTTPS: cost of TLS')
    expect(stdout).toContain('### Signing: replay store, signed GET 1 KiB, 32 conns (medians)')
    expect(stdout.includes('### HTTP/2: Latency mean / max')).toBe(HAS_H2LOAD)
  })

  it('counts the pool workloads per upstream: all three reached, or only the first without a pool', () => {
    const pooled = cells.filter((cell) => cell.workload.startsWith('pool-'))
    const seen = pooled.map(({ server, workload, samples: [sample] }) => {
      const spread = sample?.spread ?? []
      return {
        cell: `${server} ${workload}`,
        // Every request the load counted was answered by one of the upstreams.
        counted: spread.reduce((sum, n) => sum + n, 0) >= (sample?.requests ?? Infinity),
        reached: spread.map((n) => n > 0),
      }
    })
    const expected = POOL_SERVERS.flatMap((server) =>
      WORKLOADS.filter((w) => w.pool === true).map((w) => ({
        cell: `${server.id} ${w.id}`,
        counted: true,
        reached:
          server.id === 'pool-wsgiproxy-node-single'
            ? [true, ...Array<boolean>(POOL_UPSTREAMS - 1).fill(false)]
            : Array<boolean>(POOL_UPSTREAMS).fill(true),
      })),
    )
    expect(seen.toSorted((a, b) => a.cell.localeCompare(b.cell))).toEqual(
      expected.toSorted((a, b) => a.cell.localeCompare(b.cell)),
    )
  })
})

describe('the HTTPS and HTTP/2 servers', () => {
  let certificate: BenchCertificate
  const processes: ServerProcess[] = []
  let upstream: URL
  let startServerProcess: typeof StartServerProcess
  beforeAll(async () => {
    ;({ startServerProcess } = (await import(PROCESSES)) as {
      startServerProcess: typeof StartServerProcess
    })
    certificate = await createBenchCertificate()
    const process = await startServerProcess('upstream')
    processes.push(process)
    upstream = new URL(`http://127.0.0.1:${process.port}/`)
  })
  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()))
  })

  const start = async (id: string): Promise<ServerProcess> => {
    const server = await startServerProcess(id, [upstream], certificate)
    processes.push(server)
    return server
  }

  it.each(TLS_SERVERS.map((s) => [s.id, s.front ?? 'http'] as const))(
    '%s answers GET /1k and echoes 64 KiB over %s with the run certificate',
    async (id, front) => {
      const server = await start(id)
      await expect(
        verifyServer(originOf(server.port, front), front, certificate.cert),
      ).resolves.toBeUndefined()
    },
    20_000,
  )

  it('refuses a server that does not speak what its front says, or shows another certificate', async () => {
    const server = await start('https-http-proxy')
    await expect(verifyServer(originOf(server.port, 'h2'), 'h2', certificate.cert)).rejects.toThrow(
      /no application protocol/,
    )
    await expect(verifyServer(originOf(server.port, 'http'))).rejects.toThrow(
      /socket hang up|ECONNRESET/,
    )
    const other = await createBenchCertificate()
    await expect(verifyServer(originOf(server.port, 'https'), 'https', other.cert)).rejects.toThrow(
      /self-signed certificate/,
    )
  }, 20_000)
})
