/** @module Serves the example handler on Node through @hono/node-server. */
import { serve } from '@hono/node-server'
import { fetchTransport } from '@wsgiproxy/core'
import handler, { createHandler, readEnvironment } from './handler.ts'

const env = readEnvironment()
// The default transport on Node is undici (core's `node` condition), which sends any Host as it is
// and passes encoded bodies through; TRANSPORT=fetch gives the runtime's fetch, as on Bun and Deno.
const { fetch } =
  env['TRANSPORT'] === 'fetch' ? createHandler({ env, transport: fetchTransport() }) : handler
const server = serve(
  { fetch, port: handler.port ?? 8000, hostname: handler.hostname ?? '127.0.0.1' },
  (info) => console.log(`Listening on http://${handler.hostname}:${info.port}/`),
)
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => server.close(() => process.exit(0)))
}
