// Upstream servers as real child processes (fixtures/app.mjs on 127.0.0.1), for pool tests
// that kill one with SIGKILL and start it again on its port. Stopped by pid in cleanup.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { APP, NODE } from './spawner-helpers.ts'

/** One upstream process. */
export interface UpstreamProcess {
  pid: number
  port: number
  origin: string
  /** `METHOD url` of every request it got, in order (from its requests file). */
  requests(): string[]
  /** Resolves when it has exited. */
  exited: Promise<void>
}

const started = new Set<ChildProcess>()

/**
 * Starts fixtures/app.mjs on 127.0.0.1 and waits until it listens.
 *
 * @param options - a fixed port (to come back where a killed one was) and more environment
 *   (`HEALTH_STATUS` for the status of `/healthz`)
 * @returns the running process
 */
export async function startUpstreamProcess(
  options: { port?: number; env?: Record<string, string> } = {},
): Promise<UpstreamProcess> {
  const file = join(mkdtempSync(join(tmpdir(), 'wsgiproxy-upstream-')), 'requests.log')
  const child = spawn(NODE, [APP], {
    env: {
      ...process.env,
      ...options.env,
      PORT: String(options.port ?? 0),
      PRINT_PORT: '1',
      REQUESTS_FILE: file,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  started.add(child)
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      started.delete(child)
      resolve()
    })
  })
  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk
      const match = /listening on (\d+)/.exec(out)
      if (match !== null) resolve(Number(match[1]))
    })
    void exited.then(() => reject(new Error(`the upstream exited before listening: ${out}`)))
  })
  child.stdout?.resume()
  return {
    pid: child.pid ?? 0,
    port,
    origin: `http://127.0.0.1:${port}`,
    requests: () =>
      existsSync(file)
        ? readFileSync(file, 'utf8')
            .split('\n')
            .filter((line) => line !== '')
        : [],
    exited,
  }
}

/** Kills every upstream process still running (SIGKILL, by pid) and waits for their exits. */
export async function stopUpstreamProcesses(): Promise<void> {
  const exits = [...started].map(
    (child) => new Promise<void>((resolve) => child.once('exit', () => resolve())),
  )
  for (const child of started) {
    if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL')
  }
  await Promise.all(exits)
}
