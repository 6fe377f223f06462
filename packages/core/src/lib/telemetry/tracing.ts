// OpenTelemetry tracing on `@opentelemetry/api` alone, an optional peer dependency: without it,
// or without an SDK registered, every function here returns at once and nothing is allocated per
// request (docs/operations.md, "Tracing"). Attribute names follow the OpenTelemetry HTTP
// semantic conventions (stable since semconv 1.23).
import type {
  Attributes,
  Context,
  Link,
  Span,
  TextMapGetter,
  TextMapSetter,
  Tracer,
} from '@opentelemetry/api'
import type * as OpenTelemetryApi from '@opentelemetry/api'
import type { WsgiProxyError } from '../errors.ts'
import { onBodyEnd } from '../streams.ts'
import type { AppResponse, Environ } from '../types.ts'

type Api = typeof OpenTelemetryApi

// Resolved once, at load: the application that registers an SDK has the API installed too.
const api: Api | undefined = await import('@opentelemetry/api').then(
  (module) => module,
  () => undefined,
)

const TRACER_NAME = '@wsgiproxy/core'
// The delegate of a tracer provider nobody registered: while the global provider still answers
// with it, no SDK is there and tracing is off.
const NOOP_PROVIDER: unknown =
  api === undefined ? undefined : new api.ProxyTracerProvider().getDelegate()
let cachedTracer: Tracer | undefined
// The provider `cachedTracer` came from: one registered after another was disabled (an SDK shut
// down and started again) needs a tracer of its own, or its spans would go to the old one.
let cachedFor: unknown

// The context of each request's span, for the upstream spans of the forwarding step and the
// request log, which do not run inside the context a context manager keeps (or there is none).
const contexts = new WeakMap<Environ, Context>()

// W3C Trace Context (https://www.w3.org/TR/trace-context/): the two fields a propagator reads
// and writes.
const TRACE_FIELDS: readonly string[] = ['traceparent', 'tracestate']

// The methods the HTTP semantic conventions name; any other is recorded as `_OTHER` (span name
// `HTTP`), so a client cannot make span names without end.
const KNOWN_METHODS: ReadonlySet<string> = new Set([
  'CONNECT',
  'DELETE',
  'GET',
  'HEAD',
  'OPTIONS',
  'PATCH',
  'POST',
  'PUT',
  'TRACE',
])

// The longest `user_agent.original` kept: the client chooses it, the exporter sends it per span.
const MAX_USER_AGENT = 512
// The longest `http.request.method_original` kept.
const MAX_METHOD = 64

const environGetter: TextMapGetter<Environ> = {
  keys: () => ['traceparent', 'tracestate'],
  get: (environ, key) => {
    const value = environ[`HTTP_${key.toUpperCase().replaceAll('-', '_')}`]
    return typeof value === 'string' ? value : undefined
  },
}

const headerSetter: TextMapSetter<Array<[string, string]>> = {
  set: (headers, key, value) => {
    headers.push([key, value])
  },
}

/** Whether an OpenTelemetry SDK is registered, so requests get spans. */
export function tracingOn(): boolean {
  return activeTracer() !== undefined
}

// The tracer when an SDK is registered, else `undefined`: one comparison per request.
function activeTracer(): Tracer | undefined {
  if (api === undefined) return undefined
  const provider = api.trace.getTracerProvider() as { getDelegate?: () => unknown }
  const delegate = typeof provider.getDelegate === 'function' ? provider.getDelegate() : provider
  if (delegate === NOOP_PROVIDER) return undefined
  if (delegate !== cachedFor) {
    cachedFor = delegate
    cachedTracer = api.trace.getTracer(TRACER_NAME)
  }
  return cachedTracer
}

/** Whether a request's `traceparent` may continue its trace: the peer is trusted. */
export type TraceTrust = (remoteAddr: string | undefined) => boolean

/** The span of one request on a server adapter; see {@link startServerTrace}. */
export interface ServerTrace {
  /** Runs `fn` with the span as the active context (for the app and what it calls). */
  run<T>(fn: () => T): T
  /** Records the response status: `http.response.status_code`, and an error status for 5xx. */
  respond(status: number): void
  /** Ends the span, failed when `error` is given (a body that broke, say). */
  end(error?: unknown): void
}

/**
 * Starts the server span of a request (kind SERVER; INTERNAL under a span an outer
 * instrumentation already started): `undefined` when tracing is off. A `traceparent` from a peer
 * `trust` accepts continues its trace; from any other peer it becomes a link of a new trace,
 * never the parent, so a client cannot join or steer traces it does not own.
 *
 * @param environ - the request's environ
 * @param trust - which peers' `traceparent` is a parent
 * @returns the trace, or `undefined` with no SDK registered
 */
