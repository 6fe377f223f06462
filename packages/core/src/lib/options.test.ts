import { afterEach, describe, expect, it } from 'vitest'
import * as z from 'zod'
import type { ExactProxyOptions, ProxyAppOptions } from '../index.ts'
import { createProxyApp, exactProxy, fetchTransport } from '../index.ts'
import { closeAll, send, startFetchFront, startUpstream } from '@wsgiproxy/test-kit/servers'
import * as core from '../index.ts'
import * as coreUndici from '../undici.ts'
import { FOREIGN_OPTIONS } from './_foreign-options.ts'
import { explainIssues, parseOptions } from './options.ts'
import { optionsObject } from './schemas.ts'

const HREF = 'http://127.0.0.1:9/app'

afterEach(closeAll)

/** The message createProxyApp throws for these options. */
function proxyAppError(options: Record<string, unknown>): string {
  try {
    createProxyApp(options as unknown as ProxyAppOptions)
  } catch (error) {
    return (error as Error).message
  }
  throw new Error('createProxyApp accepted the options')
}

function exactProxyError(options: Record<string, unknown>): string {
  try {
    exactProxy(options as ExactProxyOptions)
  } catch (error) {
    return (error as Error).message
  }
  throw new Error('exactProxy accepted the options')
}

describe('parseOptions', () => {
  it('suggests the nearest option for a misspelt one, and does not also report it missing', () => {
    expect(proxyAppError({ hrf: HREF })).toBe(
      'invalid options: createProxyApp: unknown option "hrf" (did you mean "href"?)',
    )
    expect(proxyAppError({ HREF })).toBe(
      'invalid options: createProxyApp: unknown option "HREF" (did you mean "href"?)',
    )
  })

  it('suggests among the keys of the nested object the unknown key is in', () => {
    expect(proxyAppError({ href: HREF, timeouts: { upstreamHeader: 5 } })).toBe(
      'invalid options: createProxyApp.timeouts: unknown option "upstreamHeader" (did you mean "upstreamHeaders"?)',
    )
  })

  it('reports unknown keys first, one each, then the other issues', () => {
    expect(proxyAppError({ href: HREF, exposeErrors: 'yes', colour: 1, jsonKey: ['a'] })).toBe(
      'invalid options: createProxyApp: unknown option "colour"; ' +
        'createProxyApp: unknown option "jsonKey" (did you mean "jsonKeys"?); ' +
        'createProxyApp.exposeErrors: Invalid input: expected boolean, received string',
    )
  })

  it('gives no suggestion for a key far from every option', () => {
    expect(proxyAppError({ href: HREF, xyz: 1 })).toBe(
      'invalid options: createProxyApp: unknown option "xyz"',
    )
  })

  it('names our equivalent of the options of http-proxy and http-proxy-middleware', () => {
    expect(proxyAppError({ target: HREF, changeOrigin: true })).toBe(
      'invalid options: createProxyApp: unknown option "target" (use "href", the URL to forward to; its path goes in front of the request path); ' +
        `createProxyApp: unknown option "changeOrigin" (the Host sent is always the href's, as with changeOrigin: true; the client's goes in X-Forwarded-Server)`,
    )
    const hints: Record<string, string> = {
      pathRewrite:
        'the prefix the app is mounted under (a Hono route of proxy(), toFetchHandler\'s scriptName) is cut off and sent as X-Forwarded-Script-Name, and the href\'s path goes in front: give the new prefix in "href"',
      ws: 'Upgrade (WebSocket) requests are forwarded when serve() from @wsgiproxy/node serves createProxyApp (see its upgradeProtocols)',
      xfwd: 'X-Forwarded-For, -Server, -Scheme and -Script-Name are always sent; "forwarded" adds an RFC 7239 Forwarded header',
      secure:
        'connections are the transport\'s: "transport" takes undiciTransport({ dispatcher }) from @wsgiproxy/node with an undici Agent of your own',
      proxyTimeout:
        'use "timeouts": { upstreamHeaders: ms }, how long the upstream may take to answer',
      onProxyReq:
        'change the outbound request in a "transport" that wraps undiciTransport() or fetchTransport()',
      on: 'failures go to "onError"; change requests and responses in a "transport" that wraps another',
      followRedirects:
        'redirects go to the client, "rewriteLocation" turning backend URLs into public paths',
      autoRewrite:
        'use "rewriteLocation" (default true): a Location naming the backend becomes a path on the public side',
      cookieDomainRewrite:
        'no equivalent: the backend learns the public host and path from X-Forwarded-Server and X-Forwarded-Script-Name (proxyMiddleware restores them) and sets its cookies for them',
      router:
        'route in the app in front instead: one proxy() per Hono route, or an environ app choosing among createProxyApp apps',
    }
    for (const [name, hint] of Object.entries(hints)) {
      expect(proxyAppError({ href: HREF, [name]: 1 })).toBe(
        `invalid options: createProxyApp: unknown option "${name}" (${hint})`,
      )
    }
  })

  it('names our equivalent of the options of hono/proxy and @fastify/http-proxy', () => {
    expect(proxyAppError({ upstream: HREF, rewritePrefix: '/v2' })).toBe(
      'invalid options: createProxyApp: unknown option "upstream" (use "href", the URL to forward to; its path goes in front of the request path); ' +
        'createProxyApp: unknown option "rewritePrefix" (give the prefix as the path of "href": it goes in front of the request path)',
    )
    expect(proxyAppError({ href: HREF, customFetch: fetch })).toBe(
      'invalid options: createProxyApp: unknown option "customFetch" (use "transport": fetchTransport({ fetch }) sends every request through your fetch)',
    )
    expect(proxyAppError({ href: HREF, prefix: '/api' })).toBe(
      `invalid options: createProxyApp: unknown option "prefix" (mount the app where it answers: a Hono route (app.all('/api/*', proxy(...))) or toFetchHandler's scriptName)`,
    )
  })

  it("gives exactProxy's own answer to the same foreign names", () => {
    expect(exactProxyError({ target: HREF, changeOrigin: true, xfwd: true })).toBe(
      'invalid options: exactProxy: unknown option "target" (exactProxy forwards to the host each request names; "allow" says which it may reach); ' +
        `exactProxy: unknown option "changeOrigin" (exactProxy sends the client's Host as it came; createProxyApp sends the href's); ` +
        'exactProxy: unknown option "xfwd" (exactProxy adds no X-Forwarded-* header: it sends the request as it came, with a Via entry (see "via"))',
    )
  })

  it('reports unknown keys in one text whatever message the schema has for them', () => {
    const schema = optionsObject({ port: z.number().optional() })
    expect(() => parseOptions(schema, { prot: 1, other: 2 }, 'serve')).toThrow(
      'invalid options: serve: unknown option "prot" (did you mean "port"?); serve: unknown option "other"',
    )
  })

  it('answers a value that is not an object in one line, never listing its characters as keys', () => {
    expect(() => createProxyApp(8080 as unknown as string)).toThrow(
      /^invalid options: createProxyApp: expected a URL string or an options object \(got 8080\)$/,
    )
    expect(() => createProxyApp(null as unknown as string)).toThrow(
      /^invalid options: createProxyApp: expected a URL string or an options object \(got null\)$/,
    )
    expect(() => exactProxy('public' as ExactProxyOptions)).toThrow(
      /^invalid options: exactProxy: expected an object \(got a string\)$/,
    )
    expect(() => fetchTransport([] as never)).toThrow(
      /^invalid options: fetchTransport: expected an object \(got an array\)$/,
    )
  })
})

