// gRPC through the proxy: a grpc-js client → serve({ tls, http2: true }) (or h2c) →
// createProxyApp over undiciTransport({ http2 }) → a grpc-js server, over TLS (HTTP/2 by ALPN)
// and over h2c. The service is written by hand (JSON messages, no .proto files).
import * as grpc from '@grpc/grpc-js'
import { createProxyApp } from '@wsgiproxy/core'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { TestCertificate } from '@wsgiproxy/test-kit/tls'
import { createCertificateAuthority, createServerCertificate } from '@wsgiproxy/test-kit/tls'
import { undiciTransport } from '@wsgiproxy/core/undici'
import { serve } from './serve.ts'

// A call through two HTTP/2 hops takes a few milliseconds; this leaves room for a loaded machine.
const CALL_MS = 10_000
const TEST_MS = 30_000

interface Message {
  text: string
  fail?: 'at-once' | 'after-messages'
}

const json = {
  serialize: (value: unknown): Buffer => Buffer.from(JSON.stringify(value)),
  deserialize: (bytes: Buffer): Message => JSON.parse(bytes.toString()) as Message,
}

const method = (name: string, requestStream: boolean, responseStream: boolean) => ({
  path: `/wsgiproxy.test.Echo/${name}`,
  requestStream,
  responseStream,
  requestSerialize: json.serialize,
  requestDeserialize: json.deserialize,
  responseSerialize: json.serialize,
  responseDeserialize: json.deserialize,
})

// The service definition grpc-js would make from a .proto file.
const ECHO: grpc.ServiceDefinition = {
  unary: method('Unary', false, false),
  list: method('List', false, true),
  chat: method('Chat', true, true),
}

function trailer(value: string): grpc.Metadata {
  const metadata = new grpc.Metadata()
  metadata.set('x-trailer', value)
  return metadata
}

const echo: grpc.UntypedServiceImplementation = {
  unary: (call: grpc.ServerUnaryCall<Message, Message>, callback: grpc.sendUnaryData<Message>) => {
    if (call.request.fail === 'at-once') {
      callback({ code: grpc.status.NOT_FOUND, details: `no ${call.request.text} here` })
      return
    }
    callback(null, { text: `echo ${call.request.text}` }, trailer('unary'))
  },
  list: (call: grpc.ServerWritableStream<Message, Message>) => {
    call.write({ text: 'first' })
    call.write({ text: 'second' })
    call.emit('error', { code: grpc.status.NOT_FOUND, details: 'the rest is gone' })
  },
  chat: (call: grpc.ServerDuplexStream<Message, Message>) => {
    call.on('data', (message: Message) => call.write({ text: `echo ${message.text}` }))
    call.on('end', () => call.end(trailer('chat')))
  },
}

let ca: TestCertificate
let upstreamCert: TestCertificate
let frontCert: TestCertificate

beforeAll(async () => {
  ca = await createCertificateAuthority('grpc test CA')
  upstreamCert = await createServerCertificate(ca, ['upstream.test'])
  frontCert = await createServerCertificate(ca, ['front.test'])
})

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).toReversed()) await cleanup()
})

// What makeGenericClientConstructor(ECHO) makes, typed.
interface EchoClient extends grpc.Client {
  unary(
    request: Message,
    options: grpc.CallOptions,
    callback: grpc.requestCallback<Message>,
  ): grpc.ClientUnaryCall
  list(request: Message, options: grpc.CallOptions): grpc.ClientReadableStream<Message>
  chat(options: grpc.CallOptions): grpc.ClientDuplexStream<Message, Message>
}

/** A grpc-js server with the echo service on 127.0.0.1 port 0; its port. */
async function startGrpcServer(credentials: grpc.ServerCredentials): Promise<number> {
  const server = new grpc.Server()
  server.addService(ECHO, echo)
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', credentials, (error, bound) =>
      error === null ? resolve(bound) : reject(error),
    ),
  )
  cleanups.push(() => new Promise<void>((resolve) => server.tryShutdown(() => resolve())))
  cleanups.push(() => server.forceShutdown())
  return port
}

interface Route {
  /** The upstream's URL. */
  href: string
  /** How the transport speaks HTTP/2 to it. */
  http2: true | 'h2c'
  /** The front: HTTP/2 over TLS, or h2c. */
  front: 'tls' | 'h2c'
}

/**
 * The proxy in front of the upstream and a grpc-js client of it (trusting the test CA over TLS).
 */
async function startProxyAndClient(
  route: Route,
): Promise<{ client: EchoClient; errors: string[] }> {
  const errors: string[] = []
  const transport = undiciTransport({
    http2: route.http2,
    tls: { ca: ca.cert, servername: 'upstream.test' },
  })
  cleanups.push(() => transport.close())
  const app = createProxyApp({
    href: route.href,
    transport,
    onError: (error) => void errors.push(error.code),
  })
  const served =
    route.front === 'tls'
      ? await serve(app, { tls: frontCert, http2: true, closeTimeout: 1_000 })
      : await serve(app, { http2: 'h2c', closeTimeout: 1_000 })
  cleanups.push(() => served.close())
  const Client = grpc.makeGenericClientConstructor(ECHO, 'Echo')
  const client = (route.front === 'tls'
    ? new Client(`127.0.0.1:${served.port}`, grpc.credentials.createSsl(Buffer.from(ca.cert)), {
        'grpc.ssl_target_name_override': 'front.test',
        'grpc.default_authority': 'front.test',
      })
    : new Client(
        `127.0.0.1:${served.port}`,
        grpc.credentials.createInsecure(),
      )) as unknown as EchoClient
  cleanups.unshift(() => client.close())
  return { client, errors }
}

