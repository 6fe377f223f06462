import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { WebSocket } from 'ws'
import type { WsgiProxyError } from '@wsgiproxy/core'
import { closeAll, freePort, send } from '@wsgiproxy/test-kit/servers'
import {
  APP,
  NODE,
  cleanupSpawners,
  isAlive,
  serveSpawner,
  spawner,
  tempDir,
  waitFor,
} from '@wsgiproxy/test-kit/spawner-helpers'
import type { Spawner, SpawnerEvents, SpawnerInstanceStatus } from './spawner.ts'

// Real processes on a loaded 2-core machine: more than Vitest's default 5 s per test and hook.
vi.setConfig({ testTimeout: 30_000, hookTimeout: 20_000 })

const holds = new Set<AbortController>()

afterEach(async () => {
  for (const controller of holds) controller.abort()
  holds.clear()
  await closeAll()
  await cleanupSpawners()
})

const command = [NODE, APP]

// How long a started or stopped instance may take to show in status(): a Node fixture starts in
// 50-150 ms and dies at once on SIGTERM here; 10 s leaves room for a loaded machine.
const SETTLES_WITHIN_MS = 10_000

function readyInstances(backend: Spawner): SpawnerInstanceStatus[] {
  return (backend.status().instances ?? []).filter((instance) => instance.state === 'ready')
}

function pidOf(body: Buffer | string): number {
  return (JSON.parse(String(body)) as { pid: number }).pid
}

/** Requests to `/slow?ms=60000` held open until the test ends (or `release()`). */
function hold(origin: string, count: number, method = 'GET'): { release(): Promise<void> } {
  const controller = new AbortController()
  holds.add(controller)
  const requests = Array.from({ length: count }, () =>
    fetch(`${origin}/slow?ms=60000`, {
      method,
      signal: controller.signal,
      ...(method === 'GET' ? {} : { body: 'payload' }),
    }).then(
      (response) => response.text(),
      () => '',
    ),
  )
  return {
    async release() {
      controller.abort()
      await Promise.all(requests)
    },
  }
}

/**
 * `clients` loops that GET `/` until `stop()`; every answer that is not a 200 from the fixture
 * (or a failed fetch) is a failure. `pids` counts the answers of each process.
 */
function load(
  origin: string,
  clients: number,
): {
  stop(): Promise<{ failures: string[]; pids: Map<number, number>; requests: number }>
} {
  const stopped = new AbortController()
  const failures: string[] = []
  const pids = new Map<number, number>()
  let requests = 0
  const loop = async (): Promise<void> => {
    while (!stopped.signal.aborted) {
      requests++
      try {
        const response = await fetch(origin)
        const text = await response.text()
        if (response.status !== 200) failures.push(`${response.status}: ${text}`)
        else pids.set(pidOf(text), (pids.get(pidOf(text)) ?? 0) + 1)
      } catch (error) {
        failures.push(String(error))
      }
    }
  }
  const loops = Array.from({ length: clients }, () => loop())
  return {
    async stop() {
      stopped.abort()
      await Promise.all(loops)
      return { failures, pids, requests }
    },
  }
}

