import { discardBody, isDirectBody, toReadableStream } from '../streams.ts'
import { problemResponse } from '../problem.ts'
import type { AppResponse } from '../types.ts'

// https://fetch.spec.whatwg.org/#null-body-status
const NULL_BODY_STATUS: ReadonlySet<number> = new Set([101, 103, 204, 205, 304])

/**
 * Builds a Fetch `Response` from an {@link AppResponse}. Repeated headers stay separate
 * (several `Set-Cookie` lines); the reason phrase is kept when it is a valid one.
 *
 * A `Response` can only hold statuses 200–599: any other status, and header lines a `Response`
 * refuses, become a 502 problem response (and the body is released). Never throws: something
 * that is not a response record, or a body already locked, gives a 500 problem response.
 *
 * @param response - the app's response
 * @returns the Fetch response
 */
export function toResponse(response: AppResponse): Response {
  if (!isAppResponse(response)) {
    return toResponse(
      problemResponse(500, 'the application did not answer a response record', 'APP_ERROR'),
    )
  }
  const { status, body } = response
  if (!Number.isInteger(status) || status < 200 || status > 599) {
    void discardBody(body)
    return toResponse(
      problemResponse(
        502,
        `the upstream answered with status ${status}, which a Fetch Response cannot represent`,
        'UPSTREAM_INVALID_RESPONSE',
      ),
    )
  }
  const headers = new Headers()
  try {
    for (const [name, value] of response.headers) headers.append(name, value)
  } catch {
    void discardBody(body)
    return toResponse(
      problemResponse(502, 'the upstream sent an invalid header line', 'UPSTREAM_INVALID_RESPONSE'),
    )
  }
  let stream: BodyInit | null = null
  if (body !== null) {
    if (NULL_BODY_STATUS.has(status)) void discardBody(body)
    else stream = bodyInit(body)
  }
  const init: ResponseInit = response.statusText
    ? { status, headers, statusText: response.statusText }
    : { status, headers }
  try {
    return new Response(stream, init)
  } catch {
    // The reason phrase is not a valid one; the status alone is enough.
  }
  try {
    return new Response(stream, { status, headers })
  } catch {
    // The body stream is locked or already read.
    void discardBody(body)
    return toResponse(
      problemResponse(500, 'the application answered a body that cannot be read', 'APP_ERROR'),
    )
  }
}

/**
 * Whether a value is a usable {@link AppResponse}: a numeric status, a header list and a body that
 * is `null` or async-iterable. Adapters check an app's answer with it before writing it.
 *
 * @param value - what an app answered
 * @returns `true` for a response record
 */
export function isAppResponse(value: unknown): value is AppResponse {
  if (typeof value !== 'object' || value === null) return false
  const record = value as Partial<AppResponse>
  const body = record.body as unknown
  return (
    typeof record.status === 'number' &&
    Array.isArray(record.headers) &&
    (body === null ||
      (typeof body === 'object' &&
        typeof (body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] === 'function'))
  )
}

/**
 * Reads a Fetch `Response` into an {@link AppResponse}: status, reason phrase, header lines
 * (several `Set-Cookie` kept separate) and the body stream.
 *
 * @param response - the Fetch response
 * @returns the response record
 */
export function fromResponse(response: Response): AppResponse {
  const result: AppResponse = {
    status: response.status,
    headers: [...response.headers],
    body: response.body,
  }
  if (response.statusText) result.statusText = response.statusText
  return result
}

// A body that has all come already goes as bytes (written with the head in one go); any other as
// a stream.
function bodyInit(body: AsyncIterable<Uint8Array>): BodyInit {
  const whole = isDirectBody(body) ? body.takeIfComplete?.() : undefined
  return whole === undefined ? toReadableStream(body) : (whole as Uint8Array<ArrayBuffer>)
}
