// The core forwarding suite replayed over the Node fast path: serve() + undiciTransport(), in
// cleartext, over HTTPS and over HTTP/2 (TLS, ALPN h2).
import type { EnvironApp } from '@wsgiproxy/core'
import { createProxyApp, createSigner, createVerifier, proxyMiddleware } from '@wsgiproxy/core'
import { afterEach, describe, expect, it } from 'vitest'
import { describeForwarding } from '@wsgiproxy/test-kit/forwarding-suite'
import type { Running } from '@wsgiproxy/test-kit/servers'
import {
  closeAll,
  echoEnviron,
  freePort,
  register,
  registerServed,
  send,
} from '@wsgiproxy/test-kit/servers'
import { serve } from './serve.ts'
import { undiciTransport } from '@wsgiproxy/core/undici'
import type { FrontTls } from '@wsgiproxy/test-kit/node-proxy'
import {
  startNodeByteCopyExactProxy,
  startNodeExactProxy,
  startNodeHttp2ExactProxy,
  startNodeHttpsExactProxy,
} from '@wsgiproxy/test-kit/node-proxy'
import { createCertificateAuthority, createServerCertificate } from '@wsgiproxy/test-kit/tls'

async function serveRegistered(app: EnvironApp): Promise<Running> {
  const served = await serve(app)
  return register({
    port: served.port,
    origin: `http://127.0.0.1:${served.port}`,
    close: served.close,
  })
}

// One certificate for the file: a private CA and the 127.0.0.1 certificate it issued.
const ca = await createCertificateAuthority()
const tls: FrontTls = {
  ...(await createServerCertificate(ca, ['localhost'], { ips: ['127.0.0.1'] })),
  ca: ca.cert,
}

describeForwarding('node listener, undiciTransport', startNodeExactProxy)
describeForwarding('node byte copy (serve byteCopy)', startNodeByteCopyExactProxy)
describeForwarding(
  'node listener over HTTPS, undiciTransport',
  (port, options) => startNodeHttpsExactProxy(port, options, tls),
  'https',
)
describeForwarding(
  'node listener over HTTP/2 (TLS, ALPN h2), undiciTransport',
  (port, options) => startNodeHttp2ExactProxy(port, options, tls),
  'h2',
)

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
    registerServed(front, transport)
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

describe('a request body when the upstream cannot be reached', () => {
  afterEach(closeAll)

  it.each([false, true])(
    'answers 502 to a POST with its body whole (byteCopy %s)',
    async (byteCopy) => {
      const port = await freePort()
      const transport = undiciTransport()
      const served = await serve(
        createProxyApp({ href: `http://127.0.0.1:${port}/`, transport, onError: () => {} }),
        { byteCopy },
      )
      registerServed(served, transport)
      const res = await send(served.url, { method: 'POST', body: Buffer.from('abc') })
      expect(res.status).toBe(502)
      expect(JSON.parse(res.body.toString())).toMatchObject({ status: 502 })
    },
  )
})
