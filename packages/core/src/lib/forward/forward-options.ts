import * as z from 'zod'
import { fetchTransport } from './fetch-transport.ts'
import type { ForwardSettings } from './_forward.ts'
import { logProxyError } from './_forward.ts'
import { duration, fn } from '../_options.ts'
import type { ProxyErrorHook, Transport } from '../types.ts'

/** Timeouts of a forwarded request, in milliseconds; `false` turns one off. */
export interface ProxyTimeouts {
  /**
   * From sending the request until the response headers arrive (connecting included). A miss
   * gives 504. Default 60000, as nginx's `proxy_read_timeout`.
   */
  headers?: number | false
  /**
   * The longest pause between two chunks of the response body. A miss ends the response early
   * (its status is already sent). Default 60000; turn it off for long-lived streams.
   */
  body?: number | false
}

/** The options every forwarding app (`exactProxy`, `createProxyApp`) shares. */
export interface ForwardOptions {
  /** Sends the request. Default `fetchTransport()`; on Node, `undiciTransport()` sends any Host. */
  transport?: Transport
  /** Timeouts; see {@link ProxyTimeouts}. */
  timeouts?: ProxyTimeouts
  /**
   * Show error messages (which may name internal addresses) in problem+json bodies. Default
   * `false`: bodies carry a generic detail (DESIGN.md §8).
   */
  exposeErrors?: boolean
  /** Called on every failure; may return the response to send. Default: log status ≥ 500. */
  onError?: ProxyErrorHook
}

/** Default timeouts of the forwarding apps, in milliseconds. */
export const DEFAULT_TIMEOUTS: { readonly headers: 60_000; readonly body: 60_000 } = {
  headers: 60_000,
  body: 60_000,
} as const

const FORWARD_OPTION_FIELDS = {
  transport: fn<Transport>().optional(),
  timeouts: z.strictObject({ headers: duration.optional(), body: duration.optional() }).optional(),
  exposeErrors: z.boolean().optional(),
  onError: fn<ProxyErrorHook>().optional(),
}

/** A strict options schema: the {@link ForwardOptions} fields plus the app's own. */
export function forwardOptionsSchema(fields: z.ZodRawShape = {}): z.ZodType {
  return z.strictObject({ ...FORWARD_OPTION_FIELDS, ...fields })
}

/** The forwarding settings of validated {@link ForwardOptions}, defaults filled in. */
export function forwardSettings(options: ForwardOptions): ForwardSettings {
  return {
    transport: options.transport ?? fetchTransport(),
    headersTimeout: options.timeouts?.headers ?? DEFAULT_TIMEOUTS.headers,
    bodyTimeout: options.timeouts?.body ?? DEFAULT_TIMEOUTS.body,
    exposeErrors: options.exposeErrors ?? false,
    onError: options.onError ?? logProxyError,
  }
}
