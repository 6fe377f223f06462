import { rmSync, writeFileSync } from 'node:fs'
import { get } from 'node:http'
import { join } from 'node:path'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { closeAll, send } from '@wsgiproxy/test-kit/servers'
import {
  APP,
  NODE,
  cleanupSpawners,
  isAlive,
  lines,
  recordPids,
  serveSpawner,
  spawner,
  tempDir,
  waitFor,
} from '@wsgiproxy/test-kit/spawner-helpers'
import type { Spawner, SpawnerError } from './spawner.ts'

// Real processes on a loaded 2-core machine: more than Vitest's default 5 s per test and hook.
vi.setConfig({ testTimeout: 20_000, hookTimeout: 20_000 })

afterEach(async () => {
  await closeAll()
  await cleanupSpawners()
})

const command = [NODE, APP]

function json(body: Buffer): { pid: number; port: number; envPort: string; argv: string[] } {
  return JSON.parse(body.toString('utf8')) as {
    pid: number
    port: number
    envPort: string
    argv: string[]
  }
}

describe('createSpawner', () => {
  it('starts exactly one process for 50 concurrent first requests', async () => {
    const dir = tempDir()
    const starts = join(dir, 'starts')
    const backend = spawner({ command, env: { STARTS_FILE: starts, START_DELAY_MS: '300' } })
    const front = await serveSpawner(backend)
    const responses = await Promise.all(Array.from({ length: 50 }, () => send(front.origin)))
    expect(responses.map((r) => r.status)).toEqual(Array(50).fill(200))
    const pids = new Set(responses.map((r) => json(r.body).pid))
    expect(pids.size).toBe(1)
    expect(lines(starts)).toHaveLength(1)
    expect(backend.status()).toMatchObject({ state: 'ready', starts: 1, pid: [...pids][0] })
  })

  it('answers 503 at once to requests beyond maxQueue while starting', async () => {
    const dir = tempDir()
    const starts = join(dir, 'starts')
    const backend = spawner({
      command,
      maxQueue: 10,
      env: { STARTS_FILE: starts, START_DELAY_MS: '500' },
    })
    const responses = await Promise.all(Array.from({ length: 20 }, () => backend.app(environ('/'))))
    const statuses = responses.map((r) => r.status).toSorted()
    expect(statuses).toEqual([...Array(10).fill(200), ...Array(10).fill(503)])
    const refused = responses.find((r) => r.status === 503)
    expect(refused?.headers).toContainEqual(['retry-after', '1'])
    expect(lines(starts)).toHaveLength(1)
  })

  it('stops the backend after idleTimeout and starts a new one on the next request', async () => {
    const backend = spawner({ command, idleTimeout: 300 })
    const front = await serveSpawner(backend)
    const idle: number[] = []
    backend.on('idle', ({ pid }) => idle.push(pid))
    const first = json((await send(front.origin)).body).pid
    await waitFor(() => backend.status().state === 'idle', { message: 'the idle stop' })
    expect(idle).toEqual([first])
    expect(isAlive(first)).toBe(false)
    const second = json((await send(front.origin)).body).pid
    expect(second).not.toBe(first)
    expect(backend.status().starts).toBe(2)
  })

  it('never stops for idleness while a slow response or a streaming body is in flight', async () => {
    const backend = spawner({ command, idleTimeout: 200 })
    const front = await serveSpawner(backend)
    const pid = json((await send(front.origin)).body).pid
    const [slow, stream] = await Promise.all([
      send(front.origin, { path: '/slow?ms=800' }),
      send(front.origin, { path: '/stream?ms=800' }),
    ])
    expect(slow.status).toBe(200)
    expect(slow.body.toString()).toBe(`slow done by ${pid}`)
    expect(stream.status).toBe(200)
    expect(stream.body.toString()).toMatch(/^chunk 0\n[\s\S]*stream done by \d+$/)
    expect(stream.body.toString()).toContain(`stream done by ${pid}`)
    // The idle timer starts when the last body ends: the same process answers right after.
    expect(json((await send(front.origin)).body).pid).toBe(pid)
    expect(backend.status().starts).toBe(1)
  })

  it('answers 502 when the backend crashes during a request, then starts a new process', async () => {
    const backend = spawner({ command })
    const front = await serveSpawner(backend)
    const first = json((await send(front.origin)).body).pid
    const crashed = await send(front.origin, { path: '/crash' })
    expect(crashed.status).toBe(502)
    expect(crashed.headers['content-type']).toBe('application/problem+json')
    await waitFor(() => backend.status().state === 'idle', { message: 'the crash' })
    expect(backend.status()).toMatchObject({ crashes: 1, lastExit: { pid: first, code: 1 } })
    const second = json((await send(front.origin)).body).pid
    expect(second).not.toBe(first)
    expect(isAlive(first)).toBe(false)
  })

  it('cuts the body short when the backend crashes mid-body, then restarts', async () => {
    const backend = spawner({ command })
    const front = await serveSpawner(backend)
    const first = json((await send(front.origin)).body).pid
    const outcome = await partialGet(`${front.origin}/crash-mid-body`)
    // The headers (and a first part) arrived; the body then failed instead of ending cleanly.
    expect(outcome.status).toBe(200)
    expect(outcome.received.toString()).toContain('the first part of the body')
    expect(outcome.completed).toBe(false)
    expect(outcome.received.byteLength).toBeLessThan(100_000)
    await waitFor(() => backend.status().state === 'idle', { message: 'the crash' })
    const second = json((await send(front.origin)).body).pid
    expect(second).not.toBe(first)
  })

  it('sees the exit while a grandchild still holds its stdout', async () => {
    const dir = tempDir()
    const pidsFile = join(dir, 'pids.json')
    const backend = spawner({ command, env: { GRANDCHILD: '1', PIDS_FILE: pidsFile } })
    const front = await serveSpawner(backend)
    await send(front.origin)
    const { pid, grandchild } = JSON.parse(lines(pidsFile)[0] ?? '{}') as {
      pid: number
      grandchild: number
    }
    recordPids(grandchild)
    expect(isAlive(grandchild)).toBe(true)
    const exits: number[] = []
    backend.on('exit', (exit) => exits.push(exit.pid ?? 0))
    await send(front.origin, { path: '/crash' })
    // 'exit' drives the state; 'close' would wait for the grandchild's copy of the pipe.
    await waitFor(() => backend.status().state !== 'ready', { timeout: 500, message: 'exit' })
    expect(exits).toEqual([pid])
    await waitFor(() => !isAlive(grandchild), { message: 'the grandchild to be killed' })
  })

  it('answers 504 at the start timeout and leaves no process behind', async () => {
    const backend = spawner({
      command,
      startTimeout: 500,
      killTimeout: 500,
      env: { START_DELAY_MS: '10000' },
    })
    const errors: SpawnerError[] = []
    backend.on('error', (error) => errors.push(error))
    let pid = 0
    backend.on('spawn', (info) => (pid = info.pid))
    const started = Date.now()
    const response = await backend.app(environ('/'))
    const elapsed = Date.now() - started
    expect(response.status).toBe(504)
    // Within the timeout (plus slack for a loaded machine), not at some later poll.
    expect(elapsed).toBeGreaterThanOrEqual(450)
    expect(elapsed).toBeLessThan(2_000)
    expect(errors.map((e) => e.code)).toEqual(['BACKEND_START_TIMEOUT'])
    expect(errors[0]?.message).toMatch(/nothing accepted connections on 127\.0\.0\.1:\d+/)
    await waitFor(() => !isAlive(pid), { timeout: 1_500, message: 'the slow backend to die' })
    await waitFor(() => ['idle', 'backoff'].includes(backend.status().state), {
      message: 'idle or backoff',
    })
  })

  it("answers a fast 502 with the child's stderr when it exits during start", async () => {
    const backend = spawner({ command, startTimeout: 20_000, env: { EXIT_ON_START: '3' } })
    const errors: SpawnerError[] = []
    backend.on('error', (error) => errors.push(error))
    const started = Date.now()
    const response = await backend.app(environ('/'))
    expect(response.status).toBe(502)
    // Far from the 20 s start timeout: the exit failed the start at once.
    expect(Date.now() - started).toBeLessThan(5_000)
    expect(errors[0]?.code).toBe('BACKEND_EXITED')
    expect(errors[0]?.recentLogs.join('\n')).toContain('boom')
    expect(errors[0]?.exit?.code).toBe(3)
    expect(backend.status().lastExit?.code).toBe(3)
    // Without exposeErrors the body stays generic.
    expect(await text(response.body)).not.toContain('boom')
  })

  it("puts only the failing process's output lines in a start error", async () => {
    const dir = tempDir()
    const failFile = join(dir, 'fail')
    const script = `if [ -e "$FAIL_FILE" ]; then echo second-run; exit 3; fi; echo first-run; exec '${NODE}' '${APP}'`
    const backend = spawner({ command: ['/bin/sh', '-c', script], env: { FAIL_FILE: failFile } })
    const errors: SpawnerError[] = []
    backend.on('error', (error) => errors.push(error))
    const front = await serveSpawner(backend)
    expect((await send(front.origin)).status).toBe(200)
    writeFileSync(failFile, '')
    await send(front.origin, { path: '/crash' })
    await waitFor(() => backend.status().state === 'idle', { message: 'the crash' })
    expect((await send(front.origin)).status).toBe(502)
    expect(errors.map((e) => e.message)).toEqual([
      expect.stringMatching(/exited with code 1 while serving/),
      expect.stringMatching(/exited with code 3 before it was ready/),
    ])
    const [crash, failed] = errors
    expect(crash?.recentLogs).toEqual([`[sh ${crash?.exit?.pid}] first-run`])
    expect(failed?.recentLogs).toEqual([`[sh ${failed?.exit?.pid}] second-run`])
    // status() still shows the output of every process.
    expect(backend.status().recentLogs.join('\n')).toMatch(/first-run[\s\S]*second-run/)
  })

  it('puts the last output lines in the body with exposeErrors', async () => {
    const backend = spawner({ command, exposeErrors: true, env: { EXIT_ON_START: '3' } })
    const response = await backend.app(environ('/'))
    expect(response.status).toBe(502)
    const body = JSON.parse(await text(response.body)) as { detail: string; code: string }
    expect(body.code).toBe('BACKEND_EXITED')
    expect(body.detail).toContain('exited with code 3')
    expect(body.detail).toContain('boom: exiting before listening')
  })

  it('answers 502 for a command that does not exist, without an unhandled error', async () => {
    const backend = spawner({ command: 'definitely-not-a-binary-xyz --port __PORT__' })
    const response = await backend.app(environ('/'))
    expect(response.status).toBe(502)
    const body = JSON.parse(await text(response.body)) as { code: string }
    expect(body.code).toBe('BACKEND_SPAWN_FAILED')
    expect(backend.status()).toMatchObject({ starts: 0, pid: null })
    expect(backend.status().lastError).toMatch(/ENOENT/)
  })

  it('backs off with 503 and Retry-After after failures in a row, then recovers', async () => {
    const dir = tempDir()
    const starts = join(dir, 'starts')
    const failFile = join(dir, 'fail')
    writeFileSync(failFile, '')
    const backend = spawner({
      command,
      backoff: { base: 1_000 },
      env: { STARTS_FILE: starts, FAIL_FILE: failFile },
    })
    const backoffs: number[] = []
    backend.on('backoff', ({ delayMs }) => backoffs.push(delayMs))
    const responses = []
    for (let i = 0; i < 5; i++) {
      responses.push(await backend.app(environ('/')))
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const statuses = responses.map((r) => r.status)
    expect(statuses.slice(0, 2)).toEqual([502, 502])
    expect(statuses.slice(2)).toContain(503)
    expect(statuses.every((s) => s === 502 || s === 503)).toBe(true)
    const refused = responses.find((r) => r.status === 503)
    const retryAfter = Number(refused?.headers.find(([name]) => name === 'retry-after')?.[1])
    expect(retryAfter).toBeGreaterThanOrEqual(1)
    expect(lines(starts).length).toBeLessThanOrEqual(3)
    expect(backoffs[0]).toBe(1_000)
    // The backend is fixed; once the backoff is over the next request starts it again.
    rmSync(failFile)
    await waitFor(() => backend.status().state === 'idle', { message: 'the end of the backoff' })
    const recovered = await backend.app(environ('/'))
    expect(recovered.status).toBe(200)
    await text(recovered.body)
  })

  it('kills a backend that ignores SIGTERM after killTimeout', async () => {
    const backend = spawner({ command, killTimeout: 300, env: { IGNORE_SIGTERM: '1' } })
    await backend.start()
    const pid = backend.status().pid ?? 0
    const started = Date.now()
    await backend.close()
    expect(Date.now() - started).toBeGreaterThanOrEqual(280)
    expect(isAlive(pid)).toBe(false)
    expect(backend.status().lastExit).toMatchObject({ pid, signal: 'SIGKILL' })
  })

  it('rejects waiting requests with 503 on close() and resolves when the process is gone', async () => {
    const backend = spawner({ command, env: { START_DELAY_MS: '2000' } })
    let pid = 0
    backend.on('spawn', (info) => (pid = info.pid))
    const waiting = Array.from({ length: 5 }, () => backend.app(environ('/')))
    await waitFor(() => pid !== 0, { message: 'the spawn' })
    await backend.close()
    expect(isAlive(pid)).toBe(false)
    const responses = await Promise.all(waiting)
    expect(responses.map((r) => r.status)).toEqual(Array(5).fill(503))
    expect(backend.status().state).toBe('closed')
    expect((await backend.app(environ('/'))).status).toBe(503)
    await expect(backend.start()).rejects.toMatchObject({ code: 'BACKEND_CLOSED' })
  })

  it('restart() lets the request in flight finish, then serves from a new process', async () => {
    const backend = spawner({ command })
    const front = await serveSpawner(backend)
    const first = json((await send(front.origin)).body).pid
    const slow = send(front.origin, { path: '/slow?ms=500' })
    await waitFor(() => backend.status().inFlight === 1, { message: 'the slow request' })
    const restarted = backend.restart()
    const during = send(front.origin)
    expect((await slow).body.toString()).toBe(`slow done by ${first}`)
    await restarted
    const second = json((await during).body).pid
    expect(second).not.toBe(first)
    expect(json((await send(front.origin)).body).pid).toBe(second)
    expect(isAlive(first)).toBe(false)
  })

  it('counts a crash during the restart() drain as a crash and reports it', async () => {
    const backend = spawner({ command })
    const errors: SpawnerError[] = []
    backend.on('error', (error) => errors.push(error))
    const front = await serveSpawner(backend)
    const first = json((await send(front.origin)).body).pid
    const slow = send(front.origin, { path: '/slow?ms=3000' })
    await waitFor(() => backend.status().inFlight === 1, { message: 'the slow request' })
    const restarted = backend.restart()
    expect(backend.status().state).toBe('stopping')
    // It dies while restart() waits for the slow request, before anything asked it to stop.
    process.kill(first, 'SIGKILL')
    expect((await slow).status).toBe(502)
    await restarted
    expect(backend.status()).toMatchObject({ state: 'ready', crashes: 1 })
    expect(errors.map((e) => e.code)).toEqual(['BACKEND_EXITED'])
    expect(errors[0]?.exit).toMatchObject({ pid: first, signal: 'SIGKILL' })
    expect(json((await send(front.origin)).body).pid).not.toBe(first)
  })

  it('keeps serving and cleans up when event listeners throw', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown): number => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const backend = spawner({ command })
      for (const event of ['spawn', 'ready', 'exit'] as const) {
        backend.on(event, () => {
          throw new Error(`the ${event} listener failed`)
        })
      }
      const front = await serveSpawner(backend)
      const first = await send(front.origin)
      expect(first.status).toBe(200)
      const pid = json(first.body).pid
      expect(backend.status()).toMatchObject({ state: 'ready', pid })
      // The 'exit' listener throws too: the group is still reaped and a new process starts.
      await send(front.origin, { path: '/crash' })
      await waitFor(() => backend.status().state === 'idle', { message: 'the crash' })
      const second = await send(front.origin)
      expect(second.status).toBe(200)
      const next = json(second.body).pid
      expect(next).not.toBe(pid)
      await backend.close()
      expect([pid, next].filter(isAlive)).toEqual([])
      await new Promise((resolve) => setImmediate(resolve))
      expect(unhandled).toEqual([])
      const reported = backend.logs.map((l) => l.text)
      for (const event of ['spawn', 'ready', 'exit']) {
        expect(reported).toContainEqual(
          expect.stringContaining(
            `a '${event}' listener threw: Error: the ${event} listener failed`,
          ),
        )
      }
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })

  it('lets a waiting client leave without cancelling the start for the others', async () => {
    const dir = tempDir()
    const starts = join(dir, 'starts')
    const backend = spawner({ command, env: { STARTS_FILE: starts, START_DELAY_MS: '300' } })
    const controller = new AbortController()
    const leaving = backend.app(environ('/', controller.signal))
    const staying = [backend.app(environ('/')), backend.app(environ('/'))]
    controller.abort()
    expect((await leaving).status).toBe(499)
    const responses = await Promise.all(staying)
    expect(responses.map((r) => r.status)).toEqual([200, 200])
    expect(lines(starts)).toHaveLength(1)
  })
})

