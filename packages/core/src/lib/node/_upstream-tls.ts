// TLS to https:// upstreams for undiciTransport: the `tls` option's schema, which checks the PEM
// it is given at construction, and a connector that reports a handshake the upstream refused as
// what it was instead of the "other side closed" undici would say.
import { X509Certificate } from 'node:crypto'
import { isIP } from 'node:net'
import type { ConnectionOptions, TLSSocket } from 'node:tls'
import { createSecureContext } from 'node:tls'
import type { buildConnector as BuildConnector } from 'undici'
import * as z from 'zod'
import { WsgiProxyError } from '../errors.ts'
import { flag, optionsObject } from '../schemas.ts'
import { buildConnector } from './_undici-parts.ts'
import type { UndiciTransportTls } from './undici-transport.ts'

type Pem = string | Buffer
type TlsConnectOptions = Pick<ConnectionOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized'>

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g

// A DNS name (RFC 1123 labels), as SNI carries it (RFC 6066 §3: never an IP address).
const DNS_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$/i

const pem = (): z.ZodType<Pem> =>
  z.custom<Pem>((value) => typeof value === 'string' || Buffer.isBuffer(value), {
    error: (issue) => `expected PEM text, a string or a Buffer (got ${typeof issue.input})`,
  })

const upstreamTls = optionsObject({
  ca: z.union([pem(), z.array(pem())]).optional(),
  cert: pem().optional(),
  key: pem().optional(),
  servername: z
    .string({ error: (issue) => `expected a DNS name (got ${typeof issue.input})` })
    .optional(),
  rejectUnauthorized: flag().optional(),
}).superRefine((tls, context) => {
  const problem = (path: PropertyKey[], message: string): void =>
    context.addIssue({ code: 'custom', path, message })
  const cas = tls.ca === undefined ? [] : Array.isArray(tls.ca) ? tls.ca : [tls.ca]
  if (Array.isArray(tls.ca) && cas.length === 0)
    problem(['ca'], 'expected at least one certificate')
  cas.forEach((ca, index) => {
    const reason = caProblem(ca)
    if (reason !== undefined) problem(Array.isArray(tls.ca) ? ['ca', index] : ['ca'], reason)
  })
  if (tls.cert !== undefined && tls.key === undefined) {
    problem(['key'], 'expected the private key of tls.cert (got none)')
  } else if (tls.key !== undefined && tls.cert === undefined) {
    problem(['cert'], 'expected the certificate of tls.key (got none)')
  } else if (tls.cert !== undefined && tls.key !== undefined) {
    const certProblem = contextProblem({ cert: tls.cert })
    const keyProblem = contextProblem({ key: tls.key })
    if (certProblem !== undefined) problem(['cert'], `cannot be read (${certProblem})`)
    if (keyProblem !== undefined) problem(['key'], `cannot be read (${keyProblem})`)
    if (certProblem === undefined && keyProblem === undefined) {
      const pairProblem = contextProblem({ cert: tls.cert, key: tls.key })
      if (pairProblem !== undefined) problem(['key'], `does not match tls.cert (${pairProblem})`)
    }
  }
  const name = tls.servername
  if (name !== undefined && isIP(name) !== 0) {
    problem(
      ['servername'],
      `expected a DNS name (got the IP address ${JSON.stringify(name)}; RFC 6066 §3 allows no address, and a certificate for an address is checked against the address connected to without it)`,
    )
  } else if (name !== undefined && !DNS_NAME.test(name)) {
    problem(['servername'], `expected a DNS name (got ${JSON.stringify(name)})`)
  }
})

/** The schema of {@link UndiciTransportTls}: PEM that Node reads, a key that fits its cert. */
export const UPSTREAM_TLS: z.ZodType<UndiciTransportTls> =
  upstreamTls as z.ZodType<UndiciTransportTls>

/** Why PEM text holds no certificate Node can read; `undefined` when every one reads. */
function caProblem(ca: Pem): string | undefined {
  // Node's `ca` skips what it cannot read without a word; a CA that silently trusts nothing would
  // show only as refused upstreams.
  const text = typeof ca === 'string' ? ca : ca.toString('latin1')
  const blocks = text.match(PEM_CERTIFICATE) ?? []
  if (blocks.length === 0) {
    return 'expected PEM certificates (got no "-----BEGIN CERTIFICATE-----" block)'
  }
  for (const [index, block] of blocks.entries()) {
    const reason = failureOf(() => new X509Certificate(block))
    if (reason !== undefined) return `certificate ${index + 1} cannot be read (${reason})`
  }
  return undefined
}

function contextProblem(options: { cert?: Pem; key?: Pem }): string | undefined {
  return failureOf(() => createSecureContext(options))
}

/** What `attempt` threw, as a message; `undefined` when it did not throw. */
function failureOf(attempt: () => unknown): string | undefined {
  try {
    attempt()
    return undefined
  } catch (error) {
    return error instanceof Error ? error.message : String(error)
  }
}

