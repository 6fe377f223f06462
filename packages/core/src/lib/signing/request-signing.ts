import { toEnviron } from '../environ/environ.ts'
import { toReadableStream } from '../streams.ts'
import type { Signer } from './signer.ts'
import type { Verifier, VerifyOutcome } from './verifier.ts'
import type { Environ } from '../types.ts'

/**
 * Signs a Fetch `Request` directly (outside `createProxyApp`): the URL, method, headers and body
 * as given, with `Signature-Input` / `Signature` (and `Content-Digest` when the signer has body
 * digests on) added.
 *
 * @param request - the request to sign; its body is consumed
 * @param signer - from `createSigner`
 * @returns a new request carrying the signature
 * @example
 * const signed = await signRequest(new Request('http://backend/x', { headers }), signer)
 * await fetch(signed)
 */
export async function signRequest(request: Request, signer: Signer): Promise<Request> {
  const url = new URL(request.url)
  const headers = [...request.headers].filter(([name]) => name !== 'host')
  const signed = await signer.sign({ method: request.method, url, headers, body: request.body })
  const init: RequestInit & { duplex?: 'half' } = {
    method: request.method,
    headers: signed.headers,
    redirect: request.redirect,
    signal: request.signal,
  }
  if (signed.body !== null && request.method !== 'GET' && request.method !== 'HEAD') {
    init.body = toReadableStream(signed.body)
    // https://fetch.spec.whatwg.org/#dom-requestinit-duplex: required for a streamed body.
    init.duplex = 'half'
  }
  return new Request(url, init)
}

/**
 * Checks the `wsgiproxy` signature of a Fetch `Request` directly (outside `proxyMiddleware`).
 *
 * @param request - the received request; its body is read only when a digest is checked
 * @param verifier - from `createVerifier`
 * @returns `absent`, `valid` or `invalid` with the status to answer; never throws
 */
export async function verifyRequest(request: Request, verifier: Verifier): Promise<VerifyOutcome> {
  let environ: Environ
  try {
    environ = toEnviron(request)
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error)
    return { status: 'invalid', httpStatus: 400, reason: 'malformed', message }
  }
  return verifier.verify(environ)
}
