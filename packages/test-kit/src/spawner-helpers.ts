// Test support (not built) for the spawner suites: fixture paths, a liveness check that treats
// zombies as dead, polling, and cleanup that closes every spawner and SIGKILLs every recorded
// process still running (checked by pid and start time, so a recycled pid is never killed).
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { register } from './servers.ts'
import type { Running } from './servers.ts'
import { createSpawner, serve } from '@wsgiproxy/node'
import type { ServeOptions, Spawner, SpawnerLogEntry, SpawnerOptions } from '@wsgiproxy/node'

const here = dirname(fileURLToPath(import.meta.url))
/** The Node test backend (see the variables it reads at its top). */
export const APP = join(here, '..', 'fixtures', 'app.mjs')
/** The Python WSGI test backend. */
export const WSGI_APP = join(here, '..', 'fixtures', 'wsgi_echo.py')
/** The Node binary running the tests, for commands. */
export const NODE = process.execPath

const spawners = new Set<Spawner>()
// pid -> its start time (field 22 of /proc/<pid>/stat) when it was recorded.
const pids = new Map<number, string>()
const dirs = new Set<string>()

/**
 * The start time of process `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat), or
 * `undefined` when it has gone. With the pid it names one process: a recycled pid starts later.
 */
export function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
    // Fields from the state (field 3) on follow the parenthesised command name.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return undefined
  }
}

/** Remembers processes to SIGKILL in cleanup if they are still running then. */
export function recordPids(...list: Array<number | null | undefined>): void {
  for (const pid of list) {
    if (typeof pid !== 'number' || pid <= 1 || pids.has(pid)) continue
    const started = startTime(pid)
    // Already gone: nothing to kill, and the number may soon name another process.
    if (started !== undefined) pids.set(pid, started)
  }
}

/** A spawner whose backends are recorded and that cleanup closes. Logs are kept, not printed. */
export function spawner(options: SpawnerOptions): Spawner & { logs: SpawnerLogEntry[] } {
  const logs: SpawnerLogEntry[] = []
  const created = createSpawner({ logger: (entry) => logs.push(entry), ...options })
  created.on('spawn', ({ pid }) => recordPids(pid))
  spawners.add(created)
  return Object.assign(created, { logs })
}

/** Serves a spawner's app on 127.0.0.1 port 0; core's `closeAll()` closes it. */
export async function serveSpawner(app: Spawner, options: ServeOptions = {}): Promise<Running> {
  const served = await serve(app.app, { closeTimeout: 200, ...options })
  return register({ port: served.port, origin: served.url, close: () => served.close() })
}

/** A fresh temporary directory, removed in cleanup. */
export function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'wsgiproxy-spawner-'))
  dirs.add(dir)
  return dir
}

/** The non-empty lines of a file, or none when it does not exist. */
export function lines(file: string): string[] {
  if (!existsSync(file)) return []
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
}

/**
 * Whether a process is alive. A zombie counts as dead: this machine's PID 1 reaps orphans late,
 * and `kill(pid, 0)` succeeds on zombies (docs/spawner.md, "No orphans").
 */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The state follows the parenthesised command name, which may contain spaces.
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

/** The pids whose parent is `pid` (from /proc). */
export function childrenOf(pid: number): number[] {
  const found: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(fields[1]) === pid) found.push(Number(entry))
    } catch {
      // it ended meanwhile
    }
  }
  return found
}

/** Polls `check` until it returns true; fails after `timeout` ms with `message`. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  { timeout = 3_000, interval = 20, message = 'condition' } = {},
): Promise<void> {
  const deadline = Date.now() + timeout
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeout} ms waiting for ${message}`)
    await new Promise((resolve) => setTimeout(resolve, interval))
  }
}

/**
 * Closes every spawner and SIGKILLs every recorded process still alive: by pid, and only when the
 * pid still names the process recorded (same start time), never a process that reused it.
 */
export async function cleanupSpawners(): Promise<void> {
  const all = [...spawners]
  spawners.clear()
  await Promise.all(all.map((s) => s.close()))
  for (const [pid, started] of pids) {
    if (!isAlive(pid) || startTime(pid) !== started) continue
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // gone meanwhile
    }
  }
  pids.clear()
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  dirs.clear()
}
