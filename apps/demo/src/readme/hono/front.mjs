import { readFileSync } from 'node:fs'
import { serve } from '@hono/node-server'
import { createSigner, parseKeyFile } from '@wsgiproxy/core'
import { proxy } from '@wsgiproxy/hono'
import { Hono } from 'hono'

const backend = process.env.BACKEND_URL ?? 'http://127.0.0.1:8080'
// A key file line is `keyid base64:secret` (`wsgiproxy keygen` writes one); loadKeyFile and
// watchKeyFile from @wsgiproxy/node also check the file's mode and reload it when it changes.
const keys = parseKeyFile(readFileSync(process.env.KEY_FILE ?? 'keys', 'utf8'))
const app = new Hono()
// /front/article/1 goes to <backend>/myapp/article/1 with X-Forwarded-For, -Server, -Scheme,
// -Script-Name: /front, X-Traversal-Path: /myapp and X-WSGIProxy-Version.
app.all('/front/*', proxy({ href: `${backend}/myapp` }))
// Signed (docs/signing.md), with the user your authentication middleware found as REMOTE_USER.
app.use('/admin/*', async (c, next) => {
  c.set('user', 'admin') // stands for your authentication middleware
  await next()
})
app.all(
  '/admin/*',
  proxy({
    href: `${backend}/admin`,
    signer: createSigner({ keys }),
    environ: (c) => ({ REMOTE_USER: c.get('user') }), // environ keys from the context
    stringKeys: ['REMOTE_USER'], // sent as X-WSGIProxy-Str-0
  }),
)

const port = Number(process.env.PORT ?? 8000)
serve({ fetch: app.fetch, hostname: '127.0.0.1', port }, (info) => {
  console.log(`listening on http://127.0.0.1:${info.port}`)
})
