import { serve } from '@hono/node-server'
import { proxy } from '@wsgiproxy/hono'
import { Hono } from 'hono'

// Was, with Express and http-proxy-middleware:
//   app.use('/api', createProxyMiddleware({
//     target: `${backend}/v2`, changeOrigin: true, xfwd: true, proxyTimeout: 10_000,
//   }))
const backend = process.env.BACKEND_URL ?? 'http://127.0.0.1:8080'
const app = new Hono()
// /api/users/1 goes to <backend>/v2/users/1: the route prefix /api is cut off (and sent as
// X-Forwarded-Script-Name), the path of href goes in front. Host is the backend's, the client's
// goes in X-Forwarded-Server; X-Forwarded-For and -Scheme are always sent. A redirect to
// <backend>/v2/login reaches the client as /api/login.
app.all('/api/*', proxy({ href: `${backend}/v2`, timeouts: { upstreamHeaders: 10_000 } }))

const port = Number(process.env.PORT ?? 3000)
serve({ fetch: app.fetch, hostname: '127.0.0.1', port }, (info) => {
  console.log(`listening on http://127.0.0.1:${info.port}`)
})
