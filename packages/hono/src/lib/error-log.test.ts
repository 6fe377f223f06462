// A failed request through the Hono adapters logs one line by default (it printed the error's
// stack and causes, about 35 lines, before).
import { Hono } from 'hono'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { freePort } from '@wsgiproxy/test-kit/servers'
import { mount, proxy } from '../index.ts'

afterEach(() => vi.restoreAllMocks())

describe('the default error log of the Hono adapters', () => {
  it('proxy(): one line naming method, path, upstream and code for an unreachable upstream', async () => {
    const port = await freePort()
    const app = new Hono()
    app.all('/api/*', proxy({ href: `http://127.0.0.1:${port}` }))
    const spy = vi.spyOn(console, 'error').mockImplementation(() => {})
    const res = await app.request('/api/users/1')
    expect(res.status).toBe(502)
    expect(spy.mock.calls).toHaveLength(1)
    const line = String(spy.mock.calls[0]?.[0])
    expect(line).toMatch(
      new RegExp(
        `^wsgiproxy: GET /api/users/1 → http://127\\.0\\.0\\.1:${port} failed after \\d+ ms: 502 UPSTREAM_UNREACHABLE: [^\\n]+$`,
      ),
    )
  })

  it('mount(): an app that threw gets the line and its stack', async () => {
    const app = new Hono()
    app.all(
      '/app/*',
      mount(() => {
        throw new RangeError('broken app')
      }),
    )
    const spy = vi.spyOn(console, 'error').mockImplementation(() => {})
    expect((await app.request('/app/x')).status).toBe(500)
    expect(spy.mock.calls).toHaveLength(1)
    const text = String(spy.mock.calls[0]?.[0])
    expect(text.split('\n')[0]).toBe('wsgiproxy: GET /app/x failed: 500 APP_ERROR: broken app')
    expect(text).toContain('cause: RangeError: broken app')
  })
})
