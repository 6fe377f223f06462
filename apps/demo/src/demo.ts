import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { serve } from '@hono/node-server'
import { createSigner, formatKeyFile } from '@wsgiproxy/core'
import { mount } from '@wsgiproxy/hono'
import type { Spawner } from '@wsgiproxy/node'
import { createSpawner, loadKeyFile } from '@wsgiproxy/node'
import { Hono } from 'hono'
import { STYLE, table } from './html.ts'

/** Options of {@link startDemo}. */
export interface DemoOptions {
  /** Port of the front. Default 8080; 0 picks a free one. */
  port?: number
  /** Address of the front. Default `127.0.0.1`. */
  hostname?: string
  /** The signing key file; created with a fresh key (mode 0600) when missing. Default `.keys/demo.keys` in the demo's folder. */
  keyFile?: string
  /** Backends stop after this many idle milliseconds. Default 30 000. */
  idleTimeout?: number
  /** Where log lines go. Default `console.log`. */
  log?: (line: string) => void
}

/** The running demo. */
export interface Demo {
  /** The URL to open. */
  url: string
  /** The spawners of the two backends. */
  backends: { echo: Spawner; py: Spawner }
  /** Stops the front and both backends. */
  close(): Promise<void>
}

const PACKAGE_ROOT = fileURLToPath(new URL('..', import.meta.url))
// From src/ (tests) and from dist/ alike: the backends run as built JavaScript and as Python.
const ECHO_BACKEND = fileURLToPath(new URL('../dist/backends/echo-backend.js', import.meta.url))
const PY_BACKEND = fileURLToPath(new URL('../backends/wsgi_backend.py', import.meta.url))

/** Creates the key file with one fresh 32-byte key when it does not exist; returns its path. */
export function ensureKeyFile(path: string, log: (line: string) => void): string {
  if (!existsSync(path)) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
    const keys = [{ id: `demo-${new Date().toISOString().slice(0, 10)}`, secret: randomBytes(32) }]
    writeFileSync(path, formatKeyFile(keys), { mode: 0o600, flag: 'wx' })
    log(`demo: generated a signing key in ${path}`)
  }
  return path
}

function describeSpawner(spawner: Spawner, name: string, log: (line: string) => void): void {
  spawner.on('spawn', ({ pid, port }) => log(`${name}: spawned pid ${pid} on port ${port}`))
  spawner.on('ready', ({ pid, coldStartMs }) =>
    log(`${name}: pid ${pid} ready in ${coldStartMs} ms`),
  )
  spawner.on('idle', ({ pid }) => log(`${name}: idle, stopping pid ${pid}`))
  spawner.on('exit', (exit) => log(`${name}: pid ${exit.pid} exited (${exit.signal ?? exit.code})`))
  spawner.on('error', (error) => log(`${name}: ${error.message}`))
}

function status(name: string, spawner: Spawner): string {
  const s = spawner.status()
  return table([
    ['state', s.state],
    ['pid', s.pid === undefined || s.pid === null ? '–' : String(s.pid)],
    ['starts', String(s.starts)],
  ]).replace('<table>', `<table id="${name}-status">`)
}

function landing(backends: Demo['backends']): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>wsgiproxy demo</title><link rel="stylesheet" href="/style.css"></head><body>
<h1>wsgiproxy demo</h1>
<p>This page comes from a <a href="https://hono.dev">Hono</a> app on Node: the <em>front</em>. Two
routes forward to backends that the front starts on the first request and stops after they have
been idle for a while (watch the log in the terminal):</p>
<div class="card"><h2><a id="echo-link" href="/echo/">/echo/</a>: a Node backend that checks signatures</h2>
<p>The front signs every request it forwards (RFC 9421, HMAC-SHA256, key generated on first start)
and adds <code>X-Forwarded-*</code> headers. The backend runs <code>proxyMiddleware</code>: it
refuses anything unsigned and shows the original request it restored: <code>SCRIPT_NAME</code>
<code>/echo</code>, your address as <code>REMOTE_ADDR</code>.</p>${status('echo', backends.echo)}</div>
<div class="card"><h2><a id="py-link" href="/py/">/py/</a>: a Python WSGI backend</h2>
<p>A wsgiref app in <code>python3</code>: any language works, since the front only needs a
command that listens on the port it is given. It shows the headers the front forwarded.</p>${status('py', backends.py)}</div>
<p>How it works: <code>createSpawner</code> from <code>@wsgiproxy/node</code> runs each backend in
its own process group on a free port, and <code>mount</code> from <code>@wsgiproxy/hono</code>
serves it under the route: <code>app.all('/echo/*', mount(spawner.app))</code>.</p>
<p>The signing key is in the file the terminal names. Stop with Ctrl-C: the backends stop with the
front.</p>
</body></html>`
}

/**
 * Starts the demo: a Hono front on `@hono/node-server` with a landing page, `/echo/` forwarded
 * (signed) to a Node backend and `/py/` to a Python WSGI backend, both started on demand.
 *
 * @param options - where to listen, the key file, the idle timeout, the log
 * @returns the running demo
 * @throws the error of `listen` (`code` EADDRINUSE, EACCES...) when the front cannot listen
 */
export async function startDemo(options: DemoOptions = {}): Promise<Demo> {
  const log = options.log ?? ((line: string) => console.log(line))
  const keyFile = ensureKeyFile(options.keyFile ?? `${PACKAGE_ROOT}.keys/demo.keys`, log)
  const keys = await loadKeyFile(keyFile)
  const idleTimeout = options.idleTimeout ?? 30_000
  const logger = (entry: { name: string; pid: number | null; text: string }): void =>
    log(`[${entry.name} ${entry.pid ?? '-'}] ${entry.text}`)

  const echo = createSpawner({
    name: 'echo',
    command: [process.execPath, ECHO_BACKEND, '__PORT__'],
    env: { DEMO_KEY_FILE: keyFile },
    idleTimeout,
    signer: createSigner({ keys }),
    logger,
  })
  const py = createSpawner({
    name: 'py',
    command: ['python3', PY_BACKEND, '__PORT__'],
    idleTimeout,
    logger,
  })
  const backends = { echo, py }
  describeSpawner(echo, 'echo', log)
  describeSpawner(py, 'py', log)

  const app = new Hono()
  app.get('/', (c) => c.html(landing(backends)))
  app.get('/style.css', (c) => c.body(STYLE, 200, { 'content-type': 'text/css; charset=utf-8' }))
  app.get('/echo', (c) => c.redirect('/echo/'))
  app.get('/py', (c) => c.redirect('/py/'))
  app.all('/echo/*', mount(echo.app))
  app.all('/py/*', mount(py.app))

  const hostname = options.hostname ?? '127.0.0.1'
  let front: Server
  try {
    front = await new Promise<Server>((resolve, reject) => {
      const server = serve({ fetch: app.fetch, port: options.port ?? 8080, hostname }, () =>
        resolve(server as Server),
      ) as Server
      server.once('error', reject)
    })
  } catch (error) {
    // Nothing has started a backend yet; closing the spawners releases what they hold.
    await Promise.all([echo.close(), py.close()])
    throw error
  }
  const port = (front.address() as AddressInfo).port
  const host = hostname.includes(':') ? `[${hostname}]` : hostname
  log(`demo: key file ${keyFile}`)
  return {
    url: `http://${host}:${port}/`,
    backends,
    close: async () => {
      front.closeAllConnections()
      await Promise.all([
        new Promise<void>((resolve) => front.close(() => resolve())),
        echo.close(),
        py.close(),
      ])
    },
  }
}
