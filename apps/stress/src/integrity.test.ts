// Data integrity (issue 8, item 2): concurrent uploads and downloads of random sizes, with a
// Content-Length or chunked, each checked by SHA-256 end to end, through both fronts; and one big
// transfer each way through the Hono front with its RSS sampled. The node front's 1 GiB each way
// is packages/node/src/lib/node-load.test.ts ("streams 1 GiB each way ...").
import { createHash, randomBytes } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { request as httpRequest } from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import type { Upstream } from './test/harness.ts'
import {
  closeAll,
  mb,
  PATHS,
  prng,
  startChildFront,
  startFront,
  startUpstream,
} from './test/harness.ts'
import { writeAll } from '@wsgiproxy/test-kit/servers'
import { scale } from './scale.ts'

const KiB = 1024
const MiB = 1024 * KiB
const MB = 1_000_000
const TRANSFERS = scale(1_000, 100)
const MAX_SIZE = scale(8 * MiB, 1 * MiB)
const BIG = scale(1024 * MiB, 64 * MiB)
const SEED = 0x5eed_0008

// Bodies are views into one random block, from an offset and in chunk sizes set by a seed, so
// both ends can produce and hash the same bytes without holding them.
const BLOCK_SIZE = 8 * MiB
const block = randomBytes(BLOCK_SIZE)

/** The body of `size` bytes for `seed`, in chunks of 1 B to 64 KiB. */
function* bodyChunks(seed: number, size: number): Generator<Buffer> {
  const random = prng(seed)
  let offset = Math.floor(random() * BLOCK_SIZE)
  let left = size
  while (left > 0) {
    const n = Math.min(left, 1 + Math.floor(random() * 64 * KiB), BLOCK_SIZE - offset)
    yield block.subarray(offset, offset + n)
    offset = (offset + n) % BLOCK_SIZE
    left -= n
  }
}

function digest(seed: number, size: number): string {
  const hash = createHash('sha256')
  for (const chunk of bodyChunks(seed, size)) hash.update(chunk)
  return hash.digest('hex')
}

interface Received {
  sha256: string
  length: number
}

async function hashStream(stream: AsyncIterable<unknown>): Promise<Received> {
  const hash = createHash('sha256')
  let length = 0
  for await (const chunk of stream) {
    hash.update(chunk as Buffer)
    length += (chunk as Buffer).length
  }
  return { sha256: hash.digest('hex'), length }
}

/** Uploads answer the hash of what arrived; downloads send the seeded body, fixed or chunked. */
function startDataUpstream(): Promise<Upstream> {
  return startUpstream(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://upstream')
    if (req.method === 'PUT') {
      const received = await hashStream(req)
      const body = JSON.stringify(received)
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(body)),
      })
      res.end(body)
      return
    }
    req.resume()
    const seed = Number(url.searchParams.get('seed'))
    const size = Number(url.searchParams.get('size'))
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      ...(url.searchParams.get('framing') === 'fixed' ? { 'content-length': String(size) } : {}),
    })
    await writeAll(res, bodyChunks(seed, size))
    res.end()
  })
}

type Framing = 'fixed' | 'chunked'

/** PUTs the seeded body (Content-Length or chunked); resolves to what the upstream received. */
function upload(origin: string, seed: number, size: number, framing: Framing): Promise<Received> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${origin}/up/${seed}`, {
      method: 'PUT',
      agent: false,
      headers: {
        'content-type': 'application/octet-stream',
        ...(framing === 'fixed'
          ? { 'content-length': String(size) }
          : { 'transfer-encoding': 'chunked' }),
      },
    })
    req.on('error', reject)
    req.on('response', (res: IncomingMessage) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('error', reject)
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        if (res.statusCode !== 200) reject(new Error(`upload status ${res.statusCode}: ${text}`))
        else resolve(JSON.parse(text) as Received)
      })
    })
    writeAll(req, bodyChunks(seed, size)).then(() => req.end(), reject)
  })
}

/** GETs the seeded body; resolves to the hash of what arrived. */
function download(origin: string, seed: number, size: number, framing: Framing): Promise<Received> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      `${origin}/down/${seed}?seed=${seed}&size=${size}&framing=${framing}`,
      { agent: false },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume()
          reject(new Error(`download status ${res.statusCode}`))
          return
        }
        hashStream(res).then(resolve, reject)
      },
    )
    req.on('error', reject)
    req.end()
  })
}

describe.each(PATHS)('%s front: data integrity', (path) => {
  afterEach(closeAll)

  it(`carries ${TRANSFERS} concurrent uploads and downloads of 0 B to ${MAX_SIZE / MiB} MiB, fixed-length and chunked, byte for byte`, async () => {
    const upstream = await startDataUpstream()
    const front = await startFront(path, `${upstream.origin}/`)
    const random = prng(SEED)
    const transfers = Array.from({ length: TRANSFERS }, (_, i) => {
      // The edges first, then random sizes.
      const size = i < 4 ? 0 : i < 8 ? MAX_SIZE : Math.floor(random() * (MAX_SIZE + 1))
      const direction = i % 2 === 0 ? 'upload' : 'download'
      const framing: Framing = Math.floor(i / 2) % 2 === 0 ? 'fixed' : 'chunked'
      return { seed: SEED + i, size, direction, framing }
    })
    const started = performance.now()
    const results = await Promise.allSettled(
      transfers.map(({ seed, size, direction, framing }) =>
        direction === 'upload'
          ? upload(front.origin, seed, size, framing)
          : download(front.origin, seed, size, framing),
      ),
    )
    const ms = performance.now() - started
    const bytes = transfers.reduce((sum, t) => sum + t.size, 0)
    const mismatches: string[] = []
    results.forEach((result, i) => {
      const { seed, size, direction, framing } = transfers[i]!
      const label = `#${i} ${direction} ${framing} ${size} B`
      if (result.status === 'rejected') {
        mismatches.push(`${label}: ${(result.reason as Error).message}`)
        return
      }
      const expected = { sha256: digest(seed, size), length: size }
      if (result.value.sha256 !== expected.sha256 || result.value.length !== size) {
        mismatches.push(`${label}: got ${result.value.length} B ${result.value.sha256}`)
      }
    })
    console.info(
      `[integrity ${path}] ${TRANSFERS} concurrent transfers, ${mb(bytes)} in ${(ms / 1000).toFixed(1)} s, ` +
        `${mismatches.length} failed (seed ${SEED.toString(16)})`,
    )
    expect(mismatches.slice(0, 20)).toEqual([])
    expect(upstream.requests()).toBe(TRANSFERS)
  })
})