export function startServerTrace(environ: Environ, trust: TraceTrust): ServerTrace | undefined {
  const tracer = activeTracer()
  if (tracer === undefined || api === undefined) return undefined
  const outer = api.context.active()
  const outerSpan = api.trace.getSpan(outer)
  let parent = outer
  const links: Link[] = []
  if (outerSpan === undefined) {
    const extracted = api.propagation.extract(api.ROOT_CONTEXT, environ, environGetter)
    const remote = api.trace.getSpanContext(extracted)
    if (remote !== undefined && api.isSpanContextValid(remote)) {
      if (trust(stringOf(environ.REMOTE_ADDR))) parent = extracted
      else links.push({ context: remote, attributes: { 'wsgiproxy.link': 'untrusted-parent' } })
    }
  }
  const span = tracer.startSpan(
    spanName(environ.REQUEST_METHOD),
    {
      kind: outerSpan === undefined ? api.SpanKind.SERVER : api.SpanKind.INTERNAL,
      attributes: serverAttributes(environ),
      links,
    },
    parent,
  )
  const context = api.trace.setSpan(parent, span)
  contexts.set(environ, context)
  const otel = api
  // Semantic conventions: a server span fails on 5xx only (a 4xx is the client's).
  return { run: (fn) => otel.context.with(context, fn), ...spanEnds(span, 500) }
}

/**
 * Records the response on the request's span and ends the span when its body ended (at once
 * without a body).
 *
 * @param response - the app's response
 * @param trace - the request's span
 * @returns the response, its body watched
 */
export function traceResponse(response: AppResponse, trace: ServerTrace): AppResponse {
  trace.respond(response.status)
  if (response.body === null) {
    trace.end()
    return response
  }
  return { ...response, body: onBodyEnd(response.body, (error) => trace.end(error)) }
}

/** The span of one try at an upstream; see {@link startClientTrace}. */
export interface ClientTrace {
  /** The request's headers with this span's `traceparent` (and `tracestate`) in place of any sent. */
  readonly headers: Array<[string, string]>
  /** Records the upstream's answer. */
  respond(status: number): void
  /** Ends the span, failed when `error` is given. */
  end(error?: WsgiProxyError | unknown): void
}

/**
 * Starts the client span of one try at an upstream (each retry or failover its own), a child of
 * the request's span, and puts its context in the outbound headers: `undefined` when tracing is
 * off, the request's headers then go unchanged.
 *
 * @param environ - the request's environ (its span is the parent)
 * @param method - the method sent
 * @param url - where it is sent
 * @param headers - the headers sent
 * @param resendCount - how many tries went before this one (`http.request.resend_count`)
 * @returns the trace, or `undefined`
 */
export function startClientTrace(
  environ: Environ,
  method: string,
  url: URL,
  headers: Array<[string, string]>,
  resendCount: number,
): ClientTrace | undefined {
  const tracer = activeTracer()
  if (tracer === undefined || api === undefined) return undefined
  const parent = contexts.get(environ) ?? api.context.active()
  const attributes: Attributes = {
    ...methodAttributes(method),
    'server.address': url.hostname.replace(/^\[|\]$/g, ''),
    'server.port': portOf(url),
    // Without the query, which may carry secrets.
    'url.full': `${url.origin}${url.pathname}`,
  }
  if (resendCount > 0) attributes['http.request.resend_count'] = resendCount
  const span = tracer.startSpan(spanName(method), { kind: api.SpanKind.CLIENT, attributes }, parent)
  const context = api.trace.setSpan(parent, span)
  // The client's own propagation fields (trace context, and baggage or B3 with a propagator that
  // writes them) never reach the upstream: only what this request's context holds is injected.
  const fields = new Set([...TRACE_FIELDS, ...api.propagation.fields()])
  const sent = headers.filter(([name]) => !fields.has(name.toLowerCase()))
  api.propagation.inject(context, sent, headerSetter)
  // Semantic conventions: a client span fails on 4xx and 5xx.
  return { headers: sent, ...spanEnds(span, 400) }
}

