// `pnpm --filter @wsgiproxy/bench run micro`: CPU time per request of the in-process layers of
// the Node path, without sockets, so that a change to the hot path can be judged in seconds and
// with less noise than a load run (docs/performance.md). Prints one line per layer.
import type { AppResponse, Environ, Transport } from '@wsgiproxy/core'
import { createProxyApp } from '@wsgiproxy/core'
import {
  Cancellation,
  environFromParts,
  setClientCancellation,
  subscribeToCancellation,
} from '@wsgiproxy/core/adapter'

const BODY = new Uint8Array(1024)
const REQUEST_HEADERS: Array<[string, string]> = [
  ['Host', '127.0.0.1:8000'],
  ['User-Agent', 'wrk'],
  ['Accept', '*/*'],
]
const RESPONSE_HEADERS: Array<[string, string]> = [
  ['content-type', 'text/plain'],
  ['content-length', '1024'],
  ['date', 'Tue, 24 Nov 2026 10:00:00 GMT'],
  ['connection', 'keep-alive'],
  ['keep-alive', 'timeout=5'],
]

// What a Node server adapter sets (see node-listener.ts): the client's cancellation, never
// cancelled here.
const openClient = new Cancellation()

function environ(): Environ {
  const built = environFromParts({
    method: 'GET',
    target: '/1k',
    headers: REQUEST_HEADERS.map(([name, value]): [string, string] => [name, value]),
    scheme: 'http',
    input: null,
    remoteAddr: '127.0.0.1',
  })
  setClientCancellation(built, openClient)
  return built
}

// An upstream that answers at once with 1 KiB in one chunk.
const stub: Transport = () => {
  let sent = false
  const response: AppResponse = {
    status: 200,
    headers: RESPONSE_HEADERS.map(([name, value]): [string, string] => [name, value]),
    body: {
      [Symbol.asyncIterator]: () => ({
        next: () =>
          Promise.resolve(
            sent
              ? { done: true as const, value: undefined }
              : ((sent = true), { done: false as const, value: BODY }),
          ),
      }),
    },
  }
  return Promise.resolve(response)
}
// The same, marked as a transport that subscribes to core's cancellation (as undiciTransport).
const marked: Transport = subscribeToCancellation((outbound) => stub(outbound))

async function drain(response: AppResponse): Promise<void> {
  let bytes = 0
  for await (const chunk of response.body ?? []) bytes += chunk.byteLength
  if (bytes !== BODY.byteLength) throw new Error(`expected ${BODY.byteLength} bytes, got ${bytes}`)
}

async function measure(label: string, run: () => Promise<unknown> | unknown): Promise<void> {
  for (let i = 0; i < 50_000; i++) await run()
  const rounds = 300_000
  const before = process.cpuUsage()
  for (let i = 0; i < rounds; i++) await run()
  const used = process.cpuUsage(before)
  console.log(`${label.padEnd(58)} ${((used.user + used.system) / rounds).toFixed(2)} µs CPU`)
}

const options = { href: 'http://127.0.0.1:9999/', forwarded: true }
const signalApp = createProxyApp({ ...options, transport: stub })
const cancelApp = createProxyApp({ ...options, transport: marked })

await measure('environFromParts (3 headers)', environ)
await measure('createProxyApp + an unmarked transport (a real signal)', async () =>
  drain(await signalApp(environ())),
)
await measure('createProxyApp + a transport marked for cancellation', async () =>
  drain(await cancelApp(environ())),
)
