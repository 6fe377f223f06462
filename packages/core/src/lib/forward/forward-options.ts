import * as z from 'zod'
import { defaultTransport } from '#default-transport'
import type { ForwardSettings } from './_forward.ts'
import { logError } from '../log.ts'
import { duration, fn } from '../options.ts'
import type { Environ, ErrorHook, Transport } from '../types.ts'

/** Timeouts of a forwarded request on the upstream side, in milliseconds; `false` turns one off. */
export interface ProxyTimeouts {
  /**
   * From sending the request upstream until the upstream's response headers arrive (connecting
   * included). A miss gives 504. Default 60000, as nginx's `proxy_read_timeout`.
   */
  upstreamHeaders?: number | false
  /**
   * The longest pause between two chunks of the upstream's response body. A miss ends the
   * response early (its status is already sent). Default 60000; turn it off for long-lived
   * streams.
   */
  upstreamBody?: number | false
  /** @deprecated the old name of `upstreamHeaders` (removed in 0.3). */
  headers?: number | false
  /** @deprecated the old name of `upstreamBody` (removed in 0.3). */
  body?: number | false
}

/** The options every forwarding app (`exactProxy`, `createProxyApp`) shares. */
export interface ForwardOptions {
  /**
   * Sends the request. Default: on Node (the `node` export condition) one shared `undiciTransport()`
   * for the process, which adds no header and sends any Host; elsewhere `fetchTransport()`.
   */
  transport?: Transport
  /** Timeouts; see {@link ProxyTimeouts}. */
  timeouts?: ProxyTimeouts
  /**
   * Show error messages (which may name internal addresses) in problem+json bodies. Default
   * `false`: bodies carry a generic detail (docs/design.md §8).
   */
  exposeErrors?: boolean
  /**
   * Called on every failure; may return the response to send. Default `logErrors()`: one line per
   * failure with status ≥ 500.
   */
  onError?: ErrorHook<Environ>
}

/**
 * Default timeouts of the forwarding apps, in milliseconds (`headers` and `body` are the
 * deprecated names, kept until 0.3).
 */
export const DEFAULT_TIMEOUTS: {
  readonly upstreamHeaders: 60_000
  readonly upstreamBody: 60_000
  readonly headers: 60_000
  readonly body: 60_000
} = {
  upstreamHeaders: 60_000,
  upstreamBody: 60_000,
  headers: 60_000,
  body: 60_000,
} as const

// The deprecated names of the timeouts and their new ones.
const RENAMED_TIMEOUTS = [
  ['headers', 'upstreamHeaders'],
  ['body', 'upstreamBody'],
] as const

const timeoutsSchema = z
  .strictObject({
    upstreamHeaders: duration.optional(),
    upstreamBody: duration.optional(),
    headers: duration.optional(),
    body: duration.optional(),
  })
  .superRefine((value, context) => {
    for (const [old, name] of RENAMED_TIMEOUTS) {
      if (value[old] !== undefined && value[name] !== undefined) {
        context.addIssue({
          code: 'custom',
          path: [old],
          message: `is the deprecated name of timeouts.${name}; give only ${name}`,
        })
      }
    }
  })

const FORWARD_OPTION_FIELDS = {
  transport: fn<Transport>().optional(),
  timeouts: timeoutsSchema.optional(),
  exposeErrors: z.boolean().optional(),
  onError: fn<ErrorHook<Environ>>().optional(),
}

/** A strict options schema: the {@link ForwardOptions} fields plus the app's own. */
export function forwardOptionsSchema(fields: z.ZodRawShape = {}): z.ZodType {
  return z.strictObject({ ...FORWARD_OPTION_FIELDS, ...fields })
}

/** The forwarding settings of validated {@link ForwardOptions}, defaults filled in. */
export function forwardSettings(options: ForwardOptions): ForwardSettings {
  return {
    transport: options.transport ?? defaultTransport(),
    headersTimeout:
      options.timeouts?.upstreamHeaders ??
      options.timeouts?.headers ??
      DEFAULT_TIMEOUTS.upstreamHeaders,
    bodyTimeout:
      options.timeouts?.upstreamBody ?? options.timeouts?.body ?? DEFAULT_TIMEOUTS.upstreamBody,
    exposeErrors: options.exposeErrors ?? false,
    onError: options.onError ?? logError,
  }
}
