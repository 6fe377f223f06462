/**
 * @module @wsgiproxy/core/protocol: the building blocks of the forwarding protocol, for those who
 * implement it elsewhere or inspect it: header names, the extra-key codec, trust rules and the
 * RFC 9421 signature base. Applications use the root entry (`createProxyApp`, `proxyMiddleware`).
 */
export { isProtocolHeader, PROTOCOL_HEADERS, PROTOCOL_VERSION } from './lib/protocol/protocol.ts'
export {
  decodeExtraKeys,
  encodeExtraKeys,
  encodeExtraValue,
  MAX_ENCODED_VALUE_LENGTH,
  MAX_PROTOCOL_HEADERS,
} from './lib/protocol/header-codec.ts'
export { clientAddress, compileTrust, TRUST_PRESETS } from './lib/protocol/trust.ts'
export { SIGNATURE_TAG } from './lib/signing/profile.ts'
export type { MessageView, SignatureParameters } from './lib/signing/signature.ts'
export { signatureBase } from './lib/signing/signature.ts'
export { signRequest, verifyRequest } from './lib/signing/request-signing.ts'
