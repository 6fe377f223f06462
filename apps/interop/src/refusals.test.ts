// What this project's receivers do with WSGIProxy 0.1 requests they must not believe: a 0.1 front
// outside trustIps (nothing restored, one warning), a receiver without compat (400 naming the
// option), and 0.2 requests with 0.1 quirks (400 in compat mode too).
import { afterEach, describe, expect, it } from 'vitest'
import { FRONT01, startPython01 } from '@wsgiproxy/test-kit/python01'
import { closeAll, send } from '@wsgiproxy/test-kit/servers'
import { CLIENT_ADDRESS, FRONT_ADDRESS, get, RECEIVERS, TEST_TIMEOUT } from './test/interop.ts'

/** The front of these tests: a user, a mount point and an href with a path. */
const FRONT_ARGS = ['--string-key', 'REMOTE_USER=alice', '--script-name', '/front']

describe.each(RECEIVERS)('$name refusing what it must not believe', (kind) => {
  afterEach(closeAll)

  it(
    'restores nothing from a 0.1 front outside trustIps and warns once (UNTRUSTED_PEER)',
    async () => {
      // 192.0.2.1 (TEST-NET-1) is trusted; the front connects from 127.0.0.1.
      const receiver = await kind.start({ compat: 'wsgiproxy-0.1', trustIps: ['192.0.2.1'] })
      const front = await startPython01(FRONT01, [
        '--href',
        `${receiver.origin}/myapp`,
        '--slash-target',
        ...FRONT_ARGS,
      ])
      const first = await get(front.origin, '/front/p?a=1', { host: 'public.example' })
      const second = await get(front.origin, '/front/q', { host: 'public.example' })
      expect({ status: first.status, text: first.text }).toMatchObject({ status: 200 })
      expect(second.status).toBe(200)
      const environ = first.environ ?? {}
      expect(environ).toMatchObject({
        // the peer, not the X-Forwarded-For the front sent (CLIENT_ADDRESS)
        REMOTE_ADDR: FRONT_ADDRESS,
        // the request as received: the href's path still in it, no script name
        SCRIPT_NAME: '',
        PATH_INFO: '/myapp/p',
        QUERY_STRING: 'a=1',
        HTTP_HOST: receiver.origin.slice('http://'.length),
        'wsgi.url_scheme': 'http',
      })
      expect(environ['REMOTE_ADDR']).not.toBe(CLIENT_ADDRESS)
      expect(environ).not.toHaveProperty('REMOTE_USER')
      // nor are the protocol headers left for an app to misread
      expect(
        Object.keys(environ).filter((key) => /^HTTP_X_(WSGIPROXY|FORWARDED|TRAVERSAL)/.test(key)),
      ).toEqual([])
      expect(receiver.warnings).toEqual([
        {
          code: 'UNTRUSTED_PEER',
          peer: FRONT_ADDRESS,
          message: expect.stringContaining('trustIps'),
        },
      ])
      expect(receiver.warnings[0]?.message).toContain(FRONT_ADDRESS)
    },
    TEST_TIMEOUT,
  )

  it(
    'refuses a trusted 0.1 front without compat: 400 whose text names the option',
    async () => {
      const receiver = await kind.start({ trustIps: ['127.0.0.1'] })
      const front = await startPython01(FRONT01, ['--href', receiver.origin, ...FRONT_ARGS])
      const answer = await get(front.origin, '/front/p')
      expect(answer.status).toBe(400)
      // The front passes the receiver's problem+json body on.
      expect(answer.text).toContain(
        'X-WSGIProxy-Version must be 0.2 (a WSGIProxy 0.1 front needs compat: \\"wsgiproxy-0.1\\" on this side)',
      )
      expect(receiver.calls()).toBe(0)
    },
    TEST_TIMEOUT,
  )

  // Sent straight to the receiver from 127.0.0.1 (trusted): a 0.2 request is read strictly in
  // compat mode too, so each 0.1 habit is a 400 there.
  it.each([
    {
      quirk: 'X-Traversal-Path without its leading slash',
      path: '/myapp/p',
      headers: { 'x-traversal-path': 'myapp' },
    },
    {
      quirk: 'a raw UTF-8 value',
      path: '/p',
      // As the bytes cross the wire: Node's client writes each code unit ≤ 0xFF as one byte.
      headers: { 'x-wsgiproxy-unicode-0': Buffer.from('U café', 'utf8').toString('latin1') },
    },
    {
      quirk: 'an empty value written `KEY` (no space)',
      path: '/p',
      headers: { 'x-wsgiproxy-str-0': 'S_EMPTY' },
    },
  ])(
    'refuses a 0.2 request with a 0.1 quirk in compat mode: $quirk',
    async ({ path, headers }) => {
      const receiver = await kind.start({ compat: 'wsgiproxy-0.1', trustIps: ['127.0.0.1'] })
      const res = await send(receiver.origin, {
        path,
        headers: { 'x-wsgiproxy-version': '0.2', 'x-forwarded-for': CLIENT_ADDRESS, ...headers },
      })
      expect({ status: res.status, body: res.body.toString() }).toMatchObject({ status: 400 })
      expect(receiver.calls()).toBe(0)
    },
    TEST_TIMEOUT,
  )

  it(
    'ignores X-Script-Name on a 0.2 request in compat mode (only 0.1 fronts send it)',
    async () => {
      const receiver = await kind.start({ compat: 'wsgiproxy-0.1', trustIps: ['127.0.0.1'] })
      const res = await send(receiver.origin, {
        path: '/p',
        headers: { 'x-wsgiproxy-version': '0.2', 'x-script-name': '/injected' },
      })
      expect(res.status).toBe(200)
      const environ = JSON.parse(res.body.toString()) as Record<string, unknown>
      expect(environ['SCRIPT_NAME']).toBe('')
      expect(environ).not.toHaveProperty('HTTP_X_SCRIPT_NAME')
    },
    TEST_TIMEOUT,
  )
})
