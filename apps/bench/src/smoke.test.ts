// Runs the benchmark command end to end in smoke mode: every server is started as its own
// process, checked for correct proxying, loaded briefly and stopped.
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import type { Cell } from './lib/report.ts'
import { WORKLOADS } from './lib/run.ts'
import { SERVERS } from './lib/servers.ts'

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'wsgiproxy-bench-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe('pnpm bench --smoke', () => {
  it('measures every server on every workload without errors and writes the JSON', async () => {
    expect(existsSync(MAIN), 'apps/bench is not built: run `pnpm build` first').toBe(true)
    const out = join(dir, 'smoke.json')
    const { stdout } = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) => {
      execFile(
        process.execPath,
        [MAIN, '--smoke', '--out', out],
        { timeout: 100_000 },
        (error, stdoutText, err) => {
          if (error) reject(new Error(`${error.message}\n${err}`, { cause: error }))
          else resolve({ stdout: stdoutText, stderr: err })
        },
      )
    })
    const result = JSON.parse(readFileSync(out, 'utf8')) as { cells: Cell[] }
    expect(result.cells).toHaveLength(SERVERS.length * WORKLOADS.length)
    for (const cell of result.cells) {
      expect(cell.samples, `${cell.server} ${cell.workload}`).toHaveLength(1)
      const [sample] = cell.samples
      expect(sample?.errors, `${cell.server} ${cell.workload}`).toBe(0)
      expect(sample?.badStatus, `${cell.server} ${cell.workload}`).toBe(0)
      expect(sample?.rate, `${cell.server} ${cell.workload}`).toBeGreaterThan(0)
    }
    for (const server of SERVERS) expect(stdout).toContain(`| ${server.label} |`)
    expect(stdout).toContain('### Targets')
  }, 120_000)
})
