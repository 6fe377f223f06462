// Ctrl-C as a terminal sends it (SIGINT to the whole foreground process group), and SIGTERM:
// `wsgiproxy serve` drains, stops its backends and exits 0 without an error line.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { buildRouteApp } from './lib/apps.ts'
import { serveUntilSignal } from './lib/serve-until-signal.ts'
import { BIN, isAlive, trackBackend, until } from './test/run-cli.ts'

let dir: string
const children = new Set<ChildProcess>()
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wsgiproxy-cli-signals-'))
})
afterEach(async () => {
  for (const child of children) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
  }
  children.clear()
  await rm(dir, { recursive: true, force: true })
})

describe('wsgiproxy serve on a signal', () => {
  for (const sent of ['SIGINT', 'SIGTERM'] as const) {
    it(`drains, stops its backend and exits 0 without an error on ${sent} to its process group`, async () => {
      await writeFile(
        join(dir, 'wsgiproxy.config.json'),
        JSON.stringify({
          routes: [
            {
              path: '/py',
              type: 'spawn',
              command: 'python3 -m http.server __PORT__ --bind 127.0.0.1',
            },
          ],
        }),
      )
      // Detached: its own process group, which the test signals as a terminal would.
      const child = spawn(process.execPath, [BIN, 'serve', '--listen', '127.0.0.1:0'], {
        cwd: dir,
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      children.add(child)
      let stdout = ''
      let stderr = ''
      child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text))
      child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text))
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(
        (resolve) => child.once('close', (code, signal) => resolve({ code, signal })),
      )
      await until(() => /listening on http:/.test(stderr), 15_000)
      const url = /listening on (http:\/\/\S+)/.exec(stderr)?.[1] ?? ''
      const res = await fetch(`${url}/py/`)
      expect(res.status).toBe(200)
      await res.arrayBuffer()
      const backend = Number(/spawned pid (\d+)/.exec(stderr)?.[1])
      trackBackend(backend)

      if (child.pid === undefined) throw new Error('wsgiproxy did not start')
      process.kill(-child.pid, sent)
      expect({ ...(await exited), stderr }).toMatchObject({ code: 0, signal: null })
      expect(isAlive(backend)).toBe(false)
      expect(stdout).toBe('')
      expect(stderr).toMatch(
        new RegExp(`\\nwsgiproxy: ${sent}: draining requests and stopping backends\\n`),
      )
      expect(stderr).toMatch(/\nwsgiproxy: stopped\n$/)
      expect(stderr).not.toMatch(/wsgiproxy: error|^\s+at /m)
    })
  }
})

describe('serveUntilSignal', () => {
  it('listens for SIGINT and SIGTERM before it builds the app and listens', async () => {
    // A signal that came before its listener would end the process by the default action.
    const before = {
      SIGINT: process.listeners('SIGINT'),
      SIGTERM: process.listeners('SIGTERM'),
    }
    const added = (signal: 'SIGINT' | 'SIGTERM'): NodeJS.SignalsListener[] =>
      process.listeners(signal).filter((listener) => !before[signal].includes(listener))
    let heard: { SIGINT: number; SIGTERM: number } | undefined
    try {
      const status = await serveUntilSignal({
        command: 'echo',
        listen: { address: { hostname: '127.0.0.1', port: 0 }, source: { from: 'flag' } },
        format: 'json',
        upgrade: {},
        build: async (resources) => {
          heard = { SIGINT: added('SIGINT').length, SIGTERM: added('SIGTERM').length }
          return (await buildRouteApp({ path: '/', type: 'echo' }, resources)).app
        },
        // Listening: stop it as SIGTERM would, calling only the listeners it added.
        setup: () => {
          for (const listener of added('SIGTERM')) listener('SIGTERM')
          return undefined
        },
      })
      expect(status).toBe(0)
      expect(heard).toEqual({ SIGINT: 1, SIGTERM: 1 })
    } finally {
      for (const signal of ['SIGINT', 'SIGTERM'] as const) {
        for (const listener of added(signal)) process.off(signal, listener)
      }
    }
  })
})
