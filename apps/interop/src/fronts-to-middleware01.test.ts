// This project's fronts with compat: 'wsgiproxy-0.1' in front of the Python WSGIProxy 0.1
// middleware (middleware01.py, a port of Paste's WSGIProxyMiddleware), compared with the Python
// pair (front01.py in front of middleware01.py) for the same request: the Python app sees the
// same environ either way, but for SCRIPT_NAME, which only ours gets through to it.
import { afterEach, describe, expect, it } from 'vitest'
import type { ProxyAppOptions } from '@wsgiproxy/core'
import { FRONT01, MIDDLEWARE01, startPython01 } from '@wsgiproxy/test-kit/python01'
import type { Python01 } from '@wsgiproxy/test-kit/python01'
import { closeAll } from '@wsgiproxy/test-kit/servers'
import { cleanupSpawners } from '@wsgiproxy/test-kit/spawner-helpers'
import {
  CLIENT_ADDRESS,
  FRONT_MOUNT,
  FRONTS,
  get,
  HTTPS_FRONT01,
  TEST_TIMEOUT,
} from './test/interop.ts'
import type { Answer, FrontKind } from './test/interop.ts'

// The same values as the receiving suite's keys case, set in the front's environ.
const STR_VALUES = {
  REMOTE_USER: 'alice',
  S_NEWLINE: 'line1\nline2',
  S_B64LIKE: 'b64aGk=',
  S_PADDED: ' padded ',
  S_CAFE: 'café ✓',
  S_TAB: 'a\tb',
}
const UNICODE_VALUES = { U_CAFE: 'café ✓', U_NEWLINE: 'ligne\n✓', U_B64LIKE: 'b64x' }
const JSON_TEXTS = { J_OBJ: '{"a": [1, "é"], "b": null, "c": "x\\ny"}', J_STR: '"plain"' }

/** A text as a Python 3 environ holds its UTF-8 bytes: a native string, one character per byte. */
function native(text: string): string {
  return Buffer.from(text, 'utf8').toString('latin1')
}

/** front01.py arguments that set the same keys in the Python front's environ. */
function frontKeyArgs(option: string, values: Readonly<Record<string, string>>): string[] {
  return Object.entries(values).flatMap(([key, value]) => [option, `${key}=${value}`])
}

interface SendCase {
  name: string
  /** Only for fronts that forward to a URL with a path. */
  hrefPath?: string
  /** The request target, under the front's mount point. */
  path: string
  headers?: Record<string, string>
  /** The front serves https (behind TLS termination). */
  https?: boolean
  /** What the Python app sees, as values (the comparison with the pair covers the rest). */
  sees: Record<string, unknown>
  /** Keys of the front's environ and the options that forward them. */
  keys?: {
    environ: Record<string, unknown>
    options: Pick<ProxyAppOptions, 'stringKeys' | 'unicodeKeys' | 'jsonKeys'>
    args: string[]
  }
}

const KEYS: NonNullable<SendCase['keys']> = {
  environ: {
    ...STR_VALUES,
    ...UNICODE_VALUES,
    ...Object.fromEntries(
      Object.entries(JSON_TEXTS).map(([key, text]) => [key, JSON.parse(text) as unknown]),
    ),
  },
  options: {
    stringKeys: Object.keys(STR_VALUES),
    unicodeKeys: Object.keys(UNICODE_VALUES),
    jsonKeys: Object.keys(JSON_TEXTS),
  },
  args: [
    ...frontKeyArgs('--string-key', STR_VALUES),
    ...frontKeyArgs('--unicode-key', UNICODE_VALUES),
    ...frontKeyArgs('--json-key', JSON_TEXTS),
  ],
}

