import * as z from 'zod'
import { WsgiProxyError } from '../errors.ts'
import type { ForwardOptions } from './forward-options.ts'
import { forwardOptionsSchema, forwardSettings } from './forward-options.ts'
import { failure, forward } from './_forward.ts'
import type { PickleCodec } from '../protocol/header-codec.ts'
import { assertExtraKey } from '../protocol/header-codec.ts'
import { SPOOFABLE_REQUEST_HEADERS } from './_hop-by-hop.ts'
import { rewriteLocations } from './_location-headers.ts'
import type { ExtraKeys, Href, PrepareSettings } from './_prepare-request.ts'
import { prepareRequest } from './_prepare-request.ts'
import { upgradeProtocols } from './_upgrade-header.ts'
import { fn, parseOptions } from '../options.ts'
import { trimTrailingSlashes } from '../_text.ts'
import { isProtocolHeader } from '../protocol/protocol.ts'
import type {
  AppResponse,
  CopyableApp,
  CopyTarget,
  Environ,
  UpgradableApp,
  UpgradeTarget,
} from '../types.ts'
import { tracingOn } from '../telemetry/tracing.ts'
import type { Signer } from '../signing/signer.ts'
import { MAX_COVERED_COMPONENTS } from '../signing/profile.ts'
import type { PoolOptions, UpstreamTarget } from '../pool/options.ts'
import { hasPoolOptions, POOL_OPTION_FIELDS, poolSettings, TARGET_SCHEMA } from '../pool/options.ts'
import type { TargetRoute } from '../pool/_pooled-app.ts'
import { createPooledApp } from '../pool/_pooled-app.ts'
import type { UpstreamPool } from '../pool/upstream-pool.ts'
import { Pool, PoolTarget } from '../pool/upstream-pool.ts'

/** Options of {@link createProxyApp}. */
export interface ProxyAppOptions extends ForwardOptions, PoolOptions {
  /**
   * Where to forward: scheme, host, port, optional path and query
   * (`http://127.0.0.1:8080/myapp?some=querystring`); a list of them for a pool of targets with
   * the same weight (docs/pools.md). Required, unless `targets` is given.
   */
  href?: string | URL | ReadonlyArray<string | URL>
  /**
   * A pool of targets with weights, instead of `href`: `[{ href, weight }]` (docs/pools.md).
   * Each request goes to one target (see `balance`); each target gets its own `Host`, path and
   * signature.
   */
  targets?: readonly UpstreamTarget[]
  /** Environ keys sent as byte strings (`X-WSGIProxy-Str-N`), when present. Default none. */
  stringKeys?: readonly string[]
  /** Environ keys sent as text, UTF-8 (`X-WSGIProxy-Unicode-N`). Default none. */
  unicodeKeys?: readonly string[]
  /** Environ keys sent as JSON (`X-WSGIProxy-Json-N`). Default none. */
  jsonKeys?: readonly string[]
  /** Environ keys sent through `pickleCodec` (`X-WSGIProxy-Pickle-N`); needs `pickleCodec`. */
  pickleKeys?: readonly string[]
  /** Serializes `pickleKeys` values (for example devalue's `stringify` / `parse`). */
  pickleCodec?: PickleCodec
  /** Also send an RFC 7239 `Forwarded` header. Default `false`. */
  forwarded?: boolean
  /**
   * Also send `X-Forwarded-Host` (the public host) and `X-Forwarded-Proto` (the scheme), the
   * names Express, Django, Rails and most frameworks read. Default `false`.
   */
  xForwarded?: boolean
  /**
   * `'wsgiproxy-0.1'`: send what a WSGIProxy 0.1 receiver (Python Paste's
   * `WSGIProxyMiddleware`) accepts: `X-WSGIProxy-Version: 0.1`, `X-Script-Name` beside
   * `X-Forwarded-Script-Name`, extra-key values as raw UTF-8 where 0.1 allows it (str values are
   * text), JSON ASCII-only, the empty value as `b64` (docs/protocol.md). Default: protocol 0.2.
   */
  compat?: 'wsgiproxy-0.1'
  /**
   * Rewrite `Location` / `Content-Location` that name the backend to a path-absolute reference on
   * the public side (href path swapped for the script name: `http://backend/myapp/x` →
   * `/front/x`), and drop the backend's origin from one outside the href path
   * (`http://backend/admin` → `/admin`). The result never names a host: the public host would
   * come from the client's `Host`, which the client chooses, and a relative `Location` resolves
   * against the URL the client asked for
   * ([RFC 9110 §10.2.2](https://www.rfc-editor.org/rfc/rfc9110#section-10.2.2)). Default `true`.
   */
  rewriteLocation?: boolean
  /**
   * Routing and identity headers to forward as the client sent them, from those the front deletes
   * by default: client-address headers (`X-Real-IP`, `True-Client-IP`, `CF-Connecting-IP`,
   * `Fastly-Client-IP`, `X-Client-IP`, `X-Cluster-Client-IP`, ...), path headers (`X-Original-URL`,
   * `X-Rewrite-URL`), host headers (`X-Host`, `X-Original-Host`) and method overrides
   * (`X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`). A backend framework that
   * believes one of them could be steered by any client past the front's mount and address, so
   * name one only when something in front of this proxy (a CDN) always sets it. Names are
   * case-insensitive; another name throws. Protocol headers (`X-Forwarded-*`, `Forwarded`) are
   * always replaced. Default none: all are deleted.
   */
  trustClientHeaders?: readonly string[]
  /**
   * Signs every forwarded request (RFC 9421 HMAC, see `createSigner`) after all headers are set,
   * on the URL the transport connects to. Default: unsigned.
   */
  signer?: Signer
}