function environ(path: string, signal?: AbortSignal): Parameters<Spawner['app']>[0] {
  return {
    REQUEST_METHOD: 'GET',
    SCRIPT_NAME: '',
    PATH_INFO: path,
    QUERY_STRING: '',
    SERVER_NAME: 'front.test',
    SERVER_PORT: '80',
    SERVER_PROTOCOL: 'HTTP/1.1',
    HTTP_HOST: 'front.test',
    REMOTE_ADDR: '127.0.0.1',
    'wsgi.url_scheme': 'http',
    'wsgi.input': null,
    ...(signal === undefined ? {} : { 'wsgiproxy.signal': signal }),
  }
}

/** A GET that reports what arrived even when the response fails midway. */
function partialGet(
  url: string,
): Promise<{ status: number; received: Buffer; completed: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let status = 0
    const done = (completed: boolean): void =>
      resolve({ status, received: Buffer.concat(chunks), completed })
    const req = get(url, { agent: false }, (res) => {
      status = res.statusCode ?? 0
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.once('end', () => done(res.complete))
      res.once('error', () => done(false))
    })
    req.once('error', () => done(false))
  })
}

async function text(body: AsyncIterable<Uint8Array> | null): Promise<string> {
  if (body === null) return ''
  const chunks: Uint8Array[] = []
  for await (const chunk of body) chunks.push(chunk)
  return Buffer.concat(chunks).toString('utf8')
}