interface Outcome {
  message?: Message
  error?: grpc.ServiceError
  status?: grpc.StatusObject
}

function unary(client: EchoClient, request: Message): Promise<Outcome> {
  return new Promise((resolve) => {
    const outcome: Outcome = {}
    let pending = 2
    const settle = (): void => {
      if (--pending === 0) resolve(outcome)
    }
    const call = client.unary(request, { deadline: Date.now() + CALL_MS }, (error, message) => {
      if (error !== null) outcome.error = error
      if (message !== undefined) outcome.message = message
      settle()
    })
    call.on('status', (status: grpc.StatusObject) => {
      outcome.status = status
      settle()
    })
  })
}

/** Resolves with the next `data` event of a stream. */
function nextMessage(call: grpc.ClientDuplexStream<Message, Message>): Promise<Message> {
  return new Promise((resolve, reject) => {
    const onData = (message: Message): void => {
      call.off('error', onError)
      resolve(message)
    }
    const onError = (error: Error): void => {
      call.off('data', onData)
      reject(error)
    }
    call.once('data', onData)
    call.once('error', onError)
  })
}

async function tlsUpstream(): Promise<string> {
  const credentials = grpc.ServerCredentials.createSsl(
    null,
    [{ private_key: Buffer.from(upstreamCert.key), cert_chain: Buffer.from(upstreamCert.cert) }],
    false,
  )
  return `https://127.0.0.1:${await startGrpcServer(credentials)}`
}

async function h2cUpstream(): Promise<string> {
  return `http://127.0.0.1:${await startGrpcServer(grpc.ServerCredentials.createInsecure())}`
}

const routes = [
  {
    label: 'serve({ tls, http2: true }) to a TLS upstream (HTTP/2 by ALPN)',
    start: async (): Promise<Route> => ({ href: await tlsUpstream(), http2: true, front: 'tls' }),
  },
  {
    label: "serve({ tls, http2: true }) to an h2c upstream (http2: 'h2c')",
    start: async (): Promise<Route> => ({ href: await h2cUpstream(), http2: 'h2c', front: 'tls' }),
  },
  {
    label: "serve({ http2: 'h2c' }) to an h2c upstream",
    start: async (): Promise<Route> => ({ href: await h2cUpstream(), http2: 'h2c', front: 'h2c' }),
  },
]

describe.each(routes)('gRPC through $label', ({ start }) => {
  it(
    'passes a unary call with its response, status OK and trailing metadata',
    async () => {
      const { client, errors } = await startProxyAndClient(await start())
      const outcome = await unary(client, { text: 'hello' })
      expect(outcome.error).toBeUndefined()
      expect(outcome.message).toEqual({ text: 'echo hello' })
      expect(outcome.status?.code).toBe(grpc.status.OK)
      expect(outcome.status?.metadata.get('x-trailer')).toEqual(['unary'])
      expect(errors).toEqual([])
    },
    TEST_MS,
  )

  it(
    'passes a status the server answers without a message (trailers-only): code and details',
    async () => {
      const { client } = await startProxyAndClient(await start())
      const outcome = await unary(client, { text: 'thing', fail: 'at-once' })
      expect(outcome.message).toBeUndefined()
      expect(outcome.error?.code).toBe(grpc.status.NOT_FOUND)
      expect(outcome.error?.details).toBe('no thing here')
    },
    TEST_MS,
  )

  it(
    'passes a status the server sends after messages, with the messages',
    async () => {
      const { client } = await startProxyAndClient(await start())
      const call = client.list({ text: 'all' }, { deadline: Date.now() + CALL_MS })
      const messages: Message[] = []
      call.on('data', (message: Message) => messages.push(message))
      const error = await new Promise<grpc.ServiceError>((resolve) => call.once('error', resolve))
      expect(messages).toEqual([{ text: 'first' }, { text: 'second' }])
      expect(error.code).toBe(grpc.status.NOT_FOUND)
      expect(error.details).toBe('the rest is gone')
    },
    TEST_MS,
  )

  it(
    'passes a bidirectional stream message by message (full duplex), then the trailing metadata',
    async () => {
      const { client, errors } = await startProxyAndClient(await start())
      const call = client.chat({ deadline: Date.now() + CALL_MS })
      const status = new Promise<grpc.StatusObject>((resolve) => call.once('status', resolve))
      // A failed call emits `error` before `status`; the status says what failed.
      call.on('error', () => {})
      const echoes: string[] = []
      for (let i = 1; i <= 5; i++) {
        // Each echo must come back while the request stream is still open.
        const reply = nextMessage(call)
        call.write({ text: `message ${i}` })
        echoes.push((await reply).text)
      }
      call.end()
      const final = await status
      expect(echoes).toEqual([1, 2, 3, 4, 5].map((i) => `echo message ${i}`))
      expect(final.code).toBe(grpc.status.OK)
      expect(final.metadata.get('x-trailer')).toEqual(['chat'])
      expect(errors).toEqual([])
    },
    TEST_MS,
  )
})
