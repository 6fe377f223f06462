import { createProxyApp, toFetchHandler } from '@wsgiproxy/core'

// Every request goes to the backend, with X-Forwarded-* telling it how the client made it.
const app = createProxyApp({ href: process.env.BACKEND_URL ?? 'http://127.0.0.1:8081' })
export default { fetch: toFetchHandler(app) }
