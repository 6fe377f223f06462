// The adapters over real sockets: Hono apps served by @hono/node-server on 127.0.0.1 port 0.
import { getConnInfo } from '@hono/node-server/conninfo'
import type { EnvironApp, SigningKey } from '@wsgiproxy/core'
import { createProxyApp, createSigner, createVerifier, exactProxy } from '@wsgiproxy/core'
import { Hono } from 'hono'
import { afterEach, describe, expect, it } from 'vitest'
import { describeForwarding } from '@wsgiproxy/test-kit/forwarding-suite'
import { closeAll, echoEnviron, send } from '@wsgiproxy/test-kit/servers'
import { mount } from './mount.ts'
import { proxy } from './proxy.ts'
import type { ProxyOptions } from './proxy.ts'
import type { WsgiProxyVariables } from './wsgi-proxy.ts'
import { wsgiProxy } from './wsgi-proxy.ts'
import { serveHono } from '@wsgiproxy/test-kit/serve-hono'

// The shared forwarding suite (docs/design.md §8) through a Hono app: the exact proxy mounted on a
// route, and the protocol proxy, both on core's fetch transport.
describeForwarding('Hono mount(exactProxy()) on @hono/node-server', (port, options) => {
  const forward = exactProxy({ allow: ['127.0.0.1'], ...options })
  const toUpstream: EnvironApp = (environ) =>
    forward({
      ...environ,
      SERVER_NAME: '127.0.0.1',
      SERVER_PORT: String(port),
      HTTP_HOST: `127.0.0.1:${port}`,
    })
  return serveHono(new Hono().all('/*', mount(toUpstream)))
})

describeForwarding('Hono proxy() on @hono/node-server', (port, { onError, ...options }) => {
  // proxy()'s hook also sees the mount's failures, which come without an environ.
  const hook: ProxyOptions['onError'] =
    onError && ((error, environ) => (environ === undefined ? undefined : onError(error, environ)))
  const href = `http://127.0.0.1:${port}`
  return serveHono(
    new Hono().all('/*', proxy({ ...options, href, ...(hook ? { onError: hook } : {}) })),
  )
})

const KEY: SigningKey = { id: 'k1', secret: new Uint8Array(32).fill(9) }

describe('the Hono adapters on @hono/node-server', () => {
  afterEach(closeAll)

  it('mounts with the socket peer as REMOTE_ADDR, by default and through getConnInfo', async () => {
    const app = new Hono()
    app.all('/default/*', mount(echoEnviron))
    app.all('/conninfo/*', mount(echoEnviron, { getRemoteAddr: getConnInfo }))
    const server = await serveHono(app)
    for (const prefix of ['/default', '/conninfo']) {
      const res = await send(server.origin, { path: `${prefix}/a%2Fb?x=1` })
      expect(res.status).toBe(200)
      expect(JSON.parse(res.body.toString())).toMatchObject({
        REMOTE_ADDR: '127.0.0.1',
        SCRIPT_NAME: prefix,
        PATH_INFO: '/a/b',
        QUERY_STRING: 'x=1',
        'wsgiproxy.raw_path': `${prefix}/a%2Fb`,
      })
    }
  })

  it('carries a request from a signing proxy() front to a verifying wsgiProxy() backend', async () => {
    const backendApp = new Hono<{ Variables: WsgiProxyVariables }>()
    backendApp.use(wsgiProxy({ verifier: createVerifier({ keys: [KEY] }), requireSignature: true }))
    backendApp.all('*', async (c) => {
      const environ = c.get('environ')
      return c.json({
        remoteAddr: environ.REMOTE_ADDR,
        user: environ['REMOTE_USER'],
        scriptName: environ.SCRIPT_NAME,
        pathInfo: environ.PATH_INFO,
        originalUrl: c.get('originalUrl').href,
        body: await c.req.text(),
      })
    })
    const backend = await serveHono(backendApp)

    const signingFront = createProxyApp({
      href: `${backend.origin}/app`,
      signer: createSigner({ keys: [KEY] }),
      stringKeys: ['REMOTE_USER'],
    })
    const frontApp = new Hono()
    // An environ middleware in front of the proxy app sets the user it forwards (signed).
    frontApp.all(
      '/front/*',
      mount((environ) => signingFront({ ...environ, REMOTE_USER: 'alice' })),
    )
    frontApp.all('/plain/*', proxy({ href: backend.origin, signer: createSigner({ keys: [KEY] }) }))
    const front = await serveHono(frontApp)

    const res = await send(front.origin, {
      method: 'POST',
      path: '/front/article/1?a=b',
      headers: { 'content-type': 'text/plain', 'x-forwarded-for': '198.51.100.66' },
      body: 'payload',
    })
    expect(res.status).toBe(200)
    expect(JSON.parse(res.body.toString())).toEqual({
      remoteAddr: '127.0.0.1',
      user: 'alice',
      scriptName: '/front',
      pathInfo: '/article/1',
      originalUrl: `${front.origin}/front/article/1?a=b`,
      body: 'payload',
    })

    const plain = await send(front.origin, { path: '/plain/x' })
    expect(JSON.parse(plain.body.toString())).toMatchObject({
      remoteAddr: '127.0.0.1',
      scriptName: '/plain',
      pathInfo: '/x',
    })

    // Straight to the backend, with the protocol headers but no signature: refused.
    const forged = await send(backend.origin, {
      path: '/app/article/1',
      headers: { 'x-forwarded-for': '203.0.113.1', 'x-forwarded-server': 'evil.example' },
    })
    expect(forged.status).toBe(401)
    expect(forged.headers['www-authenticate']).toBe('Signature realm="wsgiproxy"')
  })

  it('trusts the loopback socket peer with trustIps and nobody else', async () => {
    const app = new Hono<{ Variables: WsgiProxyVariables }>()
    app.use('/loopback/*', wsgiProxy({ trustIps: ['loopback'] }))
    app.use('/private/*', wsgiProxy({ trustIps: ['10.0.0.0/8'] }))
    app.get('*', (c) => c.text(c.get('environ').REMOTE_ADDR ?? 'none'))
    const server = await serveHono(app)
    const headers = { 'x-forwarded-for': '203.0.113.9' }
    expect((await send(server.origin, { path: '/loopback/x', headers })).body.toString()).toBe(
      '203.0.113.9',
    )
    expect((await send(server.origin, { path: '/private/x', headers })).body.toString()).toBe(
      '127.0.0.1',
    )
  })
})
