// The no-orphan guarantees of spawner-orphans.test.ts, for a pool: every instance's process group
// (a wrapper shell, the Node backend and a grandchild `sleep` holding its stdout) is gone once the
// host has ended, however it ended.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
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

// Real processes on a loaded 2-core machine: more than Vitest's default 5 s per test and hook.
vi.setConfig({ testTimeout: 20_000, hookTimeout: 20_000 })

// The built package, as the fixtures of spawner-orphans.test.ts import it (Node 20 cannot load
// TypeScript); the node project's global setup builds it when stale.
const DIST = new URL('../../../dist/index.js', import.meta.url).href

// A host with a pool of three instances; prints its pid and the instances' pids, then ends as
// told on stdin (`exit`, `close`) or by a signal from the test.
const HOST_SCRIPT = `
import * as api from ${JSON.stringify(DIST)}
const pool = api.createSpawner({
  command: process.env.HOST_COMMAND,
  instances: { min: 3 },
  env: { GRANDCHILD: '1' },
  killTimeout: 1_000,
  logger: false,
  orphanGuard: process.env.ORPHAN_GUARD !== '0',
})
await pool.start()
const leaders = pool.status().instances.map((instance) => instance.pid)
console.log(JSON.stringify({ host: process.pid, leaders }))
process.stdin.setEncoding('utf8')
process.stdin.on('data', async (command) => {
  if (command.trim() === 'exit') process.exit(0)
  if (command.trim() === 'close') {
    await pool.close()
    process.exit(0)
  }
})
setInterval(() => {}, 60_000)
`

const hosts = new Set<ChildProcess>()

afterEach(async () => {
  for (const host of hosts) {
    if (host.exitCode === null && host.signalCode === null) host.kill('SIGKILL')
  }
  hosts.clear()
  await cleanupSpawners()
})

/** The live members of process group `pgid` (from /proc; zombies do not count). */
function groupMembers(pgid: number): number[] {
  const members: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'latin1')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(fields[2]) === pgid && fields[0] !== 'Z') members.push(Number(entry))
    } catch {
      // it ended meanwhile
    }
  }
  return members
}

async function startHost(watchdog: boolean): Promise<{ child: ChildProcess; pids: number[] }> {
  const dir = tempDir()
  const script = join(dir, 'pool-host.mjs')
  writeFileSync(script, HOST_SCRIPT)
  const child = spawn(NODE, [script], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOST_COMMAND: `sh -c "${NODE} ${APP}; true"`,
      ORPHAN_GUARD: watchdog ? '1' : '0',
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
  const { host, leaders } = JSON.parse(line) as { host: number; leaders: number[] }
  expect(leaders).toHaveLength(3)
  // The grandchild is spawned as the backend starts: wait until each group has all of it (the
  // shell of the command, the wrapper shell, node and sleep; the first may have exec'd).
  await waitFor(() => leaders.every((leader) => groupMembers(leader).length >= 3), {
    message: 'every instance with its grandchild',
  })
  // The host's other child is the watchdog, which must end too.
  const watchdogs = childrenOf(host).filter((pid) => !leaders.includes(pid))
  expect(watchdogs).toHaveLength(watchdog ? 1 : 0)
  const pids = [...leaders.flatMap(groupMembers), ...watchdogs]
  recordPids(...pids)
  expect(pids.filter((pid) => !isAlive(pid))).toEqual([])
  return { child, pids }
}

function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: string | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode })
  }
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }))
  })
}

// The same bound as spawner-orphans.test.ts (ORPHANS_GONE_WITHIN_MS, explained there): the
// slowest path here is the watchdog, which sends SIGTERM at once and SIGKILL after the 1 s
// killTimeout; measured 0-100 ms for these backends, which end on SIGTERM.
const ORPHANS_GONE_WITHIN_MS = 10_000

async function expectNoOrphans(pids: number[]): Promise<void> {
  const left = (): number[] => pids.filter((pid) => isAlive(pid))
  await waitFor(() => left().length === 0, {
    timeout: ORPHANS_GONE_WITHIN_MS,
    message: 'every process of every instance to be gone',
  }).catch((error: unknown) => {
    throw new Error(`${String(error)}; still alive: ${left().join(', ')}`)
  })
}

describe('createSpawner with instances leaves no orphans', () => {
  it('when the host calls close() and exits', async () => {
    const { child, pids } = await startHost(false)
    child.stdin?.write('close\n')
    expect(await exitOf(child)).toEqual({ code: 0, signal: null })
    // close() resolved before the exit: no backend is left even for a moment.
    expect(pids.filter((pid) => isAlive(pid))).toEqual([])
  })

  it('when the host calls process.exit()', async () => {
    const { child, pids } = await startHost(false)
    child.stdin?.write('exit\n')
    expect(await exitOf(child)).toEqual({ code: 0, signal: null })
    await expectNoOrphans(pids)
  })

  it('when the host gets SIGTERM (and still ends by SIGTERM)', async () => {
    const { child, pids } = await startHost(false)
    child.kill('SIGTERM')
    expect(await exitOf(child)).toEqual({ code: null, signal: 'SIGTERM' })
    await expectNoOrphans(pids)
  })

  it('when the host is killed with SIGKILL (the watchdog cleans up)', async () => {
    const { child, pids } = await startHost(true)
    child.kill('SIGKILL')
    expect(await exitOf(child)).toEqual({ code: null, signal: 'SIGKILL' })
    await expectNoOrphans(pids)
  })
})