interface Measured {
  result: Received
  /** Peak RSS of the front during the transfer minus its RSS at rest before it. */
  growth: number
  ms: number
}

function report(label: string, m: Measured): string {
  return `${label}: peak RSS growth ${mb(m.growth)} in ${(m.ms / 1000).toFixed(1)} s`
}

/** One upload and one download of BIG bytes through a Hono front in a child process. */
async function bigTransfer(
  childPath: 'hono' | 'hono-undici',
): Promise<{ up: Measured; down: Measured; expected: Received }> {
  const upstream = await startDataUpstream()
  const front = await startChildFront(childPath, `${upstream.origin}/`)
  const seed = SEED - 1
  // Warm-up: both directions once, so lazy allocations are done before the baseline.
  expect(await upload(front.origin, seed, MiB, 'fixed')).toEqual({
    sha256: digest(seed, MiB),
    length: MiB,
  })
  expect(await download(front.origin, seed, MiB, 'fixed')).toEqual({
    sha256: digest(seed, MiB),
    length: MiB,
  })
  const measure = async (run: () => Promise<Received>): Promise<Measured> => {
    const before = await front.restingRss()
    let peak = before
    const timer = setInterval(() => {
      peak = Math.max(peak, front.rss())
    }, 50)
    const t0 = performance.now()
    try {
      const result = await run()
      return { result, growth: Math.max(peak, front.rss()) - before, ms: performance.now() - t0 }
    } finally {
      clearInterval(timer)
    }
  }
  const up = await measure(() => upload(front.origin, seed, BIG, 'fixed'))
  const down = await measure(() => download(front.origin, seed, BIG, 'fixed'))
  console.info(
    `[integrity ${childPath} big] ${report(`upload ${BIG / MiB} MiB`, up)}; ${report(`download ${BIG / MiB} MiB`, down)}`,
  )
  return { up, down, expected: { sha256: digest(seed, BIG), length: BIG } }
}

// The Hono front with undiciTransport() and with its default transport, the runtime's fetch. On
// Node, fetch keeps a streamed request body in memory until the response arrives: it clones the
// request in case of a redirect, which tees the body, and nothing reads the other branch (undici
// #4058). So with fetch only the download is held to the bound; the upload's growth is reported.
describe('hono front: one big transfer each way', () => {
  afterEach(closeAll)

  it(`streams ${BIG / MiB} MiB each way through undiciTransport() with SHA-256 equality and RSS growth under 64 MB`, async () => {
    const { up, down, expected } = await bigTransfer('hono-undici')
    expect(up.result).toEqual(expected)
    expect(down.result).toEqual(expected)
    expect({ upload: up.growth < 64 * MB, growth: up.growth }).toMatchObject({ upload: true })
    expect({ download: down.growth < 64 * MB, growth: down.growth }).toMatchObject({
      download: true,
    })
  })

  it(`streams ${BIG / MiB} MiB each way through the default fetch transport with SHA-256 equality, the download with RSS growth under 64 MB`, async () => {
    const { up, down, expected } = await bigTransfer('hono')
    expect(up.result).toEqual(expected)
    expect(down.result).toEqual(expected)
    expect({ download: down.growth < 64 * MB, growth: down.growth }).toMatchObject({
      download: true,
    })
  })
})
