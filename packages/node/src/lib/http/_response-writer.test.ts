import { EventEmitter } from 'node:events'
import { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { PassThrough } from 'node:stream'
import { describe, expect, it, vi } from 'vitest'
import type { AppResponse } from '@wsgiproxy/core'
import type { DirectBody } from '@wsgiproxy/core/adapter'
import { ClientState } from './_client-state.ts'
import { writeResponse } from './_response-writer.ts'
import type { ResponseSink } from './_response-writer.ts'

const encoder = new TextEncoder()

/** A response sink that records what the writer does; `write` answers `false` while `full`. */
class FakeSink extends EventEmitter implements ResponseSink {
  strictContentLength = false
  shouldKeepAlive = true
  removed: string[] = []
  head: { status: number; reason: string; headers: string[] } | undefined
  written: string[] = []
  ended = false
  destroyed = false
  full = false
  headThrows = false

  removeHeader(name: string): void {
    this.removed.push(name)
  }

  writeHead(status: number, reason: string, headers: string[]): void {
    if (this.headThrows) throw new TypeError('refused')
    this.head = { status, reason, headers }
  }

  write(chunk: Uint8Array): boolean {
    this.written.push(Buffer.from(chunk).toString())
    return !this.full
  }

  end(): void {
    this.ended = true
  }

  destroy(): void {
    this.destroyed = true
  }
}

/** A body of `parts` that counts its reads and records `return()`. */
function body(...parts: string[]): {
  body: AsyncIterable<Uint8Array>
  reads: () => number
  released: ReturnType<typeof vi.fn<() => void>>
} {
  let reads = 0
  const released = vi.fn<() => void>()
  return {
    body: {
      [Symbol.asyncIterator]: () => ({
        next: async () => {
          const part = parts[reads++]
          return part === undefined
            ? { done: true as const, value: undefined }
            : { done: false as const, value: encoder.encode(part) }
        },
        return: async () => {
          released()
          return { done: true as const, value: undefined }
        },
      }),
    },
    reads: () => reads,
    released,
  }
}

function response(
  status: number,
  source: AsyncIterable<Uint8Array> | null,
  headers: Array<[string, string]> = [],
): AppResponse {
  return { status, headers, body: source }
}

/** A real `ServerResponse` on an in-memory socket, and the bytes it wrote. */
function nodeResponse(method = 'GET'): {
  res: ServerResponse
  wire: () => string
  head: () => string
} {
  const socket = new PassThrough()
  const req = new IncomingMessage(socket as unknown as Socket)
  req.method = method
  // An HTTP/1.1 request, so Node's keep-alive logic runs as on a real connection.
  req.httpVersionMajor = 1
  req.httpVersionMinor = 1
  const res = new ServerResponse(req)
  res.assignSocket(socket as unknown as Socket)
  let wire = ''
  socket.on('data', (chunk: Buffer) => (wire += chunk.toString('latin1')))
  return { res, wire: () => wire, head: () => wire.slice(0, wire.indexOf('\r\n\r\n')) }
}

/** A direct body (undiciTransport's) that has all come: taken whole, never iterated. */
function whole(text: string): DirectBody {
  return {
    [Symbol.asyncIterator]: () => {
      throw new Error('read as a whole, not iterated')
    },
    readableStream: () => {
      throw new Error('not a stream here')
    },
    takeIfComplete: () => encoder.encode(text),
  }
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

describe('writeResponse', () => {
  it('writes the status line, the header lines with repeats kept, and the body', async () => {
    const { res, wire } = nodeResponse()
    const headers: Array<[string, string]> = [
      ['set-cookie', 'a=1'],
      ['set-cookie', 'b=2'],
      ['content-length', '2'],
    ]
    await writeResponse('GET', res, response(201, body('hi').body, headers), new ClientState())
    await tick()
    expect(wire()).toMatch(/^HTTP\/1\.1 201 Created\r\n/)
    expect(wire()).toContain('set-cookie: a=1\r\nset-cookie: b=2\r\ncontent-length: 2\r\n')
    expect(wire()).toMatch(/\r\n\r\nhi$/)
    expect(res.writableFinished).toBe(true)
  })

  it('lets Node add its Connection header unless bare', async () => {
    const { res, head } = nodeResponse()
    const headers: Array<[string, string]> = [['content-length', '2']]
    await writeResponse('GET', res, response(200, body('hi').body, headers), new ClientState())
    await tick()
    expect(head()).toMatch(/\r\nConnection: keep-alive$/m)
  })

  it("sends no Connection or Keep-Alive line when bare, neither Node's nor the app's", async () => {
    const { res, head } = nodeResponse()
    const headers: Array<[string, string]> = [
      ['Connection', 'x-private'],
      ['Keep-Alive', 'timeout=60'],
      ['content-length', '2'],
    ]
    await writeResponse(
      'GET',
      res,
      response(200, body('hi').body, headers),
      new ClientState(),
      true,
    )
    await tick()
    expect(head()).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
    expect(head()).not.toMatch(/^(connection|keep-alive):/im)
    expect(res.shouldKeepAlive).toBe(true)
    expect(res.writableFinished).toBe(true)
  })

  it("still closes the connection after an app's Connection: close when bare", async () => {
    const sink = new FakeSink()
    const headers: Array<[string, string]> = [['connection', 'x-private, Close']]
    await writeResponse('GET', sink, response(200, null, headers), new ClientState(), true)
    expect(sink.removed).toEqual(['connection'])
    expect(sink.head?.headers).toEqual([])
    expect(sink.shouldKeepAlive).toBe(false)
  })

  it('keeps the connection headers off the problem response that replaces a bad one', async () => {
    const sink = new FakeSink()
    const answer = response(200, null, [['bad name', 'x']])
    await writeResponse('GET', sink, answer, new ClientState(), true)
    expect(sink.head?.status).toBe(502)
    expect(sink.removed).toEqual(['connection'])
  })

  it('keeps a valid reason phrase and puts the standard one for an invalid one', async () => {
    for (const [statusText, status, reason] of [
      ['Fine', 200, 'Fine'],
      ['Bad\r\nReason', 201, 'Created'],
      ['', 200, 'OK'],
      ['x\u0100', 599, ''],
    ] as const) {
      const sink = new FakeSink()
      const answer = { ...response(status, null), statusText }
      await writeResponse('GET', sink, answer, new ClientState())
      expect(sink.head).toMatchObject({ status, reason })
    }
  })

  it("drops the app's Transfer-Encoding, since Node frames the body itself", async () => {
    const sink = new FakeSink()
    const headers: Array<[string, string]> = [
      ['Transfer-Encoding', 'chunked'],
      ['x-kept', '1'],
    ]
    await writeResponse('GET', sink, response(200, null, headers), new ClientState())
    expect(sink.head?.headers).toEqual(['x-kept', '1'])
  })

  it.each([
    ['a value with CR LF', [['x-bad', 'a\r\nInjected: 1']]],
    ['a name that is not a token', [['bad name', 'x']]],
    ['an entry that is not a pair', ['x-bad: 1']],
  ])('answers 502 instead, releasing the body, for %s', async (_case, headers) => {
    const sink = new FakeSink()
    const source = body('secret')
    const answer = { ...response(200, source.body), headers } as AppResponse
    await writeResponse('GET', sink, answer, new ClientState())
    expect(sink.head?.status).toBe(502)
    expect(sink.written.join('')).toContain('UPSTREAM_INVALID_RESPONSE')
    expect(sink.written.join('')).not.toContain('secret')
    expect(source.released).toHaveBeenCalled()
    expect(sink.ended).toBe(true)
  })

  it.each([101, 1000, 200.5])(
    'answers 502 to status %d, which is no final response',
    async (status) => {
      const sink = new FakeSink()
      await writeResponse('GET', sink, response(status, null), new ClientState())
      expect(sink.head?.status).toBe(502)
    },
  )

  it('writes the trailers after a chunked body, invalid and forbidden fields dropped', async () => {
    const { res, wire } = nodeResponse()
    await writeResponse(
      'GET',
      res,
      {
        ...response(200, body('a', 'b').body),
        trailers: () => [
          ['x-checksum', 'abc'],
          ['x bad', 'name'],
          ['x-bad-value', 'line\nbreak'],
          ['content-type', 'text/html'],
        ],
      },
      new ClientState(),
    )
    await tick()
    expect(wire()).toContain('\r\nTransfer-Encoding: chunked\r\n')
    expect(wire()).toMatch(/\r\n0\r\nx-checksum: abc\r\n\r\n$/)
  })

  it('reads no trailers for HEAD, and none before the body has ended', async () => {
    const reads: number[] = []
    const source = body('a', 'b')
    const head = nodeResponse('HEAD')
    const get = nodeResponse()
    const trailers = (): Array<[string, string]> => {
      reads.push(source.reads())
      return [['x-checksum', 'abc']]
    }
    await writeResponse(
      'HEAD',
      head.res,
      { ...response(200, body('a').body), trailers },
      new ClientState(),
    )
    await writeResponse(
      'GET',
      get.res,
      { ...response(200, source.body), trailers },
      new ClientState(),
    )
    await tick()
    expect(reads).toEqual([3])
    expect(head.wire()).not.toContain('x-checksum')
  })

  it('answers 500 to something that is not a response record', async () => {
    const sink = new FakeSink()
    await writeResponse('GET', sink, { status: 200 } as AppResponse, new ClientState())
    expect(sink.head?.status).toBe(500)
    expect(sink.written.join('')).toContain('APP_ERROR')
  })

  it.each([
    ['HEAD', 200],
    ['GET', 204],
    ['GET', 304],
  ])('sends no body to %s with status %d and releases the body', async (method, status) => {
    const { res, wire } = nodeResponse(method)
    const source = body('never sent')
    await writeResponse(method, res, response(status, source.body), new ClientState())
    await tick()
    expect(wire()).not.toContain('never sent')
    expect(source.released).toHaveBeenCalled()
    expect(res.writableFinished).toBe(true)
  })

  it('reads the next chunk only after the response drained', async () => {
    const sink = new FakeSink()
    sink.full = true
    const source = body('a', 'b')
    const done = writeResponse('GET', sink, response(200, source.body), new ClientState())
    await tick()
    expect(sink.written).toEqual(['a'])
    expect(source.reads()).toBe(1)
    sink.full = false
    sink.emit('drain')
    await done
    expect(sink.written).toEqual(['a', 'b'])
    expect(sink.ended).toBe(true)
  })

  it('stops waiting for drain when the response closes', async () => {
    const sink = new FakeSink()
    sink.full = true
    const done = writeResponse('GET', sink, response(200, body('a').body), new ClientState())
    await tick()
    sink.emit('close')
    await done
    expect(sink.listenerCount('drain')).toBe(0)
  })

  it('stops a pending read and never ends the response when the client leaves', async () => {
    const sink = new FakeSink()
    const client = new ClientState()
    const released = vi.fn<() => void>()
    const stuck: AsyncIterable<Uint8Array> = {
      [Symbol.asyncIterator]: () => ({
        next: () => new Promise<IteratorResult<Uint8Array>>(() => {}),
        return: async () => {
          released()
          return { done: true, value: undefined }
        },
      }),
    }
    const done = writeResponse('GET', sink, response(200, stuck), client)
    await tick()
    client.close()
    await done
    expect(released).toHaveBeenCalled()
    expect(sink.ended).toBe(false)
    expect(client.wake).toBeUndefined()
  })

  it('ends the response without the body when the client left before it was written', async () => {
    const sink = new FakeSink()
    const client = new ClientState()
    client.close()
    const source = body('late')
    await writeResponse('GET', sink, response(200, source.body), client)
    expect(sink.written).toEqual([])
    expect(source.released).toHaveBeenCalled()
    expect(sink.ended).toBe(true)
  })

  it('cuts the response, never ending it, when the body fails mid-stream', async () => {
    const sink = new FakeSink()
    const failing = (async function* () {
      yield encoder.encode('a')
      throw new Error('upstream reset')
    })()
    await writeResponse('GET', sink, response(200, failing), new ClientState())
    expect(sink.written).toEqual(['a'])
    expect(sink.destroyed).toBe(true)
    expect(sink.ended).toBe(false)
  })

  it.each([
    ['shorter', 'hel'],
    ['longer', 'hello, world'],
  ])('cuts the response when the body is %s than its Content-Length', async (_case, text) => {
    const { res } = nodeResponse()
    const headers: Array<[string, string]> = [['content-length', '5']]
    await writeResponse('GET', res, response(200, body(text).body, headers), new ClientState())
    expect(res.strictContentLength).toBe(true)
    expect(res.destroyed).toBe(true)
    expect(res.writableFinished).toBe(false)
  })

  it('writes a body that has all come in one write, without reading it, and cuts it when longer than its Content-Length', async () => {
    const sink = new FakeSink()
    await writeResponse('GET', sink, response(200, whole('all of it')), new ClientState())
    expect(sink.written).toEqual(['all of it'])
    expect(sink.ended).toBe(true)

    const { res } = nodeResponse()
    const headers: Array<[string, string]> = [['content-length', '5']]
    await writeResponse(
      'GET',
      res,
      response(200, whole('hello, world'), headers),
      new ClientState(),
    )
    expect(res.destroyed).toBe(true)
    expect(res.writableFinished).toBe(false)
  })

  it('cuts the response and releases the body when writeHead throws', async () => {
    const sink = new FakeSink()
    sink.headThrows = true
    const source = body('x')
    await writeResponse('GET', sink, response(200, source.body), new ClientState())
    expect(sink.destroyed).toBe(true)
    expect(source.released).toHaveBeenCalled()
    expect(sink.written).toEqual([])
  })
})
