// `wsgiproxy serve --workers N` and reloads, with real processes: the main process, its workers
// (node:cluster) and the backends it spawns, under load from keep-alive clients (node:http's
// Agent, which never sends a request again by itself: every failure is counted).
import { readFileSync, writeFileSync } from 'node:fs'
import { Agent } from 'node:http'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { WebSocket } from 'ws'
import { childrenOf } from '@wsgiproxy/test-kit/spawner-helpers'
import { cleanup, isAlive, runCli, startCli, trackBackend, until } from './test/run-cli.ts'
import {
  count,
  getOnce,
  holderOf,
  load,
  openFds,
  spawnRoute,
  startsIn,
  tempDir,
  textUpstream,
  workersOf,
  writeConfig,
} from './test/workers.ts'

afterEach(cleanup)

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

describe('serve --workers', () => {
  it('serves from two workers; a spawn route starts exactly one backend for both', async () => {
    const dir = tempDir()
    const starts = join(dir, 'starts')
    writeConfig(join(dir, 'wsgiproxy.config.json'), { routes: [spawnRoute('/', starts)] })
    const cli = await startCli(['serve', '--workers', '2'], dir)
    expect(cli.stderr()).toMatch(/listening on http:\/\/127\.0\.0\.1:\d+ \(2 workers\)/)
    expect(workersOf(cli.pid)).toHaveLength(2)
    // 40 first requests at once on fresh connections, which the workers accept.
    const agent = new Agent({ keepAlive: false })
    const answers = await Promise.all(
      Array.from({ length: 40 }, () => getOnce(`${cli.url}/`, agent)),
    )
    expect(answers.map((answer) => answer.status)).toEqual(Array(40).fill(200))
    const pids = new Set(answers.map((answer) => (JSON.parse(answer.body) as { pid: number }).pid))
    expect(startsIn(starts)).toHaveLength(1)
    expect([...pids]).toEqual(startsIn(starts))
    trackBackend(startsIn(starts)[0] as number)
    // The backend is the main process's child, not a worker's.
    expect(childrenOf(cli.pid)).toContain(startsIn(starts)[0])

    cli.child.kill('SIGTERM')
    expect(await cli.exited).toBe(0)
    expect(cli.stderr()).toMatch(/stopped/)
    expect(isAlive(startsIn(starts)[0] as number)).toBe(false)
  })

  it('replaces a worker killed under load; only requests on its connections fail', async () => {
    const dir = tempDir()
    const starts = join(dir, 'starts')
    writeConfig(join(dir, 'wsgiproxy.config.json'), { routes: [spawnRoute('/', starts)] })
    const cli = await startCli(['serve', '--workers', '2'], dir)
    const concurrency = 16
    const traffic = load(`${cli.url}/`, concurrency)
    await until(() => traffic.ok() >= 200, 20_000)
    trackBackend(startsIn(starts)[0] as number)
    const [victim] = workersOf(cli.pid)
    process.kill(victim as number, 'SIGKILL')
    await cli.waitFor(/worker pid \d+ exited \(SIGKILL\); starting another/)
    await until(
      () => workersOf(cli.pid).length === 2 && !workersOf(cli.pid).includes(victim as number),
      20_000,
    )
    // Every client has recovered once 500 more requests succeeded (a client notices its dead
    // connection on its next request, which may end after the replacement appeared).
    const okAtReplacement = traffic.ok()
    await until(() => traffic.ok() >= okAtReplacement + 500, 30_000)
    const failedAtKill = traffic.failures.length
    const okAfter = traffic.ok()
    await until(() => traffic.ok() >= okAfter + 500, 30_000)
    await traffic.stop()
    // Each client connection the killed worker held fails at most once: its request in flight,
    // or the one it sent before it saw the connection close. None is an HTTP error.
    expect(failedAtKill).toBeLessThanOrEqual(concurrency)
    expect(traffic.failures.every((failure) => !failure.what.startsWith('status'))).toBe(true)
    // Once the replacement serves, nothing fails (a connection left hanging at the kill shows up
    // here too, as "no answer in 20 s").
    expect(traffic.failures.slice(failedAtKill)).toEqual([])
    // Still one backend for all workers, old and new.
    expect(startsIn(starts)).toHaveLength(1)
  }, 60_000)

  it('answers the connections that arrive while a worker dies; none is left hanging', async () => {
    const dir = tempDir()
    writeConfig(join(dir, 'wsgiproxy.config.json'), { routes: [{ path: '/', type: 'echo' }] })
    const cli = await startCli(['serve', '--workers', '2'], dir)
    const fresh = (): Promise<number | string> =>
      getOnce(`${cli.url}/`, new Agent({ keepAlive: false }), 5_000).then(
        (answer) => answer.status,
        (error: Error) => error.message,
      )
    // Both workers have served: both wait for connections.
    expect(await Promise.all(Array.from({ length: 8 }, fresh))).toEqual(Array(8).fill(200))
    // The victim is the worker that did not take the last connection: node:cluster's round robin
    // (in the main process) would hand it the next one.
    const keepAlive = new Agent({ keepAlive: true })
    expect((await getOnce(`${cli.url}/`, keepAlive)).status).toBe(200)
    const workers = workersOf(cli.pid)
    const last = holderOf(Number(new URL(cli.url).port), workers)
    expect(workers).toContain(last)
    const victim = workers.find((pid) => pid !== last)
    keepAlive.destroy()
    // The main process is held, as on a busy machine, while connections arrive and a worker dies:
    // it learns of the death only after them. (Round robin passed the first one to the dead worker
    // and kept it open for ever.)
    process.kill(cli.pid, 'SIGSTOP')
    let before: Promise<number | string>[]
    let after: Promise<number | string>[]
    try {
      before = Array.from({ length: 8 }, fresh)
      await pause(200)
      process.kill(victim as number, 'SIGKILL')
      await pause(100)
      after = Array.from({ length: 8 }, fresh)
      await pause(200)
    } finally {
      process.kill(cli.pid, 'SIGCONT')
    }
    // A connection the dead worker took may be reset; none waits for an answer that never comes.
    const unanswered = (await Promise.all(before)).filter(
      (result) => !/^(200|socket hang up|read ECONNRESET)$/.test(String(result)),
    )
    expect(unanswered).toEqual([])
    // One that arrived after its death is the other worker's.
    expect(await Promise.all(after)).toEqual(Array(8).fill(200))
  })

  it('reloads 20 times under constant load without a failed request or a leaked process or fd', async () => {
    const dir = tempDir()
    const file = join(dir, 'wsgiproxy.config.json')
    const starts = join(dir, 'starts')
    const upstreams = [await textUpstream('A'), await textUpstream('B')]
    const configOf = (i: number): Record<string, unknown> => ({
      routes: [
        spawnRoute('/spawned', starts),
        { path: '/', type: 'proxy', href: upstreams[i % 2] },
      ],
    })
    writeConfig(file, configOf(0))
    const cli = await startCli(['serve', '--workers', '2', '--pid-file', join(dir, 'pid')], dir)
    const spawned = load(`${cli.url}/spawned/`, 4)
    const proxied = load(`${cli.url}/`, 8)
    await until(() => spawned.ok() >= 50 && proxied.ok() >= 100, 20_000)
    const backend = startsIn(starts)[0] as number
    trackBackend(backend)
    const fdsBefore = openFds(cli.pid)
    const childrenBefore = childrenOf(cli.pid).length
    for (let i = 1; i <= 20; i++) {
      writeConfig(file, configOf(i))
      const result = await runCli(['reload', '--pid-file', join(dir, 'pid')])
      expect(result.code).toBe(0)
      await until(() => count(cli.stderr(), /config reloaded/) === i, 30_000)
      console.log(
        'reload',
        i,
        spawned.ok(),
        proxied.ok(),
        JSON.stringify(spawned.failures.slice(-3)),
        JSON.stringify(proxied.failures.slice(-3)),
      )
      // The new config answers: a request on a fresh connection gets the other upstream.
      const fresh = await getOnce(`${cli.url}/`, new Agent({ keepAlive: false }))
      expect(fresh.body).toBe(i % 2 === 0 ? 'A' : 'B')
    }
    // The old workers finish and exit; what is left is what there was before.
    await until(() => childrenOf(cli.pid).length === childrenBefore, 30_000)
    const okBefore = proxied.ok()
    await until(() => proxied.ok() >= okBefore + 100, 20_000)
    await Promise.all([spawned.stop(), proxied.stop()])
    expect(spawned.failures).toEqual([])
    expect(proxied.failures).toEqual([])
    expect(proxied.bodies.get('A')).toBeGreaterThan(0)
    expect(proxied.bodies.get('B')).toBeGreaterThan(0)
    // The unchanged spawn route kept its backend through every reload.
    expect(startsIn(starts)).toEqual([backend])
    expect(workersOf(cli.pid)).toHaveLength(2)
    // Each worker has one IPC channel in the main process; 20 generations came and went.
    expect(openFds(cli.pid)).toBeLessThanOrEqual(fdsBefore)

    cli.child.kill('SIGTERM')
    expect(await cli.exited).toBe(0)
    expect(isAlive(backend)).toBe(false)
  }, 180_000)

  it('refuses an invalid config on reload and keeps serving with the old one', async () => {
    const dir = tempDir()
    const file = join(dir, 'wsgiproxy.config.json')
    const a = await textUpstream('A')
    writeConfig(file, { routes: [{ path: '/', type: 'proxy', href: a }] })
    const cli = await startCli(['serve', '--workers', '2'], dir)
    const workers = workersOf(cli.pid).toSorted()
    writeConfig(file, { routes: [{ path: '/', type: 'proxy', hreff: a }] })
    process.kill(cli.pid, 'SIGHUP')
    await cli.waitFor(/reload refused: config file .*routes\[0\].*; the config in use stays/)
    writeFileSync(file, '{ "routes": [')
    process.kill(cli.pid, 'SIGHUP')
    await cli.waitFor(/reload refused: config file .* is not valid JSON.*the config in use stays/)
    expect(workersOf(cli.pid).toSorted()).toEqual(workers)
    const answer = await getOnce(`${cli.url}/`, new Agent())
    expect(answer).toEqual({ status: 200, body: 'A' })
    cli.child.kill('SIGTERM')
    expect(await cli.exited).toBe(0)
  })

  it('drains every worker on SIGTERM: a request in flight is answered', async () => {
    const dir = tempDir()
    const starts = join(dir, 'starts')
    const requests = join(dir, 'requests')
    writeConfig(join(dir, 'wsgiproxy.config.json'), {
      routes: [spawnRoute('/', starts, { REQUESTS_FILE: requests })],
    })
    const cli = await startCli(['serve', '--workers', '2'], dir)
    await getOnce(`${cli.url}/`, new Agent())
    trackBackend(startsIn(starts)[0] as number)
    const slow = getOnce(`${cli.url}/slow?ms=1500`, new Agent())
    // SIGTERM once the backend has the request.
    await until(() => readFileSync(requests, 'utf8').includes('/slow'))
    cli.child.kill('SIGTERM')
    expect(await slow).toEqual({ status: 200, body: expect.stringMatching(/^slow done by \d+$/) })
    expect(await cli.exited).toBe(0)
    expect(isAlive(startsIn(starts)[0] as number)).toBe(false)
  })

  it('keeps a WebSocket open across a reload for the drain time, then closes it', async () => {
    const dir = tempDir()
    const file = join(dir, 'wsgiproxy.config.json')
    const starts = join(dir, 'starts')
    const config = (name: string): Record<string, unknown> => ({
      drainTimeout: '2s',
      routes: [{ ...spawnRoute('/', starts, { WEBSOCKET: '1' }), name }],
    })
    writeConfig(file, config('first'))
    const cli = await startCli(['serve', '--workers', '2'], dir)
    const socket = new WebSocket(`${cli.url.replace('http', 'ws')}/`)
    const messages: string[] = []
    const next = (): Promise<string> =>
      new Promise((resolve) => socket.once('message', (data: Buffer) => resolve(data.toString())))
    const hello = next()
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject))
    messages.push(await hello)
    trackBackend(startsIn(starts)[0] as number)
    const closed = new Promise<number>((resolve) => socket.once('close', resolve))
    // A changed route: new workers, a new backend; the old worker keeps the WebSocket.
    writeConfig(file, config('second'))
    process.kill(cli.pid, 'SIGHUP')
    await cli.waitFor(/config reloaded/)
    const echo = next()
    socket.send('still there')
    expect(await echo).toBe('still there')
    // After the drain time the old worker cuts it and exits.
    expect(await closed).toBeGreaterThan(0)
    expect(JSON.parse(messages[0] as string)).toMatchObject({ pid: startsIn(starts)[0] })
    for (const pid of startsIn(starts)) trackBackend(pid)
    cli.child.kill('SIGTERM')
    expect(await cli.exited).toBe(0)
  })

  it('checks --workers', async () => {
    const dir = tempDir()
    writeConfig(join(dir, 'wsgiproxy.config.json'), { routes: [{ path: '/', type: 'echo' }] })
    for (const value of ['0', 'two', '257']) {
      const result = await runCli(['serve', '--workers', value], dir)
      expect(result.code).toBe(1)
      expect(result.stderr).toMatch(
        /--workers must be a number of processes from 1 to 256, or auto/,
      )
    }
  })
})

