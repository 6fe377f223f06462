// Test helper: the WsgiProxyError a call throws.
import { expect } from 'vitest'
import { WsgiProxyError } from '@wsgiproxy/core'
import type { Environ, ErrorHook } from '@wsgiproxy/core'

/** The WsgiProxyError `run` throws; fails the test when it throws anything else or nothing. */
export function thrownProxyError(run: () => unknown): WsgiProxyError {
  let caught: unknown
  try {
    run()
  } catch (error) {
    caught = error
  }
  expect(caught).toBeInstanceOf(WsgiProxyError)
  return caught as WsgiProxyError
}

/**
 * An `onError` hook that records `[code, environ]` of every call and answers `status` (421 by
 * default, a status no default path gives), so a test can tell its response from the default.
 */
export function recordingErrorHook(status = 421): {
  onError: ErrorHook
  calls: Array<[string, Environ | undefined]>
} {
  const calls: Array<[string, Environ | undefined]> = []
  const onError: ErrorHook = (error, environ) => {
    calls.push([error.code, environ])
    return { status, headers: [], body: null }
  }
  return { onError, calls }
}
