import { findRemoteAddr } from '@wsgiproxy/core/adapter'
import type { Context } from 'hono'
import type { ConnInfo } from 'hono/conninfo'

/**
 * Finds the client address of a request: an address string, `undefined` for none, or Hono's
 * `ConnInfo`, so a runtime's conninfo helper can be passed as it is
 * (`getConnInfo` from `@hono/node-server/conninfo`, `hono/bun`, `hono/deno`, `hono/cloudflare-workers`).
 */
export type GetRemoteAddr = (c: Context) => string | undefined | ConnInfo

/** The client address of a request: from `lookup`, else found by shape in `c.env`. */
export function remoteAddrOf(c: Context, lookup: GetRemoteAddr | undefined): string | undefined {
  // c.env is the runtime's second argument to fetch, which Hono's conninfo helpers read too.
  if (lookup === undefined) return findRemoteAddr(c.req.raw, c.env)
  const found = lookup(c)
  return typeof found === 'object' ? found.remote.address : found
}
