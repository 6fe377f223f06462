import type { Environ } from '../types.ts'

interface SocketLike {
  remoteAddress?: unknown
}

/**
 * Finds the client address in the second argument a runtime passes to a fetch handler (Hono's
 * `c.env`). This is the one place that knows runtime shapes (docs/design.md §4):
 *
 * - `@hono/node-server`: `{ incoming: IncomingMessage }` → `incoming.socket.remoteAddress`
 * - Bun: the `Server`, whose `requestIP(request)` gives `{ address }`
 * - Deno: `ServeHandlerInfo` → `remoteAddr.hostname`
 * - `fromFetchHandler`: `{ environ }` → `environ.REMOTE_ADDR`
 *
 * @param request - the request (Bun looks the address up by request)
 * @param context - the runtime's second argument to `fetch`
 * @returns the client address, or `undefined` when the context has none of these shapes
 * @example
 * export default { fetch: (request, context) => new Response(findRemoteAddr(request, context)) }
 */
export function findRemoteAddr(request: Request, context: unknown): string | undefined {
  if (typeof context !== 'object' || context === null) return undefined
  const ctx = context as Record<string, unknown>
  const incoming = ctx['incoming'] as { socket?: SocketLike } | undefined
  const socketAddress = incoming?.socket?.remoteAddress
  if (typeof socketAddress === 'string') return socketAddress
  const remoteAddr = ctx['remoteAddr'] as { hostname?: unknown } | undefined
  if (typeof remoteAddr?.hostname === 'string') return remoteAddr.hostname
  const requestIP = ctx['requestIP']
  if (typeof requestIP === 'function') {
    const info = (requestIP as (r: Request) => { address?: unknown } | null).call(ctx, request)
    if (typeof info?.address === 'string') return info.address
  }
  const environ = ctx['environ'] as Environ | undefined
  if (typeof environ?.REMOTE_ADDR === 'string') return environ.REMOTE_ADDR
  return undefined
}
