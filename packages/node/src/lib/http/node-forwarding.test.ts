// The core forwarding suite replayed over the Node fast path: serve() + undiciTransport().
import type { EnvironApp } from '@wsgiproxy/core'
import { createProxyApp, createSigner, createVerifier, proxyMiddleware } from '@wsgiproxy/core'
import { afterEach, describe, expect, it } from 'vitest'
import { describeForwarding } from '@wsgiproxy/test-kit/forwarding-suite'
import type { Running } from '@wsgiproxy/test-kit/servers'
import { closeAll, echoEnviron, register, send } from '@wsgiproxy/test-kit/servers'
import { serve } from './serve.ts'
import { undiciTransport } from '@wsgiproxy/core/undici'
import { startNodeExactProxy } from '@wsgiproxy/test-kit/node-proxy'

async function serveRegistered(app: EnvironApp): Promise<Running> {
  const served = await serve(app)
  return register({
    port: served.port,
    origin: `http://127.0.0.1:${served.port}`,
    close: served.close,
  })
}

describeForwarding('node listener, undiciTransport', startNodeExactProxy)

describe('signed forwarding on the Node path', () => {
  afterEach(closeAll)

  it('restores a signed request between two node listeners over undici', async () => {
    const keys = [{ id: 'k1', secret: new Uint8Array(32).fill(5) }]
    const backend = await serveRegistered(
      proxyMiddleware(echoEnviron as EnvironApp, {
        verifier: createVerifier({ keys }),
        requireSignature: true,
      }),
    )
    const transport = undiciTransport()
    const proxy = createProxyApp({
      href: `${backend.origin}/myapp?x=1`,
      transport,
      signer: createSigner({ keys }),
      stringKeys: ['REMOTE_USER'],
      onError: () => {},
    })
    const front = await serve((environ) => proxy({ ...environ, REMOTE_USER: 'alice' }), {
      scriptName: '/front',
    })
    register({
      port: front.port,
      origin: front.url,
      close: async () => {
        await front.close()
        await transport.close()
      },
    })
    const res = await send(`http://127.0.0.1:${front.port}`, {
      path: '/front/a%2Fb/%C3%A9?q=1',
      localAddress: '127.0.0.2',
    })
    expect(res.status).toBe(200)
    expect(JSON.parse(res.body.toString())).toMatchObject({
      SCRIPT_NAME: '/front',
      PATH_INFO: '/a/b/é',
      'wsgiproxy.raw_path': '/front/a%2Fb/%C3%A9',
      QUERY_STRING: 'q=1&x=1',
      HTTP_HOST: `127.0.0.1:${front.port}`,
      REMOTE_ADDR: '127.0.0.2',
      REMOTE_USER: 'alice',
    })
    const direct = await send(backend.origin, { path: '/myapp/x' })
    expect(direct.status).toBe(401)
  })
})
