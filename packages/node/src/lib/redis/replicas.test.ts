// Two replicas of one backend as real processes (fixtures/replay-replica.mjs) behind no balancer:
// 1,000 signed requests each answered by replica A, then each replayed to replica B. With one
// RedisReplayStore shared by both, B refuses every replay; with a MemoryReplayStore each, B
// accepts them (the control run: the test can fail).
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { Agent, request } from 'node:http'
import { fileURLToPath } from 'node:url'
import type { SigningKey } from '@wsgiproxy/core'
import { createSigner } from '@wsgiproxy/core'
import { startRedis } from '@wsgiproxy/test-kit/redis'
import type { RedisServer } from '@wsgiproxy/test-kit/redis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'

const REPLICA = fileURLToPath(new URL('../../test/fixtures/replay-replica.mjs', import.meta.url))
const KEY: SigningKey = { id: 'replica-test', secret: new Uint8Array(32).fill(5) }
const REQUESTS = 1_000
const CONCURRENCY = 16

interface Replica {
  child: ChildProcess
  port: number
  /** The `rejected <status> <reason>` lines it printed. */
  rejections: string[]
}

const children: ChildProcess[] = []
afterEach(async () => {
  await Promise.all(
    children.splice(0).map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve()
          child.once('exit', () => resolve())
          if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL')
        }),
    ),
  )
})

let redis: RedisServer
beforeAll(async () => {
  redis = await startRedis()
})
afterAll(async () => {
  await redis.close()
})

function startReplica(redisUrl: string): Promise<Replica> {
  const child = spawn(process.execPath, [REPLICA], {
    env: {
      ...process.env,
      SIGNING_SECRET: Buffer.from(KEY.secret).toString('base64'),
      REDIS_URL: redisUrl,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  children.push(child)
  const rejections: string[] = []
  return new Promise((resolve, reject) => {
    let buffered = ''
    child.once('exit', (code) =>
      reject(new Error(`the replica exited (${code}) before it was ready`)),
    )
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk
      const lines = buffered.split('\n')
      buffered = lines.pop() ?? ''
      for (const line of lines) {
        const ready = /^replica ready on (\d+)$/.exec(line)
        if (ready !== null) resolve({ child, port: Number(ready[1]), rejections })
        else if (line.startsWith('rejected ')) rejections.push(line)
      }
    })
  })
}

/** Signs `count` requests for the replicas' one name and keeps their header lines. */
async function signRequests(count: number): Promise<Array<Array<[string, string]>>> {
  const signer = createSigner({ keys: [KEY] })
  const signed: Array<Array<[string, string]>> = []
  for (let i = 0; i < count; i++) {
    const { headers } = await signer.sign({
      method: 'GET',
      url: new URL(`http://backend.internal/orders/${i}`),
      headers: [['accept', 'text/plain']],
      body: null,
    })
    signed.push(headers)
  }
  return signed
}

/** Sends each signed request to a replica, `CONCURRENCY` at a time; the statuses in order. */
async function sendAll(port: number, signed: Array<Array<[string, string]>>): Promise<number[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY })
  const statuses: number[] = []
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < signed.length) {
      const index = next++
      statuses[index] = await send(port, index, signed[index] ?? [], agent)
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  agent.destroy()
  return statuses
}

function send(
  port: number,
  index: number,
  headers: Array<[string, string]>,
  agent: Agent,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path: `/orders/${index}`,
        agent,
        headers: Object.fromEntries([...headers, ['host', 'backend.internal']]),
      },
      (res) => {
        res.resume()
        res.once('end', () => resolve(res.statusCode ?? 0))
      },
    )
    req.once('error', reject)
    req.end()
  })
}

const count = (statuses: number[], status: number): number =>
  statuses.filter((s) => s === status).length

describe('replicas sharing a RedisReplayStore', () => {
  it(`refuse all ${REQUESTS} requests replayed from one replica to the other`, async () => {
    const [a, b] = await Promise.all([startReplica(redis.url), startReplica(redis.url)])
    const signed = await signRequests(REQUESTS)
    const first = await sendAll(a.port, signed)
    expect(count(first, 200)).toBe(REQUESTS)
    const replayed = await sendAll(b.port, signed)
    expect(count(replayed, 401)).toBe(REQUESTS)
    expect(b.rejections).toHaveLength(REQUESTS)
    expect(new Set(b.rejections)).toEqual(new Set(['rejected 401 replay']))
    expect(a.rejections).toEqual([])
  }, 60_000)

  it('accept the replays when each keeps its own MemoryReplayStore (the control)', async () => {
    const [a, b] = await Promise.all([startReplica(''), startReplica('')])
    const signed = await signRequests(REQUESTS)
    expect(count(await sendAll(a.port, signed), 200)).toBe(REQUESTS)
    expect(count(await sendAll(b.port, signed), 200)).toBe(REQUESTS)
    expect(b.rejections).toEqual([])
    // Each replica alone still refuses a replay to itself.
    expect(count(await sendAll(a.port, signed.slice(0, 10)), 401)).toBe(10)
  }, 60_000)
})
