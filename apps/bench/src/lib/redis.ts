// The run's Redis for the signing workload: Debian's `redis-server` on a free 127.0.0.1 port,
// without persistence (`--save '' --appendonly no`), as a child process stopped by pid. The same
// shape as test-kit's `startRedis`, which the built bench (plain `node`, no TypeScript) cannot load.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** The environment variable that carries the run's Redis URL to a server process. */
export const REDIS_ENV = 'BENCH_REDIS_URL'

/** A running `redis-server`. */
export interface BenchRedis {
  /** `redis://127.0.0.1:<port>`. */
  url: string
  pid: number
  /** Stops it (SIGTERM, SIGKILL after 3 s) and removes its directory. */
  stop(): Promise<void>
}

const ATTEMPTS = 5
const START_TIMEOUT_MS = 10_000

/**
 * Starts `redis-server` on a free port of 127.0.0.1 and waits for its "Ready to accept
 * connections" line; a port taken between choosing and binding it is retried with another.
 *
 * @returns the running server
 * @throws Error when `redis-server` is missing or does not start
 */
export async function startBenchRedis(): Promise<BenchRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'wsgiproxy-bench-redis-'))
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    try {
      const child = await launch(port, dir)
      return {
        url: `redis://127.0.0.1:${port}`,
        pid: child.pid ?? 0,
        stop: async () => {
          await kill(child)
          rmSync(dir, { recursive: true, force: true })
        },
      }
    } catch (error) {
      if (!/Address already in use/.test(String(error)) || attempt >= ATTEMPTS) {
        rmSync(dir, { recursive: true, force: true })
        throw error
      }
    }
  }
}

function launch(port: number, dir: string): Promise<ChildProcess> {
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']
  const child = spawn('redis-server', [...args, '--dir', dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  return new Promise((resolve, reject) => {
    let output = ''
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL')
      reject(new Error(`redis-server was not ready after ${START_TIMEOUT_MS} ms:\n${output}`))
    }, START_TIMEOUT_MS)
    const onData = (chunk: Buffer): void => {
      output += chunk.toString('utf8')
      if (!/Ready to accept connections/.test(output)) return
      clearTimeout(timer)
      child.off('exit', onExit)
      child.stdout?.resume()
      child.stderr?.resume()
      resolve(child)
    }
    const onExit = (code: number | null): void => {
      clearTimeout(timer)
      reject(new Error(`redis-server exited (${String(code)}) before it was ready:\n${output}`))
    }
    child.stdout?.on('data', onData)
    child.stderr?.on('data', onData)
    child.once('exit', onExit)
    child.once('error', (error) => {
      clearTimeout(timer)
      reject(
        new Error(`cannot start redis-server (${error.message}): apt-get install -y redis-server`, {
          cause: error,
        }),
      )
    })
  })
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return
  const { pid } = child
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const force = setTimeout(() => process.kill(pid, 'SIGKILL'), 3_000)
  process.kill(pid, 'SIGTERM')
  await exited
  clearTimeout(force)
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo
      server.close(() => resolve(port))
    })
  })
}
