import { afterEach, describe, expect, it, vi } from 'vitest'
import { cleanupSpawners, isAlive, recordPids, waitFor } from '@wsgiproxy/test-kit/spawner-helpers'
import { BackendProcess } from './_backend-process.ts'
import type { BackendProcessOptions } from './_backend-process.ts'

// Real processes on a loaded 2-core machine: more than Vitest's default 5 s per test and hook.
vi.setConfig({ testTimeout: 20_000, hookTimeout: 20_000 })

afterEach(async () => {
  await cleanupSpawners()
})

function spawnSleep(overrides: Partial<BackendProcessOptions>): {
  backend: BackendProcess
  notices: string[]
  stuck: BackendProcess[]
} {
  const notices: string[] = []
  const stuck: BackendProcess[] = []
  const backend = BackendProcess.spawn({
    file: 'sleep',
    args: ['30'],
    cwd: undefined,
    env: process.env,
    port: 0,
    killTimeout: 200,
    handleSignals: false,
    orphanGuard: false,
    onLine: () => {},
    onExit: () => {},
    onNotice: (_, message) => notices.push(message),
    onStuck: (process) => stuck.push(process),
    ...overrides,
  })
  recordPids(backend.pid)
  return { backend, notices, stuck }
}

describe('BackendProcess', () => {
  // Root may signal every process, so EPERM is injected: a group whose members changed their
  // user id (a setuid program) refuses every signal, and its leader never exits.
  it('stops waiting for a process group it may not signal, after killTimeout and a grace', async () => {
    const { backend, notices, stuck } = spawnSleep({ signal: () => 'denied' })
    const pid = backend.pid ?? 0
    const started = Date.now()
    await backend.stop('close')
    const elapsed = Date.now() - started
    // killTimeout (200 ms), then 1 s after SIGKILL.
    expect(elapsed).toBeGreaterThanOrEqual(1_180)
    expect(elapsed).toBeLessThan(2_700)
    expect(stuck).toEqual([backend])
    expect(notices).toEqual([
      'cannot send SIGTERM to its process group: permission denied (EPERM: its members run as another user)',
      'did not stop within 200 ms of SIGTERM: sending SIGKILL to its process group',
      'did not exit within 1000 ms of SIGKILL: no longer waiting for it (the exit hook and the watchdog still know its group)',
    ])
    // It is still there: nothing could signal it.
    expect(isAlive(pid)).toBe(true)
    process.kill(pid, 'SIGKILL')
    expect(await backend.exited).toMatchObject({ pid, signal: 'SIGKILL' })
    await waitFor(() => !isAlive(pid), { message: 'the sleep to be gone' })
  })

  it('keeps a group registered while members it may not signal outlive its leader', async () => {
    const output: string[] = []
    const { backend } = spawnSleep({
      file: '/bin/sh',
      args: ['-c', 'sleep 30 & echo $!'],
      signal: () => 'denied',
      onLine: (_, __, text) => output.push(text),
    })
    const pid = backend.pid ?? 0
    await waitFor(() => output.length > 0, { message: 'the member pid' })
    const member = Number(output[0])
    recordPids(member)
    await backend.exited
    await backend.gone
    // Callers stopped waiting, but the exit hook (and a watchdog) still kill the group.
    expect(isAlive(member)).toBe(true)
    expect(registeredGroups().has(pid)).toBe(true)
    process.kill(member, 'SIGKILL')
    await waitFor(() => !registeredGroups().has(pid), { message: 'the group to be forgotten' })
  })
})

// The process-wide registry of live groups (_process-group.ts), shared by every copy.
function registeredGroups(): Map<number, unknown> {
  const registry = (process as unknown as Record<symbol, { groups: Map<number, unknown> }>)[
    Symbol.for('wsgiproxy.processGroups')
  ]
  return registry?.groups ?? new Map()
}
