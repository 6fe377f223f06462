// The tracing-off workload end to end, from the build (as a run starts it): each process reports
// whether `@opentelemetry/api` loads, the hook hides it where it should only, and a smoke run of
// the workload alone measures every process without errors.
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ServerProcess, startServerProcess as StartServerProcess } from './processes.ts'
import { verifyServer } from './run.ts'
import type {
  startTracingProcess as StartTracingProcess,
  TracingCostResult,
} from './tracing-cost.ts'
import { TRACING_VARIANTS, TRACING_WORKLOAD } from './tracing-cost.ts'

const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url))
// The built modules, so that they start the built `serve-one.js`, hook and probe, as a run does.
const PROCESSES = new URL('../../dist/lib/processes.js', import.meta.url).href
const TRACING_COST = new URL('../../dist/lib/tracing-cost.js', import.meta.url).href
const dir = mkdtempSync(join(tmpdir(), 'wsgiproxy-bench-tracing-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe('startTracingProcess', () => {
  const processes: ServerProcess[] = []
  let upstream: URL
  let startTracingProcess: typeof StartTracingProcess
  beforeAll(async () => {
    if (!existsSync(MAIN)) throw new Error('apps/bench is not built: run `pnpm build` first')
    const { startServerProcess } = (await import(PROCESSES)) as {
      startServerProcess: typeof StartServerProcess
    }
    ;({ startTracingProcess } = (await import(TRACING_COST)) as {
      startTracingProcess: typeof StartTracingProcess
    })
    const started = await startServerProcess('upstream')
    processes.push(started)
    upstream = new URL(`http://127.0.0.1:${started.port}/`)
  })
  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()))
  })

  it.each(TRACING_VARIANTS.map((variant) => [variant.id, variant] as const))(
    'starts %s with the API state it stands for, proxying',
    async (_id, variant) => {
      const server = await startTracingProcess(variant, upstream)
      processes.push(server)
      expect(server.api).toBe(variant.api)
      await expect(verifyServer(`http://127.0.0.1:${server.port}`)).resolves.toBeUndefined()
    },
    20_000,
  )
})

describe(`pnpm bench --smoke --workloads ${TRACING_WORKLOAD.id}`, () => {
  it('measures every process without errors, and only them', async () => {
    const out = join(dir, 'tracing.json')
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(
        process.execPath,
        [MAIN, '--smoke', '--workloads', TRACING_WORKLOAD.id, '--out', out],
        { timeout: 60_000 },
        (error, stdoutText, stderr) => {
          if (error) reject(new Error(`${error.message}\n${stderr}`, { cause: error }))
          else resolve(stdoutText)
        },
      )
    })
    const json = JSON.parse(readFileSync(out, 'utf8')) as {
      cells: unknown[]
      tracing: TracingCostResult
    }
    expect(json.cells).toEqual([])
    expect(json.tracing.variants.map((v) => [v.id, v.api])).toEqual(
      TRACING_VARIANTS.map((v) => [v.id, v.api]),
    )
    for (const variant of json.tracing.variants) {
      expect(variant.samples).toHaveLength(1)
      expect(variant.samples[0]).toMatchObject({ errors: 0, badStatus: 0 })
      expect(variant.samples[0]?.rate).toBeGreaterThan(0)
      expect(stdout).toContain(`| ${variant.label} |`)
    }
    expect(stdout).toContain('- throughput, API installed / API absent: ')
  }, 70_000)
})
