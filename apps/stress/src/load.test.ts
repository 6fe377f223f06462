// Load (issue 8, item 1): many keep-alive requests through each proxy front with zero errors, no
// memory growth and no leaked file descriptors. The front runs as its own process (built packages,
// --expose-gc, MALLOC_ARENA_MAX=2) so its RSS and descriptors are read from /proc/<pid>; the
// upstream and the load generator (an undici Pool, pipelining 1) share the test process.
import { afterEach, describe, expect, it } from 'vitest'
import type { LoadRequest } from './test/harness.ts'
import { closeAll, hammer, mb, PATHS, startChildFront, startUpstream } from './test/harness.ts'
import { scale } from './scale.ts'

const TOTAL = scale(100_000, 5_000)
const CONNECTIONS = scale(256, 64)
const WARMUP = scale(20_000, 2_000)
const MB = 1_000_000
const SETTLE = { timeout: 20_000, interval: 100 }

/** Every eighth request is a POST with a body of up to 4 KiB; the rest are GETs. */
function request(i: number): LoadRequest {
  if (i % 8 === 0) return { path: `/post/${i}`, method: 'POST', body: 'x'.repeat(i % 4096) }
  return { path: `/get/${i}?n=${i}` }
}

function check(i: number, status: number, body: string): string | undefined {
  const expected = i % 8 === 0 ? `POST /post/${i} ${i % 4096}` : `GET /get/${i}?n=${i} 0`
  if (status !== 200) return `status ${status}: ${body.slice(0, 200)}`
  if (body !== expected) return `body ${JSON.stringify(body.slice(0, 200))}`
  return undefined
}

describe.each(PATHS)('%s front under load', (path) => {
  afterEach(closeAll)

  it(`answers ${TOTAL} requests at ${CONNECTIONS} connections with no errors, RSS within 20 MB of warm-up and descriptors back to the baseline`, async () => {
    const upstream = await startUpstream(async (req, res) => {
      let length = 0
      for await (const chunk of req) length += (chunk as Buffer).length
      const body = `${req.method} ${req.url} ${length}`
      res.writeHead(200, {
        'content-type': 'text/plain',
        'content-length': String(Buffer.byteLength(body)),
      })
      res.end(body)
    })
    // Idle upstream sockets close after 3 s (the front's pools read `Keep-Alive: timeout=3` and let
    // go a little earlier) rather than Node's 5 s, to settle sooner.
    upstream.server.keepAliveTimeout = 3_000
    const front = await startChildFront(path, `${upstream.origin}/`)
    const baselineFds = front.openFds()

    const warm = await hammer(front.origin, {
      total: WARMUP,
      connections: CONNECTIONS,
      request,
      check,
    })
    expect(warm.errors).toEqual([])
    // RSS is compared at rest: no connection open (the keep-alive pools have timed out), after
    // full collections.
    await expect.poll(() => front.openFds(), SETTLE).toBe(baselineFds)
    const warmRss = await front.restingRss()

    const run = await hammer(front.origin, {
      total: TOTAL,
      connections: CONNECTIONS,
      request,
      check,
    })
    // The client pool is closed: what may be left are the front's keep-alive sockets upstream.
    await expect
      .poll(() => front.openFds(), { timeout: 5_000, interval: 50 })
      .toBeLessThanOrEqual(baselineFds + CONNECTIONS)
    const pooledFds = front.openFds()
    await expect.poll(() => front.openFds(), SETTLE).toBe(baselineFds)
    const afterRss = await front.restingRss()

    console.info(
      `[load ${path}] ${TOTAL} requests at ${CONNECTIONS} connections in ${(run.ms / 1000).toFixed(1)} s ` +
        `(${Math.round((TOTAL / run.ms) * 1000)} req/s), ${run.errors.length} errors; RSS after warm-up ` +
        `${mb(warmRss)}, after the run ${mb(afterRss)} (${mb(afterRss - warmRss)}); fds baseline ` +
        `${baselineFds}, after the run ${pooledFds}, settled ${front.openFds()}`,
    )
    expect(run.errors.slice(0, 20)).toEqual([])
    expect(upstream.requests()).toBe(WARMUP + TOTAL)
    expect({ growth: afterRss - warmRss, within20MB: afterRss - warmRss < 20 * MB }).toMatchObject({
      within20MB: true,
    })
  })
})
