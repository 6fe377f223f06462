// `wsgiproxy echo --replay-redis URL` (and an echo route's `replayStore`): two echo processes
// verifying with one key file share their nonces in a real Redis, so a signed request answered
// by one is refused by the other.
import { request } from 'node:http'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSigner } from '@wsgiproxy/core'
import { loadKeyFile } from '@wsgiproxy/node'
import { startRedis } from '@wsgiproxy/test-kit/redis'
import type { RedisServer } from '@wsgiproxy/test-kit/redis'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { cleanup, runCli, startCli } from './test/run-cli.ts'

const LISTEN = ['--listen', '127.0.0.1:0']
// Both echo processes answer for this name, whatever port a request reached (the signed authority).
const HOST = 'backend.internal'

let dir: string
let keyFile: string
let redis: RedisServer
beforeAll(async () => {
  redis = await startRedis()
})
afterAll(async () => {
  await redis.close()
})
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wsgiproxy-cli-replay-'))
  keyFile = join(dir, 'keys')
  const made = await runCli(['keygen', '--out', keyFile])
  if (made.code !== 0) throw new Error(`wsgiproxy keygen failed: ${made.stderr}`)
})
afterEach(async () => {
  await cleanup()
  await rm(dir, { recursive: true, force: true })
})

/** Signs a GET of `path` for {@link HOST} with the key file's key: its header lines. */
async function signedHeaders(path: string): Promise<Array<[string, string]>> {
  const signer = createSigner({ keys: await loadKeyFile(keyFile) })
  const { headers } = await signer.sign({
    method: 'GET',
    url: new URL(`http://${HOST}${path}`),
    headers: [],
    body: null,
  })
  return headers
}

/** Sends a GET with these header lines and `Host: backend.internal` (fetch cannot set Host). */
function send(
  url: string,
  path: string,
  headers: Array<[string, string]>,
): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}${path}`,
      { headers: { ...Object.fromEntries(headers), host: HOST, accept: 'application/json' } },
      (res) => {
        let body = ''
        res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk))
        res.once('end', () =>
          resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'] ?? '', body }),
        )
      },
    )
    req.once('error', reject)
    req.end()
  })
}

describe('wsgiproxy echo --replay-redis', () => {
  it('refuses with 401 a signed request replayed from one echo process to another', async () => {
    const echo = ['echo', '--key-file', keyFile, '--replay-redis', redis.url, ...LISTEN]
    const [a, b] = await Promise.all([startCli(echo), startCli(echo)])
    const headers = await signedHeaders('/orders/1')
    expect((await send(a.url, '/orders/1', headers)).status).toBe(200)
    const replayed = await send(b.url, '/orders/1', headers)
    expect(replayed.status).toBe(401)
    await b.waitFor(/request refused: signature rejected \(replay\)/)
    // Another signed request is still welcome at either.
    expect((await send(b.url, '/orders/2', await signedHeaders('/orders/2'))).status).toBe(200)
  })

  it('answers 503 REPLAY_STORE_UNAVAILABLE while Redis is away, and warns in its log', async () => {
    const own = await startRedis()
    try {
      const echo = await startCli([
        'echo',
        '--key-file',
        keyFile,
        '--replay-redis',
        own.url,
        ...LISTEN,
      ])
      expect((await send(echo.url, '/a', await signedHeaders('/a'))).status).toBe(200)
      await own.stop()
      const during = await send(echo.url, '/b', await signedHeaders('/b'))
      expect(during.status).toBe(503)
      expect(during.type).toBe('application/problem+json')
      expect(JSON.parse(during.body)).toMatchObject({ code: 'REPLAY_STORE_UNAVAILABLE' })
      await echo.waitFor(
        /route \/: the replay store cannot reach Redis at redis:\/\/127\.0\.0\.1:\d+/,
      )
    } finally {
      await own.close()
    }
  })

  it('refuses a --replay-redis that is not a redis:// URL, or given without --key-file', async () => {
    const bad = await runCli(['echo', '--key-file', keyFile, '--replay-redis', 'http://x:6379'])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toBe(
      'wsgiproxy: --replay-redis must be a redis:// or rediss:// URL such as redis://127.0.0.1:6379 (got "http://x:6379")\n',
    )
    // A password in the value is not repeated.
    const secret = await runCli([
      'echo',
      '--key-file',
      keyFile,
      '--replay-redis',
      'http://u:pw@x:1',
    ])
    expect(secret.stderr).toContain('(got "http://u:***@x:1")')
    expect(secret.stderr).not.toContain('pw')
    const alone = await runCli(['echo', '--replay-redis', redis.url])
    expect(alone.code).toBe(1)
    expect(alone.stderr).toBe(
      'wsgiproxy: --replay-redis needs --key-file: it keeps the nonces of verified signatures\n',
    )
  })
})

/** Writes a config file with one echo route at / (keys relative to it) and returns its path. */
async function config(route: Record<string, unknown>): Promise<string> {
  const file = join(dir, 'wsgiproxy.json')
  await writeFile(
    file,
    JSON.stringify({ listen: '127.0.0.1:0', routes: [{ path: '/', type: 'echo', ...route }] }),
  )
  return file
}

describe('an echo route with replayStore in the config file', () => {
  it('shares the nonces with an echo process of the command line, under its prefix', async () => {
    const file = await config({
      keyFile: 'keys',
      replayStore: { redis: redis.url, prefix: 'shared:', timeout: '300ms' },
    })
    const served = await startCli(['serve', '--config', file])
    const flag = await startCli([
      'echo',
      '--key-file',
      keyFile,
      '--replay-redis',
      redis.url,
      ...LISTEN,
    ])
    const headers = await signedHeaders('/x')
    expect((await send(served.url, '/x', headers)).status).toBe(200)
    // The other process keeps its nonces under the default prefix: not shared with this one.
    expect((await send(flag.url, '/x', headers)).status).toBe(200)
    expect((await send(served.url, '/x', headers)).status).toBe(401)
  })

  it('refuses a replayStore without keyFile or with a URL that is not redis://', async () => {
    const alone = await runCli([
      'serve',
      '--config',
      await config({ replayStore: { redis: redis.url } }),
    ])
    expect(alone.code).toBe(1)
    expect(alone.stderr).toContain('route /: replayStore needs keyFile')
    const bad = await runCli([
      'serve',
      '--config',
      await config({ keyFile: 'keys', replayStore: { redis: 'localhost:6379' } }),
    ])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/replayStore\.redis: expected a redis:\/\/ or rediss:\/\/ URL/)
  })
})
