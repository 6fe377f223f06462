// docs/coming-from.md: every example program under src/coming-from/ is shown in it verbatim as a
// ```js block (and every ```js block is one of them), every ```text block is an error message
// wsgiproxy gives, and each program runs here as a real child process (`node <file>`, PORT=0,
// BACKEND_URL the upstream) in front of a real upstream, doing what the doc says it does.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { createServer, request } from 'node:http'
import type { IncomingHttpHeaders } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gunzipSync, gzipSync } from 'node:zlib'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createProxyApp, exactProxy } from '@wsgiproxy/core'
import type { ProxyAppOptions } from '@wsgiproxy/core'
import { proxy } from '@wsgiproxy/hono'
import type { ProxyOptions } from '@wsgiproxy/hono'
import { buildStale } from '@wsgiproxy/test-kit/build-dist'
import { closeAll, freePort, register, send } from '@wsgiproxy/test-kit/servers'
import { childrenOf, recordPids } from '@wsgiproxy/test-kit/spawner-helpers'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
const DOC = join(ROOT, 'docs', 'coming-from.md')
const EXAMPLES = fileURLToPath(new URL('./coming-from/', import.meta.url))
const START_TIMEOUT = 30_000

// --- the doc ----------------------------------------------------------------------------------

interface Block {
  language: string
  content: string
}

/** The fenced code blocks of a Markdown file. */
function blocksOf(text: string): Block[] {
  const blocks: Block[] = []
  for (const match of text.matchAll(/^(`{3,})([^`\n]*)\n([\s\S]*?)^\1\s*$/gm)) {
    blocks.push({ language: (match[2] ?? '').trim(), content: (match[3] ?? '').trimEnd() })
  }
  return blocks
}

function examples(): string[] {
  return readdirSync(EXAMPLES)
    .filter((name) => name.endsWith('.mjs'))
    .toSorted()
}

/** The message a function throws. */
function thrown(run: () => unknown): string {
  try {
    run()
  } catch (error) {
    return (error as Error).message
  }
  throw new Error('nothing was thrown')
}

describe('docs/coming-from.md', () => {
  const doc = readFileSync(DOC, 'utf8')
  const blocks = blocksOf(doc)

  it('shows every example program verbatim, and no other JavaScript', () => {
    const files = examples()
    expect(files).toEqual([
      'fastify-http-proxy.mjs',
      'hono-proxy.mjs',
      'http-proxy-middleware.mjs',
      'http-proxy.mjs',
    ])
    const shown = blocks.filter((block) => block.language === 'js').map((block) => block.content)
    const contents = files.map((file) => readFileSync(join(EXAMPLES, file), 'utf8').trimEnd())
    expect(shown.toSorted()).toEqual(contents.toSorted())
    expect(blocks.map((block) => block.language).filter((language) => language !== 'js')).toEqual([
      'text',
    ])
  })

  it('shows the error messages wsgiproxy gives', () => {
    const [text] = blocks.filter((block) => block.language === 'text')
    const given = [
      thrown(() =>
        createProxyApp({
          target: 'http://127.0.0.1:8080',
          changeOrigin: true,
        } as unknown as ProxyAppOptions),
      ),
      thrown(() => proxy({ hrf: 'http://127.0.0.1:8080' } as unknown as ProxyOptions)),
      thrown(() => exactProxy({ target: 'http://127.0.0.1:8080' } as never)),
    ]
    expect(text?.content.split('\n')).toEqual(given)
  })

  it('names each project in a heading and links nowhere outside the repository', () => {
    const headings = [...doc.matchAll(/^## (.+)$/gm)].map((match) => match[1])
    expect(headings).toEqual(
      expect.arrayContaining([
        'http-proxy-middleware',
        'http-proxy',
        '`hono/proxy`',
        '`@fastify/http-proxy`',
      ]),
    )
    expect(doc).not.toMatch(/https?:\/\/(?!127\.0\.0\.1)/)
  })
})

// --- running the programs ---------------------------------------------------------------------

interface Seen {
  method: string | undefined
  url: string | undefined
  headers: IncomingHttpHeaders
  /** The header names as they came on the wire. */
  names?: string[]
}

/**
 * A real upstream on 127.0.0.1 port 0: answers with the request it got as JSON (and a cookie),
 * redirects `…/redirect` to `<its origin>/v2/login`, never answers `…/slow`, and answers an
 * Upgrade with 101 and then echoes every byte.
 */
async function startBackend(): Promise<{ origin: string; seen: Seen[] }> {
  const seen: Seen[] = []
  const sockets = new Set<Socket>()
  const server = createServer((req, res) => {
    const names = req.rawHeaders.filter((_, index) => index % 2 === 0)
    seen.push({ method: req.method, url: req.url, headers: req.headers, names })
    req.resume()
    if (req.url?.endsWith('/slow')) return
    if (req.url?.endsWith('/gzip')) {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-encoding': 'gzip' })
      res.end(gzipSync('compressed by the backend'))
      return
    }
    if (req.url?.endsWith('/redirect')) {
      res.writeHead(302, { location: `http://${req.headers.host}/v2/login` }).end()
      return
    }
    res.writeHead(200, { 'content-type': 'application/json', 'set-cookie': 'session=1' })
    res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers }))
  })
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  server.on('upgrade', (req, socket: Socket) => {
    seen.push({ method: req.method, url: req.url, headers: req.headers })
    sockets.add(socket)
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
    )
    socket.pipe(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  register({
    port,
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  })
  return { origin: `http://127.0.0.1:${port}`, seen }
}

interface Program {
  child: ChildProcess
  url: string
}

const started = new Set<ChildProcess>()

beforeAll(() => {
  // The programs load the built packages (Node 20 runs no TypeScript); a no-op after `pnpm build`.
  buildStale([
    ['packages/core', 'index.js'],
    ['packages/node', 'index.js'],
    ['packages/hono', 'index.js'],
  ])
}, 180_000)

afterEach(async () => {
  for (const child of started) {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) continue
    recordPids(child.pid, ...childrenOf(child.pid))
    process.kill(child.pid, 'SIGKILL')
  }
  started.clear()
  await closeAll()
})

