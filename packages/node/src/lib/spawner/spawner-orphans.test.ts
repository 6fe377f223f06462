import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  APP,
  NODE,
  childrenOf,
  cleanupSpawners,
  isAlive,
  recordPids,
  tempDir,
  waitFor,
} from '@wsgiproxy/test-kit/spawner-helpers'

// The host process of the no-orphan tests: node's own fixture, importing node's dist/.
const HOST = fileURLToPath(new URL('../../test/fixtures/host.mjs', import.meta.url))

// Real processes on a loaded 2-core machine: more than Vitest's default 5 s per test and hook.
vi.setConfig({ testTimeout: 20_000, hookTimeout: 20_000 })

const hosts = new Set<ChildProcess>()

afterEach(async () => {
  for (const host of hosts)
    if (host.exitCode === null && host.signalCode === null) host.kill('SIGKILL')
  hosts.clear()
  await cleanupSpawners()
})

interface HostPids {
  /** The host process. */
  host: number
  /** The process the spawner started: `sh -c 'sh -c "node app.mjs; true"'`, its group leader. */
  leader: number
  /** The wrapper shell between the leader and the backend (the backend's parent). */
  ppid: number
  /** The Node backend. */
  pid: number
  /** A `sleep` the backend started, holding its stdout. */
  grandchild: number
  /** The backends of the extra spawners (`EXTRA_BACKENDS`), in order. */
  extra: number[]
  /** The watchdogs (the host's other children): none without `orphanGuard`. */
  watchdogs: number[]
}

interface HostOptions {
  /** Run the spawners with `orphanGuard` (a watchdog per copy of the package). */
  watchdog?: boolean
  /** Stop the backend when idle and let the host end on its own. */
  naturalEnd?: boolean
  /** A `process.once('SIGTERM')` listener that closes the spawners and exits with 0. */
  graceful?: boolean
  /** More spawners: `copy` (a second instance of the package), `unguarded` (no watchdog). */
  extra?: Array<'copy' | 'unguarded'>
  /** Every backend ignores SIGTERM. */
  ignoreSigterm?: boolean
  /** A SIGTERM listener that acts like signal-exit's. */
  signalExit?: boolean
}

/**
 * Runs the host fixture (a real `node` process using the built package), which spawns
 * `sh -c "node app.mjs; true"` (a wrapper shell, the backend, and a grandchild) and prints the
 * pids. Every pid is recorded for the SIGKILL in cleanup. Without `watchdog`, the host runs with
 * `orphanGuard: false`, so only its in-process hooks can clean up.
 */
async function startHost({
  watchdog = false,
  naturalEnd = false,
  graceful = false,
  extra = [],
  ignoreSigterm = false,
  signalExit = false,
}: HostOptions = {}): Promise<{
  child: ChildProcess
  pids: HostPids
  stderr: () => string
}> {
  const dir = tempDir()
  const child = spawn(NODE, [HOST], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOST_COMMAND: `sh -c "${NODE} ${APP}; true"`,
      PIDS_FILE: join(dir, 'pids.json'),
      APP,
      ORPHAN_GUARD: watchdog ? '1' : '0',
      EXTRA_BACKENDS: extra.join(','),
      ...(naturalEnd ? { NATURAL_END: '1' } : {}),
      ...(graceful ? { GRACEFUL_SIGTERM: '1' } : {}),
      ...(ignoreSigterm ? { IGNORE_SIGTERM: '1' } : {}),
      ...(signalExit ? { SIGNAL_EXIT: '1' } : {}),
    },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  hosts.add(child)
  recordPids(child.pid)
  let stderr = ''
  child.stderr?.on('data', (data: Buffer) => (stderr += String(data)))
  const line = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout?.on('data', (data: Buffer) => {
      out += String(data)
      const end = out.indexOf('\n')
      if (end !== -1) resolve(out.slice(0, end))
    })
    child.once('exit', (code, signal) =>
      reject(new Error(`the host ended early (${code ?? signal}): ${stderr}`)),
    )
  })
  const printed = JSON.parse(line) as Omit<HostPids, 'watchdogs'>
  const backends = [printed.leader, ...printed.extra]
  const watchdogs = childrenOf(printed.host).filter((pid) => !backends.includes(pid))
  const pids: HostPids = { ...printed, watchdogs }
  recordPids(pids.leader, pids.ppid, pids.pid, pids.grandchild, ...pids.extra, ...watchdogs)
  // Everything is up before the host ends: a wrapper shell that forked, and all of it alive.
  expect(pids.ppid).not.toBe(pids.leader)
  const copies = extra.filter((kind) => kind === 'copy').length
  expect(watchdogs).toHaveLength(watchdog ? 1 + copies : 0)
  expect(allPids(pids).filter((pid) => !isAlive(pid))).toEqual([])
  return { child, pids, stderr: () => stderr }
}

function allPids(pids: HostPids): number[] {
  const { host, leader, ppid, pid, grandchild, extra, watchdogs } = pids
  return [host, leader, ppid, pid, grandchild, ...extra, ...watchdogs]
}

/** How the host ended; fails after `timeout` ms if it has not (a swallowed signal). */
function exitOf(
  child: ChildProcess,
  timeout = 5_000,
): Promise<{ code: number | null; signal: string | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode })
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`the host did not end within ${timeout} ms`)),
      timeout,
    )
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal })
    })
  })
}

