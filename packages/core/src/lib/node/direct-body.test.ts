// The fetch path's direct route: an undiciTransport() body handed to the Fetch Response as a
// ReadableStream of its own (chunks queued as undici delivers them), with the forwarding step's
// idle timer, error mapping and cancellation kept.
import type { ServerResponse } from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { closeAll, startUpstream } from '@wsgiproxy/test-kit/servers'
import type { AppResponse, Environ, EnvironApp, WsgiProxyError } from '../../index.ts'
import { exactProxy, toEnviron, toResponse } from '../../index.ts'
import { isDirectBody } from '../streams.ts'
import type { DirectBody } from '../streams.ts'
import type { UndiciTransport } from './undici-transport.ts'
import { undiciTransport } from './undici-transport.ts'

const transports: UndiciTransport[] = []
afterEach(async () => {
  await closeAll()
  await Promise.all(transports.splice(0).map((transport) => transport.close()))
})

/** An exact proxy over undici to 127.0.0.1, its errors collected. */
function proxy(bodyTimeout = 60_000): { app: EnvironApp; errors: WsgiProxyError[] } {
  const transport = undiciTransport()
  transports.push(transport)
  const errors: WsgiProxyError[] = []
  const app = exactProxy({
    allow: ['127.0.0.1'],
    transport,
    timeouts: { upstreamBody: bodyTimeout },
    onError: (error) => {
      errors.push(error)
    },
  })
  return { app, errors }
}

function environFor(port: number): Environ {
  return {
    ...toEnviron(new Request('http://h/')),
    HTTP_HOST: `127.0.0.1:${port}`,
    SERVER_NAME: '127.0.0.1',
    SERVER_PORT: String(port),
  }
}

/** Writes `total` bytes in 64 KiB blocks as the socket takes them; counts what it wrote. */
function writeBlocks(res: ServerResponse, total: number, progress: { written: number }): void {
  res.writeHead(200, { 'content-length': String(total) })
  const block = Buffer.alloc(64 * 1024, 0x62)
  const more = (): void => {
    while (progress.written < total && !res.destroyed) {
      progress.written += block.length
      if (!res.write(block)) {
        res.once('drain', more)
        return
      }
    }
    res.end()
  }
  more()
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<number> {
  let bytes = 0
  for await (const chunk of stream) bytes += chunk.byteLength
  return bytes
}

describe('the direct route of undiciTransport bodies to a Fetch Response', () => {
  it('is taken through the forwarding step, and gives every byte with backpressure', async () => {
    const total = 64 * 1024 * 1024
    const progress = { written: 0 }
    const upstream = await startUpstream((_req, res) => writeBlocks(res, total, progress))
    const { app } = proxy()
    const response: AppResponse = await app(environFor(upstream.port))
    expect(response.status).toBe(200)
    expect(isDirectBody(response.body as AsyncIterable<Uint8Array>)).toBe(true)
    const body = toResponse(response).body as ReadableStream<Uint8Array>
    // Unread: socket buffers on both ends and the stream's 64 KiB queue, far below 64 MiB.
    await expect.poll(() => progress.written, { timeout: 2_000 }).toBeGreaterThan(0)
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(progress.written).toBeLessThan(16 * 1024 * 1024)
    expect(await readAll(body)).toBe(total)
  })

  it('fails a body that stalls with UPSTREAM_BODY_TIMEOUT, but not one whose reader is behind', async () => {
    const stalled = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-length': '100' })
      res.write('first')
    })
    const { app, errors } = proxy(300)
    const body = toResponse(await app(environFor(stalled.port))).body as ReadableStream<Uint8Array>
    await expect(readAll(body)).rejects.toMatchObject({ code: 'UPSTREAM_BODY_TIMEOUT' })
    expect(errors.map((error) => error.code)).toEqual(['UPSTREAM_BODY_TIMEOUT'])

    // 4 MiB sent at once, read only after three idle timeouts: the upstream was paused by the
    // reader, which is not a stall.
    const total = 4 * 1024 * 1024
    const fast = await startUpstream((_req, res) => writeBlocks(res, total, { written: 0 }))
    const slowReader = toResponse(await app(environFor(fast.port)))
      .body as ReadableStream<Uint8Array>
    await new Promise((resolve) => setTimeout(resolve, 900))
    expect(await readAll(slowReader)).toBe(total)
    expect(errors).toHaveLength(1)
  })

  it('maps a body cut by the upstream to UPSTREAM_RESET', async () => {
    const upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-length': '100000' })
      res.write('part', () => setTimeout(() => res.socket?.destroy(), 50))
    })
    const { app, errors } = proxy()
    const body = toResponse(await app(environFor(upstream.port))).body as ReadableStream<Uint8Array>
    await expect(readAll(body)).rejects.toMatchObject({ code: 'UPSTREAM_RESET' })
    expect(errors.map((error) => error.code)).toEqual(['UPSTREAM_RESET'])
  })

  it('gives a body that has all come as one chunk, and leaves one still coming a stream', async () => {
    const small = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-length': '5' })
      res.end('whole')
    })
    const { app, errors } = proxy()
    const complete = await app(environFor(small.port))
    const body = complete.body as DirectBody
    // undici delivers the 5 bytes and their end with the head, or soon after.
    await expect.poll(() => body.takeIfComplete?.()).toBeDefined()
    expect(() => body.readableStream()).toThrow('can be read only once')

    const progress = { written: 0 }
    const coming = await startUpstream((_req, res) => writeBlocks(res, 8 * 1024 * 1024, progress))
    const partial = (await app(environFor(coming.port))).body as DirectBody
    expect(partial.takeIfComplete?.()).toBeUndefined()
    expect(
      await readAll(
        toResponse({ status: 200, headers: [], body: partial }).body as ReadableStream<Uint8Array>,
      ),
    ).toBe(8 * 1024 * 1024)
    expect(errors).toEqual([])
  })

  it('closes the upstream response when the reader cancels, and reports no failure', async () => {
    let closed = false
    const upstream = await startUpstream((_req, res) => {
      res.on('close', () => (closed = true))
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('first chunk')
    })
    const { app, errors } = proxy()
    const body = toResponse(await app(environFor(upstream.port))).body as ReadableStream<Uint8Array>
    const reader = body.getReader()
    expect(Buffer.from((await reader.read()).value as Uint8Array).toString()).toBe('first chunk')
    await reader.cancel()
    await expect.poll(() => closed, { timeout: 2_000 }).toBe(true)
    expect(errors).toEqual([])
  })
})
