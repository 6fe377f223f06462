import * as z from 'zod'
import { WsgiProxyError } from '../errors.ts'
import { fn, parseOptions } from '../options.ts'
import { errorResponse } from '../problem.ts'
import type { RejectReason, Verifier } from '../signing/verifier.ts'
import type { AppResponse, Environ, EnvironApp } from '../types.ts'
import {
  applyForced,
  resolveForced,
  restoreForwarded,
  toRestoreProblem,
  withoutProtocolKeys,
} from './_restore-steps.ts'
import type { RestoreSettings } from './_restore-steps.ts'
import { createTrustPolicy, decideTrust } from './_trust-decision.ts'
import type { PickleCodec } from './header-codec.ts'
import { recordTraceEvent } from '../telemetry/tracing.ts'

/** Options of {@link proxyMiddleware}. Trust is off by default: nothing is restored. */
export interface ProxyMiddlewareOptions {
  /**
   * Checks the front's RFC 9421 signature (see `createVerifier`). A request with a valid
   * signature is trusted (with `trustIps` too, see `mode`), and protocol headers it does not cover
   * are deleted before anything is decoded; an invalid one is refused (401, 400, 413, 431, 503)
   * without calling the app. Default: none.
   */
  verifier?: Verifier
  /** With both `verifier` and `trustIps`: require both (`all`, the default) or either (`any`). */
  mode?: 'all' | 'any'
  /**
   * Refuse with 401 every request that is not trusted (no valid `wsgiproxy` signature, or with
   * `trustIps` in mode `all` a peer outside them) instead of serving it untrusted. Needs
   * `verifier`. Default `false`.
   */
  requireSignature?: boolean
  /**
   * Peers whose protocol headers are believed: addresses, CIDR ranges (IPv4, IPv6, IPv4-mapped)
   * and the presets `loopback`, `linklocal`, `uniquelocal`. `X-Forwarded-For` is walked right to
   * left from the peer, believing each entry only when the hop that added it is trusted. Default:
   * none (every request is untrusted and has its protocol headers stripped).
   */
  trustIps?: readonly string[]
  /** Force `SCRIPT_NAME` to this value (`/bar`), leaving `PATH_INFO` as it is. */
  prefix?: string
  /** Move this prefix from the front of `PATH_INFO` to the end of `SCRIPT_NAME`; 400 when a request does not start with it. */
  popPrefix?: string
  /** Force `wsgi.url_scheme`. */
  scheme?: 'http' | 'https'
  /** Force `HTTP_HOST`, `SERVER_NAME` and `SERVER_PORT`; must include a port (`example.com:443`). */
  host?: string
  /** Force the host name: `HTTP_HOST` becomes `<domain>:<SERVER_PORT>` and `SERVER_NAME` the domain. */
  domain?: string
  /** Force `SERVER_PORT` (and the port of `HTTP_HOST`). */
  port?: number | string
  /** Zod schemas per JSON key: decoded values are validated (400 when they do not match). */
  jsonSchemas?: Readonly<Record<string, z.ZodType>>
  /** Decodes `X-WSGIProxy-Pickle-*` on trusted requests; without it they are stripped undecoded. */
  pickleCodec?: PickleCodec
  /**
   * Called when a request is refused (bad signature, malformed forwarded data), with the precise
   * reason (a `SignatureRejectedError` carries `reason`). Default: nothing.
   */
  onReject?: (error: WsgiProxyError, environ: Environ) => void
  /**
   * `'wsgiproxy-0.1'`: also accept requests from a WSGIProxy 0.1 front (Python Paste's
   * `WSGIProxyApp`) in `trustIps`: `X-WSGIProxy-Version: 0.1`, `X-Traversal-Path` without its
   * leading `/`, `X-Script-Name`, raw UTF-8 and empty extra-key values (docs/protocol.md).
   * Signing is not relaxed: a 0.1 request is trusted by its peer address only (400 otherwise).
   * 0.2 requests stay strict. Default: 0.2 only.
   */
  compat?: 'wsgiproxy-0.1'
  /**
   * Called with what a restorer ignored and why: `UNTRUSTED_PEER` once, for the first request
   * from a peer it does not trust that carries wsgiproxy headers; `PICKLE_DROPPED` once per key,
   * for a pickle value dropped because no `pickleCodec` is configured. Default: one line on
   * `console.warn` (`wsgiproxy: ...`).
   */
  onWarning?: (warning: ProtocolWarning) => void
}

