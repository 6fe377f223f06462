// HTTPS on the command's listener: --tls-cert/--tls-key and the config file's tls, certificates
// read again when their files change or on SIGHUP, a bad pair refused at start and kept out on
// reload.
import { statSync, utimesSync, writeFileSync } from 'node:fs'
import { mkdtemp } from 'node:fs/promises'
import { request } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect } from 'node:tls'
import { connect as http2Connect } from 'node:http2'
import { X509Certificate } from 'node:crypto'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { selfSignedCertificate } from '@wsgiproxy/test-kit/tls'
import type { TestCertificate } from '@wsgiproxy/test-kit/tls'
import { cleanup, runCli, startCli } from './test/run-cli.ts'

afterEach(cleanup)

let first: TestCertificate
let second: TestCertificate
let api: TestCertificate
beforeAll(async () => {
  ;[first, second, api] = await Promise.all([
    selfSignedCertificate(['localhost']),
    selfSignedCertificate(['localhost']),
    selfSignedCertificate(['api.test']),
  ])
})

async function certFiles(pair: TestCertificate, dir?: string) {
  const where = dir ?? (await mkdtemp(join(tmpdir(), 'wsgiproxy-tls-')))
  const cert = join(where, 'cert.pem')
  const key = join(where, 'key.pem')
  writeFileSync(cert, pair.cert)
  writeFileSync(key, pair.key)
  return { dir: where, cert, key }
}

/** The fingerprint of the certificate the server presents (for `servername`). */
function presented(port: number, servername = 'localhost'): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(
      { host: '127.0.0.1', port, servername, rejectUnauthorized: false },
      () => {
        resolve((socket.getPeerX509Certificate() as X509Certificate).fingerprint256)
        socket.end()
      },
    )
    socket.once('error', reject)
  })
}

/** `wsgiproxy echo` on HTTPS with these files. */
function echoWithTls(files: { cert: string; key: string }, ...more: string[]) {
  return startCli([
    'echo',
    '--listen',
    '127.0.0.1:0',
    '--tls-cert',
    files.cert,
    '--tls-key',
    files.key,
    ...more,
  ])
}

function fingerprint(pair: TestCertificate): string {
  return new X509Certificate(pair.cert).fingerprint256
}

function getJson(port: number, ca: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path: '/',
        ca,
        servername: 'localhost',
        agent: false,
        headers: { accept: 'application/json' },
      },
      (res) => {
        let text = ''
        res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk))
        res.once('end', () => resolve(JSON.parse(text) as Record<string, unknown>))
      },
    )
    req.once('error', reject)
    req.end()
  })
}

async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  // The files are polled every second; 15 s leaves room for a loaded machine.
  const deadline = Date.now() + 15_000
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

