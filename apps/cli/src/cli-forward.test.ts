// `wsgiproxy forward` as its users see it: CONNECT tunnels (curl to an https:// server, and a
// hand-made client for the finer points), where tunnels and plain requests may go (--allow,
// --deny, --connect-port, loops), proxy authentication (--auth-file, wsgiproxy passwd) and
// tunnel hygiene, with the built command and real sockets on 127.0.0.1.
import { execFile } from 'node:child_process'
import { lookup } from 'node:dns/promises'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { request } from 'node:http'
import type { IncomingHttpHeaders } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { connect, createServer as createNetServer, isIP } from 'node:net'
import type { AddressInfo, Server, Socket } from 'node:net'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { selfSignedCertificate } from '@wsgiproxy/test-kit/tls'
import type { TestCertificate } from '@wsgiproxy/test-kit/tls'
import {
  cleanup,
  runCli,
  startCli,
  startCountingUpstream,
  startUpstream,
  until,
} from './test/run-cli.ts'

const exec = promisify(execFile)
const CURL = '/usr/bin/curl'
const LISTEN = ['--listen', '127.0.0.1:0']

let dir: string
let certificate: TestCertificate
let caFile: string
const servers = new Set<Server>()
const sockets = new Set<Socket>()

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wsgiproxy-forward-'))
  certificate = await selfSignedCertificate(['localhost'])
  caFile = join(dir, 'ca.pem')
  await writeFile(caFile, certificate.cert)
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})
afterEach(async () => {
  await cleanup()
  for (const socket of sockets) socket.destroy()
  sockets.clear()
  await Promise.all(
    [...servers].map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
  )
  servers.clear()
})

async function listen(server: Server): Promise<number> {
  servers.add(server)
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as AddressInfo).port
}

/** An HTTPS server on 127.0.0.1 (a certificate for localhost) that counts its connections. */
async function startTlsTarget(): Promise<{
  port: number
  connections: () => number
  requests: IncomingHttpHeaders[]
}> {
  let connections = 0
  const requests: IncomingHttpHeaders[] = []
  const server = createHttpsServer(certificate, (req, res) => {
    requests.push(req.headers)
    res.setHeader('content-type', 'text/plain')
    res.end(`secure ${req.url}`)
  })
  server.on('connection', () => connections++)
  const port = await listen(server)
  return { port, connections: () => connections, requests }
}

/** A TCP server on 127.0.0.1 that records what each connection sends and how it ends. */
interface TcpTarget {
  port: number
  connections: () => number
  /** The server side of each connection, in order. */
  peers: Socket[]
  /** Everything received, all connections together. */
  received: () => string
  /** `end` and `close` of each connection, as `0:end`, `0:close`. */
  events: string[]
}

async function startTcpTarget(
  options: { allowHalfOpen?: boolean; onSocket?: (socket: Socket) => void } = {},
): Promise<TcpTarget> {
  const peers: Socket[] = []
  const events: string[] = []
  let received = ''
  const server = createNetServer({ allowHalfOpen: options.allowHalfOpen ?? false }, (socket) => {
    const index = peers.push(socket) - 1
    socket.on('error', () => {})
    socket.setEncoding('utf8').on('data', (chunk: string) => (received += chunk))
    socket.once('end', () => events.push(`${index}:end`))
    socket.once('close', () => events.push(`${index}:close`))
    options.onSocket?.(socket)
  })
  const port = await listen(server)
  return { port, connections: () => peers.length, peers, received: () => received, events }
}

/** A CONNECT through the proxy by hand: the answer's head, then the tunnel's bytes. */
interface Connected {
  status: number
  head: string
  socket: Socket
  /** What came after the head so far. */
  received: () => string
  /** Resolves when the proxy ended its side (FIN). */
  ended: Promise<void>
  /** Resolves when the socket closed. */
  closed: Promise<void>
}

