// Test helper: the WsgiProxyError a call throws.
import { expect } from 'vitest'
import { WsgiProxyError } from '../index.ts'

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
