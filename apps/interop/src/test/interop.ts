// Test support (not built) for the interop suites: this project's receivers and fronts on
// 127.0.0.1 port 0 (registered with test-kit's `closeAll`), a client that connects from another
// loopback address, and the conversions between a Python 0.1 environ dump and ours.
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createProxyApp, proxyMiddleware } from '@wsgiproxy/core'
import type {
  Environ,
  EnvironApp,
  ProtocolWarning,
  ProxyAppOptions,
  ProxyMiddlewareOptions,
} from '@wsgiproxy/core'
import { mount, proxy, wsgiProxy } from '@wsgiproxy/hono'
import type { WsgiProxyVariables } from '@wsgiproxy/hono'
import { serve } from '@wsgiproxy/node'
import { Hono } from 'hono'
import { serveHono } from '@wsgiproxy/test-kit/serve-hono'
import { echoEnviron, register, send } from '@wsgiproxy/test-kit/servers'
import type { Running } from '@wsgiproxy/test-kit/servers'
import { spawner } from '@wsgiproxy/test-kit/spawner-helpers'
import { MIDDLEWARE01 } from '@wsgiproxy/test-kit/python01'

/**
 * front01.py behind TLS termination: every request it forwards says `X-Forwarded-Scheme: https`
 * (wsgiref serves plain HTTP, so the plain front always says `http`).
 */
export const HTTPS_FRONT01: string = fileURLToPath(
  new URL('./fixtures/https_front01.py', import.meta.url),
)

/**
 * The address test clients connect from: another loopback address (Linux routes all of
 * 127.0.0.0/8 to lo), so the client address a front forwards differs from the front's own, and a
 * receiver that restores `REMOTE_ADDR` is told apart from one that keeps the peer's.
 */
export const CLIENT_ADDRESS = '127.0.0.2'

/** The front's address as a receiver sees it: the Python fronts and ours connect from 127.0.0.1. */
export const FRONT_ADDRESS = '127.0.0.1'

/**
 * How long one test may take: it starts up to four `python3` processes (each prints its
 * listening line in about 0.1 s here; test-kit's `startPython01` allows 10 s on a loaded machine)
 * and sends a few requests over loopback.
 */
export const TEST_TIMEOUT = 30_000

/** A JSON answer: status, the raw body for failure messages, and the parsed body when JSON. */
export interface Answer {
  status: number
  text: string
  /** The body parsed, when the response was `application/json` (an environ dump). */
  environ: Record<string, unknown> | undefined
}

/**
 * Sends one GET from {@link CLIENT_ADDRESS} and reads the answer.
 *
 * @param origin - `http://127.0.0.1:<port>`
 * @param path - the request target
 * @param headers - extra request headers (`host` replaces the origin's)
 * @returns the status, body text and parsed environ
 */
export async function get(
  origin: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<Answer> {
  const res = await send(origin, { path, headers, localAddress: CLIENT_ADDRESS })
  const text = res.body.toString('utf8')
  const json = /^application\/json\b/.test(res.headers['content-type'] ?? '')
  return {
    status: res.status,
    text,
    environ: json ? (JSON.parse(text) as Record<string, unknown>) : undefined,
  }
}

/** A receiver on 127.0.0.1 port 0 that answers its restored environ as JSON. */
export interface Receiver extends Running {
  /** Every warning the receiver gave (its `onWarning`). */
  warnings: ProtocolWarning[]
  /** How many requests reached the app (0 when the request was refused before it). */
  calls(): number
}

/** One way of running this project's receiving side, for the suites to replay. */
export interface ReceiverKind {
  name: string
  /**
   * Whether the server leaves `Connection` and `Keep-Alive` out of its answer to a 0.1 request,
   * so the front may pass every response header on as the original did (`--pass-hop-by-hop`):
   * `@wsgiproxy/node` does; @hono/node-server writes both on every response, and wsgiref refuses
   * them from an app, so a Hono backend needs the fixture front's default hop-by-hop filter.
   */
  dropsConnectionHeaders: boolean
  start(options: ProxyMiddlewareOptions): Promise<Receiver>
}

/** The environ an app would show, JSON-safe: the body stream and the abort signal left out. */
function visible(environ: Environ): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(environ)) {
    if (key !== 'wsgi.input' && key !== 'wsgiproxy.signal') out[key] = value
  }
  return out
}

/** This project's receivers: core's `proxyMiddleware` on node `serve`, and Hono `wsgiProxy`. */
export const RECEIVERS: readonly ReceiverKind[] = [
  {
    name: 'proxyMiddleware on @wsgiproxy/node serve',
    dropsConnectionHeaders: true,
    async start(options) {
      const warnings: ProtocolWarning[] = []
      let calls = 0
      const app: EnvironApp = (environ) => {
        calls++
        return echoEnviron(environ)
      }
      const served = await serve(
        proxyMiddleware(app, { onWarning: (warning) => warnings.push(warning), ...options }),
        { closeTimeout: 200 },
      )
      const running = register({
        port: served.port,
        origin: served.url,
        close: () => served.close(),
      })
      return Object.assign(running, { warnings, calls: () => calls })
    },
  },
  {
    name: 'Hono wsgiProxy on @hono/node-server',
    dropsConnectionHeaders: false,
    async start(options) {
      const warnings: ProtocolWarning[] = []
      let calls = 0
      const app = new Hono<{ Variables: WsgiProxyVariables }>()
      app.use(wsgiProxy({ onWarning: (warning) => warnings.push(warning), ...options }))
      app.all('*', (c) => {
        calls++
        return c.json(visible(c.get('environ')))
      })
      const running = await serveHono(app)
      return Object.assign(running, { warnings, calls: () => calls })
    },
  },
]

