import { Hono } from 'hono'
import { proxy } from '@wsgiproxy/hono'

const backend = process.env['BACKEND_URL'] ?? 'http://127.0.0.1:8081'
const app = new Hono()
app.get('/', (c) => c.text('front page, served by Hono'))
// /api/users/1 reaches the backend as /users/1, with X-Forwarded-* telling it about /api
app.all('/api/*', proxy({ href: backend }))
export default app