function connectThrough(
  proxy: string,
  target: string,
  options: { headers?: Record<string, string>; early?: string } = {},
): Promise<Connected> {
  const { hostname: host, port } = new URL(proxy)
  const socket = connect({ host, port: Number(port), allowHalfOpen: true })
  sockets.add(socket)
  socket.on('error', () => {})
  const ended = new Promise<void>((resolve) => socket.once('end', resolve))
  const closed = new Promise<void>((resolve) => socket.once('close', resolve))
  let buffer = ''
  let headLength = -1
  return new Promise((resolve, reject) => {
    socket.setEncoding('latin1')
    socket.on('data', (chunk: string) => {
      buffer += chunk
      if (headLength >= 0) return
      const end = buffer.indexOf('\r\n\r\n')
      if (end === -1) return
      headLength = end + 4
      const head = buffer.slice(0, headLength)
      resolve({
        status: Number(/^HTTP\/1\.1 (\d{3}) /.exec(head)?.[1]),
        head,
        socket,
        received: () => buffer.slice(headLength),
        ended,
        closed,
      })
    })
    socket.once('close', () => {
      if (headLength < 0) reject(new Error(`closed before an answer: ${JSON.stringify(buffer)}`))
    })
    const lines = Object.entries(options.headers ?? {}).map(
      ([name, value]) => `${name}: ${value}\r\n`,
    )
    socket.write(
      `CONNECT ${target} HTTP/1.1\r\nhost: ${target}\r\n${lines.join('')}\r\n${options.early ?? ''}`,
    )
  })
}

/** A refused CONNECT: its status, head and problem body once the proxy closed. */
async function refusedConnect(
  proxy: string,
  target: string,
  headers?: Record<string, string>,
): Promise<{ status: number; head: string; problem: Record<string, unknown> }> {
  const answer = await connectThrough(proxy, target, headers === undefined ? {} : { headers })
  // A tunnel that opened is not refused: close it and let the caller's expectation say so.
  if (answer.status === 200) answer.socket.destroy()
  else await answer.ended
  const body = answer.received()
  return {
    status: answer.status,
    head: answer.head,
    problem: (body.startsWith('{') ? JSON.parse(body) : {}) as Record<string, unknown>,
  }
}

/** A plain absolute-form request through the proxy. */
function getThrough(
  proxy: string,
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  const { hostname: host, port } = new URL(proxy)
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host,
        port,
        path: url,
        headers: { host: new URL(url).host, ...headers },
        agent: false,
        signal: AbortSignal.timeout(10_000),
      },
      (res) => {
        let body = ''
        res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      },
    )
    req.on('error', reject)
    req.end()
  })
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createNetServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
}

/** An auth file with alice (password "open sesame") made by `wsgiproxy passwd`. */
async function authFile(): Promise<string> {
  const made = await runCli(['passwd', 'alice'], undefined, 'open sesame\n')
  expect(made.code).toBe(0)
  expect(made.stdout).toMatch(
    /^alice:scrypt\$16384\$8\$1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=\n$/,
  )
  const file = join(dir, `users-${Date.now()}`)
  await writeFile(file, `# forward users\n${made.stdout}`)
  return file
}

const FORBIDDEN = {
  type: 'about:blank',
  title: 'Forbidden',
  status: 403,
  detail:
    'this proxy does not connect to the target (the proxy operator decides where it may connect)',
  code: 'TARGET_NOT_ALLOWED',
}

