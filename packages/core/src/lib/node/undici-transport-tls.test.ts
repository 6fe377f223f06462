import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer as createHttpServer } from 'node:http'
import type { ServerOptions } from 'node:https'
import { createServer as createHttpsServer } from 'node:https'
import type { Server, Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { createServer as createTlsServer } from 'node:tls'
import { Agent } from 'undici'
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import type { AppResponse, Environ, WsgiProxyError } from '../../index.ts'
import { createProxyApp, exactProxy, toEnviron } from '../../index.ts'
import type { Running } from '@wsgiproxy/test-kit/servers'
import { closeAll, register } from '@wsgiproxy/test-kit/servers'
import type { TestCertificate } from '@wsgiproxy/test-kit/tls'
import {
  createCertificateAuthority,
  createClientCertificate,
  createServerCertificate,
  selfSignedCertificate,
} from '@wsgiproxy/test-kit/tls'
import type { UndiciTransport, UndiciTransportOptions } from './undici-transport.ts'
import { undiciTransport } from './undici-transport.ts'

interface Certificates {
  /** The private CA of the upstreams. */
  serverCa: TestCertificate
  /** For 127.0.0.1 and localhost, from `serverCa`. */
  server: TestCertificate
  /** For upstream.internal only (no address), from `serverCa`. */
  named: TestCertificate
  /** Expired yesterday, from `serverCa`. */
  expired: TestCertificate
  /** The CA the mutual-TLS upstreams trust for clients. */
  clientCa: TestCertificate
  /** From `clientCa`. */
  client: TestCertificate
  /** From a CA no upstream trusts. */
  stranger: TestCertificate
  /** Self-signed, for localhost, 127.0.0.1 and ::1. */
  selfSigned: TestCertificate
}

let certs: Certificates

beforeAll(async () => {
  const serverCa = await createCertificateAuthority('upstream CA')
  const clientCa = await createCertificateAuthority('client CA')
  const otherCa = await createCertificateAuthority('other CA')
  const day = 24 * 3600_000
  certs = {
    serverCa,
    server: await createServerCertificate(serverCa, ['localhost'], { ips: ['127.0.0.1'] }),
    named: await createServerCertificate(serverCa, ['upstream.internal']),
    expired: await createServerCertificate(serverCa, ['localhost'], {
      ips: ['127.0.0.1'],
      notBefore: new Date(Date.now() - 2 * day),
      notAfter: new Date(Date.now() - day),
    }),
    clientCa,
    client: await createClientCertificate(clientCa, 'proxy client'),
    stranger: await createClientCertificate(otherCa, 'proxy client'),
    selfSigned: await selfSignedCertificate(),
  }
})

const transports: UndiciTransport[] = []

function transportFor(options?: UndiciTransportOptions): UndiciTransport {
  const transport = undiciTransport(options)
  transports.push(transport)
  return transport
}

afterEach(async () => {
  vi.restoreAllMocks()
  await closeAll()
  await Promise.all(transports.splice(0).map((transport) => transport.close()))
})

interface Upstream extends Running {
  /** The node:https server. */
  server: Server
  /** Requests the upstream's application received. */
  requests: IncomingMessage[]
}

/** A node:https upstream on 127.0.0.1 port 0 that answers `ok`. */
async function startHttpsUpstream(
  options: ServerOptions,
  handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.end('ok'),
): Promise<Upstream> {
  const requests: IncomingMessage[] = []
  const server = createHttpsServer(options, (req, res) => {
    requests.push(req)
    handler(req, res)
  })
  return { ...(await listen(server)), server, requests }
}

async function listen(server: Server): Promise<Running> {
  const sockets = new Set<Socket>()
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  return register({
    port,
    origin: `https://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  })
}

/** An upstream that asks every client for a certificate from `certs.clientCa`, and refuses others. */
function startMutualTlsUpstream(
  extra: ServerOptions = {},
  handler?: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<Upstream> {
  return startHttpsUpstream(
    {
      ...certs.server,
      requestCert: true,
      rejectUnauthorized: true,
      ca: certs.clientCa.cert,
      ...extra,
    },
    handler,
  )
}

interface Outcome {
  status: number
  body: string
  errors: WsgiProxyError[]
}

/** One request through `createProxyApp(origin)` with the transport; the errors `onError` saw. */
async function forward(origin: string, transport: UndiciTransport): Promise<Outcome> {
  const errors: WsgiProxyError[] = []
  const app = createProxyApp({
    href: origin,
    transport,
    onError: (error) => void errors.push(error),
  })
  const response = await app(toEnviron(new Request('http://front.test/x')))
  return { status: response.status, body: await textOf(response), errors }
}

async function textOf(response: AppResponse): Promise<string> {
  const chunks: Uint8Array[] = []
  for await (const chunk of response.body ?? []) chunks.push(chunk)
  return Buffer.concat(chunks).toString()
}

/** The server name the client sent (SNI), as the upstream saw it; `false` or `null` for none. */
function sniOf(req: IncomingMessage): string | false | null {
  return (req.socket as TLSSocket).servername
}

/**
 * The message of the one error of a 502 UPSTREAM_TLS_FAILED outcome, after checking that the
 * client sees neither it nor the failure's code.
 */
function tlsFailureOf(outcome: Outcome): string {
  expect(outcome.status).toBe(502)
  expect(outcome.errors.map((error) => error.code)).toEqual(['UPSTREAM_TLS_FAILED'])
  const [error] = outcome.errors as [WsgiProxyError]
  expect(error.expose).toBe(false)
  expect(JSON.parse(outcome.body)).toMatchObject({ status: 502, code: 'UPSTREAM_TLS_FAILED' })
  expect(outcome.body).not.toContain(error.message.slice(error.message.indexOf('(')))
  return error.message
}

describe('undiciTransport tls: whom it trusts', () => {
  it('refuses an upstream whose certificate a private CA issued: 502 UPSTREAM_TLS_FAILED', async () => {
    const upstream = await startHttpsUpstream(certs.server)
    const outcome = await forward(upstream.origin, transportFor())
    expect(tlsFailureOf(outcome)).toMatch(
      /^the TLS handshake with https:\/\/127\.0\.0\.1:\d+ failed: its certificate is not trusted \(UNABLE_TO_VERIFY_LEAF_SIGNATURE: unable to verify the first certificate\); trust the CA that issued it with undiciTransport\(\{ tls: \{ ca \} \}\)$/,
    )
    expect(upstream.requests).toEqual([])
  })

  it('serves an upstream whose certificate a private CA issued with that CA in tls.ca', async () => {
    const upstream = await startHttpsUpstream(certs.server)
    const warnings: string[] = []
    const transport = transportFor({
      tls: { ca: certs.serverCa.cert },
      onWarning: (message) => void warnings.push(message),
    })
    for (let i = 0; i < 2; i++) {
      expect(await forward(upstream.origin, transport)).toMatchObject({ status: 200, body: 'ok' })
    }
    expect(upstream.requests).toHaveLength(2)
    expect(warnings).toEqual([])
  })

  it('takes tls.ca as a Buffer or a list', async () => {
    const upstream = await startHttpsUpstream(certs.server)
    for (const ca of [
      Buffer.from(certs.serverCa.cert),
      [certs.clientCa.cert, Buffer.from(certs.serverCa.cert)],
    ]) {
      const outcome = await forward(upstream.origin, transportFor({ tls: { ca } }))
      expect(outcome).toMatchObject({ status: 200, body: 'ok' })
    }
  })

  it.each([
    ['a self-signed certificate', 'selfSigned', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'tls: { ca }'],
    ['an expired certificate', 'expired', 'CERT_HAS_EXPIRED', 'renew it'],
    ['a certificate for another name', 'named', 'ERR_TLS_CERT_ALTNAME_INVALID', 'servername'],
  ] as const)('refuses %s even with its CA trusted', async (_case, which, code, hint) => {
    const upstream = await startHttpsUpstream(certs[which])
    const outcome = await forward(
      upstream.origin,
      transportFor({ tls: { ca: certs.serverCa.cert } }),
    )
    const message = tlsFailureOf(outcome)
    expect(message).toContain(code)
    expect(message).toContain(hint)
    expect(upstream.requests).toEqual([])
  })

  it('says when an https:// upstream speaks plain HTTP', async () => {
    const server = createHttpServer((_req, res) => res.end('plain'))
    const upstream = await listen(server)
    const outcome = await forward(upstream.origin, transportFor())
    expect(tlsFailureOf(outcome)).toContain(
      'it does not speak TLS on this port (ERR_SSL_WRONG_VERSION_NUMBER',
    )
  })
})

describe('undiciTransport tls: mutual TLS', () => {
  it('serves an upstream that requires a client certificate with tls.cert and tls.key', async () => {
    const upstream = await startMutualTlsUpstream()
    const transport = transportFor({
      tls: { ca: certs.serverCa.cert, cert: certs.client.cert, key: certs.client.key },
    })
    expect(await forward(upstream.origin, transport)).toMatchObject({ status: 200, body: 'ok' })
    const [request] = upstream.requests as [IncomingMessage]
    expect((request.socket as TLSSocket).getPeerCertificate().subject.CN).toBe('proxy client')
  })

  it.each([
    ['TLSv1.3', 'it requires a client certificate (ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED'],
    ['TLSv1.2', 'it refused the handshake (ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE'],
  ] as const)(
    'reports a missing client certificate the upstream requires (%s) as 502 UPSTREAM_TLS_FAILED',
    async (version, says) => {
      const upstream = await startMutualTlsUpstream({ maxVersion: version })
      const outcome = await forward(
        upstream.origin,
        transportFor({ tls: { ca: certs.serverCa.cert } }),
      )
      expect(tlsFailureOf(outcome)).toContain(says)
      expect(upstream.requests).toEqual([])
    },
  )

  // Node's https server sends no alert for a client certificate it does not trust: under TLS 1.2
  // it resets the handshake, under TLS 1.3 it closes the connection after it.
  it.each([
    ['TLSv1.3', 'it closed the connection after the TLS 1.3 handshake without accepting it'],
    ['TLSv1.2', 'it closed the connection during the handshake'],
  ] as const)(
    'reports a client certificate from a CA the upstream does not trust (%s) as 502 UPSTREAM_TLS_FAILED',
    async (version, says) => {
      const upstream = await startMutualTlsUpstream({ maxVersion: version })
      const outcome = await forward(
        upstream.origin,
        transportFor({
          tls: { ca: certs.serverCa.cert, cert: certs.stranger.cert, key: certs.stranger.key },
        }),
      )
      const message = tlsFailureOf(outcome)
      expect(message).toContain(says)
      expect(message).toContain('undiciTransport({ tls: { cert, key } })')
      expect(upstream.requests).toEqual([])
    },
  )

  it('reports a reset right after the TLS 1.3 handshake with a client certificate as UPSTREAM_TLS_FAILED, sent once', async () => {
    // A TLS server that resets (RST, not FIN) the connection of a client it does not trust.
    let handshakes = 0
    const raw = new Map<number, Socket>()
    const server = createTlsServer({
      ...certs.server,
      requestCert: true,
      rejectUnauthorized: false,
      ca: certs.clientCa.cert,
    })
    server.on('connection', (socket: Socket) => raw.set(socket.remotePort ?? 0, socket))
    server.on('secureConnection', (socket: TLSSocket) => {
      handshakes++
      if (!socket.authorized) raw.get(socket.remotePort ?? 0)?.resetAndDestroy()
    })
    const upstream = await listen(server)
    const outcome = await forward(
      upstream.origin,
      transportFor({
        tls: { ca: certs.serverCa.cert, cert: certs.stranger.cert, key: certs.stranger.key },
      }),
    )
    expect(tlsFailureOf(outcome)).toContain('as a server does that refuses the client certificate')
    expect(outcome.errors[0]?.cause).toMatchObject({ code: 'ECONNRESET' })
    // Not sent again, as a reset of a pooled connection would be: the handshake would fail again.
    expect(handshakes).toBe(1)
  })

  it('reports a reset after the upstream accepted the handshake, or on a resumed session, as UPSTREAM_RESET', async () => {
    // Session tickets (the upstream's word that it accepted the handshake) follow the handshake
    // at once; a reset within milliseconds of it, before they went out, would read as a refusal.
    const resumed: boolean[] = []
    const upstream = await startMutualTlsUpstream({}, (req) => {
      resumed.push((req.socket as TLSSocket).isSessionReused())
      setTimeout(() => req.socket.destroy(), 100)
    })
    const outcome = await forward(
      upstream.origin,
      transportFor({
        tls: { ca: certs.serverCa.cert, cert: certs.client.cert, key: certs.client.key },
      }),
    )
    expect(outcome.status).toBe(502)
    expect(outcome.errors.map((error) => error.code)).toEqual(['UPSTREAM_RESET'])
    // The GET was sent once more, on a resumed TLS session (no certificate checked, no new
    // ticket needed), and reset again: still a reset.
    expect(upstream.requests).toHaveLength(2)
    expect(resumed).toEqual([false, true])
  })
})

describe('undiciTransport tls: the server name', () => {
  it('checks the certificate against tls.servername when the upstream is an IP address', async () => {
    const upstream = await startHttpsUpstream(certs.named)
    const refused = await forward(
      upstream.origin,
      transportFor({ tls: { ca: certs.serverCa.cert } }),
    )
    expect(tlsFailureOf(refused)).toContain('(ERR_TLS_CERT_ALTNAME_INVALID')
    const served = await forward(
      upstream.origin,
      transportFor({ tls: { ca: certs.serverCa.cert, servername: 'upstream.internal' } }),
    )
    expect(served).toMatchObject({ status: 200, body: 'ok' })
    expect(upstream.requests.map(sniOf)).toEqual(['upstream.internal'])
  })

  it('takes the server name from Host by default, and from tls.servername when given', async () => {
    const upstream = await startHttpsUpstream(certs.named)
    const environ = (host: string): Environ => ({
      ...toEnviron(new Request(`https://${host}:${upstream.port}/p`)),
      HTTP_HOST: `${host}:${upstream.port}`,
      SERVER_NAME: '127.0.0.1',
      SERVER_PORT: String(upstream.port),
    })
    // The exact proxy with `resolve` connects to an address and sends Host as it came.
    const byHost = exactProxy({
      allow: ['127.0.0.1', 'upstream.internal'],
      transport: transportFor({ tls: { ca: certs.serverCa.cert } }),
    })
    const fromHost = await byHost(environ('upstream.internal'))
    expect([fromHost.status, await textOf(fromHost)]).toEqual([200, 'ok'])
    const overridden = exactProxy({
      allow: ['127.0.0.1', 'public.example'],
      transport: transportFor({
        tls: { ca: certs.serverCa.cert, servername: 'upstream.internal' },
      }),
    })
    const fromOption = await overridden(environ('public.example'))
    expect([fromOption.status, await textOf(fromOption)]).toEqual([200, 'ok'])
    expect(upstream.requests.map(sniOf)).toEqual(['upstream.internal', 'upstream.internal'])
    expect(upstream.requests.map((req) => req.headers.host)).toEqual([
      `upstream.internal:${upstream.port}`,
      `public.example:${upstream.port}`,
    ])
  })
})

