// The demo's Node backend, started by the front's spawner as `node echo-backend.js PORT` with the
// demo key file in DEMO_KEY_FILE. It runs `proxyMiddleware` with a verifier and
// `requireSignature`, so it answers only requests the front signed, and shows its restored environ.
import type { Environ, EnvironApp } from '@wsgiproxy/core'
import { createVerifier, proxyMiddleware } from '@wsgiproxy/core'
import { loadKeyFile, serve } from '@wsgiproxy/node'
import { escapeHtml, table } from '../html.ts'

const port = Number(process.argv[2])
const keyFile = process.env['DEMO_KEY_FILE']
if (!Number.isInteger(port) || port <= 0 || keyFile === undefined) {
  console.error('usage: DEMO_KEY_FILE=<key file> node echo-backend.js <port>')
  process.exit(1)
}

// What the page shows: every string value of the restored environ.
function shown(environ: Environ): Array<[string, string]> {
  return Object.entries(environ)
    .filter((entry): entry is [string, string] => typeof entry[1] === 'string')
    .toSorted(([a], [b]) => a.localeCompare(b))
}

const echo: EnvironApp = (environ) => {
  const rows = shown(environ)
  const json = String(environ.HTTP_ACCEPT ?? '').includes('application/json')
  const text = json
    ? JSON.stringify({ verified: true, environ: Object.fromEntries(rows) })
    : `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Node echo backend</title>
<link rel="stylesheet" href="/style.css"></head><body>
<h1>Node echo backend (pid ${process.pid})</h1>
<p class="ok" id="verified">Signature verified: this backend refuses every request the front did not sign.</p>
<p>It runs <code>proxyMiddleware</code>, which checked the RFC 9421 signature and restored the
original request from the protocol headers: <code>SCRIPT_NAME</code> is the front's route prefix,
<code>REMOTE_ADDR</code> is your address, <code>wsgi.url_scheme</code> and the host are the ones you
used.</p>
<h2>Restored environ</h2>${table(rows)}
<p>Request path as you sent it: <code>${escapeHtml(`${environ.SCRIPT_NAME}${environ.PATH_INFO}`)}</code></p>
<p><a href="/">Back to the start page</a></p></body></html>`
  const body = new TextEncoder().encode(text)
  return {
    status: 200,
    headers: [
      ['content-type', json ? 'application/json' : 'text/html; charset=utf-8'],
      ['content-length', String(body.byteLength)],
    ],
    body: (async function* () {
      yield body
    })(),
  }
}

const keys = await loadKeyFile(keyFile)
const verifier = createVerifier({ keys })
const app = proxyMiddleware(echo, { verifier, requireSignature: true, trustIps: ['loopback'] })
const served = await serve(app, { port, hostname: '127.0.0.1' })
console.log(`listening on ${served.url}`)
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void served.close().then(() => process.exit(0)))
}
