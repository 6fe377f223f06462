// Problem responses name what was wrong, never the bytes sent (docs/protocol.md: a malformed
// header gives 400 "never echoing its value"). Every hostile request below carries a marker in
// the offending part; no response of any front may contain it.
import { describe, expect, it } from 'vitest'
import * as z from 'zod'
import type {
  EnvironApp,
  FetchHandler,
  PickleCodec,
  ProxyMiddlewareOptions,
  SigningKey,
  Transport,
} from '../index.ts'
import {
  createEnvironRestorer,
  createProxyApp,
  createSigner,
  createVerifier,
  proxyMiddleware,
  toFetchHandler,
  WsgiProxyError,
} from '../index.ts'

const KEY: SigningKey = { id: 'k1', secret: new Uint8Array(32).fill(7) }

interface HostileCase {
  name: string
  /** The request headers, built around the case's marker. */
  headers?(marker: string): Record<string, string>
  /** The request path, built around the case's marker. Default `/front/x`. */
  path?(marker: string): string
  /** The status a backend trusting loopback answers (proxyMiddleware, createEnvironRestorer). */
  backend: number
  /** The status the createProxyApp front answers. Default 200 (forwarded with headers stripped). */
  front?: number
  /** The status the backend that also verifies signatures answers. Default `backend`. */
  verifying?: number
}

const json = (value: string): Record<string, string> => ({ 'x-wsgiproxy-json-0': value })
const str = (value: string): Record<string, string> => ({ 'x-wsgiproxy-str-0': value })

const CASES: HostileCase[] = [
  { name: 'a Json value that is not JSON', headers: (m) => json(`k ${m}`), backend: 400 },
  { name: 'a Json value with a bad token', headers: (m) => json(`k {"a": ${m}}`), backend: 400 },
  { name: 'a Json value cut short', headers: (m) => json(`k {"${m}":`), backend: 400 },
  {
    name: 'a Json value its schema refuses (an unknown key)',
    headers: (m) => json(`strict {"${m}": 1}`),
    backend: 400,
  },
  {
    name: 'a Json value its schema refuses (a wrong value)',
    headers: (m) => json(`choice "${m}"`),
    backend: 400,
  },
  { name: 'Json with "__proto__"', headers: (m) => json(`k {"__proto__": "${m}"}`), backend: 400 },
  {
    name: 'a Pickle value the codec cannot parse',
    headers: (m) => ({ 'x-wsgiproxy-pickle-0': `k ${m}` }),
    backend: 400,
  },
  { name: 'bad base64', headers: (m) => str(`k b64${m}!`), backend: 400 },
  {
    name: 'base64 of invalid UTF-8',
    headers: (m) => ({ 'x-wsgiproxy-unicode-0': `${m} b64/w==` }),
    backend: 400,
  },
  { name: 'a raw value that is not ASCII', headers: (m) => str(`k ${m}\u00e9`), backend: 400 },
  { name: 'a key with a space', headers: (m) => str(`${m}%20x v`), backend: 400 },
  { name: 'a key with a bad escape', headers: (m) => str(`${m}%zz v`), backend: 400 },
  { name: 'a reserved key', headers: (m) => str(`HTTP_${m} v`), backend: 400 },
  { name: 'the key __proto__', headers: (m) => str(`__proto__ ${m}`), backend: 400 },
  { name: 'the key hasOwnProperty', headers: (m) => str(`hasOwnProperty ${m}`), backend: 400 },
  { name: 'no space', headers: (m) => str(m), backend: 400 },
  {
    name: 'a key sent twice',
    headers: (m) => ({ 'x-wsgiproxy-str-0': `${m} a`, 'x-wsgiproxy-str-1': `${m} b` }),
    backend: 400,
  },
  { name: 'a value over the cap', headers: (m) => str(`k ${m}${'x'.repeat(5000)}`), backend: 431 },
  { name: 'a bad N', headers: (m) => ({ [`x-wsgiproxy-str-${m}`]: 'k v' }), backend: 400 },
  {
    name: 'a bad X-Forwarded-For',
    headers: (m) => ({ 'x-forwarded-for': `${m}, 1` }),
    backend: 200,
  },
  {
    name: 'a bad X-Forwarded-Server',
    headers: (m) => ({ 'x-forwarded-server': `${m}!` }),
    backend: 400,
  },
  { name: 'a bad X-Forwarded-Scheme', headers: (m) => ({ 'x-forwarded-scheme': m }), backend: 400 },
  {
    name: 'a bad X-WSGIProxy-Version',
    headers: (m) => ({ 'x-wsgiproxy-version': m }),
    backend: 400,
  },
  {
    name: 'a bad X-Forwarded-Script-Name',
    headers: (m) => ({ 'x-forwarded-script-name': m }),
    backend: 400,
  },
  {
    name: 'a bad X-Traversal-Path',
    headers: (m) => ({ 'x-traversal-path': `/${m} x` }),
    backend: 400,
  },
  {
    name: 'an X-Traversal-Path the path does not start with',
    headers: (m) => ({ 'x-traversal-path': `/${m}` }),
    backend: 400,
  },
  { name: 'a bad Forwarded', headers: (m) => ({ forwarded: `for="${m}` }), backend: 200 },
  { name: 'a bad Host', headers: (m) => ({ host: `${m}!` }), backend: 400, front: 400 },
  {
    name: 'a bad Signature-Input',
    headers: (m) => ({
      'signature-input': `wsgiproxy=("@method");keyid="${m}";tag="wsgiproxy"`,
      signature: 'wsgiproxy=:AAAA:',
    }),
    backend: 200,
    verifying: 401,
  },
  {
    name: 'a Signature-Input that is no dictionary',
    headers: (m) => ({ 'signature-input': `${m}((`, signature: `${m}))` }),
    backend: 200,
    verifying: 401,
  },
  {
    name: 'a signed Content-Type that is not ASCII',
    headers: (m) => ({ 'content-type': `text/${m}\u00e9` }),
    backend: 200,
    front: 400,
  },
  {
    name: 'an encoded ".." segment',
    path: (m) => `/front/${m}%2F..%2Fadmin`,
    backend: 400,
    front: 400,
  },
  {
    name: 'a "..;" segment',
    path: (m) => `/front/..;${m}/admin`,
    backend: 400,
    front: 400,
  },
]

