/** @module The example handler: one `export default { fetch }` for Node, Bun and Deno. */
import type { EnvironApp, FetchHandler, ProxyTimeouts, Transport } from '@wsgiproxy/core'
import {
  createProxyApp,
  createSigner,
  exactProxy,
  parseKeyFile,
  toFetchHandler,
  WsgiProxyError,
} from '@wsgiproxy/core'

/** Options of {@link createHandler}. */
export interface HandlerOptions {
  /** Environment variables to read. Default: the runtime's (`Deno.env` or `process.env`). */
  env?: Readonly<Record<string, string | undefined>>
  /** Sends the requests. Default: core's (undici on Node, the runtime's `fetch` on Bun and Deno). */
  transport?: Transport
}

/** A module default export that Bun, Deno and @hono/node-server serve. */
export interface ServableHandler {
  /** The fetch handler. */
  fetch: FetchHandler
  /** Where Bun listens (`HOST`, default `127.0.0.1`); `deno serve` takes `--host` instead. */
  hostname?: string
  /** The port Bun listens on (`PORT`, default 8000; 0 picks a free one); `deno serve` takes `--port`. */
  port?: number
}

/**
 * Builds the handler from environment variables (see the README for the full list):
 * - `UPSTREAM_PORT` (and `UPSTREAM_HOST`, default `127.0.0.1`): the exact proxy forwards every
 *   request there, with `SERVER_NAME`, `SERVER_PORT` and `HTTP_HOST` set to the upstream
 *   (`UPSTREAM_HOST_HEADER` sends another `Host`, where the transport can: docs/runtimes.md);
 * - or `PROXY_HREF` (with `PROXY_KEY`, a key file line `keyid base64:secret`): the proxy app
 *   forwards to the href and signs what it sends;
 * - `TIMEOUT_HEADERS_MS`, `TIMEOUT_BODY_MS`: the forwarding timeouts.
 *
 * Every forwarding failure is printed to stdout as one JSON line
 * `{"event":"error","code":"UPSTREAM_UNREACHABLE"}`.
 *
 * @param options - the environment and the transport
 * @returns an object with the fetch handler
 */
export function createHandler(options: HandlerOptions = {}): ServableHandler {
  const env = options.env ?? readEnvironment()
  const forward = {
    timeouts: timeoutsFrom(env),
    onError: (error: WsgiProxyError): void => {
      console.log(JSON.stringify({ event: 'error', code: error.code }))
    },
    ...(options.transport === undefined ? {} : { transport: options.transport }),
  }
  const href = env['PROXY_HREF']
  if (href !== undefined && href !== '') {
    const keyLine = env['PROXY_KEY']
    const app = createProxyApp({
      href,
      ...forward,
      ...(keyLine === undefined || keyLine === ''
        ? {}
        : { signer: createSigner({ keys: parseKeyFile(keyLine) }) }),
    })
    return { fetch: toFetchHandler(app) }
  }
  const host = env['UPSTREAM_HOST'] ?? '127.0.0.1'
  const port = env['UPSTREAM_PORT'] ?? ''
  if (!/^\d{1,5}$/.test(port)) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      `UPSTREAM_PORT must be a port number, or PROXY_HREF a URL (got UPSTREAM_PORT ${JSON.stringify(port)})`,
    )
  }
  const upstream = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
  // The upstream is configured, not taken from the request: allow exactly it (it is on loopback).
  const proxy = exactProxy({ ...forward, allow: [upstream] })
  const authority = env['UPSTREAM_HOST_HEADER'] || upstream
  const app: EnvironApp = (environ) =>
    proxy({ ...environ, SERVER_NAME: host, SERVER_PORT: port, HTTP_HOST: authority })
  return { fetch: toFetchHandler(app) }
}

function timeoutsFrom(env: Readonly<Record<string, string | undefined>>): ProxyTimeouts {
  const timeouts: ProxyTimeouts = {}
  const headers = env['TIMEOUT_HEADERS_MS']
  const body = env['TIMEOUT_BODY_MS']
  if (headers !== undefined && headers !== '') timeouts.upstreamHeaders = Number(headers)
  if (body !== undefined && body !== '') timeouts.upstreamBody = Number(body)
  return timeouts
}

/** The runtime's environment variables: `Deno.env` on Deno, `process.env` on Node and Bun. */
export function readEnvironment(): Readonly<Record<string, string | undefined>> {
  const runtime = globalThis as {
    Deno?: { env: { toObject(): Record<string, string> } }
    process?: { env: Record<string, string | undefined> }
  }
  // Deno needs --allow-env for this.
  if (runtime.Deno !== undefined) return runtime.Deno.env.toObject()
  return runtime.process?.env ?? {}
}

/** The handler configured from the environment: `bun run`, `deno serve` and the Node runner serve it. */
const handler: ServableHandler = {
  ...createHandler(),
  hostname: readEnvironment()['HOST'] ?? '127.0.0.1',
  port: Number(readEnvironment()['PORT'] ?? 8000),
}
export default handler
