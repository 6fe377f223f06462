// Test helper: a Hono app on @hono/node-server over a real socket, registered with core's test
// servers so that `closeAll` stops it.
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { serve } from '@hono/node-server'
import type { Hono } from 'hono'
import type { Running } from './servers.ts'
import { register } from './servers.ts'

/** Serves a Hono app with @hono/node-server on 127.0.0.1 port 0; `closeAll` stops it. */
export async function serveHono(app: Pick<Hono, 'fetch'>): Promise<Running> {
  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () =>
      resolve(s as Server),
    )
  })
  const { port } = server.address() as AddressInfo
  return register({
    port,
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  })
}
