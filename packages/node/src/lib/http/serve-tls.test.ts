// serve({ tls }): HTTPS on the front with certificates made in the test, one per server name,
// replaced while serving.
import { request } from 'node:https'
import { connect } from 'node:tls'
import type { X509Certificate } from 'node:crypto'
import type { EnvironApp } from '@wsgiproxy/core'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { selfSignedCertificate } from '@wsgiproxy/test-kit/tls'
import type { TestCertificate } from '@wsgiproxy/test-kit/tls'
import { serve } from './serve.ts'
import type { Served } from './serve.ts'

const echoScheme: EnvironApp = (environ) => ({
  status: 200,
  headers: [['content-type', 'text/plain']],
  body: (async function* () {
    yield new TextEncoder().encode(`${environ['wsgi.url_scheme']} ${environ.HTTP_HOST ?? ''}`)
  })(),
})

const servers: Served[] = []
afterEach(async () => {
  await Promise.all(servers.splice(0).map((served) => served.close()))
})

let main: TestCertificate
let a: TestCertificate
let b: TestCertificate
let other: TestCertificate
beforeAll(async () => {
  ;[main, a, b, other] = await Promise.all([
    selfSignedCertificate(['localhost']),
    selfSignedCertificate(['a.test']),
    selfSignedCertificate(['wild.b.test']),
    selfSignedCertificate(['localhost']),
  ])
})

async function start(options: Parameters<typeof serve>[1]): Promise<Served> {
  const served = await serve(echoScheme, { closeTimeout: 100, ...options })
  servers.push(served)
  return served
}

/** The certificate's first DNS name the server presents for `servername` (none: no SNI). */
function presented(port: number, servername?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(
      { host: '127.0.0.1', port, rejectUnauthorized: false, ...(servername ? { servername } : {}) },
      () => {
        const raw = socket.getPeerX509Certificate() as X509Certificate
        socket.end()
        resolve(raw.subjectAltName?.split(',')[0]?.trim() ?? '')
      },
    )
    socket.once('error', reject)
  })
}

function get(port: number, ca: string, servername = 'localhost'): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path: '/', ca, servername, agent: false },
      (res) => {
        let text = ''
        res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk))
        res.once('end', () => resolve(`${res.statusCode} ${text}`))
      },
    )
    req.once('error', reject)
    req.end()
  })
}

describe('serve with tls', () => {
  it('serves HTTPS, and the environ says https', async () => {
    const served = await start({ tls: main })
    expect(served.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/)
    expect(await get(served.port, main.cert)).toBe(`200 https 127.0.0.1:${served.port}`)
  })

  it('presents a certificate per server name, by exact name and by wildcard, else the default', async () => {
    const served = await start({ tls: { ...main, sni: { 'a.test': a, '*.b.test': b } } })
    expect(await presented(served.port, 'a.test')).toBe('DNS:a.test')
    expect(await presented(served.port, 'A.TEST')).toBe('DNS:a.test')
    expect(await presented(served.port, 'wild.b.test')).toBe('DNS:wild.b.test')
    expect(await presented(served.port, 'deep.wild.b.test')).toBe('DNS:localhost')
    expect(await presented(served.port, 'elsewhere.test')).toBe('DNS:localhost')
    expect(await presented(served.port)).toBe('DNS:localhost')
  })

  it('replaces its certificates for new connections while serving', async () => {
    const served = await start({ tls: main })
    expect(await get(served.port, main.cert)).toMatch(/^200 https/)
    served.setTls({ ...other, sni: { 'a.test': a } })
    await expect(get(served.port, main.cert)).rejects.toThrow(/self[- ]signed|verify|certificate/i)
    expect(await get(served.port, other.cert)).toMatch(/^200 https/)
    expect(await presented(served.port, 'a.test')).toBe('DNS:a.test')
  })

  it('refuses a key that does not match its certificate, at start and when replacing', async () => {
    await expect(start({ tls: { key: main.key, cert: other.cert } })).rejects.toThrow(
      /^invalid options: serve\.tls: the key and certificate cannot be used \(.*\)$/,
    )
    const served = await start({ tls: main })
    expect(() =>
      served.setTls({ ...main, sni: { 'a.test': { key: a.key, cert: b.cert } } }),
    ).toThrow('invalid options: setTls.sni["a.test"]: the key and certificate cannot be used')
    // The old certificates stay.
    expect(await get(served.port, main.cert)).toMatch(/^200 https/)
  })

  it('checks the options', async () => {
    await expect(start({ tls: { key: main.key } as never })).rejects.toThrow(
      'invalid options: serve.tls.cert',
    )
    await expect(start({ tls: { ...main, sni: { 'bad name!': a } } })).rejects.toThrow(
      'expected a host name or *.domain',
    )
    await expect(start({ tls: { ...main, minVersion: 'TLSv1' as never } })).rejects.toThrow(
      'invalid options: serve.tls.minVersion',
    )
    const plain = await start({})
    expect(() => plain.setTls(main)).toThrow('this server was started without tls')
  })

  it('refuses a client that offers only TLS 1.2 when TLS 1.3 is the floor', async () => {
    const served = await start({ tls: { ...main, minVersion: 'TLSv1.3' } })
    const tls12 = new Promise((resolve, reject) => {
      const socket = connect(
        {
          host: '127.0.0.1',
          port: served.port,
          ca: main.cert,
          servername: 'localhost',
          maxVersion: 'TLSv1.2',
        },
        () => resolve(socket.getProtocol()),
      )
      socket.once('error', reject)
    })
    await expect(tls12).rejects.toThrow(/version|protocol/i)
    const tls13 = await new Promise((resolve, reject) => {
      const socket = connect(
        { host: '127.0.0.1', port: served.port, ca: main.cert, servername: 'localhost' },
        () => {
          resolve(socket.getProtocol())
          socket.end()
        },
      )
      socket.once('error', reject)
    })
    expect(tls13).toBe('TLSv1.3')
  })
})
