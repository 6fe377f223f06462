import { createProxyApp, toFetchHandler } from '@wsgiproxy/core'

// Node (with @hono/node-server), `bun run` or `deno serve --allow-env --allow-net`
const app = createProxyApp({ href: process.env['BACKEND_URL'] ?? 'http://127.0.0.1:8081' })
export default { fetch: toFetchHandler(app) }
