// The wsgiproxy wire protocol, version 0.2 (docs/design.md §6): header names both sides agree on.

/** The protocol version sent in `X-WSGIProxy-Version`. */
export const PROTOCOL_VERSION = '0.2'

/** Header names the front proxy sets (lower-case). */
export const PROTOCOL_HEADERS: {
  readonly forwardedFor: 'x-forwarded-for'
  readonly forwardedServer: 'x-forwarded-server'
  readonly forwardedScheme: 'x-forwarded-scheme'
  readonly forwardedScriptName: 'x-forwarded-script-name'
  readonly traversalPath: 'x-traversal-path'
  readonly traversalQueryString: 'x-traversal-query-string'
  readonly version: 'x-wsgiproxy-version'
  readonly forwarded: 'forwarded'
} = {
  forwardedFor: 'x-forwarded-for',
  forwardedServer: 'x-forwarded-server',
  forwardedScheme: 'x-forwarded-scheme',
  forwardedScriptName: 'x-forwarded-script-name',
  traversalPath: 'x-traversal-path',
  traversalQueryString: 'x-traversal-query-string',
  version: 'x-wsgiproxy-version',
  forwarded: 'forwarded',
} as const

/**
 * Whether a header (lower-case name) belongs to the protocol: `X-Forwarded-*`, `Forwarded`,
 * `X-Traversal-*`, `X-WSGIProxy-*`, `Signature`, `Signature-Input`, and the legacy
 * `X-Script-Name` / `X-Scheme`. The front proxy deletes every
 * such header the client sent before setting its own; the receiving middleware strips them all.
 */
export function isProtocolHeader(name: string): boolean {
  return (
    name.startsWith('x-forwarded-') ||
    name.startsWith('x-traversal-') ||
    name.startsWith('x-wsgiproxy-') ||
    name === 'forwarded' ||
    name === 'signature' ||
    name === 'signature-input' ||
    LEGACY_HEADERS.has(name)
  )
}

// Names the original WSGIProxy 0.1 middleware and common ProxyFix-style code read.
const LEGACY_HEADERS: ReadonlySet<string> = new Set(['x-script-name', 'x-scheme'])

/** Whether an environ key carries a protocol header (`HTTP_X_FORWARDED_FOR`, ...). */
export function isProtocolEnvironKey(key: string): boolean {
  return (
    key.startsWith('HTTP_X_FORWARDED_') ||
    key.startsWith('HTTP_X_TRAVERSAL_') ||
    key.startsWith('HTTP_X_WSGIPROXY_') ||
    key === 'HTTP_FORWARDED' ||
    key === 'HTTP_SIGNATURE' ||
    key === 'HTTP_SIGNATURE_INPUT' ||
    key === 'HTTP_X_SCRIPT_NAME' ||
    key === 'HTTP_X_SCHEME'
  )
}
