// WSGIProxy 0.1 compatibility as a user meets it: --compat and "compat" (and --x-forwarded),
// their errors, and the command between real Python 0.1 processes (packages/test-kit/fixtures/
// wsgiproxy01: a Paste WSGIProxyApp front and a WSGIProxyMiddleware backend on wsgiref).
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { FRONT01, MIDDLEWARE01, startPython01 } from '@wsgiproxy/test-kit/python01'
import { closeAll, send } from '@wsgiproxy/test-kit/servers'
import type { ClientResponse } from '@wsgiproxy/test-kit/servers'
import { cleanup, runCli, startCli } from './test/run-cli.ts'

const LISTEN = ['--listen', '127.0.0.1:0']
// The client's own address, so a restored REMOTE_ADDR is told apart from the front's 127.0.0.1.
const CLIENT = '127.0.0.7'
const BAD_COMPAT =
  'wsgiproxy: --compat must be wsgiproxy-0.1, for Python Paste\'s WSGIProxy 0.1 (got "0.1")\n'

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wsgiproxy-cli-01-'))
})
afterEach(async () => {
  await cleanup()
  await closeAll()
  await rm(dir, { recursive: true, force: true })
})

/** GET from {@link CLIENT} asking for JSON; the status, and the body parsed when it is JSON. */
async function get(
  origin: string,
  path: string,
): Promise<ClientResponse & { json: Record<string, unknown> | undefined }> {
  const res = await send(origin, {
    path,
    headers: { accept: 'application/json' },
    localAddress: CLIENT,
  })
  const json = /json/.test(res.headers['content-type'] ?? '')
    ? (JSON.parse(res.body.toString()) as Record<string, unknown>)
    : undefined
  return { ...res, json }
}

describe('wsgiproxy --compat and --x-forwarded', () => {
  it.each([
    ['proxy', ['proxy', '--compat', '0.1', 'http://127.0.0.1:9']],
    ['spawn', ['spawn', '--compat', '0.1', '--', 'true']],
    ['echo', ['echo', '--compat', '0.1']],
  ])('%s refuses a --compat value other than wsgiproxy-0.1, exit 1', async (_command, args) => {
    expect(await runCli(args)).toEqual({ code: 1, stdout: '', stderr: BAD_COMPAT })
  })

  it('forward refuses --compat and --x-forwarded, saying why, exit 1', async () => {
    expect(await runCli(['forward', '--compat', 'wsgiproxy-0.1'])).toEqual({
      code: 1,
      stdout: '',
      stderr:
        'wsgiproxy: forward: --compat does not apply: forward is the exact proxy and sends no protocol headers (use wsgiproxy proxy --compat wsgiproxy-0.1 <href> for a WSGIProxy 0.1 backend)\n',
    })
    expect(await runCli(['forward', '--x-forwarded'])).toEqual({
      code: 1,
      stdout: '',
      stderr:
        'wsgiproxy: forward: --x-forwarded does not apply: forward is the exact proxy and sends no protocol headers (use wsgiproxy proxy --x-forwarded <href>)\n',
    })
  })

  it('echo, which sends nothing, has no --x-forwarded', async () => {
    expect(await runCli(['echo', '--x-forwarded'])).toEqual({
      code: 1,
      stdout: '',
      stderr: "wsgiproxy: echo: unknown option '--x-forwarded' (see wsgiproxy echo --help)\n",
    })
  })

  it('lists the flags in the help of the commands that take them', async () => {
    for (const command of ['proxy', 'spawn', 'echo', 'forward']) {
      const { stdout } = await runCli([command, '--help'])
      expect({ command, compat: stdout.includes('--compat wsgiproxy-0.1') }).toEqual({
        command,
        compat: command !== 'forward',
      })
      expect({ command, xForwarded: stdout.includes('--x-forwarded') }).toEqual({
        command,
        xForwarded: command === 'proxy' || command === 'spawn',
      })
    }
  })

  it('serve refuses a bad "compat" value naming the route, exit 1', async () => {
    await writeFile(
      join(dir, 'c.json'),
      JSON.stringify({ routes: [{ path: '/', type: 'echo', compat: '0.1' }] }),
    )
    expect(await runCli(['serve', '--config', 'c.json'], dir)).toEqual({
      code: 1,
      stdout: '',
      stderr:
        'wsgiproxy: config file c.json: routes[0].compat: expected "wsgiproxy-0.1", for Python Paste\'s WSGIProxy 0.1 (got "0.1")\n',
    })
  })
})