describe('wsgiproxy forward: CONNECT tunnels', () => {
  it('tunnels curl to an https:// server with --allow loopback --connect-port', async () => {
    const tls = await startTlsTarget()
    const cli = await startCli([
      'forward',
      '--allow',
      'loopback',
      '--connect-port',
      String(tls.port),
      ...LISTEN,
    ])
    const { stdout } = await exec(CURL, [
      '-sS',
      '--cacert',
      caFile,
      '-x',
      cli.url,
      `https://localhost:${tls.port}/hello?x=1`,
    ])
    expect(stdout).toBe('secure /hello?x=1')
    expect(tls.connections()).toBe(1)
    await cli.waitFor(
      new RegExp(
        `^CONNECT localhost:${tls.port} 200 \\d+ms tcp://127\\.0\\.0\\.1:${tls.port}$`,
        'm',
      ),
    )
  })

  it('answers 200 Connection Established and splices bytes both ways, early bytes first', async () => {
    const target = await startTcpTarget({
      onSocket: (socket) =>
        socket.on('data', (chunk: string) => chunk.includes('ping') && socket.write('pong')),
    })
    const cli = await startCli([
      'forward',
      '--allow',
      '127.0.0.1',
      '--connect-port',
      String(target.port),
      ...LISTEN,
    ])
    // Bytes sent with the request, before the answer, go through once the tunnel is open.
    const tunnel = await connectThrough(cli.url, `127.0.0.1:${target.port}`, { early: 'early ' })
    expect(tunnel.status).toBe(200)
    expect(tunnel.head).toBe('HTTP/1.1 200 Connection Established\r\n\r\n')
    tunnel.socket.write('ping')
    await until(() => tunnel.received() === 'pong')
    await until(() => target.received() === 'early ping')
    expect(target.connections()).toBe(1)
  })

  it('refuses internal destinations with 403 and connects nowhere', async () => {
    const tls = await startTlsTarget()
    const p = tls.port
    const open = await startCli([
      'forward',
      '--connect-port',
      String(p),
      '--connect-port',
      '443',
      ...LISTEN,
    ])
    // The default allow list is public: loopback in any spelling, a name for it, a private range.
    const targets = [
      `127.0.0.1:${p}`,
      `127.1:${p}`,
      `[::ffff:127.0.0.1]:${p}`,
      `[::1]:${p}`,
      `localhost:${p}`,
      `foo.localhost:${p}`,
    ]
    for (const target of targets) {
      const answer = await refusedConnect(open.url, target)
      expect({ target, status: answer.status }).toEqual({ target, status: 403 })
      expect(answer.problem).toEqual(FORBIDDEN)
      expect(answer.head).toMatch(/\r\ncontent-type: application\/problem\+json\r\n/)
      expect(answer.head).toMatch(/\r\nconnection: close\r\n/)
    }
    const privateAddress = await refusedConnect(open.url, '10.0.0.1:443')
    expect(privateAddress.status).toBe(403)
    await open.waitFor(
      /TARGET_NOT_ALLOWED: the target 10\.0\.0\.1:443 is not in the allow list \(add --allow 10\.0\.0\.1:443 to permit it\)/,
    )
    await open.waitFor(
      new RegExp(
        `TARGET_NOT_ALLOWED: the target localhost:${p}, which resolves to 127\\.0\\.0\\.1, is not in the allow list`,
      ),
    )
    // A name the system resolver maps to internal addresses: this host's own name, where
    // /etc/hosts has it (none where it resolves to a public address).
    for (const name of await internalNames([hostname()])) {
      const answer = await refusedConnect(open.url, `${name}:${p}`)
      expect(answer.status).toBe(403)
      await open.waitFor(new RegExp(`the target ${name.toLowerCase()}:${p}, which resolves to `))
    }
    expect(tls.connections()).toBe(0)

    // Loopback allowed, but the port is not a CONNECT port (443 only by default).
    const ports = await startCli(['forward', '--allow', 'loopback', ...LISTEN])
    expect((await refusedConnect(ports.url, `127.0.0.1:${p}`)).status).toBe(403)
    await ports.waitFor(
      new RegExp(`CONNECT to port ${p} is not allowed \\(add --connect-port ${p} to permit it\\)`),
    )
    await ports.waitFor(new RegExp(`^CONNECT 127\\.0\\.0\\.1:${p} 403 \\d+ms -$`, 'm'))
    expect(tls.connections()).toBe(0)

    // --deny wins over --allow: a name (before any lookup), or the range a name resolves into.
    const named = await startCli([
      'forward',
      '--allow',
      'loopback',
      '--connect-port',
      String(p),
      '--deny',
      'localhost',
      ...LISTEN,
    ])
    expect((await refusedConnect(named.url, `localhost:${p}`)).status).toBe(403)
    await named.waitFor(new RegExp(`the target localhost:${p} is denied by --deny localhost`))
    const ranged = await startCli([
      'forward',
      '--allow',
      'loopback',
      '--connect-port',
      String(p),
      '--deny',
      '127.0.0.0/8',
      ...LISTEN,
    ])
    expect((await refusedConnect(ranged.url, `localhost:${p}`)).status).toBe(403)
    expect((await refusedConnect(ranged.url, `127.0.0.1:${p}`)).status).toBe(403)
    await ranged.waitFor(
      new RegExp(
        `the target localhost:${p}, which resolves to 127\\.0\\.0\\.1, is denied by --deny 127\\.0\\.0\\.0/8`,
      ),
    )
    expect(tls.connections()).toBe(0)
    // What the deny list does not name still goes through.
    const allowed = await connectThrough(named.url, `127.0.0.1:${p}`)
    expect(allowed.status).toBe(200)
    await until(() => tls.connections() === 1)
  })

  it('answers 508 to a CONNECT to itself and 400 to a target that is not host:port', async () => {
    // A proxy whose CONNECT port is its own.
    const port = await closedPort()
    const loop = await startCli([
      'forward',
      '--allow',
      'loopback',
      '--connect-port',
      String(port),
      '--listen',
      `127.0.0.1:${port}`,
    ])
    for (const target of [`127.0.0.1:${port}`, `localhost:${port}`, `[::ffff:127.0.0.1]:${port}`]) {
      const answer = await refusedConnect(loop.url, target)
      expect({ target, status: answer.status }).toEqual({ target, status: 508 })
      expect(answer.problem).toMatchObject({ status: 508, code: 'LOOP_DETECTED' })
    }
    for (const target of [
      '127.0.0.1',
      'http://127.0.0.1:443/',
      '127.0.0.1:0',
      'user@127.0.0.1:443',
    ]) {
      expect((await refusedConnect(loop.url, target)).status).toBe(400)
    }
  })
})