const CASES: readonly SendCase[] = [
  {
    name: 'path, query, host (the front itself), scheme, client address',
    path: '/front/p/q?a=b',
    sees: {
      PATH_INFO: '/p/q',
      QUERY_STRING: 'a=b',
      REMOTE_ADDR: CLIENT_ADDRESS,
      'wsgi.url_scheme': 'http',
    },
  },
  {
    name: 'the Host the client sent, port included',
    path: '/front/',
    headers: { host: 'public.example:8443' },
    sees: { HTTP_HOST: 'public.example:8443', PATH_INFO: '/' },
  },
  {
    name: 'https at the front',
    https: true,
    path: '/front/secure',
    headers: { host: 'public.example' },
    sees: { 'wsgi.url_scheme': 'https', HTTP_HOST: 'public.example', PATH_INFO: '/secure' },
  },
  {
    name: 'href with a path and a query: traversal path removed, queries merged',
    hrefPath: '/myapp/sub?x=1&y=2',
    path: '/front/p?a=b&c=%20d',
    sees: { PATH_INFO: '/p', QUERY_STRING: 'a=b&c=%20d&x=1&y=2' },
  },
  {
    name: 'an encoded and non-ASCII path (%20, ~, %2F, UTF-8), href with a path',
    hrefPath: '/myapp',
    path: '/front/a%20b/c~d/e%2Ff/caf%C3%A9',
    // wsgiref decodes %2F like any other escape, and gives the bytes of é as two characters.
    sees: { PATH_INFO: `/a b/c~d/e/f/${native('café')}` },
  },
  {
    name: 'str, unicode and json keys: newline, tab, non-ASCII, b64-looking, padded',
    path: '/front/k',
    keys: KEYS,
    // str values as native strings of their UTF-8 bytes (as from a Python front), the others
    // as text and objects.
    sees: {
      ...Object.fromEntries(Object.entries(STR_VALUES).map(([key, value]) => [key, native(value)])),
      ...UNICODE_VALUES,
      ...Object.fromEntries(
        Object.entries(JSON_TEXTS).map(([key, text]) => [key, JSON.parse(text) as unknown]),
      ),
    },
  },
]

// What the Python app sees that both fronts set alike.
const SAME = ['PATH_INFO', 'QUERY_STRING', 'HTTP_HOST', 'REMOTE_ADDR', 'wsgi.url_scheme']

interface Started {
  pairFront: Python01
  ours: { origin: string }
}

/**
 * Starts the Python pair (front01.py mounted at /front in front of middleware01.py) and one of our
 * fronts, mounted at /front, in front of another middleware01.py (the spawner starts its own).
 */
async function start(
  kind: FrontKind,
  c: Omit<SendCase, 'name' | 'path' | 'sees'>,
  { compat = true } = {},
): Promise<Started> {
  const hrefPath = c.hrefPath ?? ''
  const [pairBackend, ourBackend] = await Promise.all([
    startPython01(MIDDLEWARE01, ['--trust-ip', '127.0.0.1']),
    kind.spawnsBackend ? undefined : startPython01(MIDDLEWARE01, ['--trust-ip', '127.0.0.1']),
  ])
  const environ = {
    ...c.keys?.environ,
    // what a TLS-terminating server in front of the front would say
    ...(c.https === true ? { 'wsgi.url_scheme': 'https' } : {}),
  }
  const [pairFront, ours] = await Promise.all([
    startPython01(c.https === true ? HTTPS_FRONT01 : FRONT01, [
      '--href',
      pairBackend.origin + hrefPath,
      '--script-name',
      FRONT_MOUNT,
      ...(c.keys?.args ?? []),
    ]),
    kind.start({
      backend: ourBackend?.origin ?? '',
      hrefPath,
      options: { ...(compat ? { compat: 'wsgiproxy-0.1' } : {}), ...c.keys?.options },
      ...(Object.keys(environ).length > 0 ? { environ } : {}),
    }),
  ])
  return { pairFront, ours }
}

/** Asserts a 200 JSON answer and returns the Python environ dump. */
function environOf(answer: Answer): Record<string, unknown> {
  expect({ status: answer.status, text: answer.text }).toMatchObject({ status: 200 })
  return answer.environ ?? {}
}

/** The values of `keys` in an environ (absent ones left out, so a missing key shows in a diff). */
function pick(environ: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(keys.filter((key) => key in environ).map((key) => [key, environ[key]]))
}