describe('wsgiproxy with tls', () => {
  it('serves HTTPS with --tls-cert and --tls-key, the environ saying https', async () => {
    const files = await certFiles(first)
    const cli = await echoWithTls(files)
    expect(cli.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/)
    const port = Number(new URL(cli.url).port)
    const environ = await getJson(port, first.cert)
    expect(environ['wsgi.url_scheme']).toBe('https')
  })

  it('reads the certificates again when their files change, and keeps them when the new ones are bad', async () => {
    const files = await certFiles(first)
    const cli = await echoWithTls(files)
    const port = Number(new URL(cli.url).port)
    expect(await presented(port)).toBe(fingerprint(first))
    await certFiles(second, files.dir)
    await until(
      async () => (await presented(port)) === fingerprint(second),
      'the renewed certificate',
    )
    await cli.waitFor(/tls: certificates read again/)
    // A key that does not belong to the certificate: logged, the one in use stays.
    writeFileSync(files.key, first.key)
    await cli.waitFor(
      /error: tls: .*the key and certificate cannot be used.*keeping the certificates in use/,
    )
    expect(await presented(port)).toBe(fingerprint(second))
  })

  it('reads them again on SIGHUP, and keeps serving', async () => {
    const files = await certFiles(first)
    const cli = await echoWithTls(files)
    const port = Number(new URL(cli.url).port)
    // New contents with the old times: the poll sees no change, only SIGHUP can.
    const times = [statSync(files.cert), statSync(files.key)]
    await certFiles(second, files.dir)
    utimesSync(files.cert, times[0]!.atime, times[0]!.mtime)
    utimesSync(files.key, times[1]!.atime, times[1]!.mtime)
    process.kill(cli.pid, 'SIGHUP')
    await cli.waitFor(/tls: certificates read again \(SIGHUP\)/)
    expect(await presented(port)).toBe(fingerprint(second))
    expect((await getJson(port, second.cert))['wsgi.url_scheme']).toBe('https')
  })

  it('takes tls from the config file, paths relative to it, with a certificate per server name', async () => {
    const main = await certFiles(first)
    const extra = await certFiles(api)
    const config = join(main.dir, 'wsgiproxy.config.json')
    writeFileSync(
      config,
      JSON.stringify({
        listen: '127.0.0.1:0',
        tls: {
          cert: 'cert.pem',
          key: 'key.pem',
          sni: { 'api.test': { cert: extra.cert, key: extra.key } },
        },
        routes: [{ path: '/', type: 'echo' }],
      }),
    )
    const cli = await startCli(['serve', '--config', config])
    const port = Number(new URL(cli.url).port)
    expect(await presented(port, 'api.test')).toBe(fingerprint(api))
    expect(await presented(port, 'other.test')).toBe(fingerprint(first))
  })

  it.each([
    [
      ['--tls-cert', 'c.pem'],
      '--tls-cert needs --tls-key (the certificate and its private key, PEM files)',
    ],
    [
      ['--tls-key', 'k.pem'],
      '--tls-key needs --tls-cert (the certificate and its private key, PEM files)',
    ],
  ])('refuses %j', async (flags, message) => {
    const result = await runCli(['echo', '--listen', '127.0.0.1:0', ...flags])
    expect(result.code).toBe(1)
    expect(result.stderr).toBe(`wsgiproxy: ${message}\n`)
  })

  it('refuses a missing file and a key that does not match, before listening', async () => {
    const files = await certFiles(first)
    const missing = await runCli([
      'echo',
      '--listen',
      '127.0.0.1:0',
      '--tls-cert',
      join(files.dir, 'nope.pem'),
      '--tls-key',
      files.key,
    ])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toBe(
      `wsgiproxy: cannot read tls.cert ${join(files.dir, 'nope.pem')}: ENOENT\n`,
    )
    writeFileSync(files.key, second.key)
    const mismatched = await runCli([
      'echo',
      '--listen',
      '127.0.0.1:0',
      '--tls-cert',
      files.cert,
      '--tls-key',
      files.key,
    ])
    expect(mismatched.code).toBe(1)
    expect(mismatched.stderr).toMatch(
      /^wsgiproxy: tls: the key and certificate cannot be used \(.+\)\n$/,
    )
  })

  it('speaks HTTP/2 with --http2, HTTP/1.1 on the same port', async () => {
    const files = await certFiles(first)
    const cli = await echoWithTls(files, '--http2')
    const port = Number(new URL(cli.url).port)
    const client = http2Connect(`https://localhost:${port}`, { ca: first.cert })
    const body = await new Promise<string>((resolve, reject) => {
      const req = client.request({ ':path': '/', accept: 'application/json' })
      let text = ''
      req.setEncoding('utf8').on('data', (chunk: string) => (text += chunk))
      req.once('end', () => resolve(text))
      req.once('error', reject)
      req.end()
    })
    client.close()
    expect(JSON.parse(body)).toMatchObject({
      SERVER_PROTOCOL: 'HTTP/2',
      'wsgi.url_scheme': 'https',
    })
    expect((await getJson(port, first.cert)).SERVER_PROTOCOL).toBe('HTTP/1.1')
  })

  it('refuses --http2 without TLS', async () => {
    const result = await runCli(['echo', '--listen', '127.0.0.1:0', '--http2'])
    expect(result.code).toBe(1)
    expect(result.stderr).toBe(
      'wsgiproxy: HTTP/2 needs TLS: give --tls-cert and --tls-key (or tls in the config file); for cleartext HTTP/2 only (no HTTP/1.1 clients, no WebSockets) use --h2c (or "http2": "h2c")\n',
    )
  })
})
