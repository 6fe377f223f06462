import { STATUS_CODES } from 'node:http'
import type { AppResponse } from '@wsgiproxy/core'

// The forward proxy's own answers (407, refused targets, CONNECT failures) as RFC 9457
// problem+json, the shape of every other error of the project, for an environ app and for a
// CONNECT socket that has left the HTTP server.

/** One answer: its status, a detail that repeats nothing the client sent, a stable code. */
export interface Problem {
  /** The HTTP status. */
  status: number
  /** A human-readable explanation, safe to show the client. */
  detail: string
  /** The stable code, sent as the `code` member. */
  code: string
}

const encoder = new TextEncoder()

/**
 * Encodes a problem as its JSON body.
 *
 * @param problem - the problem
 * @returns the body bytes
 */
export function toProblemBody(problem: Problem): Uint8Array {
  const { status, detail, code } = problem
  const title = STATUS_CODES[status] ?? 'Error'
  return encoder.encode(JSON.stringify({ type: 'about:blank', title, status, detail, code }))
}

/**
 * A problem as an environ app's response.
 *
 * @param problem - the problem
 * @param headers - more header lines (`proxy-authenticate`, `retry-after`)
 * @returns the response record
 */
export function toProblemResponse(
  problem: Problem,
  headers: ReadonlyArray<[string, string]> = [],
): AppResponse {
  const body = toProblemBody(problem)
  return {
    status: problem.status,
    statusText: STATUS_CODES[problem.status] ?? 'Error',
    headers: [
      ['content-type', 'application/problem+json'],
      ['content-length', String(body.byteLength)],
      ['cache-control', 'no-store'],
      ...headers,
    ],
    body: {
      async *[Symbol.asyncIterator]() {
        yield body
      },
    },
  }
}

/**
 * A problem as a whole HTTP/1.1 response with `Connection: close`, for a socket the HTTP server
 * no longer reads (a CONNECT request's).
 *
 * @param problem - the problem
 * @param headers - more header lines
 * @returns the response bytes
 */
export function toRawProblem(
  problem: Problem,
  headers: ReadonlyArray<[string, string]> = [],
): Buffer {
  const body = toProblemBody(problem)
  let head = `HTTP/1.1 ${problem.status} ${STATUS_CODES[problem.status] ?? 'Error'}\r\n`
  for (const [name, value] of [
    ['content-type', 'application/problem+json'],
    ['content-length', String(body.byteLength)],
    ['cache-control', 'no-store'],
    ...headers,
    ['connection', 'close'],
  ]) {
    head += `${name}: ${value}\r\n`
  }
  return Buffer.concat([Buffer.from(`${head}\r\n`, 'latin1'), body])
}
