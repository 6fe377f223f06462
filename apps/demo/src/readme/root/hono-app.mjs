import { serve } from '@hono/node-server'
import { proxy } from '@wsgiproxy/hono'
import { Hono } from 'hono'

const backend = process.env.BACKEND_URL ?? 'http://127.0.0.1:8081'
const app = new Hono()
app.get('/', (c) => c.text('front page, served by Hono'))
// /api/users/1 reaches the backend as /users/1, with X-Forwarded-Script-Name: /api
app.all('/api/*', proxy({ href: backend }))

// Node needs a server; on Bun and Deno, `export default app` instead of this is enough.
const port = Number(process.env.PORT ?? 8080)
serve({ fetch: app.fetch, hostname: '127.0.0.1', port }, (info) => {
  console.log(`listening on http://127.0.0.1:${info.port}`)
})