/** The settings of `tls` that go to `tls.connect()` (the server name goes with each request). */
export function toConnectOptions(tls: UndiciTransportTls | undefined): TlsConnectOptions {
  const options: TlsConnectOptions = {}
  const ca = tls?.ca
  if (ca !== undefined) options.ca = typeof ca === 'string' || Buffer.isBuffer(ca) ? ca : [...ca]
  if (tls?.cert !== undefined) options.cert = tls.cert
  if (tls?.key !== undefined) options.key = tls.key
  if (tls?.rejectUnauthorized !== undefined) options.rejectUnauthorized = tls.rejectUnauthorized
  return options
}

// The error a TLS refusal really was, by the reset undici reports in its place.
const REFUSALS = new WeakMap<object, Error>()

/**
 * Why a request failed: the TLS refusal behind a reset the connector saw (see
 * {@link createTlsConnector}), else the error itself.
 *
 * @param error - what undici reported
 * @returns the error to map
 */
export function refusalBehind(error: unknown): unknown {
  if (typeof error !== 'object' || error === null) return error
  return REFUSALS.get(error) ?? error
}

/**
 * undici's connector with the given `tls.connect()` options, watching each TLS connection until
 * the upstream has shown that it accepted the handshake.
 *
 * undici reports a connection that ends before any answer as "other side closed" (or as the
 * reset), never as a TLS failure, and it does not read an alert the upstream sent just before
 * closing. That is how a refused client certificate looks under TLS 1.3: the client's handshake is
 * over, and the request on its way, before the server has checked the certificate, and a server
 * then sends `certificate_required` or `bad_certificate` and closes
 * ([RFC 8446 §4.4.2.4](https://www.rfc-editor.org/rfc/rfc8446#section-4.4.2.4)); Node's own
 * https server closes without any alert when it does not trust the certificate. So until the
 * upstream sends something (a response, or a session ticket, which a server sends once it has
 * accepted the handshake,
 * [RFC 8446 §4.6.1](https://www.rfc-editor.org/rfc/rfc8446#section-4.6.1)), a connection that
 * ends is reported as the alert it got, or, with a client certificate under TLS 1.3, as
 * `UPSTREAM_TLS_FAILED`: a server without session tickets that closes a new connection without
 * answering would read the same. A resumed session is not watched for that: its client
 * certificate was accepted before.
 *
 * @param options - undici's `connect` options (timeout, socket path, TLS)
 * @param clientCertificate - whether `options` shows a client certificate
 * @returns the connector, for the Agent's `connect`
 */
export function createTlsConnector(
  options: BuildConnector.BuildOptions,
  clientCertificate: boolean,
): BuildConnector.connector {
  const connect = buildConnector(options)
  return (target, callback) => {
    connect(target, (...result) => {
      const [error, socket] = result
      if (error === null && target.protocol === 'https:') {
        const origin = `https://${target.host ?? target.hostname}`
        watchHandshake(socket as TLSSocket, origin, clientCertificate)
      }
      callback(...result)
    })
  }
}

function watchHandshake(socket: TLSSocket, origin: string, clientCertificate: boolean): void {
  // A resumed session was accepted before, client certificate and all: nothing is checked again.
  const unconfirmed =
    clientCertificate && socket.getProtocol() === 'TLSv1.3' && !socket.isSessionReused()
  let alert: Error | undefined
  let ticket = false
  const refusal = (cause?: Error): Error | undefined => {
    if (alert !== undefined) return alert
    if (!unconfirmed || ticket) return undefined
    return new WsgiProxyError(
      'UPSTREAM_TLS_FAILED',
      `the TLS handshake with ${origin} failed: it closed the connection after the TLS 1.3 handshake without accepting it (no session ticket, no answer), as a server does that refuses the client certificate; give one that its CA issued with undiciTransport({ tls: { cert, key } })`,
      cause === undefined ? {} : { cause },
    )
  }
  const onSession = (): void => {
    ticket = true
  }
  const onReadable = (): void => {
    // Runs before undici's listener reads the data: the upstream answered.
    if (socket.readableLength > 0) stop()
  }
  const onError = (error: Error): void => {
    const code = (error as { code?: unknown }).code
    if (typeof code !== 'string') return
    if (code.startsWith('ERR_SSL_') || code === 'EPROTO') {
      alert ??= error
    } else if (code === 'ECONNRESET' || code === 'EPIPE') {
      const replacement = refusal(error)
      if (replacement !== undefined) REFUSALS.set(error, replacement)
    }
  }
  const onEnd = (): void => {
    // Before undici's 'end' listener, which would destroy the socket with "other side closed".
    const replacement = refusal()
    if (replacement !== undefined) socket.destroy(replacement)
  }
  const stop = (): void => {
    socket.off('session', onSession)
    socket.off('readable', onReadable)
    socket.off('error', onError)
    socket.off('end', onEnd)
    socket.off('close', stop)
  }
  socket.on('session', onSession)
  socket.on('readable', onReadable)
  socket.on('error', onError)
  socket.on('end', onEnd)
  socket.on('close', stop)
}
