/** @module @wsgiproxy/core: WSGIProxy for the web-standard Fetch API. */
export type {
  AppResponse,
  Environ,
  EnvironApp,
  OutboundRequest,
  ProxyErrorHook,
  Transport,
} from './lib/types.ts'
export type { WsgiProxyErrorCode, WsgiProxyErrorOptions } from './lib/errors.ts'
export { ERROR_STATUS, WsgiProxyError } from './lib/errors.ts'
export type { ToEnvironOptions, ToRequestOptions } from './lib/environ/environ.ts'
export {
  environHeaders,
  environHost,
  environUrl,
  formatAuthority,
  toEnviron,
  toRequest,
} from './lib/environ/environ.ts'
export { environFromParts, type EnvironParts } from './lib/environ/environ.ts'
export { environPath, quotePath, unquotePath } from './lib/environ/url-path.ts'
export { fromResponse, isAppResponse, toResponse } from './lib/environ/response.ts'
export type { FetchHandler, ToFetchHandlerOptions } from './lib/environ/fetch-handler.ts'
export { fromFetchHandler, toFetchHandler } from './lib/environ/fetch-handler.ts'
export { findRemoteAddr } from './lib/environ/peer-address.ts'
export { errorResponse, problemResponse } from './lib/problem.ts'
export type { FetchTransportOptions } from './lib/forward/fetch-transport.ts'
export { fetchTransport } from './lib/forward/fetch-transport.ts'
export type { ForwardOptions, ProxyTimeouts } from './lib/forward/forward-options.ts'
export { DEFAULT_TIMEOUTS } from './lib/forward/forward-options.ts'
export type { AllowList, ExactProxyOptions } from './lib/forward/exact-proxy.ts'
export { exactProxy, parseAllowList } from './lib/forward/exact-proxy.ts'
export type { ProxyAppOptions } from './lib/forward/proxy-app.ts'
export { createProxyApp } from './lib/forward/proxy-app.ts'
export type {
  EnvironRestorer,
  ProxyMiddlewareOptions,
  RestoreResult,
} from './lib/protocol/proxy-middleware.ts'
export {
  createEnvironRestorer,
  proxyMiddleware,
  SignatureRejectedError,
} from './lib/protocol/proxy-middleware.ts'
export { isProtocolHeader, PROTOCOL_HEADERS, PROTOCOL_VERSION } from './lib/protocol/protocol.ts'
export type { ExtraKeyKind, PickleCodec } from './lib/protocol/header-codec.ts'
export {
  decodeExtraKeys,
  encodeExtraKeys,
  encodeExtraValue,
  MAX_ENCODED_VALUE_LENGTH,
  MAX_PROTOCOL_HEADERS,
} from './lib/protocol/header-codec.ts'
export type { TrustPreset } from './lib/protocol/trust.ts'
export { clientAddress, compileTrust, TRUST_PRESETS } from './lib/protocol/trust.ts'
export type { ReplayCheck, ReplayStore, SigningKey } from './lib/types.ts'
export type { UpgradableApp, UpgradeTarget } from './lib/types.ts'
export type { ParseKeyFileOptions } from './lib/signing/key-file.ts'
export { formatKeyFile, MIN_SECRET_BYTES, parseKeyFile } from './lib/signing/key-file.ts'
export type { MemoryReplayStoreOptions } from './lib/signing/replay-store.ts'
export { MemoryReplayStore } from './lib/signing/replay-store.ts'
export type {
  KeySource,
  RejectReason,
  SignableRequest,
  SignedRequest,
  Signer,
  SignerOptions,
  Verifier,
  VerifierOptions,
  VerifyOutcome,
} from './lib/signing/signing.ts'
export { createSigner, createVerifier, SIGNATURE_TAG } from './lib/signing/signing.ts'
export type { MessageView, SignatureParameters } from './lib/signing/signature.ts'
export { signatureBase } from './lib/signing/signature.ts'
export { signRequest, verifyRequest } from './lib/signing/request-signing.ts'
