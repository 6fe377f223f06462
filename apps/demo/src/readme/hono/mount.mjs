import { serve } from '@hono/node-server'
import { mount } from '@wsgiproxy/hono'
import { Hono } from 'hono'

// An environ app: a WSGI-like environ in; status, header pairs and a streamed body out.
const hello = (environ) => ({
  status: 200,
  headers: [['content-type', 'text/plain']],
  body: new Response(`${environ.SCRIPT_NAME} | ${environ.PATH_INFO}`).body,
})

const app = new Hono()
app.all('/api/*', mount(hello)) // GET /api/users/1 → "/api | /users/1"; GET /api → "/api | "

const v1 = new Hono().all('/legacy/*', mount(hello))
app.route('/v1', v1) // GET /v1/legacy/x → "/v1/legacy | /x"

const port = Number(process.env.PORT ?? 8000)
serve({ fetch: app.fetch, hostname: '127.0.0.1', port }, (info) => {
  console.log(`listening on http://127.0.0.1:${info.port}`)
})
