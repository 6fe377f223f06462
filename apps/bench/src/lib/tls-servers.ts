// The servers of the HTTPS and HTTP/2 workloads: TLS from the client to the proxy with the run's
// self-signed certificate, plain HTTP/1.1 from the proxy to the upstream on loopback. Each is the
// plain server of `servers.ts` with the TLS options its docs give.
import type { BenchCertificate } from './certificate.ts'
import {
  startFastifyHttpProxy,
  startHonoProxy,
  startHttpProxy,
  startNodeListener,
} from './servers.ts'
import type { ServerInfo } from './servers.ts'

/** The server ids of this project's listener on the HTTPS and HTTP/2 workloads. */
export const TLS_OURS = { https: 'https-wsgiproxy-node', h2: 'h2-wsgiproxy-node' } as const

/** The certificate a TLS server was given, or an error saying it needs one. */
function required(certificate: BenchCertificate | undefined, id: string): BenchCertificate {
  if (certificate === undefined) {
    throw new Error(`server "${id}" serves TLS and needs the run's certificate (got none)`)
  }
  return certificate
}

/** The servers of the HTTPS workloads, then those of the HTTP/2 one, in table order. */
export const TLS_SERVERS: readonly ServerInfo[] = [
  {
    id: TLS_OURS.https,
    label: 'wsgiproxy node listener + undici, serve({ tls })',
    front: 'https',
    start: ([upstream], certificate) =>
      startNodeListener({ href: upstream }, { tls: required(certificate, TLS_OURS.https) }),
  },
  {
    id: 'https-http-proxy',
    label: 'http-proxy 1.18.1 on node:https',
    front: 'https',
    start: ([upstream], certificate) =>
      startHttpProxy(upstream, { tls: required(certificate, 'https-http-proxy') }),
  },
  {
    id: 'https-fastify-http-proxy',
    label: '@fastify/http-proxy 11.6.3 (fastify 5.12.8, https)',
    front: 'https',
    start: ([upstream], certificate) =>
      startFastifyHttpProxy(upstream, { tls: required(certificate, 'https-fastify-http-proxy') }),
  },
  {
    id: 'https-hono-proxy',
    label: 'hono/proxy (hono 4.13.19), @hono/node-server 2.1.9 on node:https',
    front: 'https',
    start: ([upstream], certificate) =>
      startHonoProxy(upstream, { tls: required(certificate, 'https-hono-proxy') }),
  },
  {
    id: TLS_OURS.h2,
    label: 'wsgiproxy node listener + undici, serve({ tls, http2: true })',
    front: 'h2',
    start: ([upstream], certificate) =>
      startNodeListener(
        { href: upstream },
        { tls: required(certificate, TLS_OURS.h2), http2: true },
      ),
  },
  {
    id: 'h2-fastify-http-proxy',
    label: '@fastify/http-proxy 11.6.3 (fastify 5.12.8, http2 + https)',
    front: 'h2',
    start: ([upstream], certificate) =>
      startFastifyHttpProxy(upstream, {
        tls: required(certificate, 'h2-fastify-http-proxy'),
        http2: true,
      }),
  },
]