describe('wsgiproxy proxy in front of a Python WSGIProxy 0.1 middleware', () => {
  it('answers 200 with --compat wsgiproxy-0.1, the environ restored by the middleware', async () => {
    const backend = await startPython01(MIDDLEWARE01)
    const proxy = await startCli(['proxy', '--compat', 'wsgiproxy-0.1', backend.origin, ...LISTEN])
    const res = await get(proxy.url, '/p/q?a=1')
    // The Python side's stderr shows in the diff when the status is wrong.
    expect({ status: res.status, stderr: backend.stderr() }).toEqual({
      status: 200,
      stderr: expect.any(String),
    })
    expect(res.json).toMatchObject({
      SCRIPT_NAME: '',
      PATH_INFO: '/p/q',
      QUERY_STRING: 'a=1',
      HTTP_HOST: new URL(proxy.url).host,
      REMOTE_ADDR: CLIENT,
      'wsgi.url_scheme': 'http',
    })
  })

  it('answers 500 from the middleware without --compat (it asserts version 0.1)', async () => {
    const backend = await startPython01(MIDDLEWARE01)
    const proxy = await startCli(['proxy', backend.origin, ...LISTEN])
    const res = await get(proxy.url, '/p')
    expect(res.status).toBe(500)
    expect(res.body.toString()).toContain("X-WSGIProxy-Version '0.2' is not '0.1'")
  })

  it('sends the script name of a "compat" route of serve as X-Script-Name, with X-Forwarded-Host', async () => {
    const backend = await startPython01(MIDDLEWARE01)
    const route = {
      path: '/front',
      type: 'proxy',
      href: `${backend.origin}/app`,
      compat: 'wsgiproxy-0.1',
      xForwarded: true,
    }
    await writeFile(join(dir, 'c.json'), JSON.stringify({ routes: [route] }))
    const serve = await startCli(['serve', '--config', 'c.json', ...LISTEN], dir)
    const res = await get(serve.url, '/front/p?a=1')
    expect({ status: res.status, stderr: backend.stderr() }).toEqual({
      status: 200,
      stderr: expect.any(String),
    })
    const host = new URL(serve.url).host
    expect(res.json).toMatchObject({
      SCRIPT_NAME: '/front',
      PATH_INFO: '/p',
      QUERY_STRING: 'a=1',
      HTTP_HOST: host,
      REMOTE_ADDR: CLIENT,
      HTTP_X_FORWARDED_HOST: host,
      HTTP_X_FORWARDED_PROTO: 'http',
    })
  })
})

describe('wsgiproxy echo behind a Python WSGIProxy 0.1 front', () => {
  it('restores the request with --compat wsgiproxy-0.1 --trust-ip 127.0.0.1', async () => {
    const echo = await startCli([
      'echo',
      '--compat',
      'wsgiproxy-0.1',
      '--trust-ip',
      '127.0.0.1',
      ...LISTEN,
    ])
    // --pass-hop-by-hop: every response header goes on to wsgiref, as the original front did.
    const front = await startPython01(FRONT01, [
      '--href',
      echo.url,
      '--script-name',
      '/front',
      '--string-key',
      'REMOTE_USER=alice',
      '--unicode-key',
      'U=café ✓',
      '--pass-hop-by-hop',
    ])
    const res = await get(front.origin, '/front/p/q?a=1')
    expect({ status: res.status, stderr: `${front.stderr()}\n${echo.stderr()}` }).toEqual({
      status: 200,
      stderr: expect.any(String),
    })
    expect(res.json).toMatchObject({
      SCRIPT_NAME: '/front',
      PATH_INFO: '/p/q',
      QUERY_STRING: 'a=1',
      HTTP_HOST: new URL(front.origin).host,
      REMOTE_ADDR: CLIENT,
      REMOTE_USER: 'alice',
      U: 'café ✓',
    })
  })

  it('refuses the 0.1 request without --compat (400)', async () => {
    const echo = await startCli(['echo', '--trust-ip', '127.0.0.1', ...LISTEN])
    const front = await startPython01(FRONT01, ['--href', echo.url, '--pass-hop-by-hop'])
    const res = await get(front.origin, '/p')
    expect(res.status).toBe(400)
    expect(res.body.toString()).toContain('X-WSGIProxy-Version must be 0.2')
  })

  it('logs once that an untrusted peer sent protocol headers, as a JSON line with --log-format json', async () => {
    const echo = await startCli([
      'echo',
      '--compat',
      'wsgiproxy-0.1',
      '--trust-ip',
      '192.0.2.1',
      '--log-format',
      'json',
      ...LISTEN,
    ])
    const front = await startPython01(FRONT01, ['--href', echo.url, '--pass-hop-by-hop'])
    for (const path of ['/a', '/b']) {
      const res = await get(front.origin, path)
      expect(res.status).toBe(200)
      // Nothing restored: the client is the front, the path the front's request.
      expect(res.json).toMatchObject({ REMOTE_ADDR: '127.0.0.1', PATH_INFO: path })
    }
    await echo.waitFor(/"path":"\/b"/)
    const warnings = echo
      .stderr()
      .split('\n')
      .filter((line) => line.includes('"event":"warning"'))
      .map((line) => JSON.parse(line) as Record<string, unknown>)
    expect(warnings).toEqual([
      expect.objectContaining({
        type: 'event',
        event: 'warning',
        code: 'UNTRUSTED_PEER',
        peer: '127.0.0.1',
        message: expect.stringMatching(
          /^ignored the forwarding headers of a request from 127\.0\.0\.1/,
        ),
      }),
    ])
  })
})