/** What a front of ours is given: where to forward, and what it adds to every request's environ. */
export interface FrontSetup {
  /** The backend's origin (`http://127.0.0.1:<port>`); unused by a front that spawns its own. */
  backend: string
  /** The path and query the href adds (`/myapp/sub?x=1`), default none. */
  hrefPath?: string
  /** Options of `createProxyApp` but `href` and `onError` (`compat`, keys, ...). */
  options: Omit<ProxyAppOptions, 'href' | 'onError'>
  /**
   * Keys set in every request's environ before it is forwarded, as an authentication layer (or a
   * TLS-terminating server, for `wsgi.url_scheme`) in front of the proxy would.
   */
  environ?: Record<string, unknown>
}

/** One way of running this project's sending side, mounted at `/front`. */
export interface FrontKind {
  name: string
  /**
   * Whether it starts middleware01.py itself (the spawner), so it needs no backend and cannot
   * forward to a URL with a path: a spawned backend is at its root.
   */
  spawnsBackend: boolean
  start(setup: FrontSetup): Promise<Running>
}

/** Where the fronts of these suites are mounted: the `SCRIPT_NAME` they forward. */
export const FRONT_MOUNT = '/front'

/** Wraps an environ app so every request's environ gets `extra` first. */
function withEnviron(app: EnvironApp, extra: Record<string, unknown> = {}): EnvironApp {
  return (environ) => app(Object.assign({ ...environ }, extra))
}

/**
 * This project's fronts: `createProxyApp` on node `serve`, Hono `proxy()` on @hono/node-server,
 * and `createSpawner` (which spawns middleware01.py itself, on the port it picks).
 */
export const FRONTS: readonly FrontKind[] = [
  {
    name: 'createProxyApp on @wsgiproxy/node serve',
    spawnsBackend: false,
    async start({ backend, hrefPath = '', options, environ }) {
      const app = createProxyApp({ ...options, href: backend + hrefPath })
      const served = await serve(withEnviron(app, environ), {
        scriptName: FRONT_MOUNT,
        closeTimeout: 200,
      })
      return register({ port: served.port, origin: served.url, close: () => served.close() })
    },
  },
  {
    // Hono's proxy() builds the environ from the request alone, so keys an authentication layer
    // sets need the proxy app mounted behind an environ middleware (packages/hono/README.md).
    name: 'Hono proxy() on @hono/node-server (mount() behind an environ middleware for extra keys)',
    spawnsBackend: false,
    async start({ backend, hrefPath = '', options, environ }) {
      const href = backend + hrefPath
      const handler =
        environ === undefined
          ? proxy({ ...options, href })
          : mount(withEnviron(createProxyApp({ ...options, href }), environ))
      const app = new Hono()
      app.all(`${FRONT_MOUNT}/*`, handler)
      app.all(FRONT_MOUNT, handler)
      return serveHono(app)
    },
  },
  {
    name: 'createSpawner (python3 middleware01.py on the port it picks) on @wsgiproxy/node serve',
    spawnsBackend: true,
    async start({ options, environ }) {
      const backend = spawner({
        ...options,
        // middleware01.py takes its port as --listen-port; the spawner puts the port it reserved
        // in __PORT__ and waits until 127.0.0.1:PORT accepts connections.
        command: ['python3', MIDDLEWARE01, '--listen-port', '__PORT__', '--trust-ip', '127.0.0.1'],
        env: { PYTHONDONTWRITEBYTECODE: '1' },
        // One start per test: 10 s as test-kit's startPython01 allows a python3 to listen.
        startTimeout: 10_000,
        handleSignals: false,
      })
      const served = await serve(withEnviron(backend.app, environ), {
        scriptName: FRONT_MOUNT,
        closeTimeout: 200,
      })
      return register({ port: served.port, origin: served.url, close: () => served.close() })
    },
  },
]

/**
 * A str value as a Python 3 environ holds it (PEP 3333 native string: one character per byte,
 * latin-1) turned into the text it encodes: what our receiver gives for the same value in
 * compat mode, where every value is UTF-8 text.
 *
 * @param native - the value from a Python environ dump
 * @returns the UTF-8 text of its bytes
 */
export function nativeToText(native: string): string {
  return Buffer.from(native, 'latin1').toString('utf8')
}

/** The folder of the recipe programs of docs/migrating-from-python.md. */
export const RECIPE_DIR: string = fileURLToPath(new URL('../recipe/', import.meta.url))

/**
 * The path of one recipe program.
 *
 * @param name - its file name (`step1-backend.mjs`)
 * @returns its absolute path
 */
export function recipe(name: string): string {
  return join(RECIPE_DIR, name)
}
