// The README's usage snippets, copied exactly (the first test checks they still match) and run.
import { readFileSync } from 'node:fs'
import type { EnvironApp } from '@wsgiproxy/core'
import { Hono } from 'hono'
import { describe, expect, it } from 'vitest'
import { mount, wsgiProxy, type WsgiProxyVariables } from './index.ts'

const MOUNT_SNIPPET = `const hello: EnvironApp = (environ) => ({
  status: 200,
  headers: [['content-type', 'text/plain']],
  body: new Response(\`\${environ.SCRIPT_NAME} | \${environ.PATH_INFO}\`).body,
})

const app = new Hono()
app.all('/api/*', mount(hello)) // GET /api/users/1 → "/api | /users/1"; GET /api → "/api | "

const v1 = new Hono().all('/legacy/*', mount(hello))
app.route('/v1', v1) // GET /v1/legacy/x → "/v1/legacy | /x"`

function mountSnippet(): Hono {
  // oxlint-disable-next-line unicorn/consistent-function-scoping -- kept as the README has it
  const hello: EnvironApp = (environ) => ({
    status: 200,
    headers: [['content-type', 'text/plain']],
    body: new Response(`${environ.SCRIPT_NAME} | ${environ.PATH_INFO}`).body,
  })

  const app = new Hono()
  app.all('/api/*', mount(hello)) // GET /api/users/1 → "/api | /users/1"; GET /api → "/api | "

  const v1 = new Hono().all('/legacy/*', mount(hello))
  app.route('/v1', v1) // GET /v1/legacy/x → "/v1/legacy | /x"
  return app
}

const WSGI_PROXY_SNIPPET = `const app = new Hono<{ Variables: WsgiProxyVariables }>()
app.use(wsgiProxy({ trustIps: ['loopback'] })) // believe the front proxy on this machine
app.get('*', (c) => {
  const environ = c.get('environ') // typed Environ: the request as the client made it
  return c.json({
    client: environ.REMOTE_ADDR,
    user: environ['REMOTE_USER'],
    url: c.get('originalUrl').href, // e.g. https://public.example/front/article/1
  })
})`

function wsgiProxySnippet(): Hono<{ Variables: WsgiProxyVariables }> {
  const app = new Hono<{ Variables: WsgiProxyVariables }>()
  app.use(wsgiProxy({ trustIps: ['loopback'] })) // believe the front proxy on this machine
  app.get('*', (c) => {
    const environ = c.get('environ') // typed Environ: the request as the client made it
    return c.json({
      client: environ.REMOTE_ADDR,
      user: environ['REMOTE_USER'],
      url: c.get('originalUrl').href, // e.g. https://public.example/front/article/1
    })
  })
  return app
}

describe('README', () => {
  it('shows the snippets these tests run', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
    expect(readme).toContain(MOUNT_SNIPPET)
    expect(readme).toContain(WSGI_PROXY_SNIPPET)
  })

  it.each([
    ['/api/users/1', '/api | /users/1'],
    ['/api', '/api | '],
    ['/v1/legacy/x', '/v1/legacy | /x'],
  ])('mount: GET %s answers %j', async (path, text) => {
    expect(await (await mountSnippet().request(path)).text()).toBe(text)
  })

  it('wsgiProxy: answers the client, user and URL a front on this machine forwarded', async () => {
    const response = await wsgiProxySnippet().request(
      'http://127.0.0.1:8080/myapp/article/1',
      {
        headers: {
          'x-forwarded-for': '203.0.113.9',
          'x-forwarded-server': 'public.example',
          'x-forwarded-scheme': 'https',
          'x-forwarded-script-name': '/front',
          'x-traversal-path': '/myapp',
          'x-wsgiproxy-version': '0.2',
          'x-wsgiproxy-str-0': 'REMOTE_USER alice',
        },
      },
      { incoming: { socket: { remoteAddress: '127.0.0.1' } } },
    )
    expect(await response.json()).toEqual({
      client: '203.0.113.9',
      user: 'alice',
      url: 'https://public.example/front/article/1',
    })
  })
})
