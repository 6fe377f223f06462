// Test helper: a base environ with every required key, for tests that build one by hand.
import type { Environ } from '@wsgiproxy/core'

/** A minimal GET environ for http://example.com/ (`wsgi.input` null), with overrides. */
export function makeEnviron(overrides: Partial<Environ> = {}): Environ {
  return {
    REQUEST_METHOD: 'GET',
    SCRIPT_NAME: '',
    PATH_INFO: '/',
    QUERY_STRING: '',
    SERVER_NAME: 'example.com',
    SERVER_PORT: '80',
    SERVER_PROTOCOL: 'HTTP/1.1',
    'wsgi.url_scheme': 'http',
    'wsgi.input': null,
    ...overrides,
  }
}
