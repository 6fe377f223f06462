import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  APP,
  HOST,
  NODE,
  childrenOf,
  cleanupSpawners,
  isAlive,
  recordPids,
  tempDir,
  waitFor,
} from '../test/spawner-helpers.ts'

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
  /** The watchdog (the host's other child), or 0 without one. */
  watchdog: number
}

/**
 * Runs the host fixture (a real `node` process using the built package), which spawns
 * `sh -c "node app.mjs; true"` (a wrapper shell, the backend, and a grandchild) and prints the
 * pids. Every pid is recorded for the SIGKILL in cleanup. Without `watchdog`, the host runs with
 * `orphanGuard: false`, so only its in-process hooks can clean up.
 */
async function startHost({ watchdog = false, naturalEnd = false } = {}): Promise<{
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
      ORPHAN_GUARD: watchdog ? '1' : '0',
      ...(naturalEnd ? { NATURAL_END: '1' } : {}),
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
  const printed = JSON.parse(line) as Omit<HostPids, 'watchdog'>
  const others = childrenOf(printed.host).filter((pid) => pid !== printed.leader)
  const pids: HostPids = { ...printed, watchdog: others[0] ?? 0 }
  recordPids(pids.leader, pids.ppid, pids.pid, pids.grandchild, ...others)
  // Everything is up before the host ends: a wrapper shell that forked, and all of it alive.
  expect(pids.ppid).not.toBe(pids.leader)
  expect(others).toHaveLength(watchdog ? 1 : 0)
  const running = Object.values(pids).filter((pid) => pid !== 0)
  expect(running.filter((pid) => !isAlive(pid))).toEqual([])
  return { child, pids, stderr: () => stderr }
}

function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: string | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode })
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
}

/** Waits until the group leader, the wrapper shell, the backend, the grandchild and any watchdog are gone. */
async function expectNoOrphans(pids: HostPids): Promise<void> {
  const left = (): number[] =>
    [pids.leader, pids.ppid, pids.pid, pids.grandchild, pids.watchdog].filter(
      (pid) => pid !== 0 && isAlive(pid),
    )
  await waitFor(() => left().length === 0, {
    timeout: 3_000,
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
})
