import { serve } from '@hono/node-server'
import { proxy } from '@wsgiproxy/hono'
import { Hono } from 'hono'

// Was, with Fastify and @fastify/http-proxy:
//   server.register(proxy, {
//     upstream: backend, prefix: '/api', rewritePrefix: '/v1',
//     preHandler: async (request, reply) => { if (!request.headers['x-api-key']) reply.code(401).send() },
//   })
//   server.register(proxy, { upstream: backend, prefix: '/auth', rewritePrefix: '/login' })
const backend = process.env.BACKEND_URL ?? 'http://127.0.0.1:8080'
const app = new Hono()
// preHandler: middleware before the route.
app.use('/api/*', async (c, next) => {
  if (c.req.header('x-api-key') === undefined) return c.text('an API key is required', 401)
  await next()
})
// prefix: the route; rewritePrefix: the path of href. /api/items goes to <backend>/v1/items.
app.all('/api/*', proxy(`${backend}/v1`))
// /auth/callback goes to <backend>/login/callback.
app.all('/auth/*', proxy(`${backend}/login`))

const port = Number(process.env.PORT ?? 3000)
serve({ fetch: app.fetch, hostname: '127.0.0.1', port }, (info) => {
  console.log(`listening on http://127.0.0.1:${info.port}`)
})