const keyList = z.array(z.string()).optional()
// Every option of createProxyApp but `href`, which callers such as the spawner fill in later.
const proxyAppFields = {
  stringKeys: keyList,
  unicodeKeys: keyList,
  jsonKeys: keyList,
  pickleKeys: keyList,
  pickleCodec: z
    .object({ stringify: fn<PickleCodec['stringify']>(), parse: fn<PickleCodec['parse']>() })
    .optional(),
  forwarded: z.boolean().optional(),
  xForwarded: z.boolean().optional(),
  compat: z.literal('wsgiproxy-0.1').optional(),
  signer: z
    .custom<Signer>(
      (v) => typeof (v as Partial<Signer> | null)?.sign === 'function',
      'expected a signer from createSigner()',
    )
    .optional(),
  rewriteLocation: z.boolean().optional(),
  trustClientHeaders: keyList,
}
const hrefSchema = z.union([z.string(), z.instanceof(URL)], {
  error: 'expected a URL, as a string or URL',
})
const proxyAppOptions = forwardOptionsSchema({
  href: z
    .union([hrefSchema, z.array(hrefSchema).min(1, { error: 'expected at least one URL' })], {
      error: 'expected a URL, as a string or URL, or a list of them',
    })
    .optional(),
  targets: z.array(TARGET_SCHEMA).min(1, { error: 'expected at least one target' }).optional(),
  ...proxyAppFields,
  ...POOL_OPTION_FIELDS,
})
const proxyAppOptionsWithoutHref = forwardOptionsSchema(proxyAppFields)

/**
 * Checks the options of {@link createProxyApp} but `href` (shape and combinations) without
 * building an app; errors name `what` (`createSpawner`, ...) as the function called.
 *
 * @param options - the options
 * @param what - the public function the caller is, for error messages
 * @returns the options, checked
 * @throws WsgiProxyError `INVALID_OPTIONS` naming `what` and the option
 */
export function checkProxyAppOptions<T extends Omit<ProxyAppOptions, 'href'>>(
  options: T,
  what: string,
): T {
  const opts = parseOptions<T>(proxyAppOptionsWithoutHref, options, what)
  checkCombinations(opts, what)
  return opts
}

function checkCombinations(opts: Omit<ProxyAppOptions, 'href'>, what: string): ExtraKeys {
  deletedClientHeaders(opts.trustClientHeaders, what)
  const keys = {
    str: checkKeys(opts.stringKeys, `${what}.stringKeys`),
    unicode: checkKeys(opts.unicodeKeys, `${what}.unicodeKeys`),
    json: checkKeys(opts.jsonKeys, `${what}.jsonKeys`),
    pickle: checkKeys(opts.pickleKeys, `${what}.pickleKeys`),
  }
  if (keys.pickle.length > 0 && opts.pickleCodec === undefined) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      `invalid options: ${what}.pickleKeys needs ${what}.pickleCodec ` +
        '(an object with stringify and parse, for example devalue): JavaScript has no pickle',
      { expose: true },
    )
  }
  const extraCount = keys.str.length + keys.unicode.length + keys.json.length + keys.pickle.length
  // 4 derived components, up to 3 content fields and 8 protocol headers are signed besides the keys.
  const maxSignedKeys = MAX_COVERED_COMPONENTS - 15
  if (opts.signer !== undefined && extraCount > maxSignedKeys) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      `invalid options: a signed ${what} forwards at most ${maxSignedKeys} extra keys (got ${extraCount}); send related values as one jsonKeys entry`,
      { expose: true },
    )
  }
  return keys
}

