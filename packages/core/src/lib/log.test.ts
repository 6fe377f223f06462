// The default error hook: one line per failed request, the stack only when asked or when the app
// itself threw. Before, every failure printed the error object: its stack and causes, ~35 lines.
import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  closeAll,
  freePort,
  send,
  startFetchFront,
  startUpstream,
} from '@wsgiproxy/test-kit/servers'
import { createProxyApp, logErrors, toFetchHandler } from '../index.ts'
import type { EnvironApp } from './types.ts'

afterEach(async () => {
  vi.restoreAllMocks()
  await closeAll()
})

/** What `console.error` is called with while `run` runs. */
async function errorsLogged(run: () => Promise<unknown>): Promise<unknown[][]> {
  const spy = vi.spyOn(console, 'error').mockImplementation(() => {})
  await run()
  return spy.mock.calls
}

const LINE =
  /^wsgiproxy: GET \/api\/users → http:\/\/127\.0\.0\.1:(\d+) failed after \d+ ms: 502 UPSTREAM_UNREACHABLE: /

/** An app with a bug: it throws instead of answering. */
const throwingApp: EnvironApp = () => {
  throw new TypeError('boom in the app')
}

describe('logErrors', () => {
  it('logs a failed forward in one line: method, path, upstream, time, status, code, message', async () => {
    const port = await freePort()
    const front = await startFetchFront(createProxyApp({ href: `http://127.0.0.1:${port}` }))
    const calls = await errorsLogged(async () => {
      const res = await send(`http://127.0.0.1:${front.port}`, { path: '/api/users?token=secret' })
      expect(res.status).toBe(502)
    })
    expect(calls).toHaveLength(1)
    const line = String(calls[0]?.[0])
    expect(calls[0]).toHaveLength(1)
    expect(line).toMatch(LINE)
    expect(line.match(LINE)?.[1]).toBe(String(port))
    expect(line).not.toContain('\n')
    // The query string may carry secrets.
    expect(line).not.toContain('secret')
  })

  it('adds the stack and causes when asked', async () => {
    const port = await freePort()
    const app = createProxyApp({
      href: `http://127.0.0.1:${port}`,
      onError: logErrors({ stack: true }),
    })
    const front = await startFetchFront(app)
    const calls = await errorsLogged(() =>
      send(`http://127.0.0.1:${front.port}`, { path: '/api/users' }),
    )
    expect(calls).toHaveLength(1)
    const [line, ...stack] = String(calls[0]?.[0]).split('\n')
    expect(line).toMatch(LINE)
    expect(stack[0]).toMatch(/^WsgiProxyError: /)
    expect(stack.some((text) => text.startsWith('cause: '))).toBe(true)
  })

  it('logs nothing for a response the upstream gave, even a 5xx', async () => {
    const upstream = await startUpstream((_req, res) => {
      res.statusCode = 503
      res.end('down for maintenance')
    })
    const front = await startFetchFront(createProxyApp({ href: upstream.origin }))
    const calls = await errorsLogged(async () => {
      expect((await send(`http://127.0.0.1:${front.port}`)).status).toBe(503)
    })
    expect(calls).toEqual([])
  })

  it('gives the stack of an app that threw: that is a bug to find', async () => {
    const calls = await errorsLogged(() =>
      toFetchHandler(throwingApp)(new Request('http://front.test/page?q=1')),
    )
    expect(calls).toHaveLength(1)
    const text = String(calls[0]?.[0])
    expect(text.split('\n')[0]).toBe('wsgiproxy: GET /page failed: 500 APP_ERROR: boom in the app')
    expect(text).toContain('cause: TypeError: boom in the app')
  })

  it('sends lines where `log` says', async () => {
    const lines: string[] = []
    const port = await freePort()
    const app = createProxyApp({
      href: `http://127.0.0.1:${port}`,
      onError: logErrors({ log: (line) => lines.push(line) }),
    })
    const calls = await errorsLogged(() =>
      toFetchHandler(app)(new Request('http://front.test/api/users')),
    )
    expect(calls).toEqual([])
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(LINE)
  })
})
