import { afterEach, describe, expect, it } from 'vitest'
import type { EnvironApp } from '@wsgiproxy/core'
import { FRONT01, startPython01 } from '@wsgiproxy/test-kit/python01'
import { closeAll, echoEnviron, send, sendRaw, startUpstream } from '@wsgiproxy/test-kit/servers'
import { toNodeListener } from './node-listener.ts'
import type { NodeListenerOptions } from './node-listener.ts'

/** The listener on 127.0.0.1 port 0 (Node's default keep-alive timeout: `Keep-Alive: timeout=5`). */
function listen(app: EnvironApp, options?: NodeListenerOptions): ReturnType<typeof startUpstream> {
  return startUpstream(toNodeListener(app, options))
}

/** The head of a raw response as lines. */
function headLines(raw: string): string[] {
  return raw.slice(0, raw.indexOf('\r\n\r\n')).split('\r\n')
}

const connectionLines = (lines: string[]): string[] =>
  lines.filter((line) => /^(connection|keep-alive):/i.test(line))

// A Python front on wsgiref that copies every response header into its WSGI response, as Paste
// WSGIProxy 0.1's WSGIProxyApp does: wsgiref refuses hop-by-hop headers from an app (PEP 3333)
// and answers 500 unless the backend sent none.
describe('toNodeListener behind a WSGIProxy 0.1 front', () => {
  afterEach(closeAll)

  it('answers through a front that passes every response header on to wsgiref', async () => {
    const backend = await listen(echoEnviron)
    const front = await startPython01(FRONT01, ['--href', backend.origin, '--pass-hop-by-hop'])
    const res = await send(front.origin, { path: '/p?a=1' })
    // The Python side's stderr shows in the diff when the status is wrong.
    expect({ status: res.status, stderr: front.stderr() }).toEqual({
      status: 200,
      stderr: expect.any(String),
    })
    expect(res.headers['content-type']).toBe('application/json')
    expect(JSON.parse(res.body.toString())).toMatchObject({
      PATH_INFO: '/p',
      QUERY_STRING: 'a=1',
      HTTP_X_WSGIPROXY_VERSION: '0.1',
    })
  })

  it("answers the listener's own problem responses through that front too", async () => {
    // The front sends about ten header lines: more than maxHeaders, so no environ, a 431.
    const backend = await listen(echoEnviron, { maxHeaders: 2 })
    const front = await startPython01(FRONT01, ['--href', backend.origin, '--pass-hop-by-hop'])
    const res = await send(front.origin, { path: '/p' })
    expect({ status: res.status, stderr: front.stderr() }).toEqual({
      status: 431,
      stderr: expect.any(String),
    })
    expect(res.headers['content-type']).toBe('application/problem+json')
  })

  it("answers an app that throws with its 500 problem, not wsgiref's", async () => {
    const backend = await listen(
      () => {
        throw new Error('boom')
      },
      { onError: () => undefined },
    )
    const front = await startPython01(FRONT01, ['--href', backend.origin, '--pass-hop-by-hop'])
    const res = await send(front.origin, { path: '/p' })
    expect({ type: res.headers['content-type'], stderr: front.stderr() }).toEqual({
      type: 'application/problem+json',
      stderr: expect.any(String),
    })
    expect(res.status).toBe(500)
  })
})

describe('toNodeListener connection headers', () => {
  afterEach(closeAll)

  it('keeps Connection: keep-alive and the Keep-Alive hint for a request without the 0.1 header', async () => {
    const backend = await listen(echoEnviron)
    // fetch (undici) keeps connections alive and reuses them for the Keep-Alive timeout hint.
    const res = await fetch(backend.origin, { headers: { 'x-wsgiproxy-version': '0.2' } })
    await res.arrayBuffer()
    expect(res.status).toBe(200)
    expect(res.headers.get('connection')).toBe('keep-alive')
    expect(res.headers.get('keep-alive')).toMatch(/^timeout=\d+$/)
  })

  it('sends neither to a 0.1 request, and the HTTP/1.1 connection persists', async () => {
    const backend = await listen(echoEnviron)
    const request = 'GET / HTTP/1.1\r\nHost: b\r\nX-WSGIProxy-Version: 0.1\r\n\r\n'
    const raw = await sendRaw(backend.port, [request, request])
    const answers = raw.split(/(?=HTTP\/1\.1 )/)
    expect(answers).toHaveLength(2)
    for (const answer of answers) {
      expect(answer).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
      expect(connectionLines(headLines(answer))).toEqual([])
    }
  })

  it('sends neither to a 0.1 request on HTTP/1.0 and closes the connection after it', async () => {
    const backend = await listen(echoEnviron)
    const started = Date.now()
    const raw = await sendRaw(
      backend.port,
      ['GET / HTTP/1.0\r\nHost: b\r\nConnection: keep-alive\r\nX-WSGIProxy-Version: 0.1\r\n\r\n'],
      { quietMs: 4_000 },
    )
    // Closed by the server, not after the quiet period.
    expect(Date.now() - started).toBeLessThan(3_000)
    expect(raw).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
    expect(connectionLines(headLines(raw))).toEqual([])
  })
})
