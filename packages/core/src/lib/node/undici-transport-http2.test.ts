// undiciTransport: trailers from HTTP/1.1 and HTTP/2 upstreams, HTTP/2 by ALPN and h2c, and
// request and response bodies streaming at the same time.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer as createHttpServer } from 'node:http'
import type {
  Http2SecureServer,
  Http2Server,
  IncomingHttpHeaders,
  ServerHttp2Stream,
} from 'node:http2'
import { createSecureServer, createServer as createH2cServer } from 'node:http2'
import type { AddressInfo, Socket } from 'node:net'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { AppResponse, OutboundRequest } from '../../index.ts'
import { WsgiProxyError } from '../../index.ts'
import type { TestCertificate } from '@wsgiproxy/test-kit/tls'
import { createCertificateAuthority, createServerCertificate } from '@wsgiproxy/test-kit/tls'
import type { UndiciTransport, UndiciTransportOptions } from './undici-transport.ts'
import { undiciTransport } from './undici-transport.ts'

let ca: TestCertificate
let server: TestCertificate

beforeAll(async () => {
  ca = await createCertificateAuthority('h2 upstream CA')
  server = await createServerCertificate(ca, ['localhost'], { ips: ['127.0.0.1'] })
})

const cleanups: Array<() => unknown> = []

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).toReversed()) await cleanup()
})

function transportFor(options?: UndiciTransportOptions): UndiciTransport {
  const transport = undiciTransport(options)
  cleanups.push(() => transport.close())
  return transport
}

type AnyServer = ReturnType<typeof createHttpServer> | Http2Server | Http2SecureServer

/** Listens on 127.0.0.1 port 0; closed (its sockets cut) after the test. */
async function listen(upstream: AnyServer): Promise<number> {
  const sockets = new Set<Socket>()
  upstream.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        upstream.close(() => resolve())
      }),
  )
  return (upstream.address() as AddressInfo).port
}

