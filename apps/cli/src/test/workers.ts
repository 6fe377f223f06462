// Helpers of the `serve --workers` and reload tests: config files, the backend fixture, keep-alive
// load that counts every failure, and what /proc says about the main process.
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs'
import { Agent, get } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { APP, childrenOf, NODE } from '@wsgiproxy/test-kit/spawner-helpers'
import { startCountingUpstream } from './run-cli.ts'

/** A fresh temporary directory. */
export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'wsgiproxy-workers-'))
}

/** Writes a config file that listens on a free loopback port. */
export function writeConfig(file: string, config: Record<string, unknown>): void {
  writeFileSync(file, JSON.stringify({ listen: '127.0.0.1:0', ...config }))
}

/** A spawn route running the test backend, which appends its pid to `starts` when it starts. */
export function spawnRoute(
  path: string,
  starts: string,
  env: Record<string, string> = {},
): Record<string, unknown> {
  return { path, type: 'spawn', command: [NODE, APP], env: { STARTS_FILE: starts, ...env } }
}

/** The pids the backend fixture wrote to its STARTS_FILE. */
export function startsIn(file: string): number[] {
  try {
    return readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number)
  } catch {
    return []
  }
}

/** An upstream that answers every request with `text`. */
export async function textUpstream(text: string): Promise<string> {
  return `http://127.0.0.1:${(await startCountingUpstream(text)).port}`
}

/**
 * One GET on a keep-alive agent: the status and body, or the connection error (`no answer in
 * N s` when the connection stays silent for `timeoutMs`).
 */
export function getOnce(
  url: string,
  agent: Agent,
  timeoutMs = 20_000,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = get(url, { agent, timeout: timeoutMs }, (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => {
        body += chunk
      })
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }))
      response.on('error', reject)
    })
    request.on('error', reject)
    request.on('timeout', () => request.destroy(new Error(`no answer in ${timeoutMs / 1000} s`)))
  })
}

/** `concurrency` keep-alive clients sending GETs in a loop until `stop()`. */
/** Keep-alive load: its failures, its bodies by count, and how to stop it. */
export interface Load {
  failures: Array<{ at: number; what: string }>
  bodies: Map<string, number>
  ok: () => number
  stop: () => Promise<void>
}

export function load(url: string, concurrency: number): Load {
  // With a timeout of its own the Agent also honours the server's `Keep-Alive: timeout=5` hint
  // (it drops a free socket a second before), so a request never goes out on a socket the server
  // is closing for idleness; without one, free sockets never time out.
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency, timeout: 20_000 })
  const state = { running: true }
  let ok = 0
  const failures: Array<{ at: number; what: string }> = []
  const bodies = new Map<string, number>()
  const loops = Array.from({ length: concurrency }, async () => {
    while (state.running) {
      try {
        const { status, body } = await getOnce(url, agent)
        if (status === 200) {
          ok++
          bodies.set(body, (bodies.get(body) ?? 0) + 1)
        } else {
          failures.push({ at: Date.now(), what: `status ${status}: ${body.slice(0, 200)}` })
        }
      } catch (error) {
        failures.push({ at: Date.now(), what: (error as Error).message })
      }
    }
  })
  return {
    failures,
    bodies,
    ok: (): number => ok,
    stop: async (): Promise<void> => {
      state.running = false
      await Promise.all(loops)
      agent.destroy()
    },
  }
}

/** The worker processes of a main process: its children running node. */
export function workersOf(pid: number): number[] {
  return childrenOf(pid).filter((child) => {
    try {
      return readFileSync(`/proc/${child}/cmdline`, 'utf8').includes('main.js')
    } catch {
      return false
    }
  })
}

/**
 * Which of `pids` holds an established TCP connection on local port `port` (from /proc: the
 * socket's inode in /proc/net/tcp, then the process with a descriptor on it).
 */
export function holderOf(port: number, pids: readonly number[]): number | undefined {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0')
  const inodes = new Set(
    readFileSync('/proc/net/tcp', 'utf8')
      .split('\n')
      .slice(1)
      .map((line) => line.trim().split(/\s+/))
      // local_address is ADDR:PORT in hex; state 01 is ESTABLISHED; field 9 the inode.
      .filter((fields) => fields[1]?.endsWith(`:${hexPort}`) === true && fields[3] === '01')
      .map((fields) => `socket:[${fields[9]}]`),
  )
  return pids.find((pid) => {
    try {
      return readdirSync(`/proc/${pid}/fd`).some((fd) => {
        try {
          return inodes.has(readlinkSync(`/proc/${pid}/fd/${fd}`))
        } catch {
          return false
        }
      })
    } catch {
      return false
    }
  })
}

/** The number of open file descriptors of a process. */
export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length
}

/** How often `pattern` occurs in `text`. */
export function count(text: string, pattern: RegExp): number {
  return text.match(new RegExp(pattern.source, 'g'))?.length ?? 0
}
