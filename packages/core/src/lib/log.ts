// The default error hook of every front and forwarding app: one line per failed request (method,
// path, upstream, status, code, time), the stack only when asked or when the app itself threw.
import type { WsgiProxyError } from './errors.ts'
import type { Environ, ErrorHook } from './types.ts'

/** Options of {@link logErrors}. */
export interface LogErrorsOptions {
  /** Print the error's stack and causes after the line. Default `false`. */
  stack?: boolean
  /** Where lines go. Default `console.error`. */
  log?: (line: string) => void
}

/** Where and when a forwarded request failed, noted by the forwarding step. */
interface Attempt {
  upstream: string
  milliseconds: number
}

const attempts = new WeakMap<WsgiProxyError, Attempt>()

/**
 * Notes the upstream a failed request was sent to and how long it took, for the log line.
 *
 * @param error - the failure
 * @param upstream - the upstream's origin
 * @param start - `performance.now()` when the request was sent
 */
export function noteAttempt(error: WsgiProxyError, upstream: string, start: number): void {
  attempts.set(error, { upstream, milliseconds: Math.round(performance.now() - start) })
}

/**
 * One line about a failed request:
 * `wsgiproxy: GET /api/users → http://127.0.0.1:8081 failed after 3 ms: 502 UPSTREAM_UNREACHABLE: request to … failed: …`.
 * The path leaves out the query string, which may hold secrets.
 *
 * @param error - the failure
 * @param environ - the request's environ, when there is one
 * @returns the line
 */
export function errorLine(error: WsgiProxyError, environ?: Environ): string {
  const attempt = attempts.get(error)
  let request = ''
  if (environ !== undefined) {
    const path = `${environ.SCRIPT_NAME}${environ.PATH_INFO}` || '/'
    request = `${environ.REQUEST_METHOD} ${path}`
  }
  if (attempt !== undefined) request += ` → ${attempt.upstream}`
  const after = attempt === undefined ? '' : ` after ${attempt.milliseconds} ms`
  const what = request === '' ? 'a request' : request
  return `wsgiproxy: ${what} failed${after}: ${error.status} ${error.code}: ${error.message}`
}

/**
 * The default error hook, and the one to pass for stacks: logs failures with status ≥ 500 (a
 * client that went away, 499, and 501 for a method the transport cannot send are not errors) in
 * one line each. An app that threw (`APP_ERROR` with a cause) gets its stack too, since that is a
 * bug to find.
 *
 * @param options - `stack: true` for every failure's stack; `log` for another sink
 * @returns the hook; it answers nothing, so the problem response is sent
 * @example
 * createProxyApp({ href, onError: logErrors({ stack: true }) })
 */
export function logErrors(options: LogErrorsOptions = {}): ErrorHook {
  const { stack = false, log = (line: string) => console.error(line) } = options
  return (error, environ) => {
    if (error.status < 500 || error.code === 'METHOD_NOT_SUPPORTED') return
    const line = errorLine(error, environ)
    const bug = error.code === 'APP_ERROR' && error.cause !== undefined
    log(stack || bug ? `${line}\n${stackOf(error)}` : line)
  }
}

function stackOf(error: unknown): string {
  const lines: string[] = []
  let current: unknown = error
  for (let depth = 0; current !== undefined && depth < 5; depth++) {
    lines.push(
      depth === 0
        ? String((current as Error).stack)
        : `cause: ${String((current as Error).stack ?? current)}`,
    )
    current = current instanceof Error ? current.cause : undefined
  }
  return lines.join('\n')
}

/** The default hook's instance. */
export const logError: ErrorHook = logErrors()
