// Regression tests for seven defects a review of `serve --workers` and reloads found; each failed
// on the code before its fix. Real processes on 127.0.0.1; everything started is killed after.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { copyFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { Agent } from 'node:http'
import { Agent as HttpsAgent, get as httpsGet } from 'node:https'
import { createServer } from 'node:net'
import type { Server, Socket } from 'node:net'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { selfSignedCertificate } from '@wsgiproxy/test-kit/tls'
import { cleanup, isAlive, runCli, startCli, trackBackend, until } from './test/run-cli.ts'
import {
  count,
  getOnce,
  spawnRoute,
  startsIn,
  tempDir,
  textUpstream,
  workersOf,
  writeConfig,
} from './test/workers.ts'

const others = new Set<ChildProcess>()
const holders = new Set<{ server: Server; sockets: Set<Socket> }>()

afterEach(async () => {
  for (const other of others) other.kill('SIGKILL')
  others.clear()
  for (const { server, sockets } of holders) {
    for (const socket of sockets) socket.destroy()
    server.close()
  }
  holders.clear()
  await cleanup()
})

/** An upstream that takes connections and never answers; its port. */
async function holdingUpstream(): Promise<number> {
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.resume()
  })
  holders.add({ server, sockets })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as { port: number }).port
}

/** A GET on a fresh connection; `undefined` when it cannot connect or gets no answer. */
async function tryGet(url: string): Promise<{ status: number; body: string } | undefined> {
  return getOnce(url, new Agent({ keepAlive: false })).catch(() => undefined)
}

