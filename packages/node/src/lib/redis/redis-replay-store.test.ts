import { createServer } from 'node:net'
import type { AddressInfo, Socket } from 'node:net'
import type { ReplayStore, SigningKey, WsgiProxyError } from '@wsgiproxy/core'
import { createSigner, createVerifier, proxyMiddleware } from '@wsgiproxy/core'
import { signRequest } from '@wsgiproxy/core/protocol'
import { redisCommand, startRedis } from '@wsgiproxy/test-kit/redis'
import type { RedisServer } from '@wsgiproxy/test-kit/redis'
import { createClient, createCluster } from 'redis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { Served } from '../http/serve.ts'
import { serve } from '../http/serve.ts'
import { RedisReplayStore, toClusterOptions } from './redis-replay-store.ts'
import type { RedisReplayStoreWarning } from './redis-replay-store.ts'

const KEY: SigningKey = { id: 'k-redis', secret: new Uint8Array(32).fill(7) }

// What each test opened, closed after it by the handle it got (servers by pid).
const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).toReversed()) await cleanup()
})

let shared: RedisServer
beforeAll(async () => {
  shared = await startRedis()
})
afterAll(async () => {
  await shared.close()
})

async function ownRedis(options: { cluster?: boolean } = {}): Promise<RedisServer> {
  const redis = await startRedis(options)
  cleanups.push(() => redis.close())
  return redis
}

function store(options: ConstructorParameters<typeof RedisReplayStore>[0]): RedisReplayStore {
  const created = new RedisReplayStore(options)
  cleanups.push(() => created.close())
  return created
}

// The return type is inferred: createClient() chooses its own type parameters.
async function inspector(url: string) {
  const client = createClient({ url })
  client.on('error', () => {})
  await client.connect()
  cleanups.push(() => client.close())
  return client
}

// Polls until `check` holds (a condition Redis or the store reports), failing after `ms`.
async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

// The store, or what its constructor threw.
function construct(options: unknown): unknown {
  try {
    return new RedisReplayStore(options as ConstructorParameters<typeof RedisReplayStore>[0])
  } catch (error) {
    return error
  }
}

let counter = 0
const unique = (): string => `k\u0000nonce-${process.pid}-${Date.now()}-${counter++}`

