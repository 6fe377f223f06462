import { serve } from '@hono/node-server'
import { wsgiProxy } from '@wsgiproxy/hono'
import { Hono } from 'hono'

const app = new Hono()
app.use(wsgiProxy({ trustIps: ['loopback'] })) // believe the front proxy on this machine
app.get('*', (c) => {
  const environ = c.get('environ') // the request as the client made it
  return c.json({
    client: environ.REMOTE_ADDR,
    scriptName: environ.SCRIPT_NAME,
    url: c.get('originalUrl').href, // e.g. http://127.0.0.1:8000/front/article/1
  })
})

const port = Number(process.env.PORT ?? 8080)
serve({ fetch: app.fetch, hostname: '127.0.0.1', port }, (info) => {
  console.log(`listening on http://127.0.0.1:${info.port}`)
})