function record<K extends keyof SpawnerEvents>(backend: Spawner, event: K): SpawnerEvents[K][0][] {
  const seen: SpawnerEvents[K][0][] = []
  backend.on(event, ((info: SpawnerEvents[K][0]) => seen.push(info)) as never)
  return seen
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

describe('createSpawner with instances', () => {
  it('starts min instances and sends each request to the least busy one, ties in turn', async () => {
    const backend = spawner({ command, instances: { min: 3 } })
    const front = await serveSpawner(backend)
    await backend.start()
    const instances = backend.status().instances ?? []
    expect(instances.map((instance) => instance.state)).toEqual(['ready', 'ready', 'ready'])
    const pids = instances.map((instance) => instance.pid).toSorted()
    expect(new Set(instances.map((instance) => instance.port)).size).toBe(3)
    // Three requests held at once: each instance has the fewest in flight in turn.
    const held = await Promise.all(
      Array.from({ length: 3 }, () => send(front.origin, { path: '/slow?ms=600' })),
    )
    const answered = held.map((r) => Number(/by (\d+)/.exec(r.body.toString())?.[1])).toSorted()
    expect(answered).toEqual(pids)
    // One at a time, every instance is as idle as the others: they take turns.
    const turns = new Map<number, number>()
    for (let i = 0; i < 6; i++) {
      const pid = pidOf((await send(front.origin)).body)
      turns.set(pid, (turns.get(pid) ?? 0) + 1)
      // The client may have the whole body a moment before the front counts it done.
      await waitFor(() => backend.status().inFlight === 0, { message: 'nothing in flight' })
    }
    expect([...turns.keys()].toSorted()).toEqual(pids)
    expect([...turns.values()]).toEqual([2, 2, 2])
    expect(backend.status()).toMatchObject({ state: 'ready', starts: 3, inFlight: 0 })
  })

  it('grows up to max while every instance is busy, then back to min when idle', async () => {
    const backend = spawner({
      command,
      instances: { min: 1, max: 3, busyAt: 2, idleTimeout: 300 },
    })
    const scales = record(backend, 'scale')
    const front = await serveSpawner(backend)
    await backend.start()
    const inFlight = (count: number) => () => backend.status().inFlight === count
    const ready = (count: number) => () => readyInstances(backend).length === count
    // Two fill the first instance; the third finds it busy, starts a second and is served by
    // the first anyway.
    const first = hold(front.origin, 3)
    await waitFor(inFlight(3), { message: '3 requests in flight' })
    expect(scales.map((s) => `${s.reason} ${s.instances}`)).toEqual(['start 1', 'busy 2'])
    await waitFor(ready(2), { timeout: SETTLES_WITHIN_MS, message: 'a second instance' })
    // The new one is the least busy: it takes the next two, and the one after starts a third.
    const second = hold(front.origin, 2)
    await waitFor(inFlight(5), { message: '5 requests in flight' })
    const third = hold(front.origin, 1)
    await waitFor(inFlight(6), { message: '6 requests in flight' })
    await waitFor(ready(3), { timeout: SETTLES_WITHIN_MS, message: 'a third instance' })
    // At max: all busy again, and no fourth starts (the decision is made as each is admitted).
    const fourth = hold(front.origin, 3)
    await waitFor(inFlight(9), { message: '9 requests in flight' })
    expect(scales.map((s) => `${s.reason} ${s.instances}`)).toEqual(['start 1', 'busy 2', 'busy 3'])
    expect(readyInstances(backend).map((i) => i.inFlight)).toEqual([3, 3, 3])
    expect(backend.status().starts).toBe(3)
    const pids = readyInstances(backend).map((instance) => instance.pid)
    await Promise.all([first, second, third, fourth].map((requests) => requests.release()))
    // Nothing in flight: the two extras stop after instances.idleTimeout, one stays.
    await waitFor(() => (backend.status().instances ?? []).length === 1 && ready(1)(), {
      timeout: SETTLES_WITHIN_MS,
      message: 'the pool back at min',
    })
    expect(scales.slice(3).map((s) => `${s.reason} ${s.instances}`)).toEqual(['idle 2', 'idle 1'])
    const [kept] = readyInstances(backend)
    expect(pids.filter((pid) => pid !== kept?.pid && isAlive(pid))).toEqual([])
    expect(backend.status().state).toBe('ready')
  })

  it('grows when the requests that waited for the first instance make it busy', async () => {
    const backend = spawner({ command, instances: { min: 1, max: 3, busyAt: 2 } })
    const scales = record(backend, 'scale')
    const front = await serveSpawner(backend)
    // Cold: all four wait at the gate for the first instance, then make it busy at once.
    const cold = hold(front.origin, 4)
    await waitFor(() => backend.status().inFlight === 4, { message: '4 requests in flight' })
    expect(scales.map((s) => `${s.reason} ${s.instances}`)).toEqual(['start 1', 'busy 2'])
    await cold.release()
  })

  it('loses no request when an instance is killed under load, and replaces it', async () => {
    const backend = spawner({ command, instances: { min: 2 } })
    const errors: string[] = []
    backend.on('error', (error) => errors.push(error.code))
    const front = await serveSpawner(backend)
    await backend.start()
    const [victim, survivor] = readyInstances(backend).map((instance) => instance.pid)
    const clients = load(front.origin, 16)
    await sleep(300)
    process.kill(victim ?? 0, 'SIGKILL')
    await sleep(2_000)
    const { failures, pids, requests } = await clients.stop()
    console.log(`spawner pool kill: ${requests} GETs at c16, ${failures.length} failed`)
    expect(failures).toEqual([])
    expect(requests).toBeGreaterThan(100)
    expect(pids.get(survivor ?? 0)).toBeGreaterThan(0)
    await waitFor(() => readyInstances(backend).length === 2, {
      timeout: SETTLES_WITHIN_MS,
      message: 'a replacement',
    })
    const now = readyInstances(backend).map((instance) => instance.pid)
    expect(now).toContain(survivor)
    expect(now).not.toContain(victim)
    expect(backend.status()).toMatchObject({ crashes: 1, starts: 3, state: 'ready' })
    expect(errors).toEqual(['BACKEND_EXITED'])
  })

  it('restarts instance by instance under load without failing a request', async () => {
    const backend = spawner({ command, instances: { min: 2 } })
    const scales = record(backend, 'scale')
    const front = await serveSpawner(backend)
    await backend.start()
    const before = readyInstances(backend).map((instance) => instance.pid)
    const clients = load(front.origin, 16)
    await sleep(300)
    // POSTs are never sent twice: these succeed only if their instance drains before it stops.
    const posts = [0, 1].map(() =>
      send(front.origin, { method: 'POST', path: '/slow?ms=500', body: 'payload' }),
    )
    await waitFor(() => backend.status().inFlight >= 2, { message: 'the POSTs in flight' })
    const restartStart = Date.now()
    await backend.restart()
    const restartMs = Date.now() - restartStart
    await sleep(300)
    const { failures, pids, requests } = await clients.stop()
    console.log(
      `spawner pool rolling restart: ${requests} GETs at c16 and 2 POSTs, ${failures.length} failed; restart() took ${restartMs} ms`,
    )
    expect(failures).toEqual([])
    const posted = await Promise.all(posts)
    expect(posted.map((r) => r.status)).toEqual([200, 200])
    for (const r of posted)
      expect(before).toContain(Number(/by (\d+)/.exec(r.body.toString())?.[1]))
    const after = readyInstances(backend).map((instance) => instance.pid)
    expect(after).toHaveLength(2)
    expect(after.filter((pid) => before.includes(pid))).toEqual([])
    // restart() resolves once every old process has gone; the new ones served.
    expect(before.filter((pid) => isAlive(pid))).toEqual([])
    expect(after.every((pid) => (pids.get(pid) ?? 0) > 0)).toBe(true)
    expect((backend.status().instances ?? []).map((instance) => instance.pid)).toEqual(after)
    expect(scales.slice(2).map((s) => `${s.reason} ${s.instances}`)).toEqual([
      'restart 3',
      'restart 2',
      'restart 3',
      'restart 2',
    ])
  })

  it('sends a request an instance failed to another one, calling onError only when final', async () => {
    const hooked: WsgiProxyError[] = []
    const backend = spawner({
      command,
      instances: { min: 2 },
      onError: (error) => {
        hooked.push(error)
      },
    })
    const front = await serveSpawner(backend)
    await backend.start()
    const oneEach = (): boolean =>
      readyInstances(backend).length === 2 &&
      readyInstances(backend).every((instance) => instance.inFlight === 1)
    // A GET without a body, cut before its answer: sent again to the other instance.
    const gets = [0, 1].map(() => send(front.origin, { path: '/slow?ms=1000' }))
    await waitFor(oneEach, { message: 'one GET on each instance' })
    const [victim, survivor] = readyInstances(backend).map((instance) => instance.pid)
    process.kill(victim ?? 0, 'SIGKILL')
    const answers = await Promise.all(gets)
    expect(answers.map((r) => r.status)).toEqual([200, 200])
    expect(answers.map((r) => r.body.toString())).toEqual(Array(2).fill(`slow done by ${survivor}`))
    expect(hooked).toEqual([])
    // A POST with a body that was sent: not sent again, and the hook sees its failure once.
    await waitFor(() => readyInstances(backend).length === 2, {
      timeout: SETTLES_WITHIN_MS,
      message: 'a replacement',
    })
    const posts = [0, 1].map(() =>
      send(front.origin, { method: 'POST', path: '/slow?ms=1000', body: 'payload' }),
    )
    await waitFor(oneEach, { message: 'one POST on each instance' })
    process.kill(readyInstances(backend)[0]?.pid ?? 0, 'SIGKILL')
    const statuses = (await Promise.all(posts)).map((r) => r.status).toSorted()
    expect(statuses).toEqual([200, 502])
    expect(hooked.map((error) => error.code)).toEqual(['UPSTREAM_RESET'])
  })

  it('keeps serving while a crashed instance cannot be replaced, backing off between starts', async () => {
    const failFile = join(tempDir(), 'fail')
    const backend = spawner({
      command,
      instances: { min: 2 },
      backoff: { base: 300 },
      env: { FAIL_FILE: failFile },
    })
    const backoffs = record(backend, 'backoff')
    const scales = record(backend, 'scale')
    const front = await serveSpawner(backend)
    await backend.start()
    const [victim, survivor] = readyInstances(backend).map((instance) => instance.pid)
    // A crash within 1 s of ready counts as a failed start itself; this one must not.
    const readyAt = Math.max(...readyInstances(backend).map((instance) => instance.readyAt ?? 0))
    await waitFor(() => Date.now() - readyAt > 1_100, { message: 'a second of life' })
    // From now on a new process exits before it is ready.
    writeFileSync(failFile, '')
    process.kill(victim ?? 0, 'SIGKILL')
    // The replacement fails, is tried once more at once, fails again: starts wait 300 ms.
    await waitFor(() => backoffs.length === 1, { timeout: SETTLES_WITHIN_MS, message: 'backoff' })
    expect(backoffs[0]).toMatchObject({ failures: 2, delayMs: 300 })
    expect(scales.slice(2).map((s) => `${s.reason} ${s.instances}`)).toEqual([
      'crash 1',
      'crash 2',
      'failed 1',
      'start 2',
      'failed 1',
    ])
    // The pool still serves from the other instance, not with 503.
    expect(backend.status()).toMatchObject({ state: 'ready', consecutiveFailures: 2 })
    expect(pidOf((await send(front.origin)).body)).toBe(survivor)
    // Fixed: once the hold ends, the pool is back at min.
    rmSync(failFile)
    await waitFor(() => readyInstances(backend).length === 2, {
      timeout: SETTLES_WITHIN_MS,
      message: 'the pool back at min',
    })
    expect(backend.status()).toMatchObject({ state: 'ready', crashes: 1, retryAt: null })
  })

  it('forwards WebSocket upgrades to the least busy instance, each open one in flight', async () => {
    const backend = spawner({ command, instances: { min: 2 }, env: { WEBSOCKET: '1' } })
    const front = await serveSpawner(backend)
    await backend.start()
    const open = (): Promise<{ socket: WebSocket; pid: number }> =>
      new Promise((resolve, reject) => {
        const socket = new WebSocket(`ws://127.0.0.1:${front.port}/chat`)
        socket.once('message', (data) => resolve({ socket, pid: pidOf(String(data)) }))
        socket.once('error', reject)
      })
    const first = await open()
    const second = await open()
    expect([first.pid, second.pid].toSorted()).toEqual(
      readyInstances(backend)
        .map((instance) => instance.pid)
        .toSorted(),
    )
    expect(readyInstances(backend).map((instance) => instance.inFlight)).toEqual([1, 1])
    first.socket.close()
    second.socket.close()
    await waitFor(() => backend.status().inFlight === 0, { message: 'the sockets to close' })
  })

  it('stops every instance after the idleTimeout of the whole pool; a request starts min again', async () => {
    const backend = spawner({ command, instances: { min: 2 }, idleTimeout: 300 })
    const idle = record(backend, 'idle')
    const front = await serveSpawner(backend)
    expect((await send(front.origin)).status).toBe(200)
    await waitFor(() => readyInstances(backend).length === 2, { message: 'min instances' })
    const first = readyInstances(backend).map((instance) => instance.pid)
    await waitFor(() => backend.status().state === 'idle', {
      timeout: SETTLES_WITHIN_MS,
      message: 'the idle stop',
    })
    expect(idle.map((info) => info.pid).toSorted()).toEqual(first.toSorted())
    expect(backend.status().instances).toEqual([])
    expect(first.filter((pid) => isAlive(pid))).toEqual([])
    expect((await send(front.origin)).status).toBe(200)
    await waitFor(() => readyInstances(backend).length === 2, { message: 'min instances again' })
    expect(backend.status().starts).toBe(4)
  })

  it('restarts a pool of one on a fixed port in place, requests waiting for the new process', async () => {
    const port = await freePort()
    const backend = spawner({ command, port, instances: { max: 1 } })
    const front = await serveSpawner(backend)
    const first = pidOf((await send(front.origin)).body)
    const restarted = backend.restart()
    // Sent while the old process drains and stops: it waits for the new one.
    const during = send(front.origin)
    await restarted
    const second = pidOf((await during).body)
    expect(second).not.toBe(first)
    expect(isAlive(first)).toBe(false)
    expect(readyInstances(backend)).toMatchObject([{ pid: second, port }])
  })

  it('runs a pool on port 0, each instance on the port it announces', async () => {
    const backend = spawner({
      command,
      port: 0,
      ready: { stdout: /listening on (?<port>\d+)/ },
      env: { PRINT_PORT: '1' },
      instances: { min: 2 },
    })
    const front = await serveSpawner(backend)
    await backend.start()
    const instances = readyInstances(backend)
    expect(instances).toHaveLength(2)
    expect(new Set(instances.map((instance) => instance.port)).size).toBe(2)
    const held = await Promise.all([0, 1].map(() => send(front.origin, { path: '/slow?ms=300' })))
    const answered = held.map((r) => Number(/by (\d+)/.exec(r.body.toString())?.[1])).toSorted()
    expect(answered).toEqual(instances.map((instance) => instance.pid).toSorted())
  })

  it('close() leaves no process of any instance', async () => {
    // Processes that ignore SIGTERM: close() escalates to SIGKILL for each of them.
    const backend = spawner({
      command,
      instances: { min: 3 },
      killTimeout: 300,
      env: { IGNORE_SIGTERM: '1' },
    })
    await backend.start()
    const pids = (backend.status().instances ?? []).map((instance) => instance.pid)
    expect(pids).toHaveLength(3)
    await backend.close()
    expect(pids.filter((pid) => isAlive(pid))).toEqual([])
    expect(backend.status()).toMatchObject({ state: 'closed', instances: [] })
    expect((await backend.app(environ())).status).toBe(503)
  })
})

function environ(): Parameters<Spawner['app']>[0] {
  return {
    REQUEST_METHOD: 'GET',
    SCRIPT_NAME: '',
    PATH_INFO: '/',
    QUERY_STRING: '',
    SERVER_NAME: 'front.test',
    SERVER_PORT: '80',
    SERVER_PROTOCOL: 'HTTP/1.1',
    HTTP_HOST: 'front.test',
    REMOTE_ADDR: '127.0.0.1',
    'wsgi.url_scheme': 'http',
    'wsgi.input': null,
  }
}