/** What a restorer ignored, for {@link ProxyMiddlewareOptions.onWarning}. */
export interface ProtocolWarning {
  /**
   * `UNTRUSTED_PEER`: wsgiproxy headers from a peer that is not trusted were stripped.
   * `PICKLE_DROPPED`: a trusted `X-WSGIProxy-Pickle-N` value was dropped (no `pickleCodec`).
   */
  code: 'UNTRUSTED_PEER' | 'PICKLE_DROPPED'
  /** One line that says what happened and how to change it. */
  message: string
  /** The peer's address (`UNTRUSTED_PEER`; `''` when unknown). */
  peer?: string
  /** The environ key whose value was dropped (`PICKLE_DROPPED`, when the header named one). */
  key?: string
}

const middlewareOptions = z.strictObject({
  verifier: z
    .custom<Verifier>(
      (v) => typeof (v as Partial<Verifier> | null)?.verify === 'function',
      'expected a verifier from createVerifier()',
    )
    .optional(),
  mode: z.enum(['all', 'any']).optional(),
  requireSignature: z.boolean().optional(),
  trustIps: z.array(z.string()).optional(),
  prefix: z.string().optional(),
  popPrefix: z.string().optional(),
  scheme: z.enum(['http', 'https']).optional(),
  host: z.string().optional(),
  domain: z.string().optional(),
  port: z.union([z.number(), z.string()]).optional(),
  jsonSchemas: z
    .record(
      z.string(),
      z.custom<z.ZodType>((v) => v instanceof z.ZodType),
    )
    .optional(),
  pickleCodec: z
    .object({ stringify: fn<PickleCodec['stringify']>(), parse: fn<PickleCodec['parse']>() })
    .optional(),
  onReject: fn<NonNullable<ProxyMiddlewareOptions['onReject']>>().optional(),
  compat: z.literal('wsgiproxy-0.1').optional(),
  onWarning: fn<NonNullable<ProxyMiddlewareOptions['onWarning']>>().optional(),
})

/** What an {@link EnvironRestorer} answers: the restored environ, or the response that refuses the request. */
export type RestoreResult = { ok: true; environ: Environ } | { ok: false; response: AppResponse }

/**
 * Verifies and restores one environ as {@link proxyMiddleware} does, without calling an app.
 * Never throws: a refused request resolves with its 400 / 401 / 413 / 431 / 503 response.
 */
export type EnvironRestorer = (environ: Environ) => Promise<RestoreResult>

/**
 * The WSGIProxyMiddleware: on the backend, restores the request as the client made it from the
 * headers a trusted front proxy set (docs/design.md §6): `X-Forwarded-Server` → `HTTP_HOST`,
 * `SERVER_NAME`, `SERVER_PORT`; `X-Forwarded-Scheme` → `wsgi.url_scheme`; `X-Forwarded-For` →
 * `REMOTE_ADDR`; `X-Traversal-Path` removed from the front of `PATH_INFO`;
 * `X-Forwarded-Script-Name` prepended to `SCRIPT_NAME`; extra keys decoded. Then `prefix` /
 * `popPrefix`, `scheme`, `host`, `domain` and `port` are applied. An untrusted request has every
 * protocol header stripped and nothing decoded, so a client can never set `REMOTE_USER`, the
 * client address, the scheme or the host.
 *
 * @param app - the app to call with the restored environ
 * @param options - trust and forced values
 * @returns the wrapped environ app
 * @throws WsgiProxyError `INVALID_OPTIONS` for conflicting options (`prefix` with `popPrefix`,
 *   `host` with `domain` or `port`), a `host` without a port, or a bad trust entry
 * @example
 * const app = proxyMiddleware(myEnvironApp, { trustIps: ['loopback'] })
 */
export function proxyMiddleware(app: EnvironApp, options?: ProxyMiddlewareOptions): EnvironApp {
  const restorer = buildRestorer(options, 'proxyMiddleware')
  return async (environ) => {
    const result = await restorer(environ)
    return result.ok ? app(result.environ) : result.response
  }
}

