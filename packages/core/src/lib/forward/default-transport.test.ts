// The transport a forwarding app uses when none is given. On Node (the `node` condition of
// `#default-transport`) it is undici: no header the client did not send, uploads streamed as they
// come. Node's fetch, the default before, added `user-agent: node`, `accept-language: *`,
// `sec-fetch-mode: cors` and `accept-encoding: gzip, deflate`, and held a streamed upload until it
// ended.
import { execFile } from 'node:child_process'
import { EventEmitter, once } from 'node:events'
import type { IncomingMessage } from 'node:http'
import { request } from 'node:http'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterEach, describe, expect, it } from 'vitest'
import { closeAll, send, startFetchFront, startUpstream } from '@wsgiproxy/test-kit/servers'
import { createProxyApp, exactProxy } from '../../index.ts'

afterEach(closeAll)

const ADDED_BY_FETCH = [
  'user-agent',
  'accept-language',
  'sec-fetch-mode',
  'accept-encoding',
  'accept',
]

/** An upstream that answers with the header names it received. */
async function headerEcho(): Promise<string> {
  const upstream = await startUpstream((req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify(Object.keys(req.headers)))
  })
  return `http://127.0.0.1:${upstream.port}`
}

describe('the default transport on Node', () => {
  it('createProxyApp adds no header the client did not send', async () => {
    const href = await headerEcho()
    const front = await startFetchFront(createProxyApp({ href }))
    const res = await send(`http://127.0.0.1:${front.port}`, { headers: { 'x-client': '1' } })
    const names = JSON.parse(res.body.toString()) as string[]
    expect(names).toContain('x-client')
    for (const name of ADDED_BY_FETCH) expect(names).not.toContain(name)
  })

  it('exactProxy sends a Host that is not the address it connects to', async () => {
    const upstream = await startUpstream((req, res) => res.end(req.headers.host))
    // The environ names the upstream's address; the Host header names another site.
    const app = exactProxy({ allow: ['127.0.0.1'] })
    const response = await app({
      REQUEST_METHOD: 'GET',
      SCRIPT_NAME: '',
      PATH_INFO: '/',
      QUERY_STRING: '',
      SERVER_NAME: '127.0.0.1',
      SERVER_PORT: String(upstream.port),
      SERVER_PROTOCOL: 'HTTP/1.1',
      HTTP_HOST: 'site.example',
      'wsgi.url_scheme': 'http',
      'wsgi.input': null,
    })
    expect(response.status).toBe(200)
    const chunks: Uint8Array[] = []
    for await (const chunk of response.body ?? []) chunks.push(chunk)
    expect(Buffer.concat(chunks).toString()).toBe('site.example')
  })

  it('streams an upload: the upstream reads the first chunk before the client sends the last', async () => {
    // The client sends its second chunk only once the upstream has read the first: a transport
    // that held the upload until its end would never deliver it, and the test would time out.
    const seen = new EventEmitter()
    const firstChunk = once(seen, 'first')
    const upstream = await startUpstream(async (req, res) => {
      let received = ''
      for await (const chunk of req) {
        if (received === '') seen.emit('first')
        received += String(chunk)
      }
      res.end(received)
    })
    const front = await startFetchFront(
      createProxyApp({ href: `http://127.0.0.1:${upstream.port}` }),
    )
    const answer = new Promise<string>((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port: front.port, method: 'POST', path: '/', agent: false },
        (res: IncomingMessage) => {
          let text = ''
          res.on('data', (chunk: Buffer) => (text += chunk.toString()))
          res.on('end', () => resolve(text))
        },
      )
      req.on('error', reject)
      req.write('first,')
      void firstChunk.then(() => req.end('last'))
    })
    expect(await answer).toBe('first,last')
  })

  it('is undici in a plain node process that loads the built package (the `node` condition)', async () => {
    const core = fileURLToPath(new URL('../../..', import.meta.url))
    const href = await headerEcho()
    const program = `
      import { createProxyApp, toFetchHandler } from '@wsgiproxy/core'
      const handler = toFetchHandler(createProxyApp({ href: process.argv[1] }))
      const res = await handler(new Request('http://front.test/'))
      console.log(await res.text())
    `
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--input-type=module', '-e', program, href],
      { cwd: core },
    )
    const names = JSON.parse(stdout) as string[]
    expect(names).toContain('host')
    for (const name of ADDED_BY_FETCH) expect(names).not.toContain(name)
  })
})
