// How `wsgiproxy` reaches its upstream: TLS with a private CA and a client certificate (mTLS),
// HTTP/2 (h2c) to a gRPC server, and the cleartext HTTP/2 front (--h2c) a gRPC client speaks.
import { mkdtempSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:https'
import type { Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { TestCertificate } from '@wsgiproxy/test-kit/tls'
import {
  createCertificateAuthority,
  createClientCertificate,
  createServerCertificate,
} from '@wsgiproxy/test-kit/tls'
import { cleanup, runCli, startCli } from './test/run-cli.ts'

const servers = new Set<Server | grpc.Server>()
let ca: TestCertificate
let otherCa: TestCertificate
let server: TestCertificate
let client: TestCertificate
let dir: string

beforeAll(async () => {
  ca = await createCertificateAuthority()
  otherCa = await createCertificateAuthority('another CA')
  server = await createServerCertificate(ca, ['upstream.test'], { ips: ['127.0.0.1'] })
  client = await createClientCertificate(ca, 'wsgiproxy')
  dir = mkdtempSync(join(tmpdir(), 'wsgiproxy-upstream-'))
  for (const [name, text] of Object.entries({
    'ca.pem': ca.cert,
    'other-ca.pem': otherCa.cert,
    'client.pem': client.cert,
    'client-key.pem': client.key,
  })) {
    writeFileSync(join(dir, name), text)
  }
})

afterEach(async () => {
  await cleanup()
  for (const running of servers) {
    if (running instanceof grpc.Server) running.forceShutdown()
    else {
      running.closeAllConnections()
      running.close()
    }
  }
  servers.clear()
})

/** An HTTPS upstream with the private CA's certificate that asks for a client certificate. */
async function mtlsUpstream(): Promise<string> {
  const upstream = createServer(
    { ...server, ca: ca.cert, requestCert: true, rejectUnauthorized: true },
    (req, res) => {
      const peer = (req.socket as TLSSocket).getPeerCertificate()
      res.end(`hello ${peer.subject?.CN ?? 'nobody'}`)
    },
  )
  servers.add(upstream)
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  return `https://127.0.0.1:${(upstream.address() as AddressInfo).port}`
}

function writeConfig(upstream: Record<string, unknown>, href: string): string {
  const file = join(dir, `config-${Math.random().toString(36).slice(2)}.json`)
  writeFileSync(
    file,
    JSON.stringify({
      listen: '127.0.0.1:0',
      routes: [{ path: '/', type: 'proxy', href, upstream }],
    }),
  )
  return file
}

describe('upstream TLS', () => {
  it('reaches an mTLS upstream with the route ca, cert and key (paths relative to the file)', async () => {
    const href = await mtlsUpstream()
    const file = writeConfig({ ca: 'ca.pem', cert: 'client.pem', key: 'client-key.pem' }, href)
    const cli = await startCli(['serve', '--config', file])
    const response = await fetch(`${cli.url}/`)
    expect(response.status).toBe(200)
    expect(await response.text()).toBe('hello wsgiproxy')
  })

  it('answers 502 UPSTREAM_TLS_FAILED when the CA does not match or no client certificate is given', async () => {
    const href = await mtlsUpstream()
    for (const upstream of [
      { ca: 'other-ca.pem', cert: 'client.pem', key: 'client-key.pem' },
      { ca: 'ca.pem' },
    ]) {
      const cli = await startCli(['serve', '--config', writeConfig(upstream, href)])
      const response = await fetch(`${cli.url}/`)
      expect(response.status).toBe(502)
      expect(await response.json()).toMatchObject({ code: 'UPSTREAM_TLS_FAILED' })
    }
  })

  it('takes the same from wsgiproxy proxy --upstream-ca/--upstream-cert/--upstream-key', async () => {
    const href = await mtlsUpstream()
    const cli = await startCli([
      'proxy',
      '--listen',
      '127.0.0.1:0',
      '--upstream-ca',
      join(dir, 'ca.pem'),
      '--upstream-cert',
      join(dir, 'client.pem'),
      '--upstream-key',
      join(dir, 'client-key.pem'),
      href,
    ])
    const response = await fetch(`${cli.url}/`)
    expect(await response.text()).toBe('hello wsgiproxy')
  })

  it('refuses unreadable or mismatched files before listening, naming the route', async () => {
    const missing = await runCli([
      'serve',
      '--config',
      writeConfig({ ca: 'nope.pem' }, 'https://127.0.0.1:1'),
    ])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/cannot read route \/: upstream\.ca .*nope\.pem: ENOENT/)
    const mismatched = await runCli([
      'serve',
      '--config',
      writeConfig({ cert: 'client.pem', key: 'ca.pem' }, 'https://127.0.0.1:1'),
    ])
    expect(mismatched.code).toBe(1)
    expect(mismatched.stderr).toMatch(/route \/: upstream\.key/)
    const half = await runCli(['proxy', '--upstream-cert', 'c.pem', 'https://127.0.0.1:1'])
    expect(half.code).toBe(1)
    expect(half.stderr).toMatch(/--upstream-cert needs --upstream-key/)
  })
})

// A hand-written gRPC service (JSON messages): unary, and a bidirectional echo.
const json = {
  serialize: (value: unknown): Buffer => Buffer.from(JSON.stringify(value)),
  deserialize: (bytes: Buffer): { text: string } =>
    JSON.parse(bytes.toString()) as { text: string },
}
const method = (name: string, stream: boolean) => ({
  path: `/wsgiproxy.test.Echo/${name}`,
  requestStream: stream,
  responseStream: stream,
  requestSerialize: json.serialize,
  requestDeserialize: json.deserialize,
  responseSerialize: json.serialize,
  responseDeserialize: json.deserialize,
})
// Calls take milliseconds; ten seconds leave room for a loaded machine.
const deadline = (): Date => new Date(Date.now() + 10_000)

const ECHO: grpc.ServiceDefinition = { unary: method('Unary', false), chat: method('Chat', true) }

interface EchoClient extends grpc.Client {
  unary(
    request: { text: string },
    options: grpc.CallOptions,
    callback: grpc.requestCallback<{ text: string }>,
  ): grpc.ClientUnaryCall
  chat(options: grpc.CallOptions): grpc.ClientDuplexStream<{ text: string }, { text: string }>
}

async function grpcUpstream(): Promise<number> {
  const upstream = new grpc.Server()
  upstream.addService(ECHO, {
    unary: (
      call: grpc.ServerUnaryCall<{ text: string }, { text: string }>,
      callback: grpc.sendUnaryData<{ text: string }>,
    ) => {
      const trailer = new grpc.Metadata()
      trailer.set('x-trailer', 'unary')
      callback(null, { text: `echo ${call.request.text}` }, trailer)
    },
    chat: (call: grpc.ServerDuplexStream<{ text: string }, { text: string }>) => {
      call.on('data', (message: { text: string }) => call.write({ text: `echo ${message.text}` }))
      call.on('end', () => call.end())
    },
  })
  servers.add(upstream)
  return new Promise((resolve, reject) =>
    upstream.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, port) =>
      error === null ? resolve(port) : reject(error),
    ),
  )
}

