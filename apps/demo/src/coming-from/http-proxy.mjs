import { createProxyApp, fromResponse } from '@wsgiproxy/core'
import { serve } from '@wsgiproxy/node'

// Was, with http-proxy:
//   const proxy = httpProxy.createProxyServer({ target: backend, ws: true, proxyTimeout: 2_000 })
//   proxy.on('error', (err, req, res) => res.writeHead(502).end('the backend is down'))
//   proxy.listen(8000)
const backend = process.env.BACKEND_URL ?? 'http://127.0.0.1:8080'
const app = createProxyApp({
  href: backend,
  // No answer within 2 s: 504.
  timeouts: { upstreamHeaders: 2_000 },
  // Every failure comes here; return a response to send instead of the problem+json one.
  onError: (error) => {
    if (error.code === 'UPSTREAM_UNREACHABLE') {
      return fromResponse(new Response('the backend is down', { status: 502 }))
    }
  },
})
// serve() also forwards WebSocket (Upgrade) requests: no `ws` option to turn on.
const served = await serve(app, { port: Number(process.env.PORT ?? 8000) })
console.log(`listening on ${served.url}`)
process.once('SIGTERM', () => void served.close())
