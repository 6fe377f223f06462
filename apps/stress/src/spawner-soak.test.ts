// Spawner soak (issue 8, item 7): many idle-stop / restart cycles and crash / restart cycles of a
// real backend process behind serve(); afterwards no process is left (every pid gone), no port
// stays taken (each can be bound again, and a new spawner starts), and the host holds no more
// open file descriptors than before. The spawner's internal port reservations are checked beside
// them, in packages/node (spawner-reservations.test.ts).
import { readdirSync } from 'node:fs'
import { createServer } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { closeAll, send } from '@wsgiproxy/test-kit/servers'
import {
  APP,
  NODE,
  cleanupSpawners,
  isAlive,
  serveSpawner,
  spawner,
  waitFor,
} from '@wsgiproxy/test-kit/spawner-helpers'
import { scale } from './scale.ts'

const IDLE_CYCLES = scale(50, 5)
const CRASH_CYCLES = scale(20, 3)

afterEach(async () => {
  await closeAll()
  await cleanupSpawners()
})

function openFds(): number {
  return readdirSync('/proc/self/fd').length
}

/** Whether `port` can be bound on 127.0.0.1 right now. */
function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

function pidOf(body: Buffer): number {
  return (JSON.parse(body.toString('utf8')) as { pid: number }).pid
}

/** Runs `cycles` of `cycle` on a spawner behind serve(), then checks processes, ports and fds. */
async function soak(
  options: Parameters<typeof spawner>[0],
  cycles: number,
  cycle: (origin: string, backend: ReturnType<typeof spawner>) => Promise<number>,
): Promise<{ pids: number[]; ports: number[]; fdsBefore: number; fdsAfter: number }> {
  // A warm-up start: the orphan watchdog and the first pipes exist before the count.
  const warm = spawner({ command: [NODE, APP] })
  await warm.start()
  await warm.close()
  const fdsBefore = openFds()

  const backend = spawner(options)
  const spawned: Array<{ pid: number; port: number }> = []
  backend.on('spawn', ({ pid, port }) => spawned.push({ pid, port }))
  const front = await serveSpawner(backend)
  const served: number[] = []
  for (let i = 0; i < cycles; i++) {
    const pid = await cycle(front.origin, backend)
    served.push(pid)
    // The process of this cycle is gone before the next starts.
    await waitFor(() => !isAlive(pid), { message: `process ${pid} to end` })
  }
  expect(new Set(served).size).toBe(cycles)
  await closeAll()
  await backend.close()
  expect(backend.status()).toMatchObject({ state: 'closed', pid: null, port: null })

  const pids = spawned.map((s) => s.pid)
  const ports = spawned.map((s) => s.port)
  for (const pid of pids) expect(isAlive(pid), `process ${pid}`).toBe(false)
  const unbindable: number[] = []
  for (const port of new Set(ports)) if (!(await canBind(port))) unbindable.push(port)
  expect(unbindable).toEqual([])

  // A new spawner starts and answers, then goes away too.
  const fresh = spawner({ command: [NODE, APP] })
  const freshFront = await serveSpawner(fresh)
  expect((await send(freshFront.origin)).status).toBe(200)
  const freshPid = fresh.status().pid ?? 0
  await closeAll()
  await fresh.close()
  expect(isAlive(freshPid)).toBe(false)

  // Pipes and sockets of ended processes close asynchronously: give them a moment.
  let fdsAfter = openFds()
  await waitFor(
    () => {
      fdsAfter = openFds()
      return fdsAfter <= fdsBefore
    },
    { timeout: 5_000, message: `open fds back to ${fdsBefore}` },
  ).catch(() => {})
  return { pids, ports, fdsBefore, fdsAfter }
}

describe('spawner soak', () => {
  it(`${IDLE_CYCLES} idle-stop / restart cycles leave no process, port or fd behind`, async () => {
    const result = await soak(
      { command: [NODE, APP], idleTimeout: 150, killTimeout: 2_000 },
      IDLE_CYCLES,
      async (origin, backend) => {
        const response = await send(origin)
        expect(response.status).toBe(200)
        await waitFor(() => backend.status().state === 'idle', { message: 'the idle stop' })
        return pidOf(response.body)
      },
    )
    console.log(
      `idle soak: ${result.pids.length} processes, ${new Set(result.ports).size} ports, fds ${result.fdsBefore} -> ${result.fdsAfter}`,
    )
    expect(result.pids).toHaveLength(IDLE_CYCLES)
    expect(result.fdsAfter).toBeLessThanOrEqual(result.fdsBefore)
  })

  it(`${CRASH_CYCLES} crash / restart cycles leave no process, port or fd behind`, async () => {
    const result = await soak(
      // Crashes a moment after starting count as failures in a row: keep the backoff short.
      { command: [NODE, APP], backoff: { base: 50, max: 100 }, killTimeout: 2_000 },
      CRASH_CYCLES,
      async (origin, backend) => {
        let response = await send(origin)
        // A start refused during the short backoff is asked again.
        while (response.status === 503) {
          await new Promise((resolve) => setTimeout(resolve, 60))
          response = await send(origin)
        }
        expect(response.status).toBe(200)
        const pid = pidOf(response.body)
        const crashed = await send(origin, { path: '/crash' })
        expect(crashed.status).toBe(502)
        await waitFor(() => backend.status().state !== 'ready', { message: 'the crash' })
        return pid
      },
    )
    console.log(
      `crash soak: ${result.pids.length} processes, ${new Set(result.ports).size} ports, fds ${result.fdsBefore} -> ${result.fdsAfter}`,
    )
    expect(result.pids).toHaveLength(CRASH_CYCLES)
    expect(result.fdsAfter).toBeLessThanOrEqual(result.fdsBefore)
  })
})