describe('undiciTransport tls: rejectUnauthorized false', () => {
  it('connects to a self-signed upstream and warns once for many requests', async () => {
    const upstream = await startHttpsUpstream(certs.selfSigned)
    const warnings: string[] = []
    const transport = transportFor({
      tls: { rejectUnauthorized: false },
      onWarning: (message) => void warnings.push(message),
    })
    const outcomes = await Promise.all(
      Array.from({ length: 5 }, () => forward(upstream.origin, transport)),
    )
    for (let i = 0; i < 3; i++) outcomes.push(await forward(upstream.origin, transport))
    expect(outcomes.map((outcome) => outcome.status)).toEqual(Array(8).fill(200))
    expect(warnings).toHaveLength(1)
    expect(warnings[0]).toContain('tls.rejectUnauthorized is false')
    expect(warnings[0]).toContain(upstream.origin)
    expect(warnings[0]).toContain('anyone on the network path can read and change the traffic')
    expect(warnings[0]).toContain('tls.ca')
  })

  it('warns on console.warn by default, and only when it reaches an https:// upstream', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {})
    const upstream = await startHttpsUpstream(certs.selfSigned)
    const transport = transportFor({ tls: { rejectUnauthorized: false } })
    expect(warn).not.toHaveBeenCalled()
    for (let i = 0; i < 3; i++) {
      expect((await forward(upstream.origin, transport)).status).toBe(200)
    }
    expect(warn).toHaveBeenCalledTimes(1)
    expect(warn.mock.calls[0]?.[0]).toMatch(/^wsgiproxy: undiciTransport: tls.rejectUnauthorized/)
  })
})

