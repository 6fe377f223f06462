import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { exactProxy } from '../../index.ts'
import type { Running } from '@wsgiproxy/test-kit/servers'
import {
  closeAll,
  readBody,
  send,
  sendRaw,
  startFetchFront,
  startUpstream,
} from '@wsgiproxy/test-kit/servers'

/** The status code of every HTTP response in a raw capture, in order. */
function statuses(raw: string): number[] {
  return [...raw.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]))
}

describe('exactProxy behind toFetchHandler, hostile input', () => {
  let upstream: Running
  let front: Running
  let upstreamRequests = 0

  beforeEach(async () => {
    upstreamRequests = 0
    upstream = await startUpstream(async (req, res) => {
      upstreamRequests++
      const body = await readBody(req)
      res.end(`echo ${body.length}:${body.toString()}`)
    })
    const proxy = exactProxy({
      allow: ['127.0.0.1'],
      onError: () => {},
      timeouts: { upstreamHeaders: 500 },
    })
    front = await startFetchFront(
      (environ) =>
        proxy({
          ...environ,
          SERVER_NAME: '127.0.0.1',
          SERVER_PORT: String(upstream.port),
          HTTP_HOST: `127.0.0.1:${upstream.port}`,
        }),
      { onError: () => {} },
    )
  })
  afterEach(closeAll)

  async function stillServing(): Promise<void> {
    const res = await send(front.origin, { method: 'POST', body: 'ping' })
    expect(res.status).toBe(200)
    expect(res.body.toString()).toBe('echo 4:ping')
  }

  it('answers 431 to a request with 200 header fields and keeps serving', async () => {
    const headers = Array.from({ length: 200 }, (_, i) => `x-h${i}: ${i}\r\n`).join('')
    const raw = await sendRaw(front.port, [`GET / HTTP/1.1\r\nhost: a\r\n${headers}\r\n`])
    expect(statuses(raw)).toEqual([431])
    expect(raw).toContain('application/problem+json')
    expect(upstreamRequests).toBe(0)
    await stillServing()
  })

  it('answers 400 to a header value with obs-fold and keeps serving', async () => {
    const raw = await sendRaw(front.port, [
      'GET / HTTP/1.1\r\nhost: a\r\nx-folded: first\r\n  second\r\n\r\n',
    ])
    expect(statuses(raw)).toEqual([400])
    expect(upstreamRequests).toBe(0)
    await stillServing()
  })

  it('answers 400 to a header value with NUL and keeps serving', async () => {
    const raw = await sendRaw(front.port, ['GET / HTTP/1.1\r\nhost: a\r\nx-nul: a\u0000b\r\n\r\n'])
    expect(statuses(raw)).toEqual([400])
    expect(upstreamRequests).toBe(0)
    await stillServing()
  })

  it('answers 431 to a path of 64 KiB and keeps serving', async () => {
    const raw = await sendRaw(front.port, [
      `GET /${'a'.repeat(64 * 1024)} HTTP/1.1\r\nhost: a\r\n\r\n`,
    ])
    expect(statuses(raw)).toEqual([431])
    expect(upstreamRequests).toBe(0)
    await stillServing()
  })

  it('answers 504 when the Content-Length promises more than the client sends', async () => {
    const started = Date.now()
    const raw = await sendRaw(
      front.port,
      ['POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\n', 'only ten..'],
      { quietMs: 2_000, limitMs: 4_000 },
    )
    expect(statuses(raw)).toEqual([504])
    expect(Date.now() - started).toBeLessThan(4_000)
    await stillServing()
  })

  it('forwards at most Content-Length bytes and answers 400 to the bytes after them', async () => {
    const raw = await sendRaw(front.port, [
      'POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello, and this is not HTTP\r\n\r\n',
    ])
    // Node answers the unparsable rest with 400 and closes, possibly before the first response.
    expect(statuses(raw).at(-1)).toBe(400)
    expect(raw).not.toMatch(/echo (?!5:hello)/)
    expect(upstreamRequests).toBeLessThanOrEqual(1)
    await stillServing()
  })

  it('does not forward a request the client abandons mid-body', async () => {
    const raw = await sendRaw(
      front.port,
      ['POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\n', 'partial'],
      { endAfterWrite: true },
    )
    expect(statuses(raw).every((s) => s >= 400)).toBe(true)
    await stillServing()
  })
})