describe('wsgiproxy forward: tunnel hygiene', () => {
  it('passes a half-close on in each direction, then closes both sides', async () => {
    const target = await startTcpTarget({
      allowHalfOpen: true,
      // After the client's FIN, the target still answers, then ends too.
      onSocket: (socket) => socket.once('end', () => socket.end('bye')),
    })
    const cli = await startCli([
      'forward',
      '--allow',
      '127.0.0.1',
      '--connect-port',
      String(target.port),
      '--max-upgrades',
      '1',
      ...LISTEN,
    ])
    const tunnel = await connectThrough(cli.url, `127.0.0.1:${target.port}`)
    tunnel.socket.end('last words')
    await tunnel.ended
    expect(tunnel.received()).toBe('bye')
    expect(target.received()).toBe('last words')
    await tunnel.closed
    await until(() => target.events.includes('0:close'))
    // The tunnel's slot is free again.
    const next = await connectThrough(cli.url, `127.0.0.1:${target.port}`)
    expect(next.status).toBe(200)
  })

  it('closes the upstream side when the client goes, and the client side when the upstream goes', async () => {
    const target = await startTcpTarget()
    const cli = await startCli([
      'forward',
      '--allow',
      '127.0.0.1',
      '--connect-port',
      String(target.port),
      ...LISTEN,
    ])
    const closing = await connectThrough(cli.url, `127.0.0.1:${target.port}`)
    await until(() => target.connections() === 1)
    closing.socket.destroy()
    await until(() => target.events.includes('0:close'))
    expect(target.events).toEqual(['0:end', '0:close'])

    const reset = await connectThrough(cli.url, `127.0.0.1:${target.port}`)
    await until(() => target.connections() === 2)
    reset.socket.resetAndDestroy()
    await until(() => target.events.includes('1:close'))
    expect(target.events).toContain('1:close')

    const dropped = await connectThrough(cli.url, `127.0.0.1:${target.port}`)
    await until(() => target.connections() === 3)
    target.peers[2]?.end('goodbye')
    await dropped.ended
    expect(dropped.received()).toBe('goodbye')
    dropped.socket.end()
    await dropped.closed
  })

  it('answers 502 to a port that refuses and keeps serving', async () => {
    const target = await startTcpTarget()
    const refusing = await closedPort()
    const cli = await startCli([
      'forward',
      '--allow',
      '127.0.0.1',
      '--connect-port',
      String(refusing),
      '--connect-port',
      String(target.port),
      ...LISTEN,
    ])
    for (let i = 0; i < 3; i++) {
      const answer = await refusedConnect(cli.url, `127.0.0.1:${refusing}`)
      expect(answer.status).toBe(502)
      expect(answer.problem).toMatchObject({ status: 502, code: 'UPSTREAM_UNREACHABLE' })
    }
    await cli.waitFor(
      new RegExp(
        `UPSTREAM_UNREACHABLE: cannot connect to 127\\.0\\.0\\.1 port ${refusing}: ECONNREFUSED`,
      ),
    )
    const tunnel = await connectThrough(cli.url, `127.0.0.1:${target.port}`)
    expect(tunnel.status).toBe(200)
    tunnel.socket.write('still here')
    await until(() => target.received() === 'still here')
  })

  it('closes an idle tunnel after --upgrade-idle and answers 503 past --max-upgrades', async () => {
    const target = await startTcpTarget()
    const cli = await startCli([
      'forward',
      '--allow',
      '127.0.0.1',
      '--connect-port',
      String(target.port),
      '--upgrade-idle',
      '400ms',
      '--max-upgrades',
      '1',
      ...LISTEN,
    ])
    const started = Date.now()
    const first = await connectThrough(cli.url, `127.0.0.1:${target.port}`)
    expect(first.status).toBe(200)
    const second = await refusedConnect(cli.url, `127.0.0.1:${target.port}`)
    expect(second.status).toBe(503)
    expect(second.head).toMatch(/\r\nretry-after: 1\r\n/)
    // The proxy closes both sides: the client sees its FIN.
    await first.ended
    expect(Date.now() - started).toBeGreaterThanOrEqual(350)
    await until(() => target.events.includes('0:close'))
    const third = await connectThrough(cli.url, `127.0.0.1:${target.port}`)
    expect(third.status).toBe(200)
  })
})