/**
 * The WSGIProxyApp: forwards every request to `href`, telling the backend how the client made
 * it. Request `/article/1?a=b` to href `http://127.0.0.1:8080/myapp?x=1` goes to
 * `/myapp/article/1?a=b&x=1` with `Host: 127.0.0.1:8080` and the protocol headers of
 * docs/design.md §6: every `X-Forwarded-*`, `Forwarded`, `X-Traversal-*`, `X-WSGIProxy-*`,
 * `Signature` and `Signature-Input` header the client sent is deleted first, and so are the
 * routing and identity headers backend frameworks believe (`X-Real-IP`, `X-Original-URL`,
 * `X-HTTP-Method-Override`, ...; see `trustClientHeaders`), then `X-Forwarded-For`, `-Server`,
 * `-Scheme`, `-Script-Name`, `X-Traversal-Path`, `X-Traversal-Query-String`,
 * `X-WSGIProxy-Version` and one `X-WSGIProxy-{Str,Unicode,Json,Pickle}-N` per configured key
 * present in the environ are set. A backend running `proxyMiddleware` restores the request.
 * Redirects naming the backend are rewritten to host-less paths (see `rewriteLocation`).
 *
 * @param href - where to forward, with every other option at its default: the same as
 *   `createProxyApp({ href })`
 * @returns the environ app; its `prepareUpgrade` builds the upstream request of an Upgrade
 *   (WebSocket) request the same way, for `@wsgiproxy/node`'s upgrade listener: 400 unless
 *   `Upgrade` is a list of protocol tokens (RFC 9110 §7.8), which is sent on as the client gave
 *   it, with the `timeouts.upstreamHeaders` the upstream has to answer in
 * @throws WsgiProxyError `INVALID_OPTIONS` for a bad href
 * @example
 * export default { fetch: toFetchHandler(createProxyApp('http://127.0.0.1:8080/myapp')) }
 */
export function createProxyApp(href: string | URL): ProxyApp
/**
 * The WSGIProxyApp with options: see the form with a URL string above.
 *
 * With several targets (`href: [...]` or `targets: [{ href, weight }]`) or any pool option, the
 * app forwards through a pool (docs/pools.md): each request goes to one target chosen by
 * `balance`, failing targets are ejected for a while (`ejection`, `healthCheck`), a request that
 * never reached its target is tried on another (`retries`), and `limits` caps the requests in
 * flight per target with a bounded queue, beyond which the answer is 503 `UPSTREAM_OVERLOADED`
 * with `Retry-After`. `app.pool` reports the targets' states and emits `ejected` / `restored`.
 *
 * @param options - the href (or targets), keys to forward, transport, timeouts, error handling,
 *   pool options
 * @returns the environ app, with `prepareUpgrade`, and `pool` when it forwards through one
 * @throws WsgiProxyError `INVALID_OPTIONS` for a bad href, key or option combination, and for a
 *   value that is neither a URL string nor an options object
 * @example
 * const app = createProxyApp({ href: 'http://127.0.0.1:8080/myapp', stringKeys: ['REMOTE_USER'] })
 * export default { fetch: toFetchHandler(app, { scriptName: '/front' }) }
 * @example
 * const app = createProxyApp({
 *   targets: [{ href: 'http://10.0.0.1:8080' }, { href: 'http://10.0.0.2:8080', weight: 2 }],
 *   healthCheck: { path: '/healthz' },
 * })
 * app.pool?.addEventListener('ejected', (event) => console.warn(event.detail))
 */
