// Test support (not built): the Node fast path as an exact proxy to one upstream, in cleartext,
// over HTTPS and over HTTP/2 (TLS, ALPN h2).
import type { CopyableApp, Environ, ExactProxyOptions } from '@wsgiproxy/core'
import { exactProxy } from '@wsgiproxy/core'
import type { ServeOptions } from '@wsgiproxy/node'
import type { ProxyFront } from './forwarding-suite.ts'
import type { Running } from './servers.ts'
import { register } from './servers.ts'
import { serve, undiciTransport } from '@wsgiproxy/node'

/** The key and certificate (PEM) a TLS front serves, and the CA certificate its clients trust. */
export interface FrontTls {
  key: string
  cert: string
  ca: string
}

/**
 * Serves `exactProxy` over `undiciTransport()` on 127.0.0.1 port 0, sending every request to the
 * upstream on `port`; registered so core's `closeAll()` closes the server and the transport.
 */
export async function startNodeExactProxy(
  port: number,
  options: ExactProxyOptions = {},
): Promise<Running> {
  return startServed(port, options, {})
}

/**
 * {@link startNodeExactProxy} over HTTPS (`serve({ tls })`, HTTP/1.1 over TLS) with the
 * certificate `tls`.
 *
 * @param port - the upstream's port on 127.0.0.1
 * @param options - the exact proxy's options
 * @param tls - the front's key and certificate, and the CA its clients trust
 * @returns the running front, `https://` origin and `ca` included
 */
export async function startNodeHttpsExactProxy(
  port: number,
  options: ExactProxyOptions,
  tls: FrontTls,
): Promise<ProxyFront> {
  const front = await startServed(port, options, { tls: { key: tls.key, cert: tls.cert } })
  return { ...front, ca: tls.ca }
}

/**
 * {@link startNodeExactProxy} over HTTP/2 (`serve({ tls, http2: true })`: HTTP/2 by ALPN, HTTP/1.1
 * for clients that do not offer `h2`) with the certificate `tls`.
 *
 * @param port - the upstream's port on 127.0.0.1
 * @param options - the exact proxy's options
 * @param tls - the front's key and certificate, and the CA its clients trust
 * @returns the running front, `https://` origin and `ca` included
 */
export async function startNodeHttp2ExactProxy(
  port: number,
  options: ExactProxyOptions,
  tls: FrontTls,
): Promise<ProxyFront> {
  const front = await startServed(port, options, {
    tls: { key: tls.key, cert: tls.cert },
    http2: true,
  })
  return { ...front, ca: tls.ca }
}

/**
 * {@link startNodeExactProxy} with the bodies copied between the sockets (`serve({ byteCopy: true })`).
 *
 * @param port - the upstream's port on 127.0.0.1
 * @param options - the exact proxy's options
 * @returns the running front
 */
export async function startNodeByteCopyExactProxy(
  port: number,
  options: ExactProxyOptions = {},
): Promise<Running> {
  return startServed(port, options, { byteCopy: true })
}

async function startServed(
  port: number,
  options: ExactProxyOptions,
  serveOptions: Pick<ServeOptions, 'tls' | 'http2' | 'byteCopy'>,
): Promise<Running> {
  const transport = undiciTransport()
  const proxy = exactProxy({ allow: ['127.0.0.1'], ...options, transport })
  const toUpstream = (environ: Environ): Environ => ({
    ...environ,
    // The exact proxy keeps the front's scheme; the upstream is cleartext behind a TLS front.
    'wsgi.url_scheme': 'http',
    SERVER_NAME: '127.0.0.1',
    SERVER_PORT: String(port),
    HTTP_HOST: `127.0.0.1:${port}`,
  })
  const app: CopyableApp = Object.assign((environ: Environ) => proxy(toUpstream(environ)), {
    prepareCopy: (environ: Environ) => proxy.prepareCopy(toUpstream(environ)),
  })
  const served = await serve(app, serveOptions)
  const scheme = serveOptions.tls === undefined ? 'http' : 'https'
  return register({
    port: served.port,
    origin: `${scheme}://127.0.0.1:${served.port}`,
    close: async () => {
      await served.close()
      await transport.close()
    },
  })
}
