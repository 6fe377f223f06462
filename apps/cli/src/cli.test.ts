import { request } from 'node:http'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { parseKeyFile } from '@wsgiproxy/core'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  cleanup,
  isAlive,
  runCli,
  startCli,
  startCountingUpstream,
  startRelay,
  startUpstream,
  trackBackend,
  until,
} from './test/run-cli.ts'

const exec = promisify(execFile)
const LISTEN = ['--listen', '127.0.0.1:0']

// A backend in Node: answers with its pid and the protocol headers it received.
const NODE_BACKEND = `
const http = require('node:http')
http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({ pid: process.pid, url: req.url, headers: req.headers }))
}).listen(Number(process.env.PORT), '127.0.0.1')
`

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wsgiproxy-cli-'))
})
afterEach(async () => {
  await cleanup()
  await rm(dir, { recursive: true, force: true })
})

/** What the test upstream and the Node backend answer, or an echoed environ. */
interface Seen {
  pid: number
  url: string
  headers: Record<string, string | undefined>
  [environKey: string]: unknown
}

async function getJson(url: string, headers: Record<string, string> = {}): Promise<Seen> {
  const res = await fetch(url, { headers: { accept: 'application/json', ...headers } })
  expect(res.status).toBe(200)
  return (await res.json()) as Seen
}

