// Signing under load (issue 8, item 6): a front that signs every forwarded request (createProxyApp
// or Hono's proxy() with createSigner) in front of a backend that requires the signature
// (serve(proxyMiddleware(app, { verifier, requireSignature: true }))). Every signed request is
// accepted; the backend records the raw head of each one as it arrives, and sending those heads
// again straight to the backend is refused as a replay every time; the nonce store never holds
// more than its bound, and at the bound a fresh request is refused rather than a nonce evicted.
import { randomBytes } from 'node:crypto'
import type { Environ, RejectReason } from '@wsgiproxy/core'
import {
  createSigner,
  createVerifier,
  MemoryReplayStore,
  proxyMiddleware,
  SignatureRejectedError,
} from '@wsgiproxy/core'
import { serve } from '@wsgiproxy/node'
import { afterEach, describe, expect, it } from 'vitest'
import { closeAll, hammer, PATHS, startFront, track } from './test/harness.ts'
import { scale } from './scale.ts'

const REQUESTS = scale(20_000, 2_000)
const CONNECTIONS = 64
// Long enough that no request goes stale during the run: every replay is refused as a replay.
const MAX_AGE = 300_000

interface RecordedHead {
  method: string
  path: string
  /** Raw header lines, name and value alternating, hop-by-hop ones left out. */
  headers: string[]
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive'])

describe.each(PATHS)('%s front signing under load', (path) => {
  afterEach(closeAll)

  it(`has ${REQUESTS} signed requests accepted at ${CONNECTIONS} connections, their replays refused with 401 and the nonce store within its bound`, async () => {
    const keys = [{ id: 'stress', secret: new Uint8Array(randomBytes(32)) }]
    const store = new MemoryReplayStore({ maxEntries: REQUESTS })
    const rejected = new Map<RejectReason | 'other', number>()
    const backend = await serve(
      proxyMiddleware(
        (environ: Environ) => {
          const body = new TextEncoder().encode(
            `ok ${String(environ.PATH_INFO)}?${String(environ.QUERY_STRING)}`,
          )
          return {
            status: 200,
            headers: [['content-length', String(body.byteLength)]],
            body: (async function* () {
              yield body
            })(),
          }
        },
        {
          verifier: createVerifier({ keys, replayStore: store, maxAge: MAX_AGE }),
          requireSignature: true,
          onReject: (error) => {
            const reason = error instanceof SignatureRejectedError ? error.reason : 'other'
            rejected.set(reason, (rejected.get(reason) ?? 0) + 1)
          },
        },
      ),
    )
    const recorded: RecordedHead[] = []
    let recording = true
    // The recording layer: the raw head of every request the front sends, as it arrives.
    backend.server.prependListener('request', (req) => {
      if (!recording) return
      const headers: string[] = []
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        const name = req.rawHeaders[i]!
        if (!HOP_BY_HOP.has(name.toLowerCase())) headers.push(name, req.rawHeaders[i + 1]!)
      }
      recorded.push({ method: req.method ?? 'GET', path: req.url ?? '/', headers })
    })
    track(backend)
    const front = await startFront(path, `${backend.url}/`, {
      signer: createSigner({ keys, maxAge: MAX_AGE }),
    })

    const signed = await hammer(front.origin, {
      total: REQUESTS,
      connections: CONNECTIONS,
      request: (i) => ({ path: `/signed/${i}?n=${i}`, headers: { 'x-request': String(i) } }),
      check: (i, status, body) =>
        status === 200 && body === `ok /signed/${i}?n=${i}`
          ? undefined
          : `status ${status}: ${body.slice(0, 200)}`,
    })
    recording = false
    const sizeAfterRun = store.size
    expect(signed.errors.slice(0, 20)).toEqual([])
    expect(Object.fromEntries(rejected)).toEqual({})
    expect(recorded).toHaveLength(REQUESTS)
    expect(
      recorded.every((head) => head.headers.some((h) => h.toLowerCase() === 'signature')),
    ).toBe(true)

    // The same signed heads again, straight to the backend.
    const replayed = await hammer(backend.url, {
      total: recorded.length,
      connections: CONNECTIONS,
      request: (i) => recorded[i]!,
      check: (_i, status, body) => (status === 401 ? undefined : `status ${status}: ${body}`),
    })
    const sizeAfterReplay = store.size

    // At the bound, a fresh signed request is refused (503) rather than a live nonce evicted.
    const fresh = await fetch(`${front.origin}/one-more`)
    await fresh.arrayBuffer()

    console.info(
      `[signing ${path}] ${REQUESTS} signed requests at ${CONNECTIONS} connections in ` +
        `${(signed.ms / 1000).toFixed(1)} s, ${signed.errors.length} rejected; ${recorded.length} ` +
        `replays in ${(replayed.ms / 1000).toFixed(1)} s, ${recorded.length - replayed.errors.length} ` +
        `answered 401; nonce store ${sizeAfterRun} / ${REQUESTS} after the run, ${sizeAfterReplay} after ` +
        `the replays; one more fresh request: ${fresh.status}; rejections ${JSON.stringify(Object.fromEntries(rejected))}`,
    )
    expect(replayed.errors.slice(0, 20)).toEqual([])
    expect(rejected.get('replay')).toBe(REQUESTS)
    expect(sizeAfterRun).toBe(REQUESTS)
    expect(sizeAfterReplay).toBe(REQUESTS)
    expect(fresh.status).toBe(503)
    expect(rejected.get('store_full')).toBe(1)
    expect(store.size).toBe(REQUESTS)
  })
})
