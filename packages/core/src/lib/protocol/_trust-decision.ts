// Whether a restorer believes a request's protocol headers (docs/design.md §6): trusted peers
// (`trustIps`), a valid RFC 9421 signature, or both, as `mode` and `requireSignature` say.
import type { RejectReason, Verifier, VerifyOutcome } from '../signing/verifier.ts'
import type { Environ } from '../types.ts'
import { compileTrust } from './trust.ts'

/** The options of `proxyMiddleware` that {@link createTrustPolicy} reads. */
export interface TrustOptions {
  /** Checks signatures. Default: none. */
  verifier?: Verifier | undefined
  /** With both `verifier` and `trustIps`: require both (`all`, the default) or either (`any`). */
  mode?: 'all' | 'any' | undefined
  /** Refuse every request that is not trusted. Default `false`. */
  requireSignature?: boolean | undefined
  /** Trusted peers, as `compileTrust` takes them. Default: none. */
  trustIps?: readonly string[] | undefined
}

/** The trust settings of a restorer, read once from its options. */
export interface TrustPolicy {
  /** Checks signatures; `undefined` when none is configured. */
  readonly verifier: Verifier | undefined
  /** Whether a request that is not trusted is refused. */
  readonly requireSignature: boolean
  /** With both a verifier and trusted peers: whether both are needed or either is enough. */
  readonly mode: 'all' | 'any'
  /** Whether any trusted peer is configured. */
  readonly trustConfigured: boolean
  /** Whether an address is a trusted peer. */
  readonly isTrusted: (address: string) => boolean
}

/** A signature that verified. */
export type ValidSignature = Extract<VerifyOutcome, { status: 'valid' }>

/** What {@link decideTrust} concluded about one request. */
export type TrustVerdict =
  | {
      readonly refused: true
      /** The status the client gets. */
      readonly status: 400 | 401 | 413 | 431 | 503
      /** Why, for logs and `onReject`. */
      readonly reason: RejectReason
      /** The precise explanation, never sent to the client. */
      readonly message: string
    }
  | {
      readonly refused: false
      /** Whether the protocol headers are believed. */
      readonly trusted: boolean
      /** The signature, when one verified. */
      readonly signed: ValidSignature | undefined
      /** The address of the peer that sent the request (`''` when unknown). */
      readonly peer: string
      /** Whether that peer is in `trustIps` (whatever the signature says). */
      readonly ipTrusted: boolean
    }

/**
 * Reads the trust options once.
 *
 * @param options - the trust options of `proxyMiddleware`
 * @returns the policy {@link decideTrust} applies
 * @throws WsgiProxyError `INVALID_OPTIONS` for a bad `trustIps` entry
 */
export function createTrustPolicy(options: TrustOptions): TrustPolicy {
  const isTrusted = compileTrust(options.trustIps ?? [])
  const trustConfigured = (options.trustIps ?? []).length > 0
  const requireSignature = options.requireSignature ?? false
  const mode = options.mode ?? 'all'
  return { verifier: options.verifier, requireSignature, mode, trustConfigured, isTrusted }
}

/**
 * Decides whether a request is refused, trusted or served untrusted: an invalid signature is
 * refused with the verifier's status; with `requireSignature`, so is a request without a
 * signature or one that is not trusted. Otherwise it is trusted by its peer (no verifier), by its
 * signature (no `trustIps`), or by both (`mode: 'all'`) or either (`mode: 'any'`).
 *
 * @param policy - the restorer's trust settings
 * @param environ - the request
 * @param outcome - what `policy.verifier` said about it; `undefined` without a verifier
 * @returns the verdict
 */
export function decideTrust(
  policy: TrustPolicy,
  environ: Environ,
  outcome: VerifyOutcome | undefined,
): TrustVerdict {
  const { verifier, requireSignature, mode, trustConfigured, isTrusted } = policy
  const peer = typeof environ.REMOTE_ADDR === 'string' ? environ.REMOTE_ADDR : ''
  const ipTrusted = trustConfigured && peer !== '' && isTrusted(peer)
  if (outcome?.status === 'invalid') {
    const { httpStatus: status, reason, message } = outcome
    return { refused: true, status, reason, message }
  }
  if (outcome?.status === 'absent' && requireSignature) {
    const message = 'the request has no wsgiproxy signature'
    return { refused: true, status: 401, reason: 'malformed', message }
  }
  const signed = outcome?.status === 'valid' ? outcome : undefined
  const trusted =
    verifier === undefined
      ? ipTrusted
      : !trustConfigured
        ? signed !== undefined
        : mode === 'any'
          ? signed !== undefined || ipTrusted
          : signed !== undefined && ipTrusted

  if (requireSignature && !trusted) {
    // Signed but from a peer outside trustIps (mode 'all'): required trust is missing.
    const message = 'the signed request is not trusted'
    return { refused: true, status: 401, reason: 'malformed', message }
  }
  return { refused: false, trusted, signed, peer, ipTrusted }
}
