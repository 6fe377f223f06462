import { serve } from '@hono/node-server'
import handler from './handler.mjs'

const port = Number(process.env.PORT ?? 8080)
serve({ fetch: handler.fetch, hostname: '127.0.0.1', port }, (info) => {
  console.log(`listening on http://127.0.0.1:${info.port}`)
})
