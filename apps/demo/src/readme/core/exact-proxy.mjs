import { exactProxy, toFetchHandler } from '@wsgiproxy/core'

// Every request goes to one backend, with the Host header the client sent. The allow list says
// where the proxy may connect (by default only to public addresses: no SSRF to loopback).
const host = process.env.BACKEND_HOST ?? '127.0.0.1'
const port = process.env.BACKEND_PORT ?? '8081'
const proxy = exactProxy({ allow: [`${host}:${port}`] })
export default {
  fetch: toFetchHandler((environ) => proxy({ ...environ, SERVER_NAME: host, SERVER_PORT: port })),
}