describe('undiciTransport tls options', () => {
  const cases: Array<[string, () => unknown, string]> = [
    [
      'a ca without a certificate',
      () => ({ ca: 'not PEM' }),
      'undiciTransport.tls.ca: expected PEM certificates',
    ],
    ['a ca of the wrong type', () => ({ ca: 42 }), 'undiciTransport.tls.ca'],
    [
      'a ca list with a broken entry',
      () => ({
        ca: [certs.serverCa.cert, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'],
      }),
      'undiciTransport.tls.ca.1: certificate 1 cannot be read',
    ],
    ['an empty ca list', () => ({ ca: [] }), 'undiciTransport.tls.ca: expected at least one'],
    [
      'a cert without its key',
      () => ({ cert: certs.client.cert }),
      'undiciTransport.tls.key: expected the private key',
    ],
    [
      'a key without its cert',
      () => ({ key: certs.client.key }),
      'undiciTransport.tls.cert: expected the certificate',
    ],
    [
      'a cert that is not PEM',
      () => ({ cert: 'x', key: certs.client.key }),
      'undiciTransport.tls.cert: cannot be read',
    ],
    [
      'a key that is not PEM',
      () => ({ cert: certs.client.cert, key: 'x' }),
      'undiciTransport.tls.key: cannot be read',
    ],
    [
      'a key of another certificate',
      () => ({ cert: certs.client.cert, key: certs.stranger.key }),
      'undiciTransport.tls.key: does not match tls.cert',
    ],
    [
      'an IP address as servername',
      () => ({ servername: '127.0.0.1' }),
      'undiciTransport.tls.servername: expected a DNS name (got the IP address',
    ],
    [
      'a servername that is no DNS name',
      () => ({ servername: 'not a name' }),
      'undiciTransport.tls.servername: expected a DNS name (got "not a name")',
    ],
    [
      'a rejectUnauthorized that is not a boolean',
      () => ({ rejectUnauthorized: 'no' }),
      'undiciTransport.tls.rejectUnauthorized: expected a boolean',
    ],
    [
      'an unknown tls option',
      () => ({ passphrase: 'x' }),
      'undiciTransport.tls: unknown option "passphrase"',
    ],
  ]

  it.each(cases)('refuses %s', (_case, tls, message) => {
    const attempt = (): unknown => undiciTransport({ tls: tls() } as UndiciTransportOptions)
    expect(attempt).toThrow(message)
    expect(attempt).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS', expose: true }))
  })

  it('refuses tls with a dispatcher, and an onWarning that is not a function', async () => {
    const agent = new Agent()
    expect(() => undiciTransport({ dispatcher: agent, tls: {} })).toThrow(
      'undiciTransport.tls: cannot be combined with dispatcher',
    )
    expect(() =>
      undiciTransport({ onWarning: 'log' } as unknown as UndiciTransportOptions),
    ).toThrow('undiciTransport.onWarning: expected a function')
    await agent.close()
  })
})
