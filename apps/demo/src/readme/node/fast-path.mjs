import { createProxyApp } from '@wsgiproxy/core'
import { serve, undiciTransport } from '@wsgiproxy/node'

// The fast path: environ straight from IncomingMessage, response straight to ServerResponse.
const transport = undiciTransport({ connectTimeout: 5_000 })
const href = process.env.BACKEND_URL ?? 'http://127.0.0.1:8081/'
const served = await serve(createProxyApp({ href, transport }), {
  port: Number(process.env.PORT ?? 8000),
})
console.log(`listening on ${served.url}`)

// Ctrl-C or SIGTERM: finish the requests in flight, close the upstream connections, exit 0.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    await served.close()
    await transport.close()
  })
}
