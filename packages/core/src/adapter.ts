/**
 * @module @wsgiproxy/core/adapter: the seam for those who connect wsgiproxy to a server, runtime
 * or HTTP client (`@wsgiproxy/node`, `@wsgiproxy/hono`, your own): the fast environ builder, the
 * client and upstream cancellation, the shared option schemas and error mapping. Applications use
 * the root entry instead.
 */
export type { EnvironParts } from './lib/environ/environ.ts'
export {
  environFromParts,
  environHeaders,
  environHost,
  formatAuthority,
  parseToEnvironOptions,
} from './lib/environ/environ.ts'
export { environPath, quotePath, unquotePath } from './lib/environ/url-path.ts'
export { isAppResponse } from './lib/environ/response.ts'
export { readTrailers } from './lib/trailers.ts'
export { findRemoteAddr } from './lib/environ/peer-address.ts'
export { asWsgiProxyError } from './lib/errors.ts'
export { isDirectBody, onBodyEnd, toReadableStream } from './lib/streams.ts'
export type { BodyWatch, DirectBody } from './lib/streams.ts'
export type { OptionProblem, OptionScope } from './lib/options.ts'
export { duration, explainIssues, fn, parseOptions } from './lib/options.ts'
export {
  callback,
  flag,
  MAX_TIMER_MS,
  milliseconds,
  optionsObject,
  wholeNumber,
} from './lib/schemas.ts'
export { forwardOptionsSchema } from './lib/forward/forward-options.ts'
export { checkProxyAppOptions } from './lib/forward/proxy-app.ts'
export { allowEntryProblem } from './lib/forward/exact-proxy.ts'
export { buildRestorer as createEnvironRestorerFor } from './lib/protocol/proxy-middleware.ts'
export type { CancelHook } from './lib/forward/cancellation.ts'
export {
  Cancellation,
  cancellationOf,
  clientCancellation,
  setClientCancellation,
  subscribeToCancellation,
} from './lib/forward/cancellation.ts'
export type { UpstreamCancel } from './lib/forward/upstream-error.ts'
export { mayRetry, toUpstreamError } from './lib/forward/upstream-error.ts'
export { mayTryElsewhere, neverReached, TrackedBody } from './lib/pool/retry-rules.ts'
export { HTTP2_CONNECTION_FIELDS, stripHopByHop } from './lib/forward/_hop-by-hop.ts'
export type { ClientTrace, ServerTrace, TraceTrust } from './lib/telemetry/tracing.ts'
export {
  recordTraceEvent,
  startClientTrace,
  startServerTrace,
  traceIdOf,
  traceResponse,
} from './lib/telemetry/tracing.ts'