/**
 * The restoring half of {@link proxyMiddleware} on its own, for adapters whose next step is not
 * an environ app (a framework middleware that calls `next()`): verifies the signature, checks
 * trust, restores the original request and applies the forced values, with the same options and
 * the same refusals.
 *
 * When the verifier buffered the body to check its digest, the restored `wsgi.input` is the
 * buffered copy and the original body stream has been read.
 *
 * @param options - trust and forced values, as for {@link proxyMiddleware}
 * @returns `(environ) => Promise<{ ok: true, environ } | { ok: false, response }>`
 * @throws WsgiProxyError `INVALID_OPTIONS` as {@link proxyMiddleware}
 * @example
 * const restore = createEnvironRestorer({ trustIps: ['loopback'] })
 * const result = await restore(toEnviron(request, { remoteAddr: '127.0.0.1' }))
 * if (!result.ok) return toResponse(result.response)
 * result.environ.REMOTE_ADDR // the client the front proxy saw
 */
export function createEnvironRestorer(options?: ProxyMiddlewareOptions): EnvironRestorer {
  return buildRestorer(options, 'createEnvironRestorer')
}

/**
 * {@link createEnvironRestorer} for an adapter: errors name `what` (`wsgiProxy`, ...) as the
 * function called.
 *
 * @param options - the options of `proxyMiddleware`
 * @param what - the public function the caller is, for error messages
 * @returns the restorer
 * @throws WsgiProxyError `INVALID_OPTIONS` naming `what` and the option
 */
export function buildRestorer(
  options: ProxyMiddlewareOptions | undefined,
  what: string,
): EnvironRestorer {
  const opts = parseOptions(middlewareOptions, options, what)
  const forced = resolveForced(opts, what)
  const policy = createTrustPolicy(opts)
  const warn = onceWarnings(opts.onWarning ?? warnOnConsole)
  const settings: RestoreSettings = {
    decode: {
      ...(opts.jsonSchemas === undefined ? {} : { jsonSchemas: opts.jsonSchemas }),
      ...(opts.pickleCodec === undefined ? {} : { pickleCodec: opts.pickleCodec }),
      onPickleDropped: warn.pickleDropped,
    },
    compat: opts.compat,
  }
  if (policy.requireSignature && policy.verifier === undefined) {
    throw invalid(`${what}.requireSignature needs ${what}.verifier`)
  }

  const { onReject } = opts
  const refuse = (error: WsgiProxyError, environ: Environ): RestoreResult => {
    recordTraceEvent(
      'wsgiproxy.request.refused',
      {
        'wsgiproxy.refusal.code': error.code,
        ...(error instanceof SignatureRejectedError
          ? { 'wsgiproxy.refusal.reason': error.reason }
          : {}),
        'http.response.status_code': error.status,
      },
      environ,
    )
    try {
      onReject?.(error, environ)
    } catch {
      // a failing hook must not change the answer
    }
    return { ok: false, response: refusal(error) }
  }

  return async (environ) => {
    const { verifier } = policy
    const outcome = verifier === undefined ? undefined : await verifier.verify(environ)
    const verdict = decideTrust(policy, environ, outcome)
    if (verdict.refused) {
      const { status, reason, message } = verdict
      return refuse(new SignatureRejectedError(status, reason, message), environ)
    }
    const restored = withoutProtocolKeys(environ, verdict.signed)
    if (!verdict.trusted) warn.untrusted(environ, verdict.peer)
    try {
      if (verdict.trusted) {
        restoreForwarded(restored, environ, verdict, policy.isTrusted, settings)
      }
      applyForced(restored, forced)
    } catch (error) {
      return refuse(toRestoreProblem(error), environ)
    }
    return { ok: true, environ: restored }
  }
}

const REJECTION_CODES = {
  400: 'BAD_REQUEST',
  401: 'SIGNATURE_INVALID',
  413: 'BODY_TOO_LARGE',
  431: 'HEADER_TOO_LARGE',
  503: 'REPLAY_STORE_FULL',
} as const

