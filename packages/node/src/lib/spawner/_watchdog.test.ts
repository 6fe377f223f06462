import { spawn } from 'node:child_process'
import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  childrenOf,
  cleanupSpawners,
  isAlive,
  recordPids,
  waitFor,
} from '@wsgiproxy/test-kit/spawner-helpers'
import { WATCHDOG_SH, watchdogCommand } from './_watchdog.ts'

// Real processes on a loaded 2-core machine: more than Vitest's default 5 s per test and hook.
vi.setConfig({ testTimeout: 20_000, hookTimeout: 20_000 })

afterEach(async () => {
  await cleanupSpawners()
})

/** A process leading its own group (setsid), its pids recorded for cleanup. */
async function group(script: string): Promise<number> {
  const child = spawn('/bin/sh', ['-c', script], { detached: true, stdio: 'ignore' })
  child.unref()
  const pid = child.pid ?? 0
  recordPids(pid)
  await waitFor(() => childrenOf(pid).length > 0, { message: 'the group to start' })
  recordPids(...childrenOf(pid))
  return pid
}

/** A group leader and its children. */
function membersOf(pid: number): number[] {
  return [pid, ...childrenOf(pid)]
}

describe('the orphan watchdog', () => {
  it('runs under /bin/sh when the host executable is not a plain Node (Electron)', () => {
    expect(watchdogCommand()).toEqual([process.execPath, ['-e', expect.any(String)]])
    expect(watchdogCommand({ ...process.versions, electron: '30.0.0' })).toEqual([
      '/bin/sh',
      ['-c', WATCHDOG_SH, 'wsgiproxy-watchdog'],
    ])
  })

  it.each([
    ['node', process.execPath],
    ['/bin/sh', '/bin/sh'],
  ])('kills the groups it was started with when its input ends at once (%s)', async (_, file) => {
    // The host died before it could write a line: the groups came as arguments.
    const plain = await group('sleep 30; true')
    const members = membersOf(plain)
    const versions = file === '/bin/sh' ? { ...process.versions, electron: '30.0.0' } : undefined
    const [command, args] = watchdogCommand(versions, [`${plain}:1000`])
    const watchdog = spawn(command, args, { detached: true, stdio: ['pipe', 'ignore', 'ignore'] })
    recordPids(watchdog.pid)
    watchdog.stdin?.end()
    await waitFor(() => members.every((pid) => !isAlive(pid)), { message: 'SIGTERM' })
    await waitFor(() => watchdog.exitCode !== null, { message: 'the watchdog to exit' })
    expect(members.filter(isAlive)).toEqual([])
    expect(watchdog.exitCode).toBe(0)
  })

  it('kills the groups it guards when its input ends, with SIGKILL after their grace (/bin/sh)', async () => {
    const stubborn = await group('trap "" TERM; sleep 30; true')
    const plain = await group('sleep 30; true')
    const forgotten = await group('sleep 30; true')
    const watchdog = spawn('/bin/sh', ['-c', WATCHDOG_SH], {
      detached: true,
      stdio: ['pipe', 'ignore', 'ignore'],
    })
    recordPids(watchdog.pid)
    const [stubbornMembers, plainMembers] = [membersOf(stubborn), membersOf(plain)]
    watchdog.stdin?.end(`+${stubborn} 1000\n+${plain} 1000\n+${forgotten} 1000\n-${forgotten}\n`)
    const started = Date.now()
    await waitFor(() => plainMembers.every((pid) => !isAlive(pid)), { message: 'SIGTERM' })
    expect(Date.now() - started).toBeLessThan(900)
    expect(stubbornMembers.every(isAlive)).toBe(true)
    await waitFor(() => stubbornMembers.every((pid) => !isAlive(pid)), {
      timeout: 4_000,
      message: 'SIGKILL after the grace',
    })
    await waitFor(() => watchdog.exitCode !== null, { message: 'the watchdog to exit' })
    // A group it was told had gone is never signalled.
    expect(isAlive(forgotten)).toBe(true)
  })
})
