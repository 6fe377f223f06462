import { describe, expect, it } from 'vitest'
import { WsgiProxyError } from '../errors.ts'
import type { WsgiProxyErrorCode } from '../errors.ts'
import { mayTryElsewhere, neverReached, TrackedBody } from './retry-rules.ts'

async function* chunks(): AsyncGenerator<Uint8Array> {
  yield new Uint8Array([1])
}

function body(touched: boolean): TrackedBody {
  const tracked = new TrackedBody(chunks())
  if (touched) tracked[Symbol.asyncIterator]()
  return tracked
}

describe('mayTryElsewhere', () => {
  it.each([
    ['UPSTREAM_UNREACHABLE', 'POST', 'unread', true],
    ['UPSTREAM_CONNECT_TIMEOUT', 'PATCH', 'unread', true],
    ['UPSTREAM_UNREACHABLE', 'POST', 'read', false],
    ['UPSTREAM_UNREACHABLE', 'DELETE', 'none', true],
    ['UPSTREAM_RESET', 'GET', 'none', true],
    ['UPSTREAM_RESET', 'HEAD', 'none', true],
    ['UPSTREAM_RESET', 'OPTIONS', 'none', true],
    ['UPSTREAM_RESET', 'GET', 'unread', false],
    ['UPSTREAM_RESET', 'POST', 'none', false],
    ['UPSTREAM_RESET', 'PUT', 'unread', false],
    ['UPSTREAM_RESET', 'DELETE', 'none', false],
    // A failed TLS handshake is treated as a reset: the request may have gone out (TLS 1.3).
    ['UPSTREAM_TLS_FAILED', 'GET', 'none', true],
    ['UPSTREAM_TLS_FAILED', 'GET', 'unread', false],
    ['UPSTREAM_TLS_FAILED', 'POST', 'none', false],
    ['UPSTREAM_TLS_FAILED', 'PUT', 'unread', false],
    ['UPSTREAM_HEADERS_TIMEOUT', 'GET', 'none', false],
    ['UPSTREAM_INVALID_RESPONSE', 'GET', 'none', false],
    ['CLIENT_ABORTED', 'GET', 'none', false],
  ] as const)('%s on a %s with a body %s: %s', (code, method, state, expected) => {
    const error = new WsgiProxyError(code as WsgiProxyErrorCode, 'failed')
    const tracked = state === 'none' ? null : body(state === 'read')
    expect(mayTryElsewhere(error, method, tracked)).toBe(expected)
  })

  it('passes the body through once read', async () => {
    const tracked = new TrackedBody(chunks())
    expect(tracked.touched).toBe(false)
    const seen: number[] = []
    for await (const chunk of tracked) seen.push(...chunk)
    expect(seen).toEqual([1])
    expect(tracked.touched).toBe(true)
  })
})

describe('neverReached', () => {
  it.each([
    ['UPSTREAM_UNREACHABLE', true],
    ['UPSTREAM_CONNECT_TIMEOUT', true],
    // Its retry counts against the pool's budget: the request may have gone out.
    ['UPSTREAM_TLS_FAILED', false],
    ['UPSTREAM_RESET', false],
  ] as const)('%s: %s', (code, expected) => {
    expect(neverReached(new WsgiProxyError(code, 'failed'))).toBe(expected)
  })
})