/** GET with a Host header of our choosing (fetch cannot set one). */
function getWithHost(
  url: string,
  host: string,
  timeoutMs = 10_000,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers = { host, accept: 'application/json' }
    const signal = AbortSignal.timeout(timeoutMs)
    const req = request(url, { headers, signal, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

describe('wsgiproxy', () => {
  it('prints help for every subcommand', async () => {
    for (const command of [
      'serve',
      'proxy',
      'spawn',
      'forward',
      'echo',
      'reload',
      'keygen',
      'passwd',
      'schema',
    ]) {
      const result = await runCli([command, '--help'])
      expect(result.code).toBe(0)
      expect(result.stdout).toContain(`usage: wsgiproxy ${command}`)
    }
    for (const command of ['serve', 'proxy', 'spawn', 'forward', 'echo']) {
      const result = await runCli([command, '--help'])
      expect(result.stdout).toContain('--upgrade-protocol NAME')
      expect(result.stdout).toContain('--max-upgrades N')
    }
    expect((await runCli(['forward', '--help'])).stdout).toContain('--allow ENTRY')
    const main = await runCli(['--help'])
    expect(main.code).toBe(0)
    expect(main.stdout).toContain('commands:')
  })

  it('prints the version of its package.json', async () => {
    const manifest = JSON.parse(
      await readFile(new URL('../package.json', import.meta.url), 'utf8'),
    ) as { version: string }
    expect(manifest.version).not.toBe('0.0.0')
    const result = await runCli(['--version'])
    expect(result.code).toBe(0)
    expect(result.stdout).toBe(`wsgiproxy ${manifest.version}\n`)
  })

  it('rejects an unknown flag with exit 1 and a usage hint', async () => {
    const result = await runCli(['proxy', '--bogus', 'http://127.0.0.1:1'])
    expect(result.code).toBe(1)
    expect(result.stderr).toBe(
      "wsgiproxy: proxy: unknown option '--bogus' (see wsgiproxy proxy --help)\n",
    )
  })

  it('rejects names of Object.prototype members as unknown commands with exit 1', async () => {
    for (const name of ['toString', '__proto__', 'constructor']) {
      const result = await runCli([name])
      expect(result.code).toBe(1)
      expect(result.stderr).toBe(
        `wsgiproxy: unknown command "${name}": expected serve, proxy, spawn, forward, echo, reload, status, keygen, passwd or schema (see wsgiproxy --help)\n`,
      )
    }
  })

  it('rejects an unknown command, a bad duration and a bad listen address with exit 1', async () => {
    const unknown = await runCli(['serv'])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toMatch(/^wsgiproxy: unknown command "serv": expected serve, .*\n$/)
    const idle = await runCli(['spawn', '--idle', '5 minutes', '--', 'true'])
    expect(idle.code).toBe(1)
    expect(idle.stderr).toBe(
      'wsgiproxy: --idle must be a duration such as 500ms, 30s, 5m or a number of milliseconds (got "5 minutes")\n',
    )
    const listen = await runCli(['echo', '--listen', 'nowhere'])
    expect(listen.code).toBe(1)
    expect(listen.stderr).toMatch(/^wsgiproxy: --listen must be host:port/)
  })

  it('passes the upgrade flags to the server, and refuses bad ones with exit 1', async () => {
    const cli = await startCli([
      'echo',
      '--upgrade-protocol',
      'websocket',
      '--upgrade-protocol',
      'h2c',
      '--upgrade-idle',
      '30s',
      '--max-upgrades',
      '5',
      ...LISTEN,
    ])
    expect((await fetch(`${cli.url}/`)).status).toBe(200)
    const max = await runCli(['echo', '--max-upgrades', '0'])
    expect(max.code).toBe(1)
    expect(max.stderr).toBe(
      'wsgiproxy: --max-upgrades must be a whole number of at least 1 (got "0")\n',
    )
    const protocol = await runCli(['forward', '--upgrade-protocol', 'web socket'])
    expect(protocol.code).toBe(1)
    expect(protocol.stderr).toBe(
      'wsgiproxy: --upgrade-protocol must be a protocol name such as websocket (got "web socket")\n',
    )
    const idle = await runCli(['proxy', 'http://127.0.0.1:1', '--upgrade-idle', 'soon'])
    expect(idle.code).toBe(1)
    expect(idle.stderr).toMatch(/^wsgiproxy: --upgrade-idle must be a duration/)
  })

  it('exits 2 when the address is in use', async () => {
    const first = await startCli(['echo', ...LISTEN])
    const port = new URL(first.url).port
    const second = await runCli(['echo', '--listen', `127.0.0.1:${port}`])
    expect(second.code).toBe(2)
    expect(second.stderr).toBe(
      `wsgiproxy: port ${port} is in use on 127.0.0.1; pass --listen host:port (for example --listen 127.0.0.1:9000)\n`,
    )
  })
})

describe('wsgiproxy serve', () => {
  it('mounts an exact proxy, a proxy, an echo app and a spawned backend from a config file', async () => {
    const upstream = await startUpstream()
    await writeFile(join(dir, 'backend.cjs'), NODE_BACKEND)
    await writeFile(
      join(dir, 'wsgiproxy.config.json'),
      JSON.stringify({
        $schema: './node_modules/@wsgiproxy/cli/schema.json',
        listen: '127.0.0.1:1',
        routes: [
          { path: '/exact', type: 'exact', allow: ['127.0.0.1'] },
          { path: '/api', type: 'proxy', href: `${upstream}/v1`, forwarded: true },
          { path: '/echo/', type: 'echo' },
          {
            path: '/node',
            type: 'spawn',
            command: [process.execPath, 'backend.cjs'],
            cwd: '.',
            idleTimeout: '5m',
            startTimeout: '30s',
          },
        ],
      }),
    )
    // --listen overrides the file's listen
    const cli = await startCli(['serve', ...LISTEN], dir)

    const proxied = await getJson(`${cli.url}/api/items?a=1`)
    expect(proxied.url).toBe('/v1/items?a=1')
    expect(proxied.headers['x-forwarded-script-name']).toBe('/api')
    expect(proxied.headers['x-traversal-path']).toBe('/v1')
    expect(proxied.headers['forwarded']).toBe(
      `for=127.0.0.1;host="${new URL(cli.url).host}";proto=http`,
    )

    const echoed = await getJson(`${cli.url}/echo/hi?x=1`)
    expect(echoed).toMatchObject({ SCRIPT_NAME: '/echo', PATH_INFO: '/hi', QUERY_STRING: 'x=1' })

    const exact = await getWithHost(`${cli.url}/exact/thing`, new URL(upstream).host)
    expect(exact.status).toBe(200)
    expect(JSON.parse(exact.body)).toMatchObject({ url: '/exact/thing' })
    expect((JSON.parse(exact.body) as Seen).headers['host']).toBe(new URL(upstream).host)

    const spawned = await getJson(`${cli.url}/node/page`)
    trackBackend(spawned.pid)
    expect(spawned.url).toBe('/page')
    expect(spawned.headers['x-forwarded-script-name']).toBe('/node')

    const missing = await fetch(`${cli.url}/elsewhere`)
    expect(missing.status).toBe(404)

    await cli.waitFor(/GET \/node\/page 200 \d+ms http:\/\/127\.0\.0\.1:\d+/)
    const log = cli.stderr()
    expect(log).toMatch(/GET \/api\/items 200 \d+ms http:\/\/127\.0\.0\.1:\d+\n/)
    expect(log).toMatch(/GET \/echo\/hi 200 \d+ms echo\n/)
    expect(log).toMatch(/\[node\] spawned pid \d+ on port \d+/)
    expect(log).toMatch(/\[node\] ready in \d+ ms/)
    expect(log).toMatch(/GET \/elsewhere 404 \d+ms -\n/)
  })

  it('stops the spawned backend on SIGTERM, leaving no child process', async () => {
    await writeFile(
      join(dir, 'wsgiproxy.config.json'),
      JSON.stringify({
        routes: [
          {
            path: '/py',
            type: 'spawn',
            command: 'python3 -m http.server __PORT__ --bind 127.0.0.1',
          },
        ],
      }),
    )
    const cli = await startCli(['serve', '--config', 'wsgiproxy.config.json', ...LISTEN], dir)
    const res = await fetch(`${cli.url}/py/`)
    expect(res.status).toBe(200)
    await res.text()
    const pid = Number((await cli.waitFor(/spawned pid (\d+)/))[1])
    trackBackend(pid)
    expect(isAlive(pid)).toBe(true)

    cli.child.kill('SIGTERM')
    expect(await cli.exited).toBe(0)
    expect(isAlive(pid)).toBe(false)
    const { stdout } = await exec('ps', ['-o', 'pid=', '--ppid', String(cli.pid)]).catch(
      (error: { stdout: string }) => error,
    )
    expect(stdout.trim()).toBe('')
    expect(cli.stderr()).toMatch(/SIGTERM: draining requests and stopping backends\n/)
  })

  it('reports a JSON syntax error in one line with exit 1', async () => {
    await writeFile(join(dir, 'wsgiproxy.config.json'), '{\n  "routes": [ }\n')
    const result = await runCli(['serve'], dir)
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(
      /^wsgiproxy: config file wsgiproxy\.config\.json is not valid JSON: .+ \(fix the syntax; JSON has no comments or trailing commas\)\n$/,
    )
  })

  it('reports a schema error naming the path in the file and the expected value, exit 1', async () => {
    await writeFile(
      join(dir, 'bad.json'),
      JSON.stringify({
        routes: [
          { path: '/a', type: 'echo' },
          { path: '/b', type: 'proxy' },
        ],
      }),
    )
    const missing = await runCli(['serve', '--config', 'bad.json'], dir)
    expect(missing.code).toBe(1)
    expect(missing.stderr).toBe(
      'wsgiproxy: config file bad.json: routes[1]: a proxy route needs "href" (a URL or a list of them) or "targets"\n',
    )

    await writeFile(
      join(dir, 'bad.json'),
      JSON.stringify({
        routes: [{ path: '/s', type: 'spawn', command: 'x', idleTimeout: '5 min' }],
      }),
    )
    const duration = await runCli(['serve', '-c', 'bad.json'], dir)
    expect(duration.code).toBe(1)
    expect(duration.stderr).toBe(
      'wsgiproxy: config file bad.json: routes[0].idleTimeout: expected a duration such as 500ms, 30s, 5m or a number of milliseconds (got "5 min")\n',
    )

    await writeFile(
      join(dir, 'bad.json'),
      JSON.stringify({ routes: [{ path: '/', type: 'nope' }] }),
    )
    const type = await runCli(['serve', '-c', 'bad.json'], dir)
    expect(type.code).toBe(1)
    expect(type.stderr).toBe(
      'wsgiproxy: config file bad.json: routes[0].type: expected "type" to be "proxy", "spawn", "exact" or "echo" (got "nope")\n',
    )
  })

  it('says how to fix a missing config file, exit 1', async () => {
    const result = await runCli(['serve'], dir)
    expect(result.code).toBe(1)
    expect(result.stderr).toBe(
      'wsgiproxy: config file wsgiproxy.config.json does not exist: create it or pass --config <file>\n',
    )
  })
})

describe('wsgiproxy proxy', () => {
  it('forwards to the href, signing with --key-file for an echo that verifies it', async () => {
    const keyFile = join(dir, 'keys')
    expect((await runCli(['keygen', '--out', keyFile])).code).toBe(0)
    const echo = await startCli(['echo', '--key-file', keyFile, ...LISTEN])
    const proxy = await startCli([
      'proxy',
      `${echo.url}/app`,
      '--key-file',
      keyFile,
      '--string-key',
      'REMOTE_USER',
      '--json-key',
      'app.roles',
      ...LISTEN,
    ])
    const environ = await getJson(`${proxy.url}/article/1?a=b`)
    expect(environ).toMatchObject({
      SCRIPT_NAME: '',
      PATH_INFO: '/article/1',
      QUERY_STRING: 'a=b',
      HTTP_HOST: new URL(proxy.url).host,
      REMOTE_ADDR: '127.0.0.1',
    })
    await proxy.waitFor(/GET \/article\/1 200 \d+ms http:\/\/127\.0\.0\.1:\d+\n/)

    // The echo refuses a request whose signature is not valid.
    const forged = await fetch(`${echo.url}/app/x`, {
      headers: { 'signature-input': 'wsgiproxy=();keyid="x"', signature: 'wsgiproxy=:AAAA:' },
    })
    expect(forged.status).toBe(401)
  })

  it('rejects a protocol key as an extra key with exit 1', async () => {
    const result = await runCli(['proxy', 'http://127.0.0.1:1', '--string-key', 'HTTP_X_USER'])
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/^wsgiproxy: invalid options: .*\(got "HTTP_X_USER"\)\n$/)
  })

  it('rejects a href that is not an http URL with exit 1', async () => {
    const result = await runCli(['proxy', 'ftp://example.test'])
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(
      /^wsgiproxy: proxy: the href must be an http:\/\/ or https:\/\/ URL/,
    )
  })
})

describe('wsgiproxy spawn', () => {
  it('starts the command on the first request and stops it when idle', async () => {
    await writeFile(join(dir, 'backend.cjs'), NODE_BACKEND)
    const cli = await startCli(
      [
        'spawn',
        '--idle',
        '500ms',
        '--log-format',
        'json',
        ...LISTEN,
        '--',
        process.execPath,
        'backend.cjs',
      ],
      dir,
    )
    expect(cli.stderr()).not.toMatch(/"event":"spawned"/)
    const body = await getJson(`${cli.url}/hello`)
    trackBackend(body.pid)
    expect(body.url).toBe('/hello')
    await cli.waitFor(/"event":"idle-stop"/)
    await until(() => !isAlive(body.pid))
    const lines = cli
      .stderr()
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>)
    expect(lines.find((line) => line['type'] === 'request')).toMatchObject({
      method: 'GET',
      path: '/hello',
      status: 200,
      upstream: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/),
    })
    expect(lines.find((line) => line['event'] === 'ready')).toMatchObject({
      pid: body.pid,
      ms: expect.any(Number),
    })
  })
})

