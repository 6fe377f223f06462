import type { WsgiProxyErrorCode } from './errors.ts'
import { WsgiProxyError } from './errors.ts'
import { bytesBody } from './streams.ts'
import type { AppResponse } from './types.ts'

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  413: 'Content Too Large',
  431: 'Request Header Fields Too Large',
  499: 'Client Closed Request',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
  508: 'Loop Detected',
}

const GENERIC_DETAIL: Record<number, string> = {
  400: 'the request is malformed',
  401: 'the request signature is missing, invalid, expired or replayed',
  403: 'the request is not allowed here',
  413: 'the request body is too large',
  503: 'the service is temporarily unavailable',
  404: 'no application is mounted at this path',
  431: 'the request has too many header fields',
  499: 'the client closed the request',
  500: 'the proxy could not handle the request',
  501: 'the request method is not supported',
  502: 'the upstream server could not be reached or sent an invalid response',
  504: 'the upstream server did not answer in time',
  508: 'the request would come back to this proxy',
}

const encoder = new TextEncoder()

/**
 * An RFC 9457 `application/problem+json` response.
 *
 * @param status - the HTTP status
 * @param detail - a human-readable explanation safe to show the client
 * @param code - the stable wsgiproxy error code, sent as the `code` member
 * @returns the response record
 */
export function problemResponse(
  status: number,
  detail: string,
  code?: WsgiProxyErrorCode,
): AppResponse {
  const title = TITLES[status] ?? 'Error'
  const body = encoder.encode(
    JSON.stringify({ type: 'about:blank', title, status, detail, ...(code ? { code } : {}) }),
  )
  return {
    status,
    statusText: title,
    headers: [
      ['content-type', 'application/problem+json'],
      ['content-length', String(body.byteLength)],
      ['cache-control', 'no-store'],
    ],
    body: bytesBody(body),
  }
}

/**
 * The problem response for an error: its status, and its message only when the error says it is
 * safe to show; otherwise a generic detail that reveals nothing internal (docs/design.md §8). An
 * exposed message is shown without its `cause`, whose message (a JSON parser's, a schema's) may
 * quote what the client sent. With `exposeErrors` every message is shown, with its cause's.
 *
 * @param error - any thrown value; non-wsgiproxy errors become 500
 * @param exposeErrors - show every error message and its cause's (for development)
 * @returns the response record
 */
export function errorResponse(error: unknown, exposeErrors = false): AppResponse {
  const known = error instanceof WsgiProxyError ? error : undefined
  const status = known?.status ?? 500
  const detail = exposeErrors
    ? error instanceof Error
      ? describe(error)
      : String(error)
    : known?.expose === true
      ? known.message
      : (GENERIC_DETAIL[status] ?? 'the request could not be completed')
  return problemResponse(status, detail, known?.code ?? 'APP_ERROR')
}

function describe(error: Error): string {
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : ''
  return error.message + cause
}
