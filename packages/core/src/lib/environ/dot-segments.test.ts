// Tomcat and Jetty strip ";" path parameters from a segment before resolving dot segments, so a
// backend behind `href: http://backend/base` would serve /base/..;/admin as /admin. The front
// refuses such paths instead of forwarding them.
import { describe, expect, it } from 'vitest'
import type { AppResponse, OutboundRequest, Transport } from '../../index.ts'
import { createProxyApp, toEnviron, toFetchHandler } from '../../index.ts'

function recording(): { transport: Transport; sent: OutboundRequest[] } {
  const sent: OutboundRequest[] = []
  return {
    sent,
    transport: async (outbound): Promise<AppResponse> => {
      sent.push(outbound)
      return { status: 200, headers: [], body: null }
    },
  }
}

describe('createProxyApp behind toFetchHandler', () => {
  it.each([
    '/app/..;/admin',
    '/app/..;jsessionid=1/admin',
    '/app/x/..;/..;/admin',
    '/app/.;/admin',
    '/app/%2e%2e;x/admin',
    '/app/%2E%2E;/admin',
    '/app/.%2e;/admin',
    '/app/..%3b/admin',
    '/app/..;',
  ])('answers 400 to %s and never sends it upstream', async (path) => {
    const { transport, sent } = recording()
    const app = createProxyApp({ href: 'http://backend.test/base', transport, onError: () => {} })
    const handler = toFetchHandler(app, { scriptName: '/app', onError: () => {} })
    const response = await handler(new Request(`http://front.test${path}`))
    expect(response.status).toBe(400)
    expect(await response.json()).toMatchObject({
      code: 'BAD_REQUEST',
      detail: expect.stringContaining('followed by ";" parameters'),
    })
    expect(sent).toEqual([])
  })

  it('forwards ";" parameters on other segments as they are', async () => {
    const { transport, sent } = recording()
    const app = createProxyApp({ href: 'http://backend.test/base', transport })
    const handler = toFetchHandler(app, { scriptName: '/app' })
    const response = await handler(new Request('http://front.test/app/a;v=1/..a;b/.../c'))
    expect(response.status).toBe(200)
    expect(sent.map((outbound) => outbound.url.pathname)).toEqual(['/base/a;v=1/..a;b/.../c'])
  })
})

describe('createProxyApp', () => {
  it.each(['/..;/admin', '/a/.;x/b', '/..;'])(
    'refuses a PATH_INFO of %j that a middleware set, without sending it',
    async (pathInfo) => {
      const { transport, sent } = recording()
      const app = createProxyApp({ href: 'http://backend.test/base', transport, onError: () => {} })
      const environ = { ...toEnviron(new Request('http://front.test/')), PATH_INFO: pathInfo }
      expect((await app(environ)).status).toBe(400)
      expect(sent).toEqual([])
    },
  )
})