// `respond` and `end` of a span that fails from status `failsFrom` on; `end` only once.
function spanEnds(
  span: Span,
  failsFrom: number,
): { respond(status: number): void; end(error?: unknown): void } {
  let ended = false
  return {
    respond: (status) => {
      span.setAttribute('http.response.status_code', status)
      if (status >= failsFrom) {
        span.setAttribute('error.type', String(status))
        span.setStatus({ code: (api as Api).SpanStatusCode.ERROR })
      }
    },
    end: (error) => {
      if (ended) return
      ended = true
      if (error !== undefined) failSpan(span, error)
      span.end()
    },
  }
}

/**
 * Records an event on the active span (the request's), or, with no request in progress, as a root
 * span of its own with no duration so it is not lost (a backend crash between requests, say).
 *
 * @param name - the event's name (`wsgiproxy.spawner.spawn`, ...)
 * @param attributes - its attributes
 * @param environ - the request it belongs to, when known
 */
export function recordTraceEvent(name: string, attributes: Attributes, environ?: Environ): void {
  const tracer = activeTracer()
  if (tracer === undefined || api === undefined) return
  const context =
    (environ === undefined ? undefined : contexts.get(environ)) ?? api.context.active()
  const span = api.trace.getSpan(context)
  if (span?.isRecording() === true) {
    span.addEvent(name, attributes)
    return
  }
  // A root: a span found here has ended (the request that started a backend, whose async context
  // the backend's exit still runs in), and a child of it would file the event under that request.
  const own = tracer.startSpan(name, { kind: api.SpanKind.INTERNAL, attributes }, api.ROOT_CONTEXT)
  own.addEvent(name, attributes)
  own.end()
}

/**
 * The trace id of a request (its span's, or the active span's), for log lines: `undefined` when
 * tracing is off or the span is not part of a valid trace.
 *
 * @param environ - the request, when known
 * @returns 32 lowercase hex digits, or `undefined`
 */
export function traceIdOf(environ?: Environ): string | undefined {
  if (api === undefined) return undefined
  const own = environ === undefined ? undefined : contexts.get(environ)
  const span = api.trace.getSpan(own ?? api.context.active())
  // Without the request, only a span still in progress: an ended one is a request that is over,
  // whose async context later work (a spawned backend's output, say) still runs in.
  if (span === undefined || (own === undefined && !span.isRecording())) return undefined
  const spanContext = span.spanContext()
  return api.isSpanContextValid(spanContext) ? spanContext.traceId : undefined
}

function serverAttributes(environ: Environ): Attributes {
  const attributes: Attributes = {
    ...methodAttributes(environ.REQUEST_METHOD),
    'url.scheme': stringOf(environ['wsgi.url_scheme']) ?? 'http',
    // Without the query string, which may carry secrets.
    'url.path': `${environ.SCRIPT_NAME}${environ.PATH_INFO}` || '/',
    'network.protocol.version': protocolVersion(stringOf(environ.SERVER_PROTOCOL)),
  }
  const host = stringOf(environ.SERVER_NAME)
  if (host !== undefined) attributes['server.address'] = host
  const port = Number(stringOf(environ.SERVER_PORT))
  if (Number.isInteger(port) && port > 0) attributes['server.port'] = port
  const client = stringOf(environ.REMOTE_ADDR)
  if (client !== undefined) attributes['client.address'] = client
  const agent = stringOf(environ.HTTP_USER_AGENT)
  if (agent !== undefined) attributes['user_agent.original'] = agent.slice(0, MAX_USER_AGENT)
  return attributes
}

// `GET` → `GET`; a method the conventions do not name → `HTTP`.
function spanName(method: string): string {
  return KNOWN_METHODS.has(method) ? method : 'HTTP'
}

function methodAttributes(method: string): Attributes {
  return KNOWN_METHODS.has(method)
    ? { 'http.request.method': method }
    : {
        'http.request.method': '_OTHER',
        'http.request.method_original': method.slice(0, MAX_METHOD),
      }
}

function failSpan(span: Span, error: unknown): void {
  if (api === undefined) return
  const code = (error as { code?: unknown }).code
  span.setAttribute('error.type', typeof code === 'string' ? code : 'Error')
  span.setStatus({
    code: api.SpanStatusCode.ERROR,
    ...(error instanceof Error ? { message: error.message } : {}),
  })
}

function portOf(url: URL): number {
  if (url.port !== '') return Number(url.port)
  return url.protocol === 'https:' || url.protocol === 'wss:' ? 443 : 80
}

// `HTTP/1.1` → `1.1`, `HTTP/2` → `2`.
function protocolVersion(protocol: string | undefined): string {
  return protocol?.startsWith('HTTP/') === true ? protocol.slice(5) : '1.1'
}

function stringOf(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined
}
