import { createVerifier, fromResponse, proxyMiddleware } from '@wsgiproxy/core'
import { loadKeyFile, serve } from '@wsgiproxy/node'

// The application of step 1, unchanged.
const app = (environ) =>
  fromResponse(
    Response.json({
      user: environ.REMOTE_USER ?? null,
      client: environ.REMOTE_ADDR,
      url: `${environ['wsgi.url_scheme']}://${environ.HTTP_HOST}${environ.SCRIPT_NAME}${environ.PATH_INFO}`,
      query: environ.QUERY_STRING,
    }),
  )

// Step 3: the front is ours too. compat is gone, and a request must be signed with the shared key
// and come from the front's address: anything else, a 0.1 front left behind included, gets 401.
const keys = await loadKeyFile(process.env.KEY_FILE ?? 'keys')
const trustIps = (process.env.TRUST_IPS ?? '127.0.0.1').split(',')
const middleware = proxyMiddleware(app, {
  verifier: createVerifier({ keys }),
  trustIps,
  requireSignature: true,
})
const served = await serve(middleware, { port: Number(process.env.PORT ?? 8080) })
console.log(`listening on ${served.url}`)