async function startHttp1(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<number> {
  return listen(createHttpServer(handler))
}

async function startH2c(
  handler: (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void,
): Promise<number> {
  const upstream = createH2cServer()
  upstream.on('stream', handler)
  return listen(upstream)
}

function outbound(
  url: string,
  init: Partial<Pick<OutboundRequest, 'method' | 'headers' | 'body'>> = {},
): OutboundRequest {
  const target = new URL(url)
  return {
    url: target,
    method: init.method ?? 'GET',
    headers: [['host', target.host], ...(init.headers ?? [])],
    body: init.body ?? null,
    signal: new AbortController().signal,
  }
}

async function textOf(response: AppResponse): Promise<string> {
  const chunks: Uint8Array[] = []
  for await (const chunk of response.body ?? []) chunks.push(chunk)
  return Buffer.concat(chunks).toString()
}

/** A request body the test feeds chunk by chunk. */
function pushedBody(): {
  body: AsyncIterable<Uint8Array>
  push: (text: string) => void
  end: () => void
} {
  const queue: Array<Uint8Array | null> = []
  let wake: (() => void) | undefined
  const add = (chunk: Uint8Array | null): void => {
    queue.push(chunk)
    wake?.()
  }
  return {
    body: {
      async *[Symbol.asyncIterator]() {
        for (;;) {
          while (queue.length === 0) await new Promise<void>((resolve) => (wake = resolve))
          const chunk = queue.shift()
          if (chunk === null || chunk === undefined) return
          yield chunk
        }
      },
    },
    push: (text) => add(Buffer.from(text)),
    end: () => add(null),
  }
}

describe('undiciTransport trailers', () => {
  it('gives the trailers of a chunked HTTP/1.1 response once its body has ended', async () => {
    const port = await startHttp1((_req, res) => {
      res.setHeader('trailer', 'x-checksum')
      res.write('part')
      res.addTrailers([
        ['x-checksum', 'abc'],
        ['x-repeated', '1'],
        ['x-repeated', '2'],
      ])
      res.end()
    })
    const response = await transportFor()(outbound(`http://127.0.0.1:${port}/`))
    expect(await textOf(response)).toBe('part')
    expect(response.trailers?.()).toEqual([
      ['x-checksum', 'abc'],
      ['x-repeated', '1'],
      ['x-repeated', '2'],
    ])
  })

  it('gives the trailers of an HTTP/2 response (a repeated name joined, as Node reads it)', async () => {
    const port = await startH2c((stream) => {
      stream.respond({ ':status': 200 }, { waitForTrailers: true })
      stream.once('wantTrailers', () => {
        stream.sendTrailers({ 'grpc-status': '0', 'x-repeated': ['1', '2'] })
      })
      stream.end('body')
    })
    const response = await transportFor({ http2: 'h2c' })(outbound(`http://127.0.0.1:${port}/`))
    expect(await textOf(response)).toBe('body')
    expect(response.trailers?.()).toEqual([
      ['grpc-status', '0'],
      ['x-repeated', '1, 2'],
    ])
  })

  it('gives an HTTP/2 response that ended with its headers without a body', async () => {
    const port = await startH2c((stream) => {
      stream.respond({ ':status': 200, 'grpc-status': '5' }, { endStream: true })
    })
    const response = await transportFor({ http2: 'h2c' })(outbound(`http://127.0.0.1:${port}/`))
    expect(response.status).toBe(200)
    expect(response.headers).toContainEqual(['grpc-status', '5'])
    expect(response.body).toBeNull()
  })
})

describe('undiciTransport http2', () => {
  it('speaks HTTP/2 to an https upstream that offers it by ALPN, and HTTP/1.1 without http2', async () => {
    const upstream = createSecureServer({ ...server, allowHTTP1: true }, (req, res) => {
      res.end(req.httpVersion)
    })
    const port = await listen(upstream)
    const request = (): OutboundRequest => outbound(`https://127.0.0.1:${port}/`)
    const h2 = await transportFor({ http2: true, tls: { ca: ca.cert } })(request())
    const h1 = await transportFor({ tls: { ca: ca.cert } })(request())
    expect([await textOf(h2), await textOf(h1)]).toEqual(['2.0', '1.1'])
  })

  it('speaks h2c to an http:// upstream with http2: "h2c", sending Host as :authority', async () => {
    const port = await startH2c((stream, headers) => {
      stream.respond({ ':status': 200 })
      stream.end(`${headers[':scheme']} ${headers[':authority']} ${headers[':path']}`)
    })
    const request = outbound(`http://127.0.0.1:${port}/p?q=1`)
    request.headers = [['host', 'public.example']]
    const response = await transportFor({ http2: 'h2c' })(request)
    expect(await textOf(response)).toBe('http public.example /p?q=1')
  })

  it('streams the request body while the response streams back (full duplex)', async () => {
    const port = await startH2c((stream) => {
      stream.respond({ ':status': 200 })
      stream.on('data', (chunk: Buffer) => stream.write(`echo ${chunk.toString()};`))
      stream.once('end', () => stream.end('done'))
    })
    const input = pushedBody()
    const response = await transportFor({ http2: 'h2c' })(
      outbound(`http://127.0.0.1:${port}/`, { method: 'POST', body: input.body }),
    )
    const reader = (response.body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]()
    const echoes: string[] = []
    for (const message of ['one', 'two', 'three']) {
      input.push(message)
      // The echo of each chunk arrives before the next is sent and before the body ends.
      const next = await reader.next()
      echoes.push(Buffer.from(next.value as Uint8Array).toString())
    }
    input.end()
    const rest: string[] = []
    for (let next = await reader.next(); next.done !== true; next = await reader.next()) {
      rest.push(Buffer.from(next.value).toString())
    }
    expect(echoes).toEqual(['echo one;', 'echo two;', 'echo three;'])
    expect(rest.join('')).toBe('done')
  })

  it('never sends connection-specific headers to an HTTP/2 upstream, and TE only as trailers', async () => {
    const seen: IncomingHttpHeaders[] = []
    const port = await startH2c((stream, headers) => {
      seen.push(headers)
      stream.respond({ ':status': 204 })
      stream.end()
    })
    const transport = transportFor({ http2: 'h2c' })
    const send = (te: string): Promise<AppResponse> =>
      transport(
        outbound(`http://127.0.0.1:${port}/`, {
          headers: [
            ['connection', 'keep-alive'],
            ['keep-alive', 'timeout=5'],
            ['proxy-connection', 'keep-alive'],
            ['transfer-encoding', 'chunked'],
            ['upgrade', 'websocket'],
            ['http2-settings', 'AAMAAABkAAQAoAAAAAIAAAAA'],
            ['te', te],
            ['x-kept', 'yes'],
          ],
        }),
      )
    const answers = [await send('trailers'), await send('gzip')]
    expect(answers.map((answer) => answer.status)).toEqual([204, 204])
    const names = seen.map((headers) => Object.keys(headers).filter((n) => !n.startsWith(':')))
    expect(names).toEqual([['te', 'x-kept'], ['x-kept']])
    expect(seen[0]?.te).toBe('trailers')
  })

  it('refuses an http2 option other than true, false or "h2c"', () => {
    expect(() => undiciTransport({ http2: 'h2' as 'h2c' })).toThrow(WsgiProxyError)
    expect(() => undiciTransport({ http2: 'h2' as 'h2c' })).toThrow(
      /undiciTransport\.http2.*expected true, false or 'h2c' \(got "h2"\)/,
    )
  })
})