describe('explainIssues', () => {
  const route = z.discriminatedUnion('type', [
    z.strictObject({ type: z.literal('proxy'), href: z.string() }),
    z.strictObject({ type: z.literal('spawn'), command: z.string(), cwd: z.string().optional() }),
  ])
  const config = z.strictObject({ routes: z.array(route).optional() })

  it("suggests from the discriminated union's option the value chooses, through arrays", () => {
    const value = {
      routes: [
        { type: 'proxy', href: 'x' },
        { type: 'spawn', comand: 'x' },
      ],
    }
    const result = config.safeParse(value)
    expect(result.success).toBe(false)
    expect(explainIssues(config, value, result.error?.issues ?? [])).toEqual([
      {
        kind: 'unknown-key',
        path: ['routes', 1],
        key: 'comand',
        hint: 'did you mean "command"?',
      },
    ])
  })

  it('keeps hints that name functions out of a config file, and the missing key they do not explain', () => {
    const value = { routes: [{ type: 'proxy', target: 'x', prefix: '/a' }] }
    const result = config.safeParse(value)
    const problems = explainIssues(config, value, result.error?.issues ?? [], 'config')
    expect(problems.map((p) => (p.kind === 'issue' ? p.issue.path : p.hint))).toEqual([
      'use "href", the URL to forward to; its path goes in front of the request path',
      undefined,
    ])
  })
})

describe('the foreign option names', () => {
  it('have hints that quote only the options they are given for', () => {
    const problems: string[] = []
    for (const entry of FOREIGN_OPTIONS) {
      // A config hint may name the file's top-level keys, which no route has.
      if (entry.scope === 'config') continue
      const named = new Set([...(entry.use?.split('.').slice(0, 1) ?? []), ...(entry.needs ?? [])])
      for (const [, quoted] of entry.text.matchAll(/"([^"]+)"/g)) {
        if (!named.has(quoted ?? '')) problems.push(`${entry.names[0]}: "${quoted}"`)
      }
    }
    expect(problems).toEqual([])
  })

  it('have hints that call only functions wsgiproxy and Hono export', () => {
    const exported = new Set([
      ...Object.keys(core),
      ...Object.keys(coreUndici),
      // @wsgiproxy/node, @wsgiproxy/hono and Hono's app.all() / app.on().
      'serve',
      'toNodeListener',
      'proxy',
      'all',
      'on',
    ])
    const called = FOREIGN_OPTIONS.flatMap((entry) =>
      [...entry.text.matchAll(/\b([A-Za-z]+)\(/g)].map((match) => match[1] ?? ''),
    )
    expect(called.length).toBeGreaterThan(10)
    expect(called.filter((name) => !exported.has(name))).toEqual([])
    for (const name of ['exactProxy', 'createProxyApp', 'proxyMiddleware', 'toFetchHandler']) {
      expect(exported.has(name)).toBe(true)
    }
  })
})

describe('createProxyApp', () => {
  it('takes a URL string for { href }', async () => {
    const upstream = await startUpstream((req, res) => {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ url: req.url, host: req.headers.host }))
    })
    const front = await startFetchFront(createProxyApp(`${upstream.origin}/app`))
    const res = await send(front.origin, { path: '/x?y=1' })
    expect(JSON.parse(res.body.toString())).toEqual({
      url: '/app/x?y=1',
      host: new URL(upstream.origin).host,
    })
    expect(typeof createProxyApp(new URL(upstream.origin)).prepareUpgrade).toBe('function')
  })

  it('checks a URL string as it checks href', () => {
    expect(() => createProxyApp('ftp://127.0.0.1/')).toThrow(
      'invalid options: createProxyApp.href must use http or https (got "ftp")',
    )
  })
})
