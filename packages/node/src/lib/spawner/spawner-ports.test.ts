import { createServer } from 'node:net'
import type { AddressInfo, Server } from 'node:net'
import { join } from 'node:path'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { closeAll, send } from '@wsgiproxy/test-kit/servers'
import {
  APP,
  NODE,
  cleanupSpawners,
  lines,
  serveSpawner,
  spawner,
  tempDir,
  waitFor,
} from '@wsgiproxy/test-kit/spawner-helpers'
import type { SpawnerLogEntry } from './spawner.ts'

// Real processes on a loaded 2-core machine: more than Vitest's default 5 s per test and hook.
vi.setConfig({ testTimeout: 20_000, hookTimeout: 20_000 })

const blockers = new Set<Server>()

afterEach(async () => {
  await closeAll()
  await cleanupSpawners()
  await Promise.all([...blockers].map((server) => new Promise((resolve) => server.close(resolve))))
  blockers.clear()
})

const command = [NODE, APP]

interface Answer {
  pid: number
  port: number
  envPort: string
  argv: string[]
}

function json(body: Buffer): Answer {
  return JSON.parse(body.toString('utf8')) as Answer
}

/**
 * A server the test holds on 127.0.0.1 (the port is busy) that cuts every connection at once and
 * counts them. `listen` binds on the next tick, so called from a 'spawn' listener it squats the
 * port before the new process (still booting Node) gets to bind it.
 */
function squatter(): {
  server: Server
  connections: number
  listen(port?: number): Promise<number>
} {
  const state = { connections: 0 }
  const server = createServer((socket) => {
    state.connections++
    socket.destroy()
  })
  blockers.add(server)
  return {
    server,
    get connections() {
      return state.connections
    },
    listen(port = 0) {
      return new Promise((resolve, reject) => {
        // A port it cannot take (the backend bound it first) fails the test, not the process.
        server.once('error', reject)
        server.listen(port, '127.0.0.1', () => {
          server.off('error', reject)
          resolve((server.address() as AddressInfo).port)
        })
      })
    },
  }
}

async function freePortNumber(): Promise<number> {
  const probe = createServer()
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const { port } = probe.address() as AddressInfo
  await new Promise((resolve) => probe.close(resolve))
  return port
}

