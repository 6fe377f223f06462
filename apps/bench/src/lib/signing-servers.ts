// The servers of the signing workload: a wsgiproxy front that signs every request (createSigner,
// a fresh nonce each) in front of a backend that verifies it (proxyMiddleware with
// createVerifier, requireSignature) and answers itself, both in one process. They differ only
// in the backend's replay store: the in-process MemoryReplayStore, or RedisReplayStore on the
// run's Redis (one `SET NX PX` round trip per request), so the ratio is what sharing costs.
import type { AppResponse, EnvironApp, ReplayStore } from '@wsgiproxy/core'
import { REDIS_ENV } from './redis.ts'
import { SMALL_BODY_BYTES } from './servers.ts'
import type { RunningServer, ServerInfo } from './servers.ts'

/** The server ids of the signing workload; the first is the reference of its ratios. */
export const SIGNING_IDS = { memory: 'signing-memory', redis: 'signing-redis' } as const

const SMALL = Buffer.alloc(SMALL_BODY_BYTES, 0x61)
// A fixed key: the run measures signing and verifying, not key handling.
const KEY = { id: 'bench', secret: new Uint8Array(32).fill(0x42) }

function bytes(body: Uint8Array, type: string): AppResponse {
  return {
    status: 200,
    headers: [
      ['content-type', type],
      ['content-length', String(body.byteLength)],
    ],
    body: (async function* () {
      yield body
    })(),
  }
}

// The backend's own app: `GET /1k` (1 KiB) and `POST /echo` (the body back), as the upstream.
const backendApp: EnvironApp = async (environ) => {
  if (environ.PATH_INFO !== '/echo') return bytes(SMALL, 'text/plain')
  const chunks: Uint8Array[] = []
  for await (const chunk of environ['wsgi.input'] ?? []) chunks.push(chunk)
  return bytes(Buffer.concat(chunks), environ.CONTENT_TYPE || 'application/octet-stream')
}

/**
 * Starts the verifying backend with `replayStore` and the signing front before it, each on a
 * free port of 127.0.0.1; the front's port is the server's.
 */
async function startSigningPair(
  replayStore: ReplayStore & { close?: () => Promise<void> },
): Promise<RunningServer> {
  const { createProxyApp, createSigner, createVerifier, proxyMiddleware } =
    await import('@wsgiproxy/core')
  const { serve, undiciTransport } = await import('@wsgiproxy/node')
  const backend = await serve(
    proxyMiddleware(backendApp, {
      verifier: createVerifier({ keys: [KEY], replayStore }),
      requireSignature: true,
    }),
  )
  const transport = undiciTransport()
  const front = await serve(
    createProxyApp({ href: backend.url, transport, signer: createSigner({ keys: [KEY] }) }),
  )
  return {
    port: front.port,
    close: async () => {
      await front.close()
      await transport.close()
      await backend.close()
      await replayStore.close?.()
    },
  }
}

/** The servers of the signing workload, in table order. */
export const SIGNING_SERVERS: readonly ServerInfo[] = [
  {
    id: SIGNING_IDS.memory,
    label: 'signing front → verifying backend, MemoryReplayStore',
    signing: true,
    start: async () => {
      const { MemoryReplayStore } = await import('@wsgiproxy/core')
      return startSigningPair(new MemoryReplayStore())
    },
  },
  {
    id: SIGNING_IDS.redis,
    label: 'signing front → verifying backend, RedisReplayStore (Redis on loopback)',
    signing: true,
    redis: true,
    start: async () => {
      const url = process.env[REDIS_ENV]
      if (url === undefined || url === '') {
        throw new Error(`server "${SIGNING_IDS.redis}" needs the run's Redis in ${REDIS_ENV}`)
      }
      const { RedisReplayStore } = await import('@wsgiproxy/node/redis')
      const store = new RedisReplayStore({ url })
      await store.connect()
      return startSigningPair(store)
    },
  },
]
