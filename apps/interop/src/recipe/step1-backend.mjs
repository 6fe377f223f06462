import { fromResponse, proxyMiddleware } from '@wsgiproxy/core'
import { serve } from '@wsgiproxy/node'

// The application, moved from Python: it reads the request as the client made it.
const app = (environ) =>
  fromResponse(
    Response.json({
      user: environ.REMOTE_USER ?? null,
      client: environ.REMOTE_ADDR,
      url: `${environ['wsgi.url_scheme']}://${environ.HTTP_HOST}${environ.SCRIPT_NAME}${environ.PATH_INFO}`,
      query: environ.QUERY_STRING,
    }),
  )

// Step 1: the Python WSGIProxyApp front stays. compat reads what it sends (X-WSGIProxy-Version
// 0.1); 0.1 requests are not signed, so the front is trusted by its address alone.
const trustIps = (process.env.TRUST_IPS ?? '127.0.0.1').split(',')
const served = await serve(proxyMiddleware(app, { compat: 'wsgiproxy-0.1', trustIps }), {
  port: Number(process.env.PORT ?? 8080),
})
console.log(`listening on ${served.url}`)
