import type { AppResponse, Environ, EnvironApp } from '@wsgiproxy/core'
import { traceIdOf } from '@wsgiproxy/core/adapter'

/** How log lines are written: plain text or one JSON object per line. */
export type LogFormat = 'text' | 'json'

/** One request as logged. */
export interface RequestLogFields {
  method: string
  path: string
  status: number
  ms: number
  upstream: string
  /** The request's trace id, with tracing on. */
  traceId?: string | undefined
}

/** Writes the command's log lines to stderr. */
export interface Logger {
  /** The format in use. */
  readonly format: LogFormat
  /** One line per request. */
  request(fields: RequestLogFields): void
  /** A lifecycle event (listening, spawned, ready, idle stop, crash, shutdown). */
  event(event: string, message: string, fields?: Record<string, unknown>): void
  /** A line of a backend's output. */
  output(name: string, pid: number | null, stream: string, text: string): void
  /** An error while serving. */
  error(message: string, fields?: Record<string, unknown>): void
}

/**
 * Creates the command's logger.
 *
 * @param format - text or JSON lines
 * @param write - where lines go; default stderr
 * @returns the logger
 */
export function createLogger(
  format: LogFormat,
  write: (line: string) => void = (line) => process.stderr.write(line),
): Logger {
  // With tracing on, every line written while a request is served names its trace (W3C trace id,
  // the field name of the OpenTelemetry log data model).
  const json = (record: Record<string, unknown>, traceId = traceIdOf()): void => {
    const line = { time: new Date().toISOString(), ...record }
    write(`${JSON.stringify(traceId === undefined ? line : { ...line, trace_id: traceId })}\n`)
  }
  if (format === 'json') {
    return {
      format,
      request: ({ traceId, ...fields }) => json({ type: 'request', ...fields }, traceId),
      event: (event, message, fields) => json({ type: 'event', event, message, ...fields }),
      output: (name, pid, stream, text) => json({ type: 'output', name, pid, stream, text }),
      error: (message, fields) => json({ type: 'error', message, ...fields }),
    }
  }
  return {
    format,
    request: ({ method, path, status, ms, upstream, traceId }) =>
      write(
        `${method} ${path} ${status} ${ms}ms ${upstream}${traceId === undefined ? '' : ` trace=${traceId}`}\n`,
      ),
    event: (_event, message) => write(`wsgiproxy: ${message}\n`),
    output: (name, pid, _stream, text) => write(`[${name} ${pid ?? '-'}] ${text}\n`),
    error: (message) => write(`wsgiproxy: error: ${message}\n`),
  }
}

/**
 * Wraps an app so every request is logged once its response headers are ready: method, path,
 * status, milliseconds to the headers, and the upstream it went to.
 *
 * @param app - the app
 * @param logger - where the line goes
 * @param upstream - the upstream of a request, for the line
 * @returns the logging app
 */
export function withRequestLog(
  app: EnvironApp,
  logger: Logger,
  upstream: (environ: Environ) => string,
): EnvironApp {
  return async (environ) => {
    const started = performance.now()
    const method = environ.REQUEST_METHOD
    const path = `${environ.SCRIPT_NAME}${environ.PATH_INFO}` || '/'
    let response: AppResponse
    try {
      response = await app(environ)
    } catch (error) {
      logger.request({
        method,
        path,
        status: 500,
        ms: elapsed(started),
        upstream: upstream(environ),
        traceId: traceIdOf(environ),
      })
      throw error
    }
    logger.request({
      method,
      path,
      status: response.status,
      ms: elapsed(started),
      upstream: upstream(environ),
      traceId: traceIdOf(environ),
    })
    return response
  }
}

function elapsed(started: number): number {
  return Math.round(performance.now() - started)
}
