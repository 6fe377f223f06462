// The behaviour every runtime must show: core's forwarding suite, a signed hop to a verifying
// backend, and no process left behind.
import { gzipSync } from 'node:zlib'
import { afterEach, describe, expect, it } from 'vitest'
import type { Environ, ExactProxyOptions, SigningKey, WsgiProxyErrorCode } from '@wsgiproxy/core'
import { createVerifier, formatKeyFile, proxyMiddleware, WsgiProxyError } from '@wsgiproxy/core'
import type { StartProxy } from '@wsgiproxy/test-kit/forwarding-suite'
import { describeForwarding } from '@wsgiproxy/test-kit/forwarding-suite'
import {
  closeAll,
  echoEnviron,
  send,
  startFetchFront,
  startUpstream,
} from '@wsgiproxy/test-kit/servers'
import type { RuntimeName } from './start-runtime.ts'
import { livePids, startRuntime } from './start-runtime.ts'

/** The environment variables that carry {@link ExactProxyOptions} timeouts to the handler. */
function timeoutEnv(options: ExactProxyOptions): Record<string, string> {
  const env: Record<string, string> = {}
  const timeouts = options.timeouts ?? {}
  const headers = timeouts.upstreamHeaders ?? timeouts.headers
  const body = timeouts.upstreamBody ?? timeouts.body
  if (headers !== undefined) env['TIMEOUT_HEADERS_MS'] = String(headers)
  if (body !== undefined) env['TIMEOUT_BODY_MS'] = String(body)
  return env
}

/** A {@link StartProxy} that runs the example handler under `runtime` as a child process. */
export function runtimeProxy(runtime: RuntimeName): StartProxy {
  return (upstreamPort, options) =>
    startRuntime(
      runtime,
      { UPSTREAM_PORT: String(upstreamPort), ...timeoutEnv(options) },
      // The handler prints one JSON line per failure; the error hook is relayed from it.
      (event) =>
        void options.onError?.(
          new WsgiProxyError(event.code as WsgiProxyErrorCode, `reported by ${runtime}`),
          {} as Environ,
        ),
    )
}

/**
 * What each runtime's default transport does where runtimes differ and the forwarding suite
 * accepts either behaviour (docs/runtimes.md): the tests below pin the documented one.
 */
export interface RuntimeCapabilities {
  /** Sends a `Host` other than the URL's authority; otherwise answers 500 `HOST_OVERRIDE_UNSUPPORTED`. */
  hostOverride: boolean
  /** Passes gzip bytes through with their headers; otherwise decodes them and drops `Content-Encoding`/`Content-Length`. */
  passesEncodedBytes: boolean
  /** Adds a `user-agent` (and other headers) the client did not send, as runtime `fetch` does. */
  addsHeaders: boolean
}

/**
 * The capabilities of the runtimes as tested (Node 20, Bun 1.4, Deno 2.9). `node` is core's
 * default there (undici, through the `node` condition); `node-fetch` is `fetchTransport()` on Node.
 */
export const CAPABILITIES: Record<RuntimeName, RuntimeCapabilities> = {
  node: { hostOverride: true, passesEncodedBytes: true, addsHeaders: false },
  'node-fetch': { hostOverride: false, passesEncodedBytes: false, addsHeaders: true },
  bun: { hostOverride: true, passesEncodedBytes: true, addsHeaders: true },
  deno: { hostOverride: true, passesEncodedBytes: false, addsHeaders: true },
}

const KEY: SigningKey = { id: 'runtimes-1', secret: new Uint8Array(32).fill(7) }
const OTHER: SigningKey = { id: 'runtimes-1', secret: new Uint8Array(32).fill(8) }

/** A backend that verifies signatures and answers its restored environ as JSON. */
async function signedBackend(): Promise<{ origin: string; port: number }> {
  return startFetchFront(
    proxyMiddleware(echoEnviron, { verifier: createVerifier({ keys: [KEY] }) }),
  )
}

/**
 * Replays the forwarding suite and the signing cases against `runtime`. Long by nature: its body
 * is the list of cases, one `it` each.
 */
