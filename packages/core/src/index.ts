/**
 * @module @wsgiproxy/core: WSGIProxy for the web-standard Fetch API — what an application calls.
 * Adapters for servers and HTTP clients use `@wsgiproxy/core/adapter`; the wire protocol's
 * building blocks (codec, trust, signature base) are in `@wsgiproxy/core/protocol`.
 */
export type {
  AppResponse,
  Environ,
  EnvironApp,
  CopyableApp,
  CopyTarget,
  ErrorHook,
  OutboundRequest,
  ProxyErrorHook,
  ReplayCheck,
  ReplayStore,
  SigningKey,
  Transport,
  UpgradableApp,
  UpgradeTarget,
} from './lib/types.ts'
export type { WsgiProxyErrorCode, WsgiProxyErrorOptions } from './lib/errors.ts'
export { ERROR_STATUS, WsgiProxyError } from './lib/errors.ts'
export type { LogErrorsOptions } from './lib/log.ts'
export { logErrors } from './lib/log.ts'
export type { ToEnvironOptions, ToRequestOptions } from './lib/environ/environ.ts'
export { environUrl, toEnviron, toRequest } from './lib/environ/environ.ts'
export { fromResponse, toResponse } from './lib/environ/response.ts'
export type { FetchHandler, ToFetchHandlerOptions } from './lib/environ/fetch-handler.ts'
export { fromFetchHandler, toFetchHandler } from './lib/environ/fetch-handler.ts'
export { errorResponse, problemResponse } from './lib/problem.ts'
export type { FetchTransportOptions } from './lib/forward/fetch-transport.ts'
export { fetchTransport } from './lib/forward/fetch-transport.ts'
export type { ForwardOptions, ProxyTimeouts } from './lib/forward/forward-options.ts'
export { DEFAULT_TIMEOUTS } from './lib/forward/forward-options.ts'
export type { AllowList, ExactProxyOptions } from './lib/forward/exact-proxy.ts'
export { exactProxy, parseAllowList } from './lib/forward/exact-proxy.ts'
export type { ProxyApp, ProxyAppOptions } from './lib/forward/proxy-app.ts'
export type {
  BalanceStrategy,
  EjectionOptions,
  HealthCheckOptions,
  PoolOptions,
  RetryOptions,
  TargetLimits,
  UpstreamTarget,
} from './lib/pool/options.ts'
export type {
  PoolEventDetail,
  TargetState,
  TargetStatus,
  UpstreamPool,
  UpstreamPoolStatus,
} from './lib/pool/upstream-pool.ts'
export { createProxyApp } from './lib/forward/proxy-app.ts'
export type {
  EnvironRestorer,
  ProtocolWarning,
  ProxyMiddlewareOptions,
  RestoreResult,
} from './lib/protocol/proxy-middleware.ts'
export {
  createEnvironRestorer,
  proxyMiddleware,
  SignatureRejectedError,
} from './lib/protocol/proxy-middleware.ts'
export type { ExtraKeyKind, PickleCodec } from './lib/protocol/header-codec.ts'
export type { TrustPreset } from './lib/protocol/trust.ts'
export type { ParseKeyFileOptions } from './lib/signing/key-file.ts'
export { formatKeyFile, MIN_SECRET_BYTES, parseKeyFile } from './lib/signing/key-file.ts'
export type { MemoryReplayStoreOptions } from './lib/signing/replay-store.ts'
export { MemoryReplayStore } from './lib/signing/replay-store.ts'
export type { KeySource } from './lib/signing/profile.ts'
export type { SignableRequest, SignedRequest, Signer, SignerOptions } from './lib/signing/signer.ts'
export { createSigner } from './lib/signing/signer.ts'
export type {
  RejectReason,
  Verifier,
  VerifierOptions,
  VerifyOutcome,
} from './lib/signing/verifier.ts'
export { createVerifier } from './lib/signing/verifier.ts'