describe('wsgiproxy forward: shutdown', () => {
  it('cuts the tunnels still open 10 s after SIGTERM and exits 0', async () => {
    const target = await startTcpTarget()
    const cli = await startCli([
      'forward',
      '--allow',
      '127.0.0.1',
      '--connect-port',
      String(target.port),
      ...LISTEN,
    ])
    const tunnel = await connectThrough(cli.url, `127.0.0.1:${target.port}`)
    expect(tunnel.status).toBe(200)
    process.kill(cli.pid, 'SIGTERM')
    expect(await cli.exited).toBe(0)
    await tunnel.ended
    await until(() => target.events.includes('0:close'))
  }, 25_000)
})

describe('wsgiproxy forward: proxy authentication', () => {
  it('answers 407 without valid credentials and tunnels with them', async () => {
    const file = await authFile()
    const tls = await startTlsTarget()
    const cli = await startCli([
      'forward',
      '--auth-file',
      file,
      '--allow',
      'loopback',
      '--connect-port',
      String(tls.port),
      ...LISTEN,
    ])
    const target = `localhost:${tls.port}`
    for (const headers of [
      undefined,
      { 'proxy-authorization': basic('alice', 'wrong') },
      { 'proxy-authorization': basic('mallory', 'open sesame') },
      { 'proxy-authorization': 'Bearer open-sesame' },
      { authorization: basic('alice', 'open sesame') },
    ]) {
      const answer = await refusedConnect(cli.url, target, headers)
      expect({ headers, status: answer.status }).toEqual({ headers, status: 407 })
      expect(answer.head).toMatch(/\r\nproxy-authenticate: Basic realm="wsgiproxy"\r\n/)
      expect(answer.problem).toMatchObject({ status: 407, code: 'PROXY_AUTH_REQUIRED' })
    }
    expect(tls.connections()).toBe(0)
    await cli.waitFor(/proxy authentication failed for user "alice": wrong password/)
    await cli.waitFor(/proxy authentication failed for user "mallory": unknown user/)

    const tunnel = await connectThrough(cli.url, target, {
      headers: { 'proxy-authorization': basic('alice', 'open sesame') },
    })
    expect(tunnel.status).toBe(200)
    tunnel.socket.destroy()
    const { stdout } = await exec(CURL, [
      '-sS',
      '--cacert',
      caFile,
      '--proxy-user',
      'alice:open sesame',
      '-x',
      cli.url,
      `https://${target}/through`,
    ])
    expect(stdout).toBe('secure /through')
    const refused = await exec(CURL, [
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_connect}',
      '--cacert',
      caFile,
      '-x',
      cli.url,
      `https://${target}/`,
    ]).catch((error: { stdout: string }) => error)
    expect(refused.stdout).toBe('407')
    for (const headers of tls.requests) expect(headers['proxy-authorization']).toBeUndefined()
  })

  it('answers 407 to plain requests without credentials and never forwards Proxy-Authorization', async () => {
    const file = await authFile()
    const upstream = await startUpstream()
    const cli = await startCli(['forward', '--auth-file', file, '--allow', '127.0.0.1', ...LISTEN])
    const missing = await getThrough(cli.url, `${upstream}/x`)
    expect(missing.status).toBe(407)
    expect(missing.headers['proxy-authenticate']).toBe('Basic realm="wsgiproxy"')
    expect(JSON.parse(missing.body)).toMatchObject({ status: 407, code: 'PROXY_AUTH_REQUIRED' })
    const wrong = await getThrough(cli.url, `${upstream}/x`, {
      'proxy-authorization': basic('alice', 'open'),
    })
    expect(wrong.status).toBe(407)

    const right = await getThrough(cli.url, `${upstream}/x?y=1`, {
      'proxy-authorization': basic('alice', 'open sesame'),
    })
    expect(right.status).toBe(200)
    const seen = JSON.parse(right.body) as { url: string; headers: IncomingHttpHeaders }
    expect(seen.url).toBe('/x?y=1')
    expect(seen.headers['proxy-authorization']).toBeUndefined()
    const { stdout } = await exec(CURL, [
      '-sS',
      '-x',
      cli.url,
      '--proxy-user',
      'alice:open sesame',
      `${upstream}/curl`,
    ])
    const byCurl = JSON.parse(stdout) as { url: string; headers: IncomingHttpHeaders }
    expect(byCurl.url).toBe('/curl')
    expect(byCurl.headers['proxy-authorization']).toBeUndefined()
    await cli.waitFor(/^GET \/x 407 \d+ms http:\/\/127\.0\.0\.1:\d+$/m)
  })

  it('refuses a missing or malformed auth file at start, naming the line, with exit 1', async () => {
    const missing = await runCli(['forward', '--auth-file', join(dir, 'nope')])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toBe(
      `wsgiproxy: auth file ${join(dir, 'nope')} does not exist: create it with wsgiproxy passwd USER >> ${join(dir, 'nope')}\n`,
    )
    const made = await runCli(['passwd', 'bob'], undefined, 'pw\n')
    const file = join(dir, 'malformed')
    await writeFile(file, `${made.stdout}# a comment\n\ncarol:md5$abc\n`)
    const malformed = await runCli(['forward', '--auth-file', file])
    expect(malformed.code).toBe(1)
    expect(malformed.stderr).toBe(
      `wsgiproxy: auth file ${file} line 4: expected user:scrypt$N$r$p$salt$hash after the user name (wsgiproxy passwd USER prints one)\n`,
    )
    await writeFile(file, `${made.stdout}${made.stdout}`)
    const twice = await runCli(['forward', '--auth-file', file])
    expect(twice.stderr).toBe(`wsgiproxy: auth file ${file} line 2: user "bob" is listed twice\n`)
    await writeFile(file, '# nobody\n')
    const empty = await runCli(['forward', '--auth-file', file])
    expect(empty.code).toBe(1)
    expect(empty.stderr).toMatch(/has no users/)
    const noPassword = await runCli(['passwd', 'bob'], undefined, '\n')
    expect(noPassword.code).toBe(1)
    expect(noPassword.stderr).toBe(
      'wsgiproxy: passwd: expected a password on the first line of stdin (got an empty line)\n',
    )
    const badUser = await runCli(['passwd', 'a:b'], undefined, 'pw\n')
    expect(badUser.code).toBe(1)
    expect(badUser.stderr).toMatch(/^wsgiproxy: passwd: a user name must be .* \(got "a:b"\)\n$/)
  })
})