/** Polls until a GET on a fresh connection answers 200 with `body` (if given). */
async function untilServed(url: string, body?: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const answer = await tryGet(url)
    if (answer?.status === 200 && (body === undefined || answer.body === body)) return
    if (Date.now() > deadline) throw new Error(`${url} did not answer ${body ?? 200}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

describe('serve --workers, replacements', () => {
  it('replaces the only worker when it dies; the main process stays (it exited 13)', async () => {
    const dir = tempDir()
    writeConfig(join(dir, 'wsgiproxy.config.json'), { routes: [{ path: '/', type: 'echo' }] })
    const cli = await startCli(['serve', '--workers', '1'], dir)
    const [victim] = workersOf(cli.pid)
    process.kill(victim as number, 'SIGKILL')
    await cli.waitFor(/exited \(SIGKILL\); starting another/)
    await until(() => workersOf(cli.pid).some((pid) => pid !== victim), 20_000)
    await untilServed(`${cli.url}/`)
    expect(isAlive(cli.pid)).toBe(true)
  })

  it('tries a replacement that could not start again (it stayed one worker short)', async () => {
    const dir = tempDir()
    const pair = await selfSignedCertificate()
    const [cert, key, spare] = ['cert.pem', 'key.pem', 'spare.pem'].map((name) => join(dir, name))
    writeFileSync(cert as string, pair.cert)
    writeFileSync(key as string, pair.key)
    writeFileSync(spare as string, pair.key)
    writeConfig(join(dir, 'wsgiproxy.config.json'), {
      tls: { cert, key },
      routes: [{ path: '/', type: 'echo' }],
    })
    const cli = await startCli(['serve', '--workers', '2'], dir)
    // A renewal that replaces the files one by one, while a worker dies.
    rmSync(key as string)
    process.kill(workersOf(cli.pid)[0] as number, 'SIGKILL')
    await cli.waitFor(
      /a new worker could not start: cannot read tls\.key .*; trying again in \d+ ms/,
    )
    copyFileSync(spare as string, key as string)
    await until(() => workersOf(cli.pid).length === 2, 40_000)
    expect(cli.stderr()).toMatch(/trying again/)
  }, 60_000)

  it('keeps the port of --listen 127.0.0.1:0 when the only worker is replaced (it got another)', async () => {
    const dir = tempDir()
    const starts = join(dir, 'starts')
    writeConfig(join(dir, 'wsgiproxy.config.json'), { routes: [spawnRoute('/', starts)] })
    const cli = await startCli(['serve', '--workers', '1'], dir)
    await untilServed(`${cli.url}/`)
    trackBackend(startsIn(starts)[0] as number)
    const [victim] = workersOf(cli.pid)
    process.kill(victim as number, 'SIGKILL')
    await until(() => workersOf(cli.pid).some((pid) => pid !== victim), 20_000)
    await untilServed(`${cli.url}/`)
    expect(cli.stderr().match(/listening on/g)).toHaveLength(1)
  })
})

describe('serve --workers, reloads', () => {
  it('drains an old worker that was still booting when the reload swapped (it served the old config for good)', async () => {
    const dir = tempDir()
    const file = join(dir, 'wsgiproxy.config.json')
    const flag = join(dir, 'slow')
    // Preloaded into every process: a worker notes that it booted, and boots slowly while the
    // flag file exists (a replacement that has not listened, nor heard from the main process).
    const preload = join(dir, 'slow-boot.cjs')
    writeFileSync(
      preload,
      `const fs = require('node:fs')
if (process.env.WSGIPROXY_CLUSTER_WORKER === '1') {
  fs.appendFileSync(${JSON.stringify(`${flag}.booted`)}, process.pid + '\\n')
  if (fs.existsSync(${JSON.stringify(flag)})) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1500)
}
`,
    )
    const [a, b] = [await textUpstream('A'), await textUpstream('B')]
    writeConfig(file, { routes: [{ path: '/', type: 'proxy', href: a }] })
    const cli = await startCli(['serve', '--workers', '2'], dir, {
      NODE_OPTIONS: `--require ${preload}`,
    })
    const booted = (): number => readFileSync(`${flag}.booted`, 'utf8').split('\n').length - 1
    // Past a worker's 5 s "young" life, a dead worker is replaced at once: while the reload's new
    // generation still starts. (A setup wait, not a proof.)
    await new Promise((resolve) => setTimeout(resolve, 5_200))
    const old = workersOf(cli.pid)
    writeConfig(file, { routes: [{ path: '/', type: 'proxy', href: b }] })
    process.kill(cli.pid, 'SIGHUP')
    await until(() => booted() === 4, 20_000) // the new generation is past its preload
    writeFileSync(flag, '')
    process.kill(old[0] as number, 'SIGKILL') // its replacement (old config) boots slowly
    await cli.waitFor(/config reloaded/, 30_000)
    // Every new connection gets the new config.
    for (let i = 0; i < 30; i++) {
      expect((await getOnce(`${cli.url}/`, new Agent({ keepAlive: false }))).body).toBe('B')
    }
  }, 60_000)

  it('ends an idle HTTP/1.1 connection beside HTTP/2 at the keep-alive timeout, not at drainTimeout', async () => {
    const dir = tempDir()
    const file = join(dir, 'wsgiproxy.config.json')
    const pair = await selfSignedCertificate()
    writeFileSync(join(dir, 'cert.pem'), pair.cert)
    writeFileSync(join(dir, 'key.pem'), pair.key)
    const [a, b] = [await textUpstream('A'), await textUpstream('B')]
    // drainTimeout far above node's 5 s keep-alive timeout: which of the two ends the connection
    // shows in its life, with room for a loaded machine on either side.
    const config = (href: string): Record<string, unknown> => ({
      tls: { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') },
      http2: true,
      drainTimeout: '60s',
      routes: [{ path: '/', type: 'proxy', href }],
    })
    writeConfig(file, config(a))
    const cli = await startCli(['serve', '--workers', '1'], dir)
    const agent = new HttpsAgent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: false })
    await new Promise<void>((resolve, reject) =>
      httpsGet(`${cli.url}/`, { agent }, (res) => res.resume().on('end', resolve)).on(
        'error',
        reject,
      ),
    )
    const socket = Object.values(agent.freeSockets)[0]?.[0]
    expect(socket).toBeDefined()
    const startedAt = Date.now()
    const closedAfter = new Promise<number>((resolve) =>
      socket?.once('close', () => resolve(Date.now() - startedAt)),
    )
    writeConfig(file, config(b))
    process.kill(cli.pid, 'SIGHUP')
    expect(await closedAfter).toBeLessThan(30_000)
    agent.destroy()
  }, 90_000)
})

describe('serve reload in one process', () => {
  it('applies a second reload while the first one’s old config has a request that never ends (it waited for it)', async () => {
    const dir = tempDir()
    const file = join(dir, 'wsgiproxy.config.json')
    const hang = await holdingUpstream()
    const [a, b, c] = [await textUpstream('A'), await textUpstream('B'), await textUpstream('C')]
    const config = (href: string): Record<string, unknown> => ({
      drainTimeout: '1s',
      routes: [
        // A route with its own transport (upstream settings) to an upstream that never answers.
        {
          path: '/hang',
          type: 'proxy',
          href: `http://127.0.0.1:${hang}`,
          upstream: {},
          timeouts: { headers: false },
        },
        { path: '/', type: 'proxy', href },
      ],
    })
    writeConfig(file, config(a))
    const cli = await startCli(['serve'], dir)
    void tryGet(`${cli.url}/hang/`)
    writeConfig(file, config(b))
    process.kill(cli.pid, 'SIGHUP')
    await cli.waitFor(/config reloaded/)
    expect((await tryGet(`${cli.url}/`))?.body).toBe('B')
    writeConfig(file, config(c))
    process.kill(cli.pid, 'SIGHUP')
    await until(() => count(cli.stderr(), /config reloaded/) === 2, 20_000)
    expect((await tryGet(`${cli.url}/`))?.body).toBe('C')
  })
})

describe('wsgiproxy reload, a stale pid file', () => {
  it('signals nothing when the pid is not wsgiproxy serve (it ended whatever had the pid)', async () => {
    const dir = tempDir()
    const other = spawn('sleep', ['60'], { stdio: 'ignore' })
    others.add(other)
    writeFileSync(join(dir, 'pid'), `${other.pid}\n`)
    const result = await runCli(['reload', '--pid-file', join(dir, 'pid')])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(
      /process \d+ is not wsgiproxy serve \(sleep 60\) \(.*pid may be stale\); nothing was signalled/,
    )
    expect(other.signalCode).toBeNull()
    expect(isAlive(other.pid ?? 0)).toBe(true)
    const init = await runCli(['reload', '1'])
    expect(init.stderr).toMatch(/process 1 is the init process/)
  })
})
