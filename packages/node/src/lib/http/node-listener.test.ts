import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createServer, request as httpRequest } from 'node:http'
import type { Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { toEnviron, WsgiProxyError } from '@wsgiproxy/core'
import type { AppResponse, Environ, EnvironApp } from '@wsgiproxy/core'
import { echoEnviron, send, sendRaw, sha256 } from '@wsgiproxy/test-kit/servers'
import { toNodeListener } from './node-listener.ts'
import type { NodeListenerOptions } from './node-listener.ts'

const servers = new Set<{ server: Server; sockets: Set<Socket> }>()

afterEach(async () => {
  const all = [...servers]
  servers.clear()
  await Promise.all(
    all.map(
      ({ server, sockets }) =>
        new Promise<void>((resolve) => {
          for (const socket of sockets) socket.destroy()
          server.close(() => resolve())
        }),
    ),
  )
})

async function listen(
  environApp: EnvironApp,
  options?: NodeListenerOptions,
): Promise<{ port: number; origin: string }> {
  const server = createServer(toNodeListener(environApp, options))
  const sockets = new Set<Socket>()
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  servers.add({ server, sockets })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return { port, origin: `http://127.0.0.1:${port}` }
}

const encoder = new TextEncoder()
// What a node:http client reports for a response cut short.
const CUT = /aborted|socket hang up|ECONNRESET/
const plainApp: EnvironApp = () => text(200, 'x')

function text(status: number, body: string, headers: Array<[string, string]> = []): AppResponse {
  return {
    status,
    headers: [['content-type', 'text/plain'], ...headers],
    body: (async function* () {
      yield encoder.encode(body)
    })(),
  }
}

/** The environ as echoEnviron shows it (streams and signals left out, JSON round trip). */
function visible(environ: Environ): unknown {
  const { 'wsgi.input': _input, 'wsgiproxy.signal': _signal, ...rest } = environ
  return JSON.parse(JSON.stringify(rest))
}

/** Sends a raw HTTP/1.1 request (Connection: close) and parses the status and JSON body. */
async function rawJson(
  port: number,
  head: string,
  body = '',
): Promise<{ status: number; json: unknown }> {
  const latin1 = await sendRaw(port, [`${head}\r\nConnection: close\r\n\r\n${body}`])
  const answer = Buffer.from(latin1, 'latin1').toString('utf8')
  const status = Number(answer.slice(9, 12))
  const json: unknown = JSON.parse(answer.slice(answer.indexOf('{'), answer.lastIndexOf('}') + 1))
  return { status, json }
}

describe('toNodeListener', () => {
  it.each([
    {
      name: 'a mount prefix, %2F, non-ASCII and a query',
      scriptName: '/api',
      method: 'GET',
      target: '/api/a%2Fb/%C3%A9t%C3%A9?x=1&y=%20&z=%C3%A9',
      lines: [['Host', 'example.com:8080']],
      body: '',
    },
    {
      name: 'repeated headers, names with "_", CONTENT_* and a body',
      scriptName: '',
      method: 'POST',
      target: '/upload',
      lines: [
        ['Host', 'Example.COM'],
        ['X-Multi', 'a'],
        ['x-multi', 'b'],
        ['X_Under', 'dropped'],
        ['Content-Type', 'text/plain'],
        ['Content-Length', '3'],
        ['Accept', 'text/html'],
      ],
      body: 'abc',
    },
    {
      name: 'dot segments, backslashes and a bracketed IPv6 Host',
      scriptName: '/m',
      method: 'DELETE',
      target: '/m/a/./b/../c\\d//e',
      lines: [['Host', '[::1]:9000']],
      body: '',
    },
  ])(
    'builds the environ toEnviron builds: $name',
    async ({ scriptName, method, target, lines, body }) => {
      const { port } = await listen(echoEnviron, { scriptName })
      const head = [`${method} ${target} HTTP/1.1`, ...lines.map(([n, v]) => `${n}: ${v}`)]
      const got = await rawJson(port, head.join('\r\n'), body)
      const host = lines.find(([n]) => n === 'Host')?.[1] ?? ''
      const request = new Request(`http://${host}${target}`, {
        method,
        headers: [...lines, ['Connection', 'close']] as Array<[string, string]>,
        ...(body === '' ? {} : { body }),
      })
      const expected = toEnviron(request, { scriptName, remoteAddr: '127.0.0.1' })
      expect(got.status).toBe(200)
      expect(got.json).toEqual(visible(expected))
    },
  )

  it('sets REMOTE_ADDR to the peer address of the socket', async () => {
    const { origin } = await listen(echoEnviron)
    const response = await send(origin, { localAddress: '127.0.0.2' })
    expect(JSON.parse(response.body.toString())).toMatchObject({
      REMOTE_ADDR: '127.0.0.2',
      SERVER_NAME: '127.0.0.1',
      'wsgi.url_scheme': 'http',
    })
  })

  it('passes the body as wsgi.input only when the request has one', async () => {
    const seen: Array<boolean> = []
    const { origin } = await listen((environ) => {
      seen.push(environ['wsgi.input'] !== null)
      return text(200, 'ok')
    })
    await send(origin)
    await send(origin, { method: 'POST', body: 'x' })
    await send(origin, { method: 'POST', body: [Buffer.from('chunked')] })
    expect(seen).toEqual([false, true, true])
  })

  it('answers 431 to more header lines than maxHeaders, counting repeats', async () => {
    const app = vi.fn<typeof echoEnviron>(echoEnviron)
    const { port } = await listen(app)
    const lines = Array.from({ length: 99 }, () => 'X-Same: 1')
    const ok = await sendRaw(port, [`GET / HTTP/1.1\r\nHost: a\r\n${lines.join('\r\n')}\r\n\r\n`])
    expect(ok).toMatch(/^HTTP\/1\.1 200 /)
    const refused = await rawJson(port, `GET / HTTP/1.1\r\nHost: a\r\n${lines.join('\r\n')}`)
    expect(refused).toMatchObject({ status: 431, json: { code: 'TOO_MANY_HEADERS' } })
    expect(app).toHaveBeenCalledTimes(1)
  })

  it('answers 400 to an invalid Host and to an encoded dot segment, 404 outside the prefix', async () => {
    const { port } = await listen(echoEnviron, { scriptName: '/api' })
    const badHost = await rawJson(port, 'GET /api HTTP/1.1\r\nHost: exa mple.com')
    expect(badHost).toMatchObject({ status: 400, json: { code: 'BAD_REQUEST' } })
    const dots = await rawJson(port, 'GET /api/a%2F..%2F..%2Fetc HTTP/1.1\r\nHost: a')
    expect(dots).toMatchObject({ status: 400, json: { code: 'BAD_REQUEST' } })
    const outside = await rawJson(port, 'GET /other HTTP/1.1\r\nHost: a')
    expect(outside).toMatchObject({ status: 404, json: { code: 'NOT_FOUND' } })
  })

  it('keeps repeated response headers as separate lines (several Set-Cookie)', async () => {
    const { origin } = await listen(() =>
      text(200, 'ok', [
        ['set-cookie', 'a=1; Path=/'],
        ['Set-Cookie', 'b=2; HttpOnly'],
        ['x-repeat', 'one'],
        ['x-repeat', 'two'],
      ]),
    )
    const response = await send(origin)
    expect(response.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; HttpOnly'])
    expect(response.rawHeaders.filter((_, i, raw) => raw[i - 1] === 'x-repeat')).toEqual([
      'one',
      'two',
    ])
  })

  it('streams a 64 MiB request body back as the response body', async () => {
    const { origin } = await listen((environ) => ({
      status: 200,
      headers: [['content-type', 'application/octet-stream']],
      body: environ['wsgi.input'],
    }))
    const chunks = Array.from({ length: 64 }, () => randomBytes(1024 * 1024))
    const response = await send(origin, { method: 'PUT', body: chunks })
    expect(response.status).toBe(200)
    expect(response.body.length).toBe(64 * 1024 * 1024)
    expect(sha256(response.body)).toBe(sha256(Buffer.concat(chunks)))
  })

  it('sends no body to HEAD and releases the app body', async () => {
    const released = vi.fn<() => void>()
    const { origin } = await listen(() => ({
      status: 200,
      headers: [['content-length', '5']],
      body: iterable([encoder.encode('hello')], released),
    }))
    const response = await send(origin, { method: 'HEAD' })
    expect(response.status).toBe(200)
    expect(response.headers['content-length']).toBe('5')
    expect(response.body.length).toBe(0)
    expect(released).toHaveBeenCalled()
  })

  it('answers Expect: 100-continue before the body is sent', async () => {
    const { origin } = await listen((environ) => ({
      status: 200,
      headers: [],
      body: environ['wsgi.input'],
    }))
    const response = await send(origin, {
      method: 'POST',
      headers: { expect: '100-continue', 'content-length': '5' },
      body: 'hello',
      expectContinue: true,
    })
    expect(response.status).toBe(200)
    expect(response.body.toString()).toBe('hello')
  })

  it.each([600, 999])('passes status %i through', async (status) => {
    const { origin } = await listen(() => ({ ...text(status, 'x'), statusText: 'Custom' }))
    const response = await send(origin)
    expect(response.status).toBe(status)
    expect(response.statusText).toBe('Custom')
  })

  it.each([100, 101, 199, 99, 1000, 200.5])('answers 502 to status %s', async (status) => {
    const released = vi.fn<() => void>()
    const { origin } = await listen(() => ({
      status,
      headers: [],
      body: iterable([encoder.encode('x')], released),
    }))
    const response = await send(origin)
    expect(response.status).toBe(502)
    expect(JSON.parse(response.body.toString())).toMatchObject({
      code: 'UPSTREAM_INVALID_RESPONSE',
    })
    expect(released).toHaveBeenCalled()
  })

  it('answers 502 to a header line Node refuses, and drops an invalid reason phrase', async () => {
    const { origin } = await listen((environ) =>
      environ.PATH_INFO === '/header'
        ? text(200, 'x', [['x-bad', 'a\r\nInjected: 1']])
        : { ...text(201, 'y'), statusText: 'Bad\r\nReason' },
    )
    const bad = await send(origin, { path: '/header' })
    expect(bad.status).toBe(502)
    expect(bad.headers['injected']).toBeUndefined()
    const reason = await send(origin, { path: '/reason' })
    expect(reason).toMatchObject({ status: 201, statusText: 'Created' })
    expect(reason.body.toString()).toBe('y')
  })

  it('answers 500 when the app throws, and keeps serving', async () => {
    const onError = vi.fn<NonNullable<NodeListenerOptions['onError']>>()
    let calls = 0
    const { origin } = await listen(
      async () => {
        if (++calls === 1) throw new Error('secret internal detail')
        return text(200, 'fine')
      },
      { onError },
    )
    const failed = await send(origin)
    expect(failed.status).toBe(500)
    expect(failed.headers['content-type']).toBe('application/problem+json')
    expect(failed.body.toString()).not.toContain('secret')
    // The thrown error arrives wrapped as APP_ERROR, with the environ of the request.
    expect(onError).toHaveBeenCalledWith(
      expect.objectContaining({ code: 'APP_ERROR', message: 'secret internal detail' }),
      expect.objectContaining({ REQUEST_METHOD: 'GET', PATH_INFO: '/' }),
    )
    expect(onError.mock.calls[0]?.[0].cause).toMatchObject({ message: 'secret internal detail' })
    const next = await send(origin)
    expect(next).toMatchObject({ status: 200, body: Buffer.from('fine') })
  })

  it('shows the message with exposeErrors, and the status of a WsgiProxyError', async () => {
    const { origin } = await listen(
      () => {
        throw new WsgiProxyError('REPLAY_STORE_FULL', 'store is full')
      },
      { exposeErrors: true, onError: () => {} },
    )
    const response = await send(origin)
    expect(response.status).toBe(503)
    expect(JSON.parse(response.body.toString())).toMatchObject({ detail: 'store is full' })
  })

  it('sends what onError answers, and a fixed 500 when onError throws', async () => {
    const { origin } = await listen(
      () => {
        throw new Error('boom')
      },
      {
        onError: (error, environ) => {
          if (environ?.PATH_INFO === '/hook-fails') throw error
          return text(418, 'teapot')
        },
      },
    )
    const replaced = await send(origin)
    expect(replaced).toMatchObject({ status: 418, body: Buffer.from('teapot') })
    const fixed = await send(origin, { path: '/hook-fails' })
    expect(fixed).toMatchObject({ status: 500, body: Buffer.from('Internal Server Error') })
  })

  it('calls onError without an environ when the request cannot become one', async () => {
    const onError = vi.fn<NonNullable<NodeListenerOptions['onError']>>()
    const { port } = await listen(echoEnviron, { onError })
    const refused = await rawJson(port, 'GET / HTTP/1.1\r\nHost: exa mple.com')
    expect(refused).toMatchObject({ status: 400, json: { code: 'BAD_REQUEST' } })
    expect(onError).toHaveBeenCalledExactlyOnceWith(
      expect.objectContaining({ code: 'BAD_REQUEST' }),
      undefined,
    )
  })

  it('answers 500 to something that is not a response record', async () => {
    const { origin } = await listen(() => ({ status: 200 }) as unknown as AppResponse)
    const response = await send(origin)
    expect(response.status).toBe(500)
  })

  it.each(['producing', 'stuck'])(
    'stops a %s body and aborts the signal when the client goes away',
    async (kind) => {
      const released = vi.fn<() => void>()
      let signal: AbortSignal | undefined
      const { origin } = await listen((environ) => {
        signal = environ['wsgiproxy.signal']
        return { status: 200, headers: [], body: endless(kind === 'stuck', released) }
      })
      await new Promise<void>((resolve, reject) => {
        const req = httpRequest(`${origin}/`, { agent: false }, (res) => {
          res.once('data', () => {
            req.destroy()
            resolve()
          })
        })
        req.on('error', () => {})
        setTimeout(() => reject(new Error('no data')), 2_000)
        req.end()
      })
      await vi.waitFor(
        () => {
          expect(released).toHaveBeenCalled()
          expect(signal?.aborted).toBe(true)
        },
        { timeout: 1_000 },
      )
    },
  )

  it('gives an already aborted signal to an app that first reads it after the client left', async () => {
    let readLate!: (signal: AbortSignal) => void
    const late = new Promise<AbortSignal>((resolve) => (readLate = resolve))
    const { origin } = await listen((environ) => {
      const body = endless(false, () => readLate(environ['wsgiproxy.signal'] as AbortSignal))
      return { status: 200, headers: [], body }
    })
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest(`${origin}/`, { agent: false }, (res) => {
        res.once('data', () => {
          req.destroy()
          resolve()
        })
      })
      req.on('error', () => {})
      setTimeout(() => reject(new Error('no data')), 2_000)
      req.end()
    })
    const signal = await late
    expect(signal.aborted).toBe(true)
    expect(signal.reason).toMatchObject({ code: 'CLIENT_ABORTED' })
  })

  it('lets an app replace wsgiproxy.signal and shows it among the environ keys', async () => {
    const replacement = new AbortController().signal
    let seen: { same: boolean; listed: boolean } | undefined
    const { origin } = await listen((environ) => {
      environ['wsgiproxy.signal'] = replacement
      seen = {
        same: environ['wsgiproxy.signal'] === replacement,
        listed: Object.keys(environ).includes('wsgiproxy.signal'),
      }
      return { status: 204, headers: [], body: null }
    })
    expect((await send(origin)).status).toBe(204)
    expect(seen).toEqual({ same: true, listed: true })
  })

  it('cuts the connection when the body fails mid-stream', async () => {
    const { origin } = await listen(() => ({
      status: 200,
      headers: [],
      body: (async function* () {
        yield encoder.encode('partial')
        await new Promise((resolve) => setTimeout(resolve, 20))
        throw new Error('upstream reset')
      })(),
    }))
    await expect(send(origin)).rejects.toThrow(CUT)
    // The same for a declared length: the client never sees a complete response.
    const { origin: sized } = await listen(() => ({
      status: 200,
      headers: [['content-length', '100']],
      body: (async function* () {
        yield encoder.encode('partial')
        throw new Error('upstream reset')
      })(),
    }))
    await expect(send(sized)).rejects.toThrow(CUT)
  })

  it('survives a client that disconnects mid-upload', async () => {
    const failures: unknown[] = []
    let received = 0
    const { origin, port } = await listen(
      async (environ) => {
        try {
          for await (const chunk of environ['wsgi.input'] ?? []) received += chunk.byteLength
        } catch (error) {
          failures.push(error)
          throw error
        }
        return text(200, `read ${received}`)
      },
      { onError: () => {} },
    )
    await sendRaw(
      port,
      ['PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n', Buffer.alloc(1000)],
      { quietMs: 100, endAfterWrite: true },
    )
    await vi.waitFor(() => expect(failures).toHaveLength(1), { timeout: 1_000 })
    const next = await send(origin, { method: 'PUT', body: 'x' })
    expect(next).toMatchObject({ status: 200, body: Buffer.from('read 1001') })
  })

  it('refuses invalid options', () => {
    expect(() => toNodeListener(plainApp, { scriptName: 'api' })).toThrow(/scriptName/)
    expect(() => toNodeListener(plainApp, { maxHeaders: 0 })).toThrow(/maxHeaders/)
    expect(() => toNodeListener(plainApp, { nope: 1 } as NodeListenerOptions)).toThrow(/nope/)
    expect(() =>
      toNodeListener(plainApp, { onError: 'x' } as unknown as NodeListenerOptions),
    ).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS' }))
  })
})