export function createProxyApp(options: ProxyAppOptions): ProxyApp
export function createProxyApp(options: ProxyAppOptions | string | URL): ProxyApp {
  const opts = parseOptions<ProxyAppOptions>(
    proxyAppOptions,
    typeof options === 'string' || options instanceof URL ? { href: options } : options,
    'createProxyApp',
    'a URL string or an options object',
  )
  const targets = targetsOf(opts)
  const keys = checkCombinations(opts, 'createProxyApp')
  const settings = forwardSettings(opts)
  const deleted = deletedClientHeaders(opts.trustClientHeaders)
  const shared: Omit<PrepareSettings, 'href'> = {
    extraKeys:
      keys.str.length + keys.unicode.length + keys.json.length + keys.pickle.length > 0
        ? keys
        : undefined,
    pickleCodec: opts.pickleCodec,
    forwarded: opts.forwarded ?? false,
    xForwarded: opts.xForwarded ?? false,
    compat: opts.compat,
    signer: opts.signer,
    skipHeader: (name) => isProtocolHeader(name) || deleted.has(name),
    forward: settings,
  }
  const rewrite = opts.rewriteLocation ?? true
  const routeOf = (href: Href): TargetRoute => ({
    prepare: { ...shared, href },
    respond: (response, publicPath) =>
      rewrite
        ? rewriteLocations(response, {
            backendOrigin: href.origin,
            backendPath: href.path,
            publicPath,
          })
        : response,
  })
  const upgradeTimeout =
    settings.headersTimeout === false ? {} : { headersTimeout: settings.headersTimeout }

  const prepareUpgradeTo = async (
    environ: Environ,
    upgrade: string,
    route: TargetRoute,
  ): Promise<UpgradeTarget | AppResponse> => {
    const prepared = await prepareRequest(environ, upgrade, route.prepare)
    if ('response' in prepared) return prepared.response
    const { url, method, headers, scriptName } = prepared
    // An ordinary answer instead of a 101 gets the same Location rewriting as any response.
    const answerHeaders = rewrite
      ? {
          answerHeaders: (lines: Array<[string, string]>): Array<[string, string]> =>
            route.respond({ status: 200, headers: lines, body: null }, scriptName).headers,
        }
      : {}
    return { url, method, headers, ...upgradeTimeout, ...answerHeaders }
  }
  const only = targets.length === 1 && !hasPoolOptions(opts) ? targets[0] : undefined
  if (only !== undefined) {
    const route = routeOf(only.href)
    const app = async (environ: Environ): Promise<AppResponse> => {
      const prepared = await prepareRequest(environ, undefined, route.prepare)
      if ('response' in prepared) return prepared.response
      const { url, method, headers, body } = prepared
      const response = await forward({ url, method, headers, body }, environ, settings)
      return route.respond(response, prepared.scriptName)
    }
    const prepareUpgrade = async (environ: Environ): Promise<UpgradeTarget | AppResponse> => {
      const upgrade = upgradeOf(environ)
      if (upgrade instanceof WsgiProxyError) return failure(upgrade, environ, settings)
      return prepareUpgradeTo(environ, upgrade, route)
    }
    const { signer } = opts
    const prepareCopy = async (environ: Environ): Promise<CopyTarget | AppResponse | undefined> => {
      // A span per request, or a digest of the body, needs the request to go through the app.
      if (tracingOn() || (signer !== undefined && environ['wsgi.input'] !== null)) return undefined
      const prepared = await prepareRequest(environ, undefined, route.prepare)
      if ('response' in prepared) return prepared.response
      const { url, method, headers, scriptName } = prepared
      return {
        url,
        method,
        headers: headers.filter(([name]) => name !== 'content-length'),
        headersTimeout: settings.headersTimeout,
        bodyTimeout: settings.bodyTimeout,
        answerHeaders: (lines) =>
          route.respond({ status: 200, headers: lines, body: null }, scriptName).headers,
        fail: (error) => failure(error, environ, settings),
      }
    }
    return Object.assign(app, { prepareUpgrade, prepareCopy, pool: undefined })
  }

  const members = targets.map((target) => new PoolTarget(target.href, target.name, target.weight))
  const { signer } = opts
  const pool = new Pool(
    members,
    poolSettings(opts),
    settings.transport,
    signer === undefined ? undefined : (request) => signer.sign(request),
  )
  const routes = new Map(members.map((member) => [member, routeOf(member.href)]))
  const app = createPooledApp(pool, routes, settings)
  const prepareUpgrade = async (environ: Environ): Promise<UpgradeTarget | AppResponse> => {
    const upgrade = upgradeOf(environ)
    if (upgrade instanceof WsgiProxyError) return failure(upgrade, environ, settings)
    const target = pool.pickForUpgrade(pool.keyOf(environ))
    if (target instanceof WsgiProxyError) {
      const response = await failure(target, environ, settings)
      const retryAfter = String(pool.settings.limits.retryAfter)
      return { ...response, headers: [...response.headers, ['retry-after', retryAfter]] }
    }
    environ['wsgiproxy.upstream'] = target.name
    const prepared = await prepareUpgradeTo(environ, upgrade, routes.get(target) as TargetRoute)
    if (!('url' in prepared)) return prepared
    // Passive health hears how the upstream took it (a refused upgrade is not retried).
    return { ...prepared, onResult: (ok: boolean) => pool.report(target, ok) }
  }
  return Object.assign(app, { prepareUpgrade, pool: pool as UpstreamPool })
}