describe('serve reload in one process', () => {
  it('takes the new routes on SIGHUP; requests in flight finish on the old ones', async () => {
    const dir = tempDir()
    const file = join(dir, 'wsgiproxy.config.json')
    const starts = join(dir, 'starts')
    const [a, b] = [await textUpstream('A'), await textUpstream('B')]
    writeConfig(file, {
      routes: [spawnRoute('/spawned', starts), { path: '/', type: 'proxy', href: a }],
    })
    const cli = await startCli(['serve'], dir)
    await getOnce(`${cli.url}/spawned/`, new Agent())
    const backend = startsIn(starts)[0] as number
    trackBackend(backend)
    const traffic = load(`${cli.url}/`, 8)
    const slow = getOnce(`${cli.url}/spawned/slow?ms=1000`, new Agent())
    await until(() => traffic.ok() >= 100)
    writeConfig(file, {
      routes: [spawnRoute('/spawned', starts), { path: '/', type: 'proxy', href: b }],
    })
    process.kill(cli.pid, 'SIGHUP')
    await cli.waitFor(/config reloaded/)
    expect(await slow).toEqual({ status: 200, body: expect.stringMatching(/^slow done by/) })
    expect((await getOnce(`${cli.url}/`, new Agent())).body).toBe('B')
    // A change only a restart applies is named, and the routes still reload.
    writeConfig(file, {
      listen: '127.0.0.1:1',
      routes: [spawnRoute('/spawned', starts), { path: '/', type: 'proxy', href: a }],
    })
    process.kill(cli.pid, 'SIGHUP')
    await cli.waitFor(/reload: listen changed in .*: that takes a restart/)
    await until(() => count(cli.stderr(), /config reloaded/) === 2)
    expect((await getOnce(`${cli.url}/`, new Agent())).body).toBe('A')
    writeConfig(file, { routes: [{ path: '/', type: 'nope' }] })
    process.kill(cli.pid, 'SIGHUP')
    await cli.waitFor(/reload refused: config file .*; the config in use stays/)
    expect((await getOnce(`${cli.url}/`, new Agent())).body).toBe('A')
    await traffic.stop()
    expect(traffic.failures).toEqual([])
    // The spawn route did not change: its backend served on.
    expect(startsIn(starts)).toEqual([backend])
    expect(isAlive(backend)).toBe(true)
    cli.child.kill('SIGTERM')
    expect(await cli.exited).toBe(0)
    expect(isAlive(backend)).toBe(false)
  })
})

describe('wsgiproxy reload', () => {
  it('names what is wrong with its pid file or pid', async () => {
    const dir = tempDir()
    const missing = await runCli(['reload', '--pid-file', join(dir, 'nope')])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/pid file .*nope does not exist: is wsgiproxy serve running/)
    writeFileSync(join(dir, 'bad'), 'hello\n')
    const bad = await runCli(['reload', '--pid-file', join(dir, 'bad')])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/must hold a process id such as 4242 \(got "hello"\)/)
    const none = await runCli(['reload'])
    expect(none.code).toBe(1)
    expect(none.stderr).toMatch(/reload expects --pid-file FILE .* or one process id/)
  })
})