describe('wsgiproxy forward', () => {
  it('forwards absolute-form requests from curl -x and refuses CONNECT to a port not listed', async () => {
    const upstream = await startUpstream()
    const cli = await startCli(['forward', '--allow', '127.0.0.1', ...LISTEN])
    const { stdout } = await exec('/usr/bin/curl', ['-sS', '-x', cli.url, `${upstream}/x?y=1`])
    const seen = JSON.parse(stdout) as Seen
    expect(seen.url).toBe('/x?y=1')
    expect(seen.headers['host']).toBe(new URL(upstream).host)
    expect(seen.headers['proxy-connection']).toBeUndefined()
    await cli.waitFor(/GET \/x 200 \d+ms http:\/\/127\.0\.0\.1:\d+\n/)

    const connect = await exec('/usr/bin/curl', [
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_connect}',
      '-x',
      cli.url,
      'https://127.0.0.1:1/',
    ]).catch((error: { stdout: string }) => error)
    // Port 1 is not a CONNECT port (443 only without --connect-port): nothing is connected.
    expect(connect.stdout).toBe('403')

    const self = await fetch(`${cli.url}/loop`)
    expect(self.status).toBe(508)
  })

  it('answers 508 after exactly one hop to every spelling of its own address', async () => {
    const cli = await startCli(['forward', ...LISTEN])
    const port = new URL(cli.url).port
    const spellings = [
      '127.1',
      '0',
      '2130706433',
      '0x7f000001',
      '127.0.0.1.',
      '127.000.000.001',
      '[::ffff:127.0.0.1]',
      'localhost.',
      'foo.localhost',
      '127.0.0.1',
      'localhost',
    ]
    for (const [i, spelling] of spellings.entries()) {
      const host = `${spelling}:${port}`
      // The old proxy sent these to itself until it ran out of file descriptors.
      const res = await getWithHost(`${cli.url}/spelling-${i}`, host, 5_000)
      expect({ host, status: res.status }).toEqual({ host, status: 508 })
      expect(JSON.parse(res.body)).toMatchObject({ status: 508, code: 'LOOP_DETECTED' })
      await cli.waitFor(new RegExp(`^GET /spelling-${i} 508 `, 'm'))
    }
    // One request line per spelling: the proxy received each request once.
    for (const i of spellings.keys()) {
      expect(cli.stderr().match(new RegExp(`^GET /spelling-${i} `, 'gm'))).toHaveLength(1)
    }
  })

  it('stops a loop through another proxy and a port forward after one round (Via)', async () => {
    // A forwards to B; B proxies to a relay that leads back to A. The Host A sees the second
    // time names the relay, not A: only A's Via entry shows the request has been here before.
    const a = await startCli(['forward', '--allow', '127.0.0.1', ...LISTEN])
    const relay = await startRelay(Number(new URL(a.url).port))
    const b = await startCli(['proxy', `http://127.0.0.1:${relay}`, ...LISTEN])
    const res = await getWithHost(`${a.url}/round`, new URL(b.url).host, 5_000)
    expect(res.status).toBe(508)
    expect(JSON.parse(res.body)).toMatchObject({ code: 'LOOP_DETECTED' })
    await a.waitFor(/^GET \/round 508 \d+ms http:\/\/127\.0\.0\.1:\d+\n(?:.*\n)*GET \/round 508 /m)
    await b.waitFor(/^GET \/round 508 /m)
    expect(a.stderr().match(/^GET \/round /gm)).toHaveLength(2)
    expect(b.stderr().match(/^GET \/round /gm)).toHaveLength(1)
  })

  it('refuses a Host naming an internal port unless --allow lists it; the server receives nothing', async () => {
    const internal = await startCountingUpstream()
    const i = internal.port
    const cli = await startCli(['forward', ...LISTEN])
    for (const spelling of [
      '127.0.0.1',
      '127.1',
      '2130706433',
      '[::ffff:127.0.0.1]',
      'localhost',
    ]) {
      const host = `${spelling}:${i}`
      const res = await getWithHost(`${cli.url}/secret`, host)
      expect({ host, status: res.status }).toEqual({ host, status: 403 })
      // The body names no target: the client chose it.
      expect(JSON.parse(res.body)).toEqual({
        type: 'about:blank',
        title: 'Forbidden',
        status: 403,
        detail:
          'this proxy does not connect to the target (the proxy operator decides where it may connect)',
        code: 'TARGET_NOT_ALLOWED',
      })
    }
    const absolute = await exec('/usr/bin/curl', [
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      '-x',
      cli.url,
      `http://127.0.0.1:${i}/secret`,
    ])
    expect(absolute.stdout).toBe('403')
    expect(internal.hits()).toBe(0)
    // The operator's log says which target was refused and how to allow it.
    await cli.waitFor(
      new RegExp(
        `TARGET_NOT_ALLOWED: the target 127\\.0\\.0\\.1:${i} is not in the allow list \\(add --allow 127\\.0\\.0\\.1:${i} to permit it\\)`,
      ),
    )

    const open = await startCli(['forward', '--allow', `127.0.0.1:${i}`, ...LISTEN])
    const allowed = await getWithHost(`${open.url}/secret`, `127.1:${i}`)
    expect(allowed.status).toBe(200)
    expect(allowed.body).toBe('internal')
    expect(internal.hits()).toBe(1)
    const other = await getWithHost(`${open.url}/secret`, `127.0.0.1:${i + 1}`)
    expect(other.status).toBe(403)
  })

  it('refuses a bad --allow entry with exit 1, naming the flag', async () => {
    const result = await runCli(['forward', '--allow', '10.0.0.0/8', '--allow', 'bad entry'])
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(
      /^wsgiproxy: --allow: expected a host name \(example\.com, \*\.example\.com\), .* \(got "bad entry"\)\n$/,
    )
  })
})