/** Starts an example and resolves once it prints the address it listens on. */
async function start(file: string, backend: string): Promise<Program> {
  const child = spawn(process.execPath, [join(EXAMPLES, file)], {
    cwd: EXAMPLES,
    env: { ...process.env, PORT: '0', BACKEND_URL: backend },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  started.add(child)
  recordPids(child.pid)
  let log = ''
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${file}: no listening line:\n${log}`)),
      START_TIMEOUT,
    )
    const onData = (text: string): void => {
      log += text
      const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(log)
      if (match?.[1] !== undefined) {
        clearTimeout(timer)
        resolve(match[1])
      }
    }
    child.stdout?.setEncoding('utf8').on('data', onData)
    child.stderr?.setEncoding('utf8').on('data', onData)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`${file} exited (${code ?? signal}):\n${log}`))
    })
  })
  return { child, url }
}

async function json(url: string, path: string, headers: Record<string, string> = {}) {
  const res = await send(url, { path, headers })
  expect({ status: res.status, body: res.body.toString() }).toMatchObject({ status: 200 })
  return JSON.parse(res.body.toString()) as Seen
}

/** Sends an Upgrade request, then `ping` through the tunnel; resolves with what comes back. */
function upgradeAndEcho(url: string, path: string): Promise<{ status: number; echo: string }> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, url), {
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
      },
      agent: false,
    })
    req.on('error', reject)
    req.on('response', (res) => reject(new Error(`no upgrade: ${res.statusCode}`)))
    req.on('upgrade', (res, socket: Socket) => {
      let echo = ''
      socket.setEncoding('utf8')
      socket.on('data', (text: string) => {
        echo += text
        if (echo.length >= 4) {
          socket.destroy()
          resolve({ status: res.statusCode ?? 0, echo })
        }
      })
      socket.on('error', reject)
      socket.write('ping')
    })
    req.end()
  })
}

describe('coming-from/http-proxy-middleware.mjs', () => {
  it("forwards /api/* to href with its path in front, Host the backend's, X-Forwarded-* set", async () => {
    const backend = await startBackend()
    const app = await start('http-proxy-middleware.mjs', backend.origin)
    const seen = await json(app.url, '/api/users/1?x=1', { host: 'front.test' })
    expect(seen.url).toBe('/v2/users/1?x=1')
    expect(seen.headers).toMatchObject({
      host: new URL(backend.origin).host,
      'x-forwarded-server': 'front.test',
      'x-forwarded-for': '127.0.0.1',
      'x-forwarded-scheme': 'http',
      'x-forwarded-script-name': '/api',
    })
  }, 60_000)

  it('rewrites a redirect to the backend into the public path', async () => {
    const backend = await startBackend()
    const app = await start('http-proxy-middleware.mjs', backend.origin)
    const res = await send(app.url, { path: '/api/redirect' })
    expect(res.status).toBe(302)
    expect(res.headers.location).toBe('/api/login')
  }, 60_000)
})

describe('coming-from/http-proxy.mjs', () => {
  it('forwards every path with X-Forwarded-For, and tunnels a WebSocket upgrade', async () => {
    const backend = await startBackend()
    const app = await start('http-proxy.mjs', backend.origin)
    const seen = await json(app.url, '/any/path?q=1')
    expect(seen.url).toBe('/any/path?q=1')
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(await upgradeAndEcho(app.url, '/socket')).toEqual({ status: 101, echo: 'ping' })
    expect(backend.seen.at(-1)).toMatchObject({ url: '/socket' })
    expect(backend.seen.at(-1)?.headers.upgrade).toBe('websocket')
  }, 60_000)

  it('answers 504 when the backend does not answer within 2 s', async () => {
    const backend = await startBackend()
    const app = await start('http-proxy.mjs', backend.origin)
    const began = Date.now()
    const res = await send(app.url, { path: '/slow' })
    expect(res.status).toBe(504)
    expect(Date.now() - began).toBeGreaterThanOrEqual(1_900)
  }, 60_000)

  it('answers what onError returns when the backend is down', async () => {
    const app = await start('http-proxy.mjs', `http://127.0.0.1:${await freePort()}`)
    const res = await send(app.url, { path: '/x' })
    expect(res.status).toBe(502)
    expect(res.body.toString()).toBe('the backend is down')
  }, 60_000)
})