// How long the host's processes may take to be gone once the host has ended. By design the
// slowest path adds up to about 3 s: a replacement watchdog starts up to 1 s after the first died
// (RESTART_INTERVAL), the shell watchdog looks every 1 s, and a backend that ignores SIGTERM is
// SIGKILLed after the fixture's 1 s grace (`killTimeout`). Measured on this 2-core machine, idle
// and with three busy-looping processes (2026-12-05): 0-80 ms for every case but the SIGTERM-
// ignoring one, 1,039-1,044 ms for that. The old fixed 3 s was that design worst case with no
// room for a loaded machine (2 failures in 9 loaded runs); 10 s leaves three times it.
const ORPHANS_GONE_WITHIN_MS = 10_000

/** Waits until every process of the host but the host itself (backends, shells, grandchild, watchdogs) is gone. */
async function expectNoOrphans(pids: HostPids): Promise<void> {
  const left = (): number[] => allPids(pids).filter((pid) => pid !== pids.host && isAlive(pid))
  await waitFor(() => left().length === 0, {
    timeout: ORPHANS_GONE_WITHIN_MS,
    message: 'every process of the host to be gone',
  }).catch((error: unknown) => {
    throw new Error(`${String(error)}; still alive: ${left().join(', ')}`)
  })
}

// The first four endings run JavaScript in the host: its exit and signal hooks must clean up on
// their own, so those hosts run without the watchdog. SIGKILL runs nothing: the watchdog must.
describe('createSpawner leaves no orphans', () => {
  it('when the host calls process.exit()', async () => {
    const { child, pids } = await startHost()
    child.stdin?.write('exit\n')
    expect(await exitOf(child)).toEqual({ code: 0, signal: null })
    await expectNoOrphans(pids)
  })

  it('when the host calls process.exit() with guarded and unguarded backends that ignore SIGTERM', async () => {
    // The watchdog escalates for the group it guards; nobody would for the other one.
    const { child, pids } = await startHost({
      watchdog: true,
      extra: ['unguarded'],
      ignoreSigterm: true,
    })
    child.stdin?.write('exit\n')
    expect(await exitOf(child)).toEqual({ code: 0, signal: null })
    await expectNoOrphans(pids)
  })

  it('when the backend stopped for idleness and the host has nothing left to do', async () => {
    // Only the running backend kept the host alive: the spawner's timers and its watchdog do not.
    const { child, pids } = await startHost({ watchdog: true, naturalEnd: true })
    expect(await exitOf(child)).toEqual({ code: 0, signal: null })
    await expectNoOrphans(pids)
  })

  it('when the host gets SIGTERM (and still ends by SIGTERM)', async () => {
    const { child, pids } = await startHost()
    process.kill(pids.host, 'SIGTERM')
    expect(await exitOf(child)).toEqual({ code: null, signal: 'SIGTERM' })
    await expectNoOrphans(pids)
  })

  it('when the host gets SIGINT (and still ends by SIGINT)', async () => {
    const { child, pids } = await startHost()
    process.kill(pids.host, 'SIGINT')
    expect(await exitOf(child)).toEqual({ code: null, signal: 'SIGINT' })
    await expectNoOrphans(pids)
  })

  it('when the host dies of an uncaught exception', async () => {
    const { child, pids, stderr } = await startHost()
    child.stdin?.write('throw\n')
    expect(await exitOf(child)).toEqual({ code: 1, signal: null })
    expect(stderr()).toContain('the host crashed, as asked')
    await expectNoOrphans(pids)
  })

  it('when the host is killed with SIGKILL (the watchdog cleans up)', async () => {
    const { child, pids } = await startHost({ watchdog: true })
    process.kill(pids.host, 'SIGKILL')
    expect(await exitOf(child)).toEqual({ code: null, signal: 'SIGKILL' })
    await expectNoOrphans(pids)
  })

  it('when the watchdog was killed and the host is then killed with SIGKILL', async () => {
    const { child, pids } = await startHost({ watchdog: true })
    const [first = 0] = pids.watchdogs
    process.kill(first, 'SIGKILL')
    // A new watchdog replaces it, and learns the group the first one guarded.
    let replacement = 0
    await waitFor(
      () => {
        const found = childrenOf(pids.host).filter((pid) => pid !== pids.leader && pid !== first)
        replacement = found[0] ?? 0
        return replacement !== 0 && isAlive(replacement)
      },
      // It starts up to 1 s (RESTART_INTERVAL) after the first died: the same margin as above.
      { message: 'a new watchdog', timeout: ORPHANS_GONE_WITHIN_MS },
    )
    recordPids(replacement)
    pids.watchdogs.push(replacement)
    process.kill(pids.host, 'SIGKILL')
    expect(await exitOf(child)).toEqual({ code: null, signal: 'SIGKILL' })
    await expectNoOrphans(pids)
  })

  it('when a host with a once SIGTERM listener shuts down gracefully (and exits with 0)', async () => {
    // The listener is added before the spawner's: it has removed itself when the spawner's runs.
    const { child, pids } = await startHost({ graceful: true })
    process.kill(pids.host, 'SIGTERM')
    expect(await exitOf(child)).toEqual({ code: 0, signal: null })
    await expectNoOrphans(pids)
  })

  it('when two copies of the package are loaded and the host gets SIGTERM', async () => {
    // Each copy alone would re-raise SIGTERM; neither may take the other for a host listener.
    const { child, pids } = await startHost({ extra: ['copy'] })
    process.kill(pids.host, 'SIGTERM')
    expect(await exitOf(child)).toEqual({ code: null, signal: 'SIGTERM' })
    await expectNoOrphans(pids)
  })

  it('when signal-exit listens too and the host gets SIGTERM (and still ends by SIGTERM)', async () => {
    // signal-exit waits for its listeners to be alone; ours must not wait for it in turn.
    const { child, pids } = await startHost({ signalExit: true })
    process.kill(pids.host, 'SIGTERM')
    expect(await exitOf(child)).toEqual({ code: null, signal: 'SIGTERM' })
    await expectNoOrphans(pids)
  })
})
