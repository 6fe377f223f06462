// Test fixture, not a README snippet: serves the `export default { fetch }` module named by the
// first argument on @hono/node-server (127.0.0.1, PORT or a free port), as Bun and Deno would.
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { serve } from '@hono/node-server'

const { default: handler } = await import(pathToFileURL(resolve(process.argv[2] ?? '')).href)
const port = Number(process.env.PORT ?? 0)
serve({ fetch: handler.fetch, hostname: '127.0.0.1', port }, (info) => {
  console.log(`listening on http://127.0.0.1:${info.port}`)
})