describe('gRPC through wsgiproxy proxy --h2c --upstream-http2', () => {
  it('passes a unary call (trailing metadata, status OK) and a bidirectional stream', async () => {
    const port = await grpcUpstream()
    const cli = await startCli([
      'proxy',
      '--listen',
      '127.0.0.1:0',
      '--h2c',
      '--upstream-http2',
      `http://127.0.0.1:${port}`,
    ])
    const Client = grpc.makeGenericClientConstructor(ECHO, 'Echo')
    const stub = new Client(
      cli.url.replace('http://', ''),
      grpc.credentials.createInsecure(),
    ) as unknown as EchoClient
    try {
      const unary = await new Promise<{ reply: unknown; status: grpc.StatusObject }>(
        (resolve, reject) => {
          let reply: unknown
          const call = stub.unary(
            { text: 'hi' },
            { deadline: deadline() },
            (error: grpc.ServiceError | null, value?: { text: string }) => {
              if (error !== null) reject(error)
              reply = value
            },
          )
          call.on('status', (status: grpc.StatusObject) => resolve({ reply, status }))
        },
      )
      expect(unary.reply).toEqual({ text: 'echo hi' })
      expect(unary.status.code).toBe(grpc.status.OK)
      expect(unary.status.metadata.get('x-trailer')).toEqual(['unary'])
      // Each echo arrives before the next message is sent: full duplex through the proxy.
      const chat = stub.chat({ deadline: deadline() })
      const replies: string[] = []
      for (const text of ['a', 'b', 'c']) {
        const reply = new Promise<{ text: string }>((resolve) => chat.once('data', resolve))
        chat.write({ text })
        replies.push((await reply).text)
      }
      const status = new Promise<grpc.StatusObject>((resolve) => chat.on('status', resolve))
      chat.end()
      expect(replies).toEqual(['echo a', 'echo b', 'echo c'])
      expect((await status).code).toBe(grpc.status.OK)
    } finally {
      stub.close()
    }
  })

  it('refuses --h2c with TLS and --http2 with --h2c', async () => {
    const both = await runCli(['proxy', '--http2', '--h2c', 'http://127.0.0.1:1'])
    expect(both.code).toBe(1)
    expect(both.stderr).toMatch(/--http2 and --h2c do not go together/)
    const withTls = await runCli([
      'proxy',
      '--h2c',
      '--tls-cert',
      join(dir, 'client.pem'),
      '--tls-key',
      join(dir, 'client-key.pem'),
      'http://127.0.0.1:1',
    ])
    expect(withTls.code).toBe(1)
    expect(withTls.stderr).toMatch(/h2c is cleartext HTTP\/2: without TLS/)
  })
})
