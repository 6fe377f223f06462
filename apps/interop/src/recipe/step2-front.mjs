import { createProxyApp } from '@wsgiproxy/core'
import { serve } from '@wsgiproxy/node'

// Step 2: this front replaces the Python WSGIProxyApp; the Python WSGIProxyMiddleware backend
// stays. compat sends what it accepts: X-WSGIProxy-Version 0.1, X-Script-Name, UTF-8 values.
const proxy = createProxyApp({
  href: process.env.BACKEND_URL ?? 'http://127.0.0.1:8080',
  compat: 'wsgiproxy-0.1',
  stringKeys: ['REMOTE_USER'],
})

// REMOTE_USER comes from the front's authentication; a fixed user stands in for it here.
const user = process.env.DEMO_USER ?? 'alice'
const served = await serve((environ) => proxy({ ...environ, REMOTE_USER: user }), {
  port: Number(process.env.PORT ?? 8000),
  scriptName: '/front', // the public mount point, restored on the backend as SCRIPT_NAME
})
console.log(`listening on ${served.url}`)
