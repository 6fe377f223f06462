import { serve } from '@hono/node-server'
import { proxy } from '@wsgiproxy/hono'
import { undiciTransport } from '@wsgiproxy/node'
import { Hono } from 'hono'

// Was, with hono/proxy:
//   app.all('/proxy/*', async (c) => {
//     const res = await proxy(`${backend}/${c.req.path.slice('/proxy/'.length)}`, {
//       ...c.req,
//       headers: { ...c.req.header(), 'X-Forwarded-For': '127.0.0.1', Authorization: undefined },
//     })
//     res.headers.delete('Set-Cookie')
//     return res
//   })
const backend = process.env.BACKEND_URL ?? 'http://127.0.0.1:8080'
const base = undiciTransport()
// The request goes as the client sent it (method, headers, body), with X-Forwarded-For, -Server,
// -Scheme and -Script-Name set; a transport that wraps another changes what is sent.
const withoutAuthorization = (outbound) =>
  base({
    ...outbound,
    headers: outbound.headers.filter(([name]) => name.toLowerCase() !== 'authorization'),
  })

const app = new Hono()
// The response is an ordinary Response: change it in middleware around the handler.
app.use('/proxy/*', async (c, next) => {
  await next()
  c.res.headers.delete('set-cookie')
})
app.all('/proxy/*', proxy({ href: backend, transport: withoutAuthorization }))

const port = Number(process.env.PORT ?? 3000)
serve({ fetch: app.fetch, hostname: '127.0.0.1', port }, (info) => {
  console.log(`listening on http://127.0.0.1:${info.port}`)
})