/** A body of the given chunks whose return() calls `onReturn`. */
function iterable(chunks: Uint8Array[], onReturn: () => void): AsyncIterable<Uint8Array> {
  return {
    [Symbol.asyncIterator]() {
      let i = 0
      return {
        next: async () =>
          i < chunks.length
            ? { done: false, value: chunks[i++] as Uint8Array }
            : { done: true, value: undefined },
        return: async () => {
          onReturn()
          return { done: true, value: undefined }
        },
      }
    },
  }
}

/** A body that never ends: a chunk every 10 ms, or one chunk and then a read that never settles. */
function endless(stuck: boolean, onReturn: () => void): AsyncIterable<Uint8Array> {
  let sent = false
  return {
    [Symbol.asyncIterator]() {
      return {
        next: async () => {
          if (stuck && sent) return new Promise<never>(() => {})
          if (sent) await new Promise((resolve) => setTimeout(resolve, 10))
          sent = true
          return { done: false, value: new Uint8Array(1024) }
        },
        return: async () => {
          onReturn()
          return { done: true, value: undefined }
        },
      }
    },
  }
}

function framingApp(environ: Environ): AppResponse {
  switch (environ.PATH_INFO) {
    case '/te-then-bad':
      return text(200, 'never', [
        ['transfer-encoding', 'chunked'],
        ['x-bad', 'a\u0100b'],
      ])
    case '/te-gzip':
      return text(200, 'hello', [['transfer-encoding', 'gzip']])
    case '/te-and-length':
      return text(200, 'hello', [
        ['transfer-encoding', 'chunked'],
        ['content-length', '5'],
      ])
    case '/bad-entry':
      return { status: 200, headers: [null] as unknown as Array<[string, string]>, body: null }
    default:
      return text(200, 'ok')
  }
}

