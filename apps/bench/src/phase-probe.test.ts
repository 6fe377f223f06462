// The phase probe loaded into a real benchmarked server process: every proxied request is counted
// once in each phase, and SIGUSR2 prints the histograms and starts them again.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'

const SERVE_ONE = fileURLToPath(new URL('../dist/serve-one.js', import.meta.url))
const PROBE = fileURLToPath(new URL('../dist/phase-probe.js', import.meta.url))
const started: ChildProcess[] = []

afterEach(() => {
  for (const child of started.splice(0)) child.kill()
})

interface Summary {
  count: number
  p99Ms: number
}
interface PhasesLine {
  reason: string
  phases: Record<'front' | 'upstream' | 'tail' | 'total', Summary>
  gc: Record<string, Summary>
  loopDelay: Summary
}

/** Starts `serve-one.js` with `args` (and node `flags`); resolves its port and its stderr lines. */
function serveOne(args: string[], flags: string[] = []) {
  const child = spawn(process.execPath, [...flags, SERVE_ONE, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  started.push(child)
  const lines: string[] = []
  let pending = ''
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    pending += text
    const parts = pending.split('\n')
    pending = parts.pop() ?? ''
    lines.push(...parts)
  })
  const port = new Promise<number>((resolve, reject) => {
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      out += text
      const match = /READY (\d+)/.exec(out)
      if (match) resolve(Number(match[1]))
    })
    child.once('exit', (code) => reject(new Error(`serve-one ${args[0]} exited with ${code}`)))
  })
  return { child, port, lines }
}

/** The next `PHASES` line the process prints on stderr. */
async function nextPhases(lines: string[], seen: number): Promise<PhasesLine> {
  for (;;) {
    const found = lines.filter((line) => line.startsWith('PHASES '))
    if (found.length > seen) return JSON.parse((found[seen] as string).slice(7)) as PhasesLine
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

describe('phase-probe', () => {
  it('counts each proxied request once per phase, and starts again on SIGUSR2', async () => {
    if (!existsSync(PROBE)) throw new Error('apps/bench is not built: run `pnpm build` first')
    const upstream = serveOne(['upstream'])
    const upstreamPort = await upstream.port
    const proxy = serveOne(
      ['wsgiproxy-node', `http://127.0.0.1:${upstreamPort}/`],
      ['--import', PROBE],
    )
    const port = await proxy.port
    for (let i = 0; i < 20; i++) {
      const response = await fetch(`http://127.0.0.1:${port}/1k`)
      expect((await response.arrayBuffer()).byteLength).toBe(1024)
    }
    proxy.child.kill('SIGUSR2')
    const first = await nextPhases(proxy.lines, 0)
    expect(first.reason).toBe('signal')
    for (const phase of ['front', 'upstream', 'tail', 'total'] as const) {
      expect(first.phases[phase].count).toBe(20)
      expect(first.phases[phase].p99Ms).toBeGreaterThan(0)
    }
    expect(first.loopDelay.count).toBeGreaterThan(0)
    // Started again: one more request is the only one the next line counts.
    await (await fetch(`http://127.0.0.1:${port}/1k`)).arrayBuffer()
    proxy.child.kill('SIGUSR2')
    const second = await nextPhases(proxy.lines, 1)
    expect(second.phases.total.count).toBe(1)
  }, 30_000)
})