// 400 unless `Upgrade` is a list of protocol tokens (RFC 9110 §7.8).
function upgradeOf(environ: Environ): string | WsgiProxyError {
  const upgrade = upgradeProtocols(environ.HTTP_UPGRADE)
  return typeof upgrade === 'string'
    ? upgrade
    : new WsgiProxyError('BAD_REQUEST', upgrade.problem, { expose: true })
}

/**
 * The app {@link createProxyApp} returns: an `UpgradableApp`, with its pool when it has one; with
 * one href and no pool options also a `CopyableApp` (`prepareCopy`), which
 * `serve({ byteCopy: true })` of `@wsgiproxy/node` needs.
 */
export interface ProxyApp extends UpgradableApp {
  /** Present with one href and no pool options; see {@link CopyableApp}. */
  readonly prepareCopy?: CopyableApp['prepareCopy']
  /**
   * The pool of targets, for `status()` and its `ejected` / `restored` events, and `close()` to
   * stop its health checks; `undefined` for one href without pool options.
   */
  readonly pool: UpstreamPool | undefined
}

interface Target {
  href: Href
  name: string
  weight: number
}

// The targets of `href` (one or a list) or `targets`: exactly one of them, each a valid href,
// none twice.
function targetsOf(opts: ProxyAppOptions): Target[] {
  const { href, targets } = opts
  if ((href === undefined) === (targets === undefined)) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      href === undefined
        ? 'invalid options: createProxyApp: href is required (or targets, for a pool)'
        : 'invalid options: createProxyApp: give href or targets, not both',
      { expose: true },
    )
  }
  const list: UpstreamTarget[] =
    targets !== undefined
      ? [...targets]
      : Array.isArray(href)
        ? href.map((one: string | URL) => ({ href: one }))
        : [{ href: href as string | URL }]
  const option = targets !== undefined ? 'targets' : 'href'
  const seen = new Set<string>()
  return list.map((target, index) => {
    const where = list.length > 1 || targets !== undefined ? `${option}[${index}]` : option
    const parsed = parseHref(target.href, where)
    const name = `${parsed.origin}${parsed.path}${parsed.query === '' ? '' : `?${parsed.query}`}`
    if (seen.has(name)) {
      throw new WsgiProxyError(
        'INVALID_OPTIONS',
        `invalid options: createProxyApp.${where} names ${name} a second time; give it a weight instead`,
        { expose: true },
      )
    }
    seen.add(name)
    return { href: parsed, name, weight: target.weight ?? 1 }
  })
}

function parseHref(value: string | URL, option = 'href'): Href {
  const url = URL.parse(String(value))
  const problem =
    url === null
      ? 'is not a URL'
      : url.protocol !== 'http:' && url.protocol !== 'https:'
        ? `must use http or https (got ${JSON.stringify(url.protocol.slice(0, -1))})`
        : url.username !== '' || url.password !== ''
          ? 'must not contain credentials'
          : url.hash !== ''
            ? 'must not contain a fragment'
            : undefined
  if (url === null || problem !== undefined) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      `invalid options: createProxyApp.${option} ${problem}`,
      {
        expose: true,
      },
    )
  }
  return {
    origin: url.origin,
    // The URL's authority, as the transport connects and the signer signs `@authority`.
    host: url.host,
    path: trimTrailingSlashes(url.pathname),
    query: url.search.slice(1),
  }
}

// The client headers deleted: all spoofable ones but those the options trust.
function deletedClientHeaders(
  trusted: readonly string[] | undefined,
  what = 'createProxyApp',
): Set<string> {
  const deleted = new Set(SPOOFABLE_REQUEST_HEADERS)
  for (const name of trusted ?? []) {
    const lower = name.toLowerCase()
    if (!SPOOFABLE_REQUEST_HEADERS.has(lower)) {
      const why = isProtocolHeader(lower)
        ? 'a protocol header, which the front always replaces'
        : `not one the front deletes; expected one of ${[...SPOOFABLE_REQUEST_HEADERS].join(', ')}`
      throw new WsgiProxyError(
        'INVALID_OPTIONS',
        `invalid options: ${what}.trustClientHeaders names ${JSON.stringify(name)}, ${why}`,
        { expose: true },
      )
    }
    deleted.delete(lower)
  }
  return deleted
}

function checkKeys(keys: readonly string[] | undefined, option: string): string[] {
  for (const key of keys ?? []) assertExtraKey(key, option)
  return [...(keys ?? [])]
}