describe('createSpawner ports', () => {
  it('gives 20 spawners 20 distinct ports', async () => {
    const backends = Array.from({ length: 20 }, () => spawner({ command }))
    const fronts = await Promise.all(backends.map((backend) => serveSpawner(backend)))
    const answers = await Promise.all(
      fronts.map(async (front) => {
        const responses = await Promise.all(Array.from({ length: 5 }, () => send(front.origin)))
        expect(responses.map((r) => r.status)).toEqual(Array(5).fill(200))
        return json(responses[0]?.body ?? Buffer.from('{}'))
      }),
    )
    expect(new Set(answers.map((a) => a.port)).size).toBe(20)
    expect(new Set(answers.map((a) => a.pid)).size).toBe(20)
    expect(backends.map((b) => b.status().starts)).toEqual(Array(20).fill(1))
  }, 20_000)

  it('detects a port that is already bound before spawning and asks for another', async () => {
    const squat = squatter()
    const busy = await squat.listen()
    const free = await freePortNumber()
    const given = [busy, free]
    const backend = spawner({ command, allocatePort: () => given.shift() ?? 0 })
    const front = await serveSpawner(backend)
    const response = await send(front.origin)
    expect(response.status).toBe(200)
    expect(json(response.body).port).toBe(free)
    expect(backend.status()).toMatchObject({ starts: 1, port: free })
    expect(backend.logs.map((l) => l.text)).toContain(
      `port ${busy} is already in use; asking for another one`,
    )
    // Nothing was sent to the server holding the busy port, and it still holds it.
    expect(squat.connections).toBe(0)
    expect(squat.server.listening).toBe(true)
  })

  it('spawns again on another port when the backend exits with EADDRINUSE', async () => {
    const squat = squatter()
    const first = await freePortNumber()
    const second = await freePortNumber()
    const given = [first, second]
    const backend = spawner({
      command,
      allocatePort: () => given.shift() ?? 0,
      // An HTTP check: the squatter accepts TCP connections, but it is not our app.
      ready: { http: '/' },
    })
    // The port is taken after the spawner checked it, before the backend binds it.
    let squatFailed: unknown
    backend.once('spawn', ({ port }) => {
      squat.listen(port).catch((error: unknown) => (squatFailed = error))
    })
    const front = await serveSpawner(backend)
    const response = await send(front.origin)
    expect(squatFailed).toBeUndefined()
    expect(response.status).toBe(200)
    expect(json(response.body).port).toBe(second)
    expect(backend.status()).toMatchObject({ starts: 2, port: second })
    expect(backend.logs.map((l) => l.line).join('\n')).toMatch(/EADDRINUSE/)
    expect(backend.logs.map((l) => l.text)).toContain(
      `port ${first} was taken before the backend could bind it; trying another port`,
    )
    expect(squat.server.listening).toBe(true)
  })

  it('answers 504 at the start timeout when allocatePort never settles', async () => {
    const backend = spawner({
      command,
      startTimeout: 500,
      allocatePort: () => new Promise<number>(() => {}),
    })
    const errors: string[] = []
    backend.on('error', (error) => errors.push(error.code))
    const front = await serveSpawner(backend)
    const started = Date.now()
    const response = await send(front.origin)
    const elapsed = Date.now() - started
    expect(response.status).toBe(504)
    expect(elapsed).toBeGreaterThanOrEqual(450)
    expect(elapsed).toBeLessThan(2_000)
    expect(errors).toEqual(['BACKEND_START_TIMEOUT'])
    expect(backend.status()).toMatchObject({ state: 'idle', starts: 0, pid: null })
    expect(backend.status().lastError).toMatch(/allocatePort did not give a port within 500 ms/)
    // Not stuck in a start: close() resolves at once.
    await backend.close()
  })

  it('fails a fixed port that is already in use without spawning', async () => {
    const port = await squatter().listen()
    const dir = tempDir()
    const starts = join(dir, 'starts')
    const backend = spawner({ command, port, env: { STARTS_FILE: starts } })
    let spawned = 0
    backend.on('spawn', () => spawned++)
    const front = await serveSpawner(backend)
    const response = await send(front.origin)
    expect(response.status).toBe(502)
    expect(JSON.parse(response.body.toString()).code).toBe('BACKEND_PORT_IN_USE')
    expect(spawned).toBe(0)
    expect(lines(starts)).toEqual([])
    expect(backend.status().lastError).toMatch(new RegExp(`port ${port} is already in use`))
  })

  it('reaches a backend that listens on ::1 only', async () => {
    const backend = spawner({ command, env: { BIND_HOST: '::1' } })
    const front = await serveSpawner(backend)
    const response = await send(front.origin)
    expect(response.status).toBe(200)
    expect(backend.status().host).toBe('::1')
  })

  it('reads a 1 MiB stdout flood before listen without blocking the backend', async () => {
    const backend = spawner({ command, env: { LOG_FLOOD_BYTES: String(1024 * 1024) } })
    const front = await serveSpawner(backend)
    const response = await send(front.origin)
    expect(response.status).toBe(200)
    const pid = json(response.body).pid
    const stdout = (): SpawnerLogEntry[] => backend.logs.filter((l) => l.stream === 'stdout')
    // The last lines may still be in the pipe or in flight when the response arrives.
    await waitFor(() => stdout().length >= 10_000, { message: 'the flood to be read' })
    const out = stdout()
    expect(out[0]?.line).toBe(`[node ${pid}] ${'x'.repeat(99)}`)
    expect(backend.status().recentLogs).toHaveLength(200)
  })

  it('reads the port an app chose from its stdout', async () => {
    const backend = spawner({
      command,
      port: 0,
      ready: { stdout: /listening on (?<port>\d+)/ },
      env: { PRINT_PORT: '1' },
    })
    const front = await serveSpawner(backend)
    const response = await send(front.origin)
    expect(response.status).toBe(200)
    const answer = json(response.body)
    expect(answer.envPort).toBe('0')
    expect(backend.status().port).toBe(answer.port)
    expect(backend.logs.map((l) => l.text)).toContain(`listening on ${answer.port}`)
  })

  it('substitutes __PORT__ in argv and string commands and sets PORT', async () => {
    const fromArgv = spawner({ command: [NODE, APP, '--port', '__PORT__'] })
    const fromString = spawner({ command: `${NODE} ${APP} --port __PORT__` })
    for (const backend of [fromArgv, fromString]) {
      const front = await serveSpawner(backend)
      const answer = json((await send(front.origin)).body)
      expect(answer.argv).toEqual(['--port', String(answer.port)])
      expect(answer.envPort).toBe(String(answer.port))
    }
  })

  it('runs a string with shell syntax through sh, exec-ing a simple command', async () => {
    // Quotes make it shell syntax; `exec` makes the server replace the shell (same pid).
    const simple = spawner({ command: `'${NODE}' "${APP}" --port "$PORT"` })
    // A leading assignment cannot follow exec: the shell stays, the group kill still covers it.
    const assigned = spawner({ command: `MARK=1 '${NODE}' "${APP}" --port "$PORT"` })
    const simpleAnswer = json((await send((await serveSpawner(simple)).origin)).body)
    expect(simpleAnswer.argv).toEqual(['--port', String(simpleAnswer.port)])
    expect(simple.status().pid).toBe(simpleAnswer.pid)
    const assignedAnswer = json((await send((await serveSpawner(assigned)).origin)).body)
    expect(assignedAnswer.argv).toEqual(['--port', String(assignedAnswer.port)])
    expect(assigned.status().pid).not.toBe(assignedAnswer.pid)
  })
})