describe('RedisReplayStore', () => {
  it('answers fresh for a new key and replay for the same key after', async () => {
    const s = store({ url: shared.url })
    const key = unique()
    expect(await s.checkAndSet(key, 60_000)).toBe('fresh')
    expect(await s.checkAndSet(key, 60_000)).toBe('replay')
    expect(await s.checkAndSet(unique(), 60_000)).toBe('fresh')
  })

  it('answers one fresh among concurrent checks of one key from two stores', async () => {
    const a = store({ url: shared.url })
    const b = store({ url: shared.url })
    const key = unique()
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).checkAndSet(key, 60_000)),
    )
    expect(answers.filter((answer) => answer === 'fresh')).toHaveLength(1)
    expect(answers.filter((answer) => answer === 'replay')).toHaveLength(19)
  })

  it('lets Redis expire the key after ttlMs, then answers fresh again', async () => {
    const s = store({ url: shared.url })
    const redis = await inspector(shared.url)
    const key = unique()
    expect(await s.checkAndSet(key, 150)).toBe('fresh')
    const pttl = await redis.pTTL(`wsgiproxy:nonce:${key}`)
    expect(pttl).toBeGreaterThan(0)
    expect(pttl).toBeLessThanOrEqual(150)
    expect(await s.checkAndSet(key, 150)).toBe('replay')
    await until(
      async () => (await redis.exists(`wsgiproxy:nonce:${key}`)) === 0,
      5_000,
      'the expiry of the key',
    )
    expect(await s.checkAndSet(key, 150)).toBe('fresh')
  })

  it('keeps nonces under its prefix', async () => {
    const redis = await ownRedis()
    const client = await inspector(redis.url)
    await store({ url: redis.url }).checkAndSet('k1\u0000n1', 60_000)
    await store({ url: redis.url, prefix: 'app-a:' }).checkAndSet('k1\u0000n2', 60_000)
    expect((await client.keys('*')).toSorted()).toEqual([
      'app-a:k1\u0000n2',
      'wsgiproxy:nonce:k1\u0000n1',
    ])
    // The same nonce under another prefix is another key.
    expect(
      await store({ url: redis.url, prefix: 'app-b:' }).checkAndSet('k1\u0000n1', 60_000),
    ).toBe('fresh')
  })

  it('uses a client you own and leaves it open on close', async () => {
    const client = createClient({ url: shared.url, disableOfflineQueue: true })
    client.on('error', () => {})
    cleanups.push(async () => {
      if (client.isOpen) await client.close()
    })
    const s = new RedisReplayStore({ client })
    const key = unique()
    expect(await s.checkAndSet(key, 60_000)).toBe('fresh')
    expect(client.isReady).toBe(true)
    expect(await s.checkAndSet(key, 60_000)).toBe('replay')
    await s.close()
    expect(client.isReady).toBe(true)
    expect(await client.exists(`wsgiproxy:nonce:${key}`)).toBe(1)
  })

  it('closes the client it created; later checks fail', async () => {
    const warnings: RedisReplayStoreWarning[] = []
    const s = new RedisReplayStore({ url: shared.url, onWarning: (w) => void warnings.push(w) })
    await s.connect()
    expect(await s.checkAndSet(unique(), 60_000)).toBe('fresh')
    await s[Symbol.asyncDispose]()
    await s.close()
    expect(await s.checkAndSet(unique(), 60_000)).toBe('unavailable')
    expect(warnings.map((w) => w.code)).toEqual(['REPLAY_STORE_UNAVAILABLE'])
  })

  it('refuses bad options with INVALID_OPTIONS', () => {
    const problems: Array<[unknown, RegExp]> = [
      [8, /expected an object/],
      [undefined, /expected one of url, client or cluster/],
      [{}, /expected one of url, client or cluster/],
      [
        { url: 'redis://a:1', cluster: { rootNodes: ['redis://b:2'] } },
        /only one of .*url and cluster/,
      ],
      [{ url: 'http://127.0.0.1:6379' }, /url: expected a redis:\/\/ or rediss:\/\/ URL/],
      [{ url: 'redis://' }, /url: expected a redis:\/\//],
      [{ url: 'redis://:%E0@a:1' }, /url: expected a redis:\/\//],
      // The message never repeats a password.
      [{ url: 'redis://user:s3cret@a:1 x' }, /\(got "redis:\/\/user:\*\*\*@a:1 x"\)/],
      [{ client: { set() {} } }, /client: expected a node-redis client or cluster/],
      [{ cluster: { rootNodes: [] } }, /cluster.rootNodes: expected at least one/],
      [{ cluster: ['redis://a:1'] }, /cluster: expected \{ rootNodes/],
      [
        { cluster: { rootNodes: ['redis://a:1', 'rediss://b:2'] } },
        /cluster.rootNodes: expected the same scheme, user and password in every URL/,
      ],
      [
        { cluster: { rootNodes: ['redis://:one@a:1', 'redis://:two@b:2'] } },
        /cluster.rootNodes: expected the same scheme, user and password/,
      ],
      [{ url: 'redis://a:1', timeout: 0 }, /timeout: expected whole milliseconds from 1/],
      [{ url: 'redis://a:1', timeout: 1.5 }, /timeout: expected whole milliseconds/],
      [
        { url: 'redis://a:1', onUnavailable: 'ignore' },
        /onUnavailable: expected "refuse" or "accept"/,
      ],
      [{ url: 'redis://a:1', prefix: 7 }, /prefix: expected a string/],
      [{ url: 'redis://a:1', onWarning: 'log' }, /onWarning: expected a function/],
      [{ url: 'redis://a:1', ttl: 5 }, /unknown option "ttl"/],
    ]
    const got = problems.map(([options]) => {
      const error = construct(options)
      return error instanceof Error
        ? { code: (error as WsgiProxyError).code, message: error.message }
        : error
    })
    expect(got).toEqual(
      problems.map(([, message]) => ({
        code: 'INVALID_OPTIONS',
        message: expect.stringMatching(
          new RegExp(`^invalid options: RedisReplayStore.*${message.source}`),
        ),
      })),
    )
  })

  it('never puts a password in an options error', () => {
    const error = construct({ cluster: { rootNodes: ['redis://:hunter2@a:1', 'redis://b:2'] } })
    expect(error).toBeInstanceOf(Error)
    expect((error as Error).message).not.toContain('hunter2')
  })

  it('refuses a ttl that is not a positive number', async () => {
    const s = store({ url: shared.url })
    for (const ttl of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      await expect(s.checkAndSet(unique(), ttl)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' })
    }
  })

  it('works against a one-node Redis Cluster through cluster.rootNodes', async () => {
    const node = await ownRedis({ cluster: true })
    const s = store({ cluster: { rootNodes: [node.url] } })
    const keys = ['a', 'b', 'c', 'd'].map((nonce) => `k\u0000${nonce}`)
    for (const key of keys) expect(await s.checkAndSet(key, 60_000)).toBe('fresh')
    for (const key of keys) expect(await s.checkAndSet(key, 60_000)).toBe('replay')
    const client = await inspector(node.url)
    expect((await client.keys('wsgiproxy:nonce:*')).length).toBe(4)
    expect(await client.sendCommand(['CLUSTER', 'INFO'])).toMatch(/cluster_state:ok/)
    // A cluster client of your own does as well (connected by the store on first use).
    const own = createCluster({ rootNodes: [{ url: node.url }] })
    own.on('error', () => {})
    cleanups.push(async () => {
      if (own.isOpen) await own.close()
    })
    const viaClient = new RedisReplayStore({ client: own })
    expect(await viaClient.checkAndSet(keys[0] ?? '', 60_000)).toBe('replay')
    expect(await viaClient.checkAndSet('k\u0000e', 60_000)).toBe('fresh')
  })

  it('passes the user, password and TLS of the root nodes on to the nodes a cluster discovers', () => {
    const reconnectStrategy = expect.any(Function) as unknown
    expect(toClusterOptions(['rediss://app:s%40me@a:7000', 'rediss://app:s%40me@b:7000'])).toEqual({
      rootNodes: [{ url: 'rediss://app:s%40me@a:7000' }, { url: 'rediss://app:s%40me@b:7000' }],
      defaults: {
        disableOfflineQueue: true,
        username: 'app',
        password: 's@me',
        socket: { tls: true, reconnectStrategy },
      },
    })
    expect(toClusterOptions(['redis://a:7000'])).toEqual({
      rootNodes: [{ url: 'redis://a:7000' }],
      defaults: { disableOfflineQueue: true, socket: { reconnectStrategy } },
    })
  })

  it('answers unavailable at once when Redis was never reachable, then recovers', async () => {
    const redis = await ownRedis()
    await redis.stop()
    const warnings: RedisReplayStoreWarning[] = []
    // A timeout far beyond the test's own (5 s): a check that waited for it would fail the test.
    const s = store({ url: redis.url, timeout: 60_000, onWarning: (w) => void warnings.push(w) })
    // The refused connection is the answer to the first check; later ones do not wait either.
    for (let i = 0; i < 5; i++) expect(await s.checkAndSet(unique(), 60_000)).toBe('unavailable')
    await expect(s.connect()).rejects.toMatchObject({ code: 'REPLAY_STORE_UNAVAILABLE' })
    expect(warnings).toHaveLength(1)
    expect(warnings[0]?.message).toContain(`Redis at redis://127.0.0.1:${redis.port}`)
    // The store keeps trying: once Redis is up, checks succeed.
    await redis.start()
    await until(async () => (await s.checkAndSet(unique(), 60_000)) === 'fresh', 5_000, 'recovery')
    expect(warnings.map((w) => w.code)).toEqual([
      'REPLAY_STORE_UNAVAILABLE',
      'REPLAY_STORE_RECOVERED',
    ])
  })

  it('answers fresh at once when Redis was never reachable and onUnavailable is accept', async () => {
    const redis = await ownRedis()
    await redis.stop()
    const s = store({
      url: redis.url,
      timeout: 60_000,
      onUnavailable: 'accept',
      onWarning: () => {},
    })
    for (let i = 0; i < 5; i++) expect(await s.checkAndSet(unique(), 60_000)).toBe('fresh')
  })

  it('waits for a silent Redis on the first check only, up to the timeout', async () => {
    // Accepts connections and never answers: the handshake never ends, the client never gets ready.
    const sockets: Socket[] = []
    const silent = createServer((socket) => void sockets.push(socket))
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    cleanups.push(async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise((resolve) => silent.close(resolve))
    })
    const timeout = 1_000
    const { port } = silent.address() as AddressInfo
    const s = store({ url: `redis://127.0.0.1:${port}`, timeout, onWarning: () => {} })
    const started = performance.now()
    expect(await s.checkAndSet(unique(), 60_000)).toBe('unavailable')
    expect(performance.now() - started).toBeGreaterThanOrEqual(timeout - 10)
    // The first attempt took the whole timeout: later checks fail at once instead of waiting too.
    const late = new Promise((resolve) => setTimeout(() => resolve('waited'), timeout))
    for (let i = 0; i < 3; i++) {
      expect(await Promise.race([s.checkAndSet(unique(), 60_000), late])).toBe('unavailable')
    }
  })

  it('counts a Redis that stops answering as unavailable after the timeout', async () => {
    const redis = await ownRedis()
    const s = store({ url: redis.url, timeout: 300, onWarning: () => {} })
    await s.connect()
    expect(await s.checkAndSet(unique(), 60_000)).toBe('fresh')
    // Frozen, not dead: the connection stays open and the command is never answered.
    process.kill(redis.pid, 'SIGSTOP')
    cleanups.push(async () => process.kill(redis.pid, 'SIGCONT'))
    const started = performance.now()
    expect(await s.checkAndSet(unique(), 60_000)).toBe('unavailable')
    const elapsed = performance.now() - started
    expect(elapsed).toBeGreaterThanOrEqual(290)
    // Measured 302-319 ms on a 2-core machine; the bound leaves room for a loaded one.
    expect(elapsed).toBeLessThan(1_500)
    process.kill(redis.pid, 'SIGCONT')
    await until(async () => (await s.checkAndSet(unique(), 60_000)) === 'fresh', 5_000, 'recovery')
  })

  it.each(['url', 'cluster'] as const)(
    'closes (%s) while Redis is frozen with a check in flight',
    async (where) => {
      const redis = await ownRedis({ cluster: where === 'cluster' })
      const timeout = 300
      const s = new RedisReplayStore({
        ...(where === 'url' ? { url: redis.url } : { cluster: { rootNodes: [redis.url] } }),
        timeout,
        onWarning: () => {},
      })
      cleanups.push(() => s.close())
      expect(await s.checkAndSet(unique(), 60_000)).toBe('fresh')
      process.kill(redis.pid, 'SIGSTOP')
      cleanups.push(async () => process.kill(redis.pid, 'SIGCONT'))
      // A SET that timed out stays in node-redis's reply queue, and one more is in flight.
      expect(await s.checkAndSet(unique(), 60_000)).toBe('unavailable')
      const inFlight = s.checkAndSet(unique(), 60_000)
      // Ten times the timeout: room for a loaded machine, far below "until Redis answers".
      const bound = new Promise((resolve) => setTimeout(() => resolve('pending'), timeout * 10))
      expect(await Promise.race([s.close().then(() => 'closed'), bound])).toBe('closed')
      expect(await inFlight).toBe('unavailable')
    },
    // A one-node cluster takes about 2 s to start.
    15_000,
  )

  it('gives the password of the root node URL to the nodes a Redis Cluster discovers', async () => {
    const node = await ownRedis({ cluster: true })
    await redisCommand(node.port, 'CONFIG', 'SET', 'requirepass', 's@me pass')
    const url = `redis://default:${encodeURIComponent('s@me pass')}@127.0.0.1:${node.port}`
    const warnings: RedisReplayStoreWarning[] = []
    const s = store({ cluster: { rootNodes: [url] }, onWarning: (w) => void warnings.push(w) })
    const key = unique()
    expect(await s.checkAndSet(key, 60_000)).toBe('fresh')
    expect(await s.checkAndSet(key, 60_000)).toBe('replay')
    expect(warnings).toEqual([])
  })
})

// Sends a (signed) request: a clone, so that the same request can be sent again.
async function send(request: Request): Promise<{ status: number; type: string; body: string }> {
  const response = await fetch(request.clone())
  return {
    status: response.status,
    type: response.headers.get('content-type') ?? '',
    body: await response.text(),
  }
}

describe('RedisReplayStore behind a served verifier, with Redis stopped mid-test', () => {
  interface Backend {
    served: Served
    rejected: WsgiProxyError[]
    warnings: RedisReplayStoreWarning[]
    calls: number
  }

  async function backend(redis: RedisServer, onUnavailable: 'refuse' | 'accept'): Promise<Backend> {
    const warnings: RedisReplayStoreWarning[] = []
    const replayStore: ReplayStore = store({
      url: redis.url,
      onUnavailable,
      onWarning: (warning) => void warnings.push(warning),
    })
    const rejected: WsgiProxyError[] = []
    const result: Backend = { served: undefined as unknown as Served, rejected, warnings, calls: 0 }
    result.served = await serve(
      proxyMiddleware(
        () => {
          result.calls++
          return { status: 200, headers: [['content-type', 'text/plain']], body: null }
        },
        {
          verifier: createVerifier({ keys: [KEY], replayStore }),
          requireSignature: true,
          onReject: (error) => void rejected.push(error),
        },
      ),
    )
    cleanups.push(() => result.served.close())
    return result
  }

  const signer = createSigner({ keys: [KEY] })
  const signed = (served: Served): Promise<Request> =>
    signRequest(new Request(`${served.url}/x`), signer)
  it('refuse: answers 503 replay_store_unavailable problem+json, then recovers when Redis is back', async () => {
    const redis = await ownRedis()
    const b = await backend(redis, 'refuse')
    const first = await signed(b.served)
    expect((await send(first)).status).toBe(200)

    await redis.stop()
    const during = await send(await signed(b.served))
    expect(during.status).toBe(503)
    expect(during.type).toBe('application/problem+json')
    expect(JSON.parse(during.body)).toMatchObject({ status: 503, code: 'REPLAY_STORE_UNAVAILABLE' })
    expect(b.rejected.map((e) => (e as WsgiProxyError & { reason: string }).reason)).toEqual([
      'replay_store_unavailable',
    ])
    expect(b.calls).toBe(1)

    await redis.start()
    let recovered: Request | undefined
    await until(
      async () => {
        const request = await signed(b.served)
        if ((await send(request)).status !== 200) return false
        recovered = request
        return true
      },
      5_000,
      'a 200 after Redis came back',
    )
    expect((await send(await signed(b.served))).status).toBe(200)
    // A nonce recorded after the recovery is a replay; the app never sees it twice.
    const calls = b.calls
    expect((await send(recovered as Request)).status).toBe(401)
    expect(b.calls).toBe(calls)
    expect(b.warnings.map((w) => w.code)).toEqual([
      'REPLAY_STORE_UNAVAILABLE',
      'REPLAY_STORE_RECOVERED',
    ])
  })

  it('accept: answers 200 without a replay check and warns once per outage', async () => {
    const redis = await ownRedis()
    const b = await backend(redis, 'accept')
    expect((await send(await signed(b.served))).status).toBe(200)

    await redis.stop()
    const during = await signed(b.served)
    for (let i = 0; i < 5; i++) expect((await send(await signed(b.served))).status).toBe(200)
    expect((await send(during)).status).toBe(200)
    // Accepted twice: nothing could record it.
    expect((await send(during)).status).toBe(200)
    expect(b.warnings).toHaveLength(1)
    expect(b.warnings[0]).toMatchObject({ code: 'REPLAY_STORE_UNAVAILABLE' })
    expect(b.warnings[0]?.message).toMatch(/accepted WITHOUT a replay check/)
    expect(b.rejected).toEqual([])

    await redis.start()
    let recovered: Request | undefined
    await until(
      async () => {
        if (b.warnings.length < 2) {
          await send(await signed(b.served))
          return false
        }
        recovered = await signed(b.served)
        return (await send(recovered)).status === 200
      },
      5_000,
      'the recovery warning',
    )
    expect(b.warnings.map((w) => w.code)).toEqual([
      'REPLAY_STORE_UNAVAILABLE',
      'REPLAY_STORE_RECOVERED',
    ])
    expect((await send(recovered as Request)).status).toBe(401)
  })
})