describe('wsgiproxy forward: plain requests', () => {
  it('applies --deny to plain requests too, by name and by address', async () => {
    const internal = await startCountingUpstream()
    const i = internal.port
    const cli = await startCli([
      'forward',
      '--allow',
      'loopback',
      '--deny',
      'localhost',
      '--deny',
      `[::1]:${i}`,
      ...LISTEN,
    ])
    for (const url of [`http://localhost:${i}/`, `http://[::1]:${i}/`]) {
      const res = await getThrough(cli.url, url)
      expect({ url, status: res.status }).toEqual({ url, status: 403 })
      expect(JSON.parse(res.body)).toEqual(FORBIDDEN)
    }
    expect(internal.hits()).toBe(0)
    const allowed = await getThrough(cli.url, `http://127.0.0.1:${i}/`)
    expect(allowed.status).toBe(200)
    expect(allowed.body).toBe('internal')
    const ranged = await startCli([
      'forward',
      '--allow',
      'loopback',
      '--deny',
      '127.0.0.0/8',
      ...LISTEN,
    ])
    const { stdout } = await exec(CURL, [
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      '-x',
      ranged.url,
      `http://localhost:${i}/`,
    ])
    expect(stdout).toBe('403')
    expect(internal.hits()).toBe(1)
    await ranged.waitFor(
      new RegExp(
        `the target localhost:${i}, which resolves to 127\\.0\\.0\\.1, is denied by --deny 127\\.0\\.0\\.0/8`,
      ),
    )
  })

  it('refuses bad --deny and --connect-port values with exit 1, naming the flag', async () => {
    const deny = await runCli(['forward', '--deny', 'bad entry'])
    expect(deny.code).toBe(1)
    expect(deny.stderr).toMatch(
      /^wsgiproxy: --deny: expected a host name .* \(got "bad entry"\)\n$/,
    )
    for (const value of ['0', '65536', 'https', '443,8443']) {
      const port = await runCli(['forward', '--connect-port', value])
      expect(port.code).toBe(1)
      expect(port.stderr).toBe(
        `wsgiproxy: --connect-port must be a port from 1 to 65535 such as 443 (got ${JSON.stringify(value)})\n`,
      )
    }
  })
})

/** The names among these that resolve, every address of them internal. */
async function internalNames(names: string[]): Promise<string[]> {
  const internal: string[] = []
  for (const name of names) {
    const addresses = await lookup(name, { all: true }).catch(() => [])
    if (addresses.length > 0 && addresses.every(({ address }) => isInternal(address))) {
      internal.push(name)
    }
  }
  return internal
}

// Loopback, private (RFC 1918), link-local and unique-local addresses.
function isInternal(address: string): boolean {
  if (isIP(address) === 4) {
    const [a = 0, b = 0] = address.split('.').map(Number)
    return (
      a === 127 ||
      a === 10 ||
      (a === 172 && b >= 16 && b < 32) ||
      (a === 192 && b === 168) ||
      (a === 169 && b === 254)
    )
  }
  const lower = address.toLowerCase()
  return lower === '::1' || /^f[cd]/.test(lower) || lower.startsWith('fe80:')
}