/**
 * A refused signature: `status` is what the client got, `reason` (for logs and `onReject` only,
 * never sent to the client, RFC 9421 §8.3) says why.
 */
export class SignatureRejectedError extends WsgiProxyError {
  override name: string = 'SignatureRejectedError'
  /** Why the signature was refused. */
  readonly reason: RejectReason

  /**
   * @param status - the status the client gets
   * @param reason - the reason code
   * @param message - the precise explanation
   */
  constructor(status: 400 | 401 | 413 | 431 | 503, reason: RejectReason, message: string) {
    super(
      // Both are 503: a full store and one that cannot be reached need different fixes.
      reason === 'replay_store_unavailable' ? 'REPLAY_STORE_UNAVAILABLE' : REJECTION_CODES[status],
      `signature rejected (${reason}): ${message}`,
    )
    this.reason = reason
  }
}

function refusal(error: WsgiProxyError): AppResponse {
  if (error instanceof SignatureRejectedError) {
    // The precise reason never reaches the client: a generic problem per status.
    const response = errorResponse(new WsgiProxyError(error.code, 'signature rejected'))
    if (error.status === 401) {
      response.headers.push(['www-authenticate', 'Signature realm="wsgiproxy"'])
    }
    if (error.status === 503) response.headers.push(['retry-after', '1'])
    return response
  }
  return errorResponse(error)
}

function warnOnConsole(warning: ProtocolWarning): void {
  console.warn(`wsgiproxy: ${warning.message}`)
}

// Headers only a wsgiproxy front sends (not X-Forwarded-For or Forwarded, which any CDN or load
// balancer adds): seeing them from an untrusted peer is worth saying once.
function hasWsgiProxyHeaders(environ: Environ): boolean {
  for (const key in environ) {
    if (
      key.startsWith('HTTP_X_WSGIPROXY_') ||
      key.startsWith('HTTP_X_TRAVERSAL_') ||
      key === 'HTTP_X_FORWARDED_SERVER' ||
      key === 'HTTP_X_FORWARDED_SCHEME' ||
      key === 'HTTP_X_FORWARDED_SCRIPT_NAME'
    ) {
      return true
    }
  }
  return false
}

// The warnings of one restorer: the untrusted peer once, each dropped pickle key once (at most
// MAX_WARNED_KEYS names remembered). A failing hook never changes the answer.
function onceWarnings(onWarning: (warning: ProtocolWarning) => void): {
  untrusted: (environ: Environ, peer: string) => void
  pickleDropped: (header: string, key: string | undefined) => void
} {
  const send = (warning: ProtocolWarning): void => {
    try {
      onWarning(warning)
    } catch {
      // a failing hook must not change the answer
    }
  }
  let untrustedSaid = false
  const keysSaid = new Set<string>()
  return {
    untrusted: (environ, peer) => {
      if (untrustedSaid || !hasWsgiProxyHeaders(environ)) return
      untrustedSaid = true
      const from = peer === '' ? 'an unknown peer' : peer
      const how =
        peer === ''
          ? 'the server gave no peer address (REMOTE_ADDR), so only a signature can be trusted'
          : `to believe a front proxy there, add it to trustIps (trustIps: [${JSON.stringify(peer)}]) or sign its requests`
      send({
        code: 'UNTRUSTED_PEER',
        message: `ignored the forwarding headers of a request from ${from}, which is not trusted: ${how} (said once)`,
        peer,
      })
    },
    pickleDropped: (header, key) => {
      const name = key ?? ''
      if (keysSaid.has(name) || keysSaid.size >= MAX_WARNED_KEYS) return
      keysSaid.add(name)
      const what = key === undefined ? header : `${header} (key ${JSON.stringify(key)})`
      send({
        code: 'PICKLE_DROPPED',
        message: `dropped ${what}: no pickleCodec is configured to decode pickle values (said once per key)`,
        ...(key === undefined ? {} : { key }),
      })
    },
  }
}

// Distinct dropped-pickle keys warned about, at most: a trusted front has a fixed set.
const MAX_WARNED_KEYS = 64

function invalid(message: string): WsgiProxyError {
  return new WsgiProxyError('INVALID_OPTIONS', `invalid options: ${message}`, { expose: true })
}