describe('toNodeListener response framing', () => {
  it('answers a cleanly framed 502 when a header is invalid, and the connection stays usable', async () => {
    const { port } = await listen(framingApp)
    const raw = await sendRaw(port, [
      'GET /te-then-bad HTTP/1.1\r\nhost: a\r\n\r\nGET /ok HTTP/1.1\r\nhost: a\r\n\r\n',
    ])
    const [first, second] = raw.split(/(?=HTTP\/1\.1 \d{3})/)
    expect(first).toMatch(/^HTTP\/1\.1 502/)
    expect(first?.toLowerCase()).not.toContain('transfer-encoding')
    // The problem body follows the head directly, as its Content-Length says (no chunk sizes).
    expect(first).toContain('\r\n\r\n{"type"')
    expect(second).toMatch(/^HTTP\/1\.1 200/)
    expect(second).toContain('\r\nok\r\n')
  })

  it('frames the body itself whatever Transfer-Encoding the app sets', async () => {
    const { port } = await listen(framingApp)
    for (const path of ['/te-gzip', '/te-and-length']) {
      const raw = await sendRaw(port, [`GET ${path} HTTP/1.1\r\nhost: a\r\n\r\n`])
      const head = raw.slice(0, raw.indexOf('\r\n\r\n')).toLowerCase()
      expect(head).not.toContain('gzip')
      expect(head.includes('transfer-encoding') && head.includes('content-length')).toBe(false)
      expect(raw).toContain('hello')
    }
  })

  it("cuts the connection when the body is longer than the app's Content-Length", async () => {
    const { port } = await listen(() => text(200, 'hello', [['content-length', '2']]))
    const raw = await sendRaw(port, [
      'GET / HTTP/1.1\r\nhost: a\r\n\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\n',
    ])
    // Node refuses the write before anything is sent: the connection is cut, never desynced.
    expect(raw).not.toContain('llo')
    expect((raw.match(/HTTP\/1\.1 200/g) ?? []).length).toBeLessThanOrEqual(1)
  })

  it('answers 502 to a malformed header entry instead of dropping the connection', async () => {
    const { origin } = await listen(framingApp)
    const res = await send(origin, { path: '/bad-entry' })
    expect(res.status).toBe(502)
  })
})

describe('toNodeListener: environ shape', () => {
  it('gives the environs of different requests one hidden class with fast properties', async () => {
    // V8's own view, from a child process run with --allow-natives-syntax: accessors created per
    // request once gave every environ a dictionary-mode object of its own, old-generation garbage
    // that cost throughput and p99 latency under load.
    const fixture = fileURLToPath(new URL('../../test/fixtures/environ-shape.mjs', import.meta.url))
    const child = spawn(process.execPath, ['--allow-natives-syntax', fixture], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const pid = child.pid ?? -1
    let output = ''
    let errors = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (errors += chunk))
    try {
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
      expect(errors).toBe('')
      expect(code).toBe(0)
    } finally {
      if (child.exitCode === null && child.signalCode === null) process.kill(pid, 'SIGKILL')
    }
    expect(JSON.parse(output)).toEqual({ sameMap: true, fast: true, signal: true })
  })
})
