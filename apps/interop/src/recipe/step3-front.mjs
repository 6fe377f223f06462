import { createProxyApp, createSigner } from '@wsgiproxy/core'
import { loadKeyFile, serve } from '@wsgiproxy/node'

// Step 3: both sides are ours. compat is gone, and every forwarded request is signed (RFC 9421
// HMAC) with a key shared with the backend: `wsgiproxy keygen --out keys` writes one.
const keys = await loadKeyFile(process.env.KEY_FILE ?? 'keys')
const proxy = createProxyApp({
  href: process.env.BACKEND_URL ?? 'http://127.0.0.1:8080',
  stringKeys: ['REMOTE_USER'],
  signer: createSigner({ keys }),
})

// REMOTE_USER comes from the front's authentication; a fixed user stands in for it here.
const user = process.env.DEMO_USER ?? 'alice'
const served = await serve((environ) => proxy({ ...environ, REMOTE_USER: user }), {
  port: Number(process.env.PORT ?? 8000),
  scriptName: '/front',
})
console.log(`listening on ${served.url}`)
