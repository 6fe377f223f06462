/** @module Serves the example handler on Node through @hono/node-server. */
import { serve } from '@hono/node-server'
import { undiciTransport } from '@wsgiproxy/node'
import handler, { createHandler, readEnvironment } from './handler.ts'

const env = readEnvironment()
// TRANSPORT=undici: the same handler with the Node transport, which sends any Host as it is and
// passes encoded bodies through; the default is the runtime's fetch, as on Bun and Deno.
const { fetch } =
  env['TRANSPORT'] === 'undici' ? createHandler({ env, transport: undiciTransport() }) : handler
const server = serve(
  { fetch, port: handler.port ?? 8000, hostname: handler.hostname ?? '127.0.0.1' },
  (info) => console.log(`Listening on http://${handler.hostname}:${info.port}/`),
)
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => server.close(() => process.exit(0)))
}