export function describeRuntime(label: string, runtime: RuntimeName): void {
  describeForwarding(label, runtimeProxy(runtime))

  describe(`runtime transport (${label})`, () => {
    const can = CAPABILITIES[runtime]
    afterEach(closeAll)

    const host = can.hostOverride
      ? 'sends the Host the environ names, not the upstream address'
      : 'answers 500 HOST_OVERRIDE_UNSUPPORTED rather than send another Host'
    it(`${host}`, async () => {
      const hosts: Array<string | undefined> = []
      const upstream = await startUpstream((req, res) => {
        hosts.push(req.headers.host)
        res.end('ok')
      })
      const codes: string[] = []
      const front = await startRuntime(
        runtime,
        { UPSTREAM_PORT: String(upstream.port), UPSTREAM_HOST_HEADER: 'virtual.example:8443' },
        (event) => void codes.push(event.code),
      )
      const res = await send(front.origin)
      const expected = can.hostOverride
        ? { status: 200, hosts: ['virtual.example:8443'], codes: [] }
        : { status: 500, hosts: [], codes: ['HOST_OVERRIDE_UNSUPPORTED'] }
      await expect.poll(() => ({ status: res.status, hosts, codes })).toEqual(expected)
    })

    const added = can.addsHeaders
      ? 'adds a user-agent the client did not send (the runtime fetch is the default transport)'
      : 'adds no header the client did not send (undici is the default transport)'
    it(`${added}`, async () => {
      const upstream = await startUpstream((req, res) => res.end(JSON.stringify(req.headers)))
      const front = await startRuntime(runtime, { UPSTREAM_PORT: String(upstream.port) })
      const res = await send(front.origin, { headers: { 'x-client': 'yes' } })
      const seen = JSON.parse(res.body.toString()) as Record<string, string>
      expect(seen['x-client']).toBe('yes')
      expect('user-agent' in seen).toBe(can.addsHeaders)
    })

    const coding = can.passesEncodedBytes
      ? 'passes gzip bytes through untouched, with Content-Encoding and Content-Length'
      : 'delivers gzip decoded, without Content-Encoding and Content-Length'
    it(`${coding}`, async () => {
      const text = 'compressible '.repeat(1000)
      const gz = gzipSync(text)
      const upstream = await startUpstream((_req, res) => {
        res.writeHead(200, { 'content-encoding': 'gzip', 'content-length': String(gz.length) })
        res.end(gz)
      })
      const front = await startRuntime(runtime, { UPSTREAM_PORT: String(upstream.port) })
      const res = await send(front.origin, { headers: { 'accept-encoding': 'gzip' } })
      expect(res.status).toBe(200)
      const expected = can.passesEncodedBytes
        ? { encoding: 'gzip', length: String(gz.length), body: gz.toString('base64') }
        : { encoding: undefined, length: undefined, body: Buffer.from(text).toString('base64') }
      expect({
        encoding: res.headers['content-encoding'],
        length: res.headers['content-length'],
        body: res.body.toString('base64'),
      }).toEqual(expected)
    })
  })

  describe(`signed forwarding (${label})`, () => {
    afterEach(closeAll)

    it('signs with createProxyApp, and a verifying proxyMiddleware backend restores the request', async () => {
      const backend = await signedBackend()
      const front = await startRuntime(runtime, {
        PROXY_HREF: `${backend.origin}/myapp`,
        PROXY_KEY: formatKeyFile([KEY]),
      })
      const res = await send(front.origin, {
        path: '/article/1?x=y',
        headers: { 'x-custom': 'yes' },
      })
      expect(res.status).toBe(200)
      const environ = JSON.parse(res.body.toString()) as Record<string, unknown>
      expect(environ).toMatchObject({
        REQUEST_METHOD: 'GET',
        SCRIPT_NAME: '',
        PATH_INFO: '/article/1',
        QUERY_STRING: 'x=y',
        HTTP_HOST: `127.0.0.1:${front.port}`,
        REMOTE_ADDR: '127.0.0.1',
        HTTP_X_CUSTOM: 'yes',
        'wsgi.url_scheme': 'http',
      })
    })

    it('is refused with 401 when it signs with another secret', async () => {
      const backend = await signedBackend()
      const front = await startRuntime(runtime, {
        PROXY_HREF: `${backend.origin}/myapp`,
        PROXY_KEY: formatKeyFile([OTHER]),
      })
      const res = await send(front.origin, { path: '/article/1' })
      expect(res.status).toBe(401)
      expect(res.headers['www-authenticate']).toBe('Signature realm="wsgiproxy"')
    })

    it('leaves no process behind once closed', async () => {
      const front = await startRuntime(runtime, { UPSTREAM_PORT: '9' })
      expect(livePids.has(front.pid)).toBe(true)
      await front.close()
      expect(livePids.has(front.pid)).toBe(false)
      expect(() => process.kill(front.pid, 0)).toThrow(/ESRCH/)
    })
  })
}