// The parse error of a codec that quotes its input, as parsers do.
const echoingPickle: PickleCodec = {
  stringify: (value) => JSON.stringify(value),
  parse(text) {
    throw new SyntaxError(`cannot parse ${JSON.stringify(text)}`)
  },
}

const backendOptions: ProxyMiddlewareOptions = {
  trustIps: ['loopback'],
  jsonSchemas: { strict: z.strictObject({}), choice: z.enum(['a', 'b']) },
  pickleCodec: echoingPickle,
}

const ok: EnvironApp = () => ({ status: 200, headers: [], body: null })
const loopback = { getRemoteAddr: () => '127.0.0.1', onError: () => {} }
const transport: Transport = async () => ({ status: 200, headers: [], body: null })
const restore = createEnvironRestorer(backendOptions)

const FRONTS: Array<[name: string, handler: FetchHandler, status: (c: HostileCase) => number]> = [
  [
    'proxyMiddleware',
    toFetchHandler(proxyMiddleware(ok, backendOptions), loopback),
    (c) => c.backend,
  ],
  [
    'createEnvironRestorer',
    toFetchHandler(async (environ) => {
      const result = await restore(environ)
      return result.ok ? ok(result.environ) : result.response
    }, loopback),
    (c) => c.backend,
  ],
  [
    'proxyMiddleware with a verifier',
    toFetchHandler(
      proxyMiddleware(ok, {
        ...backendOptions,
        verifier: createVerifier({ keys: [KEY] }),
        mode: 'any',
      }),
      loopback,
    ),
    (c) => c.verifying ?? c.backend,
  ],
  [
    'createProxyApp with a signer',
    toFetchHandler(
      createProxyApp({
        href: 'http://backend.test/base',
        transport,
        signer: createSigner({ keys: [KEY] }),
        onError: () => {},
      }),
      { ...loopback, scriptName: '/front' },
    ),
    (c) => c.front ?? 200,
  ],
]

function markers(count: number): string[] {
  const seen = new Set<string>()
  while (seen.size < count) {
    const bytes = crypto.getRandomValues(new Uint8Array(2))
    seen.add(`ZQXJ${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`)
  }
  return [...seen]
}

describe('problem responses to hostile requests', () => {
  it.each(FRONTS)('never echo what the client sent, through %s', async (_, handler, status) => {
    const marks = markers(CASES.length)
    const echoed: string[] = []
    const statuses: Array<[string, number]> = []
    for (const [i, hostile] of CASES.entries()) {
      const marker = marks[i] as string
      const path = hostile.path?.(marker) ?? '/front/x'
      const response = await handler(
        new Request(`http://backend.test${path}`, {
          headers: { host: 'backend.test', ...hostile.headers?.(marker) },
        }),
      )
      const text = `${[...response.headers].join('\n')}\n${await response.text()}`
      if (text.toLowerCase().includes(marker.toLowerCase())) echoed.push(`${hostile.name}: ${text}`)
      statuses.push([hostile.name, response.status])
    }
    expect(echoed).toEqual([])
    expect(statuses).toEqual(CASES.map((c): [string, number] => [c.name, status(c)]))
  })

  it('shows the cause of an exposed error only with exposeErrors', async () => {
    const cause = new SyntaxError('Unexpected token, "ZQXJ" is not valid JSON')
    const thrower: EnvironApp = () => {
      throw new WsgiProxyError('BAD_REQUEST', 'X-WSGIProxy-Json-0 is not valid JSON', {
        cause,
        expose: true,
      })
    }
    const quiet = toFetchHandler(thrower, { onError: () => {} })
    expect(await (await quiet(new Request('http://backend.test/'))).json()).toMatchObject({
      status: 400,
      detail: 'X-WSGIProxy-Json-0 is not valid JSON',
    })
    const exposing = toFetchHandler(thrower, { onError: () => {}, exposeErrors: true })
    expect(await (await exposing(new Request('http://backend.test/'))).json()).toMatchObject({
      detail: `X-WSGIProxy-Json-0 is not valid JSON: ${cause.message}`,
    })
  })
})
