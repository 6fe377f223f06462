import { Agent, request as httpRequest } from 'node:http'
import { connect } from 'node:net'
import { afterEach, describe, expect, it, vi } from 'vitest'
import type { AppResponse, EnvironApp } from '@wsgiproxy/core'
import { send } from '@wsgiproxy/test-kit/servers'
import { serve } from './serve.ts'
import type { Served, ServeOptions } from './serve.ts'

const running = new Set<Served>()

afterEach(async () => {
  const all = [...running]
  running.clear()
  for (const served of all) served.server.closeAllConnections()
  await Promise.all(all.map((served) => served.close()))
})

async function start(app: EnvironApp, closeTimeout?: number): Promise<Served> {
  const served = await serve(app, closeTimeout === undefined ? {} : { closeTimeout })
  running.add(served)
  return served
}

const encoder = new TextEncoder()
const app: EnvironApp = () => ({ status: 204, headers: [], body: null })

function slow(ms: number): AppResponse {
  return {
    status: 200,
    headers: [],
    body: (async function* () {
      yield encoder.encode('start ')
      await new Promise((resolve) => setTimeout(resolve, ms))
      yield encoder.encode('end')
    })(),
  }
}

describe('serve', () => {
  it('listens on 127.0.0.1 on a free port and serves the app', async () => {
    const served = await start((environ) => ({
      status: 200,
      headers: [],
      body: (async function* () {
        yield encoder.encode(environ.REMOTE_ADDR ?? '')
      })(),
    }))
    expect(served.url).toBe(`http://127.0.0.1:${served.port}`)
    expect(served.port).toBeGreaterThan(0)
    const response = await send(served.url)
    expect(response.body.toString()).toBe('127.0.0.1')
    expect(served[Symbol.asyncDispose]).toBe(served.close)
  })

  it('waits on close for an in-flight request to finish, closing idle connections at once', async () => {
    const served = await start(() => slow(300))
    const agent = new Agent({ keepAlive: true })
    // An idle keep-alive connection must not hold close() up.
    await new Promise<void>((resolve) => {
      httpRequest(`${served.url}/`, { agent }, (res) => res.resume().on('end', resolve)).end()
    })
    // The in-flight request is on a keep-alive connection too: it closes once the response ends.
    const inFlight = new Promise<string>((resolve, reject) => {
      httpRequest(`${served.url}/`, { agent }, (res) => {
        let body = ''
        res.on('data', (chunk: Buffer) => (body += chunk.toString()))
        res.on('end', () => resolve(body))
        res.on('error', reject)
      })
        .on('error', reject)
        .end()
    })
    await new Promise((resolve) => setTimeout(resolve, 50))
    const started = Date.now()
    await served.close()
    expect(await inFlight).toBe('start end')
    expect(Date.now() - started).toBeGreaterThanOrEqual(200)
    expect(Date.now() - started).toBeLessThan(2_000)
    expect(served.server.listening).toBe(false)
    agent.destroy()
  })

  it('cuts a request still running after closeTimeout', async () => {
    const released = vi.fn<() => void>()
    const served = await start(
      () => ({
        status: 200,
        headers: [],
        body: {
          [Symbol.asyncIterator]: () => ({
            next: async () => {
              await new Promise((resolve) => setTimeout(resolve, 10))
              return { done: false, value: new Uint8Array(16) }
            },
            return: async () => {
              released()
              return { done: true, value: undefined }
            },
          }),
        },
      }),
      100,
    )
    const never = send(served.url)
    await new Promise((resolve) => setTimeout(resolve, 50))
    const started = Date.now()
    await served.close()
    expect(Date.now() - started).toBeLessThan(1_000)
    await expect(never).rejects.toThrow(/aborted|socket hang up|ECONNRESET/)
    await vi.waitFor(() => expect(released).toHaveBeenCalled(), { timeout: 1_000 })
  })

  it('refuses invalid options', async () => {
    await expect(serve(app, { port: 70_000 })).rejects.toThrow(/port/)
    await expect(serve(app, { closeTimeout: -1 })).rejects.toThrow(/closeTimeout/)
    await expect(serve(app, { maxHeaders: 0 })).rejects.toThrow(/maxHeaders/)
    await expect(serve(app, { headersTimeout: -1 })).rejects.toThrow(/headersTimeout/)
    await expect(serve(app, { requestTimeout: 1.5 })).rejects.toThrow(/requestTimeout/)
    await expect(serve(app, { headersTimeout: 2_000, requestTimeout: 1_000 })).rejects.toThrow(
      /headersTimeout: expected at most serve.requestTimeout/,
    )
  })

  it('names serve and the option in every option error, listener options included', async () => {
    await expect(serve(app, { maxHeaders: 0 })).rejects.toThrow(
      'invalid options: serve.maxHeaders: expected a whole number ≥ 1 (got 0)',
    )
    await expect(serve(app, { upgradeProtocols: ['web socket'] })).rejects.toThrow(
      'invalid options: serve.upgradeProtocols: expected a list of protocol names',
    )
    await expect(serve(app, { nope: 1 } as ServeOptions)).rejects.toThrow(
      'invalid options: serve: unknown option "nope"',
    )
  })

  it('takes the deprecated headersTimeout and requestTimeout as clientHeadersTimeout and clientRequestTimeout', async () => {
    const current = await serve(app, { clientHeadersTimeout: 2_000, clientRequestTimeout: 5_000 })
    running.add(current)
    expect(current.server).toMatchObject({ headersTimeout: 2_000, requestTimeout: 5_000 })
    const deprecated = await serve(app, { headersTimeout: 2_000, requestTimeout: 5_000 })
    running.add(deprecated)
    expect(deprecated.server).toMatchObject({ headersTimeout: 2_000, requestTimeout: 5_000 })
    const mixed = await serve(app, { headersTimeout: 2_000, clientRequestTimeout: 5_000 })
    running.add(mixed)
    expect(mixed.server).toMatchObject({ headersTimeout: 2_000, requestTimeout: 5_000 })
    const shorter = await serve(app, { clientRequestTimeout: 5_000 })
    running.add(shorter)
    expect(shorter.server.headersTimeout).toBe(5_000)
  })

  it('refuses a client timeout given under both names, naming both', async () => {
    await expect(
      serve(app, { headersTimeout: 1_000, clientHeadersTimeout: 1_000 }),
    ).rejects.toThrow(
      'invalid options: serve.headersTimeout: cannot be given with serve.clientHeadersTimeout (headersTimeout is its deprecated name)',
    )
    await expect(
      serve(app, { requestTimeout: 1_000, clientRequestTimeout: 1_000 }),
    ).rejects.toThrow(
      'invalid options: serve.requestTimeout: cannot be given with serve.clientRequestTimeout (requestTimeout is its deprecated name)',
    )
    await expect(
      serve(app, { clientHeadersTimeout: 2_000, clientRequestTimeout: 1_000 }),
    ).rejects.toThrow(
      'invalid options: serve.clientHeadersTimeout: expected at most serve.clientRequestTimeout (1000) (got 2000)',
    )
  })

  it("keeps Node's header and request timeouts by default", async () => {
    const served = await start(app)
    expect(served.server.headersTimeout).toBe(60_000)
    expect(served.server.requestTimeout).toBe(300_000)
    const shorter = await serve(app, { requestTimeout: 5_000 })
    running.add(shorter)
    expect(shorter.server.headersTimeout).toBe(5_000)
    const unlimited = await serve(app, { requestTimeout: 0 })
    running.add(unlimited)
    expect(unlimited.server.headersTimeout).toBe(60_000)
  })

  it('answers 408 and closes a connection whose headers take longer than headersTimeout', async () => {
    const served = await serve(app, { headersTimeout: 300 })
    running.add(served)
    expect(served.server.headersTimeout).toBe(300)
    const socket = connect(served.port, '127.0.0.1')
    let received = ''
    socket.setEncoding('latin1')
    socket.on('data', (chunk: string) => {
      received += chunk
    })
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()))
    socket.on('error', () => {})
    // A slowloris client: the head one byte at a time, never finished.
    const head = 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ' + 'x'.repeat(100)
    let sent = 0
    const timer = setInterval(() => {
      if (sent < head.length && socket.writable) socket.write(head[sent++] ?? '')
    }, 50)
    try {
      // A normal request on another connection is served meanwhile.
      expect((await send(`${served.url}/`)).status).toBe(204)
      await closed
    } finally {
      clearInterval(timer)
    }
    expect(received).toMatch(/^HTTP\/1\.1 408 /)
    expect(sent).toBeLessThan(head.length)
  })
})