describe('coming-from/hono-proxy.mjs', () => {
  it('forwards the request as sent but Authorization, and drops Set-Cookie from the response', async () => {
    const backend = await startBackend()
    const app = await start('hono-proxy.mjs', backend.origin)
    const res = await send(app.url, {
      method: 'POST',
      path: '/proxy/a/b?c=d',
      headers: { authorization: 'Bearer secret', 'x-custom': 'kept' },
      body: 'payload',
    })
    expect(res.status).toBe(200)
    expect(res.headers['set-cookie']).toBeUndefined()
    const seen = JSON.parse(res.body.toString()) as Seen
    expect(seen).toMatchObject({ method: 'POST', url: '/a/b?c=d' })
    expect(seen.headers.authorization).toBeUndefined()
    expect(seen.headers).toMatchObject({
      'x-custom': 'kept',
      'x-forwarded-for': '127.0.0.1',
      'x-forwarded-script-name': '/proxy',
    })
    expect(backend.seen[0]?.names).toContain('x-custom')
  }, 60_000)

  it('passes a compressed body through with its Content-Encoding', async () => {
    const backend = await startBackend()
    const app = await start('hono-proxy.mjs', backend.origin)
    const res = await send(app.url, { path: '/proxy/gzip', headers: { 'accept-encoding': 'gzip' } })
    expect(backend.seen[0]?.headers['accept-encoding']).toBe('gzip')
    expect(res.headers['content-encoding']).toBe('gzip')
    expect(gunzipSync(res.body).toString()).toBe('compressed by the backend')
  }, 60_000)
})

describe('coming-from/fastify-http-proxy.mjs', () => {
  it('checks the API key first, then forwards each prefix to the path of its href', async () => {
    const backend = await startBackend()
    const app = await start('fastify-http-proxy.mjs', backend.origin)
    const refused = await send(app.url, { path: '/api/items' })
    expect(refused.status).toBe(401)
    expect(backend.seen).toEqual([])
    const items = await json(app.url, '/api/items', { 'x-api-key': 'k' })
    expect(items.url).toBe('/v1/items')
    expect(items.headers['x-forwarded-script-name']).toBe('/api')
    const auth = await json(app.url, '/auth/callback?code=1')
    expect(auth.url).toBe('/login/callback?code=1')
  }, 60_000)
})