describe.each(FRONTS)('$name with compat, in front of the Python 0.1 middleware', (kind) => {
  afterEach(async () => {
    await cleanupSpawners()
    await closeAll()
  })

  const cases = CASES.filter((c) => !kind.spawnsBackend || c.hrefPath === undefined)

  it.each(cases)(
    'gives the Python app what the Python pair gives it: $name',
    async (c) => {
      const { pairFront, ours } = await start(kind, c)
      const [pairAnswer, ourAnswer] = await Promise.all([
        get(pairFront.origin, c.path, c.headers),
        get(ours.origin, c.path, c.headers),
      ])
      const pair = environOf(pairAnswer)
      const python = environOf(ourAnswer)
      const keys = Object.keys(c.keys?.environ ?? {})
      const expected = pick(pair, [...SAME, ...keys])
      // Without a Host header of its own the client names the front it talks to: two ports.
      expected['HTTP_HOST'] = String(pair['HTTP_HOST']).replace(
        pairFront.origin.slice('http://'.length),
        ours.origin.slice('http://'.length),
      )
      expect(pick(python, [...SAME, ...keys])).toEqual(expected)
      expect(python).toMatchObject(c.sees)
      expect(python['REMOTE_ADDR']).toBe(CLIENT_ADDRESS)
      // On purpose: compat sends the front's mount point as X-Script-Name too, the header the
      // Python middleware reads; the Python front sends only X-Forwarded-Script-Name, which its
      // own middleware ignores, so behind it the mount point is lost.
      expect(python['SCRIPT_NAME']).toBe(FRONT_MOUNT)
      expect(pair['SCRIPT_NAME']).toBe('')
      expect(python['HTTP_X_FORWARDED_SCRIPT_NAME']).toBe(FRONT_MOUNT)
      // On purpose: ours keeps the traversal path's leading slash, since its request target has
      // one (Node's parser would refuse the Python front's `myapp/p`, and the Python middleware
      // matches the value against PATH_INFO as a string prefix). The middleware leaves it in the
      // environ, so the dump shows what crossed the wire.
      const traversal =
        c.hrefPath === undefined ? undefined : new URL(c.hrefPath, 'http://h').pathname
      expect(python['HTTP_X_TRAVERSAL_PATH']).toBe(traversal)
      expect(pair['HTTP_X_TRAVERSAL_PATH']).toBe(traversal?.slice(1))
    },
    TEST_TIMEOUT,
  )

  it(
    'sends empty str and unicode values the Python middleware decodes, where the Python pair answers 500',
    async () => {
      const c = {
        keys: {
          environ: { S_EMPTY: '', U_EMPTY: '' },
          options: { stringKeys: ['S_EMPTY'], unicodeKeys: ['U_EMPTY'] },
          args: ['--string-key', 'S_EMPTY=', '--unicode-key', 'U_EMPTY='],
        },
      }
      const { pairFront, ours } = await start(kind, c)
      const [pairAnswer, ourAnswer] = await Promise.all([
        get(pairFront.origin, '/front/e'),
        get(ours.origin, '/front/e'),
      ])
      // The 0.1 front writes "S_EMPTY " and the trailing space is lost on the wire, so its own
      // middleware fails to split the header; compat writes "S_EMPTY b64" (empty base64).
      expect(pairAnswer.status).toBe(500)
      expect(pairAnswer.text).toMatch(/^ValueError: HTTP_X_WSGIPROXY_STR_0 has no value/)
      expect(pick(environOf(ourAnswer), ['S_EMPTY', 'U_EMPTY'])).toEqual({
        S_EMPTY: '',
        U_EMPTY: '',
      })
    },
    TEST_TIMEOUT,
  )

  it(
    'is refused by the Python middleware without compat: 500 for X-WSGIProxy-Version 0.2',
    async () => {
      const { ours } = await start(kind, {}, { compat: false })
      const answer = await get(ours.origin, '/front/p')
      // The original asserts the version (AssertionError, so wsgiref answers 500).
      expect(answer.status).toBe(500)
      expect(answer.text).toMatch(/^AssertionError: X-WSGIProxy-Version '0.2' is not '0.1'/)
    },
    TEST_TIMEOUT,
  )
})
