// Runs the benchmark command end to end in smoke mode: every server is started as its own
// process, checked for correct proxying, loaded briefly and stopped.
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { POOL_SERVERS } from './lib/pool-servers.ts'
import type { Cell } from './lib/report.ts'
import { measures, POOL_UPSTREAMS, WORKLOADS } from './lib/run.ts'
import { SERVERS } from './lib/servers.ts'

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url))
const ALL_SERVERS = [...SERVERS, ...POOL_SERVERS]
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
    const expected = ALL_SERVERS.flatMap((s) => WORKLOADS.filter((w) => measures(s, w)))
    expect(cells).toHaveLength(expected.length)
    for (const cell of cells) {
      expect(cell.samples, `${cell.server} ${cell.workload}`).toHaveLength(1)
      const [sample] = cell.samples
      expect(sample?.errors, `${cell.server} ${cell.workload}`).toBe(0)
      expect(sample?.badStatus, `${cell.server} ${cell.workload}`).toBe(0)
      expect(sample?.rate, `${cell.server} ${cell.workload}`).toBeGreaterThan(0)
    }
    for (const server of ALL_SERVERS) expect(stdout).toContain(`| ${server.label} |`)
    expect(stdout).toContain('### Targets')
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
