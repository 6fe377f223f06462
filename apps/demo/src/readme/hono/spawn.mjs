import { serve } from '@hono/node-server'
import { spawn } from '@wsgiproxy/hono/node'
import { Hono } from 'hono'

const files = spawn({
  command: 'python3 -m http.server __PORT__ --bind 127.0.0.1', // any language: __PORT__ and $PORT
  idleTimeout: 5 * 60_000, // stopped after 5 idle minutes, started again by the next request
})
const app = new Hono()
app.all('/files/*', files) // started by the first request; /files/a reaches it as /a

// SIGINT and SIGTERM kill the backend's process group, then end this process as usual.
const port = Number(process.env.PORT ?? 8000)
serve({ fetch: app.fetch, hostname: '127.0.0.1', port }, (info) => {
  console.log(`listening on http://127.0.0.1:${info.port}`)
})