describe('wsgiproxy echo', () => {
  it('answers with the restored environ as JSON and as an escaped HTML table', async () => {
    const cli = await startCli(['echo', ...LISTEN])
    const environ = await getJson(`${cli.url}/a/b?c=d`, {
      'x-forwarded-for': '203.0.113.7',
      'x-forwarded-script-name': '/front',
    })
    // loopback is trusted by default: the forwarded client and script name are restored
    expect(environ).toMatchObject({
      REMOTE_ADDR: '203.0.113.7',
      SCRIPT_NAME: '/front',
      PATH_INFO: '/a/b',
      QUERY_STRING: 'c=d',
    })

    const res = await fetch(`${cli.url}/x`, { headers: { 'x-probe': '<script>"&\'' } })
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8')
    const html = await res.text()
    expect(html).toContain('<tr><th>HTTP_X_PROBE</th><td>&#60;script&#62;&#34;&#38;&#39;</td></tr>')
    expect(html).not.toContain('<script>')
  })
})

describe('wsgiproxy keygen', () => {
  it('prints a key file line with a fresh 32-byte secret', async () => {
    const result = await runCli(['keygen', '--id', 'k1'])
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(/^k1 base64:[A-Za-z0-9+/]{43}=\n$/)
    const [key] = parseKeyFile(result.stdout)
    expect(key?.secret.length).toBe(32)
    const again = await runCli(['keygen', '--id', 'k1'])
    expect(again.stdout).not.toBe(result.stdout)
  })

  it('writes --out with mode 0600 and refuses to overwrite it unless --force', async () => {
    const out = join(dir, 'keys')
    expect((await runCli(['keygen', '--out', out])).code).toBe(0)
    expect((await stat(out)).mode & 0o777).toBe(0o600)
    const first = await readFile(out, 'utf8')
    expect(parseKeyFile(first)).toHaveLength(1)

    const refused = await runCli(['keygen', '--out', out])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toBe(
      `wsgiproxy: ${out} already exists: choose another --out or add --force to replace it\n`,
    )
    expect(await readFile(out, 'utf8')).toBe(first)

    expect((await runCli(['keygen', '--out', out, '--force'])).code).toBe(0)
    expect(await readFile(out, 'utf8')).not.toBe(first)
    expect((await stat(out)).mode & 0o777).toBe(0o600)
  })
})
