// A Python WSGIProxy 0.1 front (front01.py, a port of Paste's WSGIProxyApp) in front of this
// project's receivers, compared with the Python pair (front01.py in front of middleware01.py, a
// port of WSGIProxyMiddleware) for the same request: every restored value is the pair's, except
// where this project differs on purpose, which each assertion says.
import { afterEach, describe, expect, it } from 'vitest'
import { FRONT01, MIDDLEWARE01, startPython01 } from '@wsgiproxy/test-kit/python01'
import type { Python01 } from '@wsgiproxy/test-kit/python01'
import { closeAll } from '@wsgiproxy/test-kit/servers'
import {
  CLIENT_ADDRESS,
  get,
  HTTPS_FRONT01,
  nativeToText,
  RECEIVERS,
  TEST_TIMEOUT,
} from './test/interop.ts'
import type { Answer, Receiver, ReceiverKind } from './test/interop.ts'

// Every receiver here runs as compat receivers must be configured for a 0.1 front: compat on, and
// the front's address trusted (0.1 requests carry no signature).
const COMPAT = { compat: 'wsgiproxy-0.1', trustIps: ['127.0.0.1'] } as const

// The keys of check_pair.py's keys case but pickle (its own test below): str values go as bytes,
// unicode as UTF-8 text, json as json.dumps writes it; b64 for control characters, surrounding
// space and values that start with "b64".
const STR_KEYS = [
  ['REMOTE_USER', 'alice'],
  ['S_NEWLINE', 'line1\nline2'],
  ['S_B64LIKE', 'b64aGk='],
  ['S_PADDED', ' padded '],
  ['S_CAFE', 'café ✓'],
  ['S_TAB', 'a\tb'],
] as const
const UNICODE_KEYS = [
  ['U_CAFE', 'café ✓'],
  ['U_NEWLINE', 'ligne\n✓'],
  ['U_B64LIKE', 'b64x'],
] as const
const JSON_KEYS = [
  ['J_OBJ', '{"a": [1, "é"], "b": null, "c": "x\\ny"}'],
  ['J_STR', '"plain"'],
] as const

/** front01.py arguments for key/value pairs of one kind. */
function keyArgs(option: string, pairs: ReadonlyArray<readonly [string, string]>): string[] {
  return pairs.flatMap(([key, value]) => [option, `${key}=${value}`])
}

interface FrontCase {
  name: string
  /** front01.py options besides --href. */
  args?: string[]
  /** What the front's href adds to the backend's origin. */
  hrefPath?: string
  /** The front believes it serves https (behind TLS termination). */
  https?: boolean
  path: string
  headers?: Record<string, string>
  /** What our receivers restore, as values (the comparison with the pair covers the rest). */
  restores: Record<string, unknown>
  /** The extra keys the front sends, by kind. */
  keys?: { str?: readonly string[]; unicode?: readonly string[]; json?: readonly string[] }
}

const CASES: readonly FrontCase[] = [
  {
    name: 'href without a path: path, query, host (the front itself), scheme, client address',
    path: '/p/q?a=b',
    restores: {
      SCRIPT_NAME: '',
      PATH_INFO: '/p/q',
      QUERY_STRING: 'a=b',
      REMOTE_ADDR: CLIENT_ADDRESS,
      'wsgi.url_scheme': 'http',
    },
  },
  {
    name: 'the Host the client sent, port included (X-Forwarded-Server)',
    path: '/',
    headers: { host: 'public.example:8443' },
    restores: {
      HTTP_HOST: 'public.example:8443',
      SERVER_NAME: 'public.example',
      SERVER_PORT: '8443',
      PATH_INFO: '/',
    },
  },
  {
    name: 'https at the front (X-Forwarded-Scheme)',
    https: true,
    path: '/secure?x=1',
    headers: { host: 'public.example' },
    restores: {
      'wsgi.url_scheme': 'https',
      HTTP_HOST: 'public.example',
      SERVER_PORT: '443',
      PATH_INFO: '/secure',
      QUERY_STRING: 'x=1',
    },
  },
  {
    name: 'a front mounted at /front (X-Forwarded-Script-Name)',
    args: ['--script-name', '/front'],
    path: '/front/p/q?a=1',
    restores: { SCRIPT_NAME: '/front', PATH_INFO: '/p/q', QUERY_STRING: 'a=1' },
  },
  {
    name: 'href with a path (X-Traversal-Path without its slash)',
    hrefPath: '/myapp',
    path: '/p/q',
    restores: { SCRIPT_NAME: '', PATH_INFO: '/p/q' },
  },
  {
    name: 'href with a path, request for /',
    hrefPath: '/myapp',
    path: '/',
    restores: { SCRIPT_NAME: '', PATH_INFO: '/' },
  },
  {
    name: 'query of the request and of the href merged, front mounted at /front',
    args: ['--script-name', '/front'],
    hrefPath: '/myapp/sub?x=1&y=2',
    path: '/front/p?a=b&c=%20d',
    restores: { SCRIPT_NAME: '/front', PATH_INFO: '/p', QUERY_STRING: 'a=b&c=%20d&x=1&y=2' },
  },
  {
    name: 'query of the href alone',
    hrefPath: '/myapp/sub?x=1&y=2',
    path: '/p',
    restores: { PATH_INFO: '/p', QUERY_STRING: 'x=1&y=2' },
  },
  {
    name: 'an encoded and non-ASCII path (%20, ~, %2F, UTF-8)',
    hrefPath: '/myapp',
    path: '/a%20b/c~d/e%2Ff/caf%C3%A9',
    // The Python front decodes %2F like any other escape, so the slash is a slash on both sides.
    restores: { PATH_INFO: '/a b/c~d/e/f/café' },
  },
  {
    name: 'str, unicode and json keys: newline, tab, non-ASCII, b64-looking, padded',
    args: [
      ...keyArgs('--string-key', STR_KEYS),
      ...keyArgs('--unicode-key', UNICODE_KEYS),
      ...keyArgs('--json-key', JSON_KEYS),
    ],
    path: '/k',
    restores: {
      ...Object.fromEntries([...STR_KEYS, ...UNICODE_KEYS]),
      ...Object.fromEntries(JSON_KEYS.map(([key, text]) => [key, JSON.parse(text) as unknown])),
    },
    keys: {
      str: STR_KEYS.map(([key]) => key),
      unicode: UNICODE_KEYS.map(([key]) => key),
      json: JSON_KEYS.map(([key]) => key),
    },
  },
  {
    // The original's documentation numbers keys from 1 (X-WSGIProxy-Str-1); its code from 0.
    name: 'keys numbered from 1, as the original documentation has them',
    args: ['--key-index-base', '1', ...keyArgs('--string-key', STR_KEYS.slice(0, 2))],
    path: '/k',
    restores: Object.fromEntries(STR_KEYS.slice(0, 2)),
    keys: { str: STR_KEYS.slice(0, 2).map(([key]) => key) },
  },
]

/** The environ keys that are wsgiproxy protocol headers (the Python middleware leaves them). */
function protocolKeys(environ: Record<string, unknown>): string[] {
  return Object.keys(environ).filter((key) =>
    /^HTTP_X_(WSGIPROXY_|TRAVERSAL_|FORWARDED_|SCRIPT_NAME$)/.test(key),
  )
}

/** `[name, port]` of a Host value, the port defaulting by scheme. */
function hostParts(host: string, scheme: string): [string, string] {
  const match = /^(.*?)(?::(\d+))?$/.exec(host)
  return [match?.[1] ?? host, match?.[2] ?? (scheme === 'https' ? '443' : '80')]
}

/** The values of `keys` in an environ (absent ones left out, so a missing key shows in a diff). */
function pick(environ: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(keys.filter((key) => key in environ).map((key) => [key, environ[key]]))
}

/**
 * What our receiver must restore, derived from the Python pair's environ for the same request:
 * the same values, but for the differences made on purpose.
 */
function expectedFrom(
  pair: Record<string, unknown>,
  c: FrontCase,
  pairFront: Python01,
  ourFront: Python01,
): Record<string, unknown> {
  // Without a Host header of its own the client names the front it talks to, and the two fronts
  // listen on different ports.
  const host = String(pair['HTTP_HOST']).replace(
    pairFront.origin.slice('http://'.length),
    ourFront.origin.slice('http://'.length),
  )
  const scheme = String(pair['wsgi.url_scheme'])
  const [serverName, serverPort] = hostParts(host, scheme)
  const expected: Record<string, unknown> = {
    // PEP 3333 makes a Python path a native string (one character per byte); ours is the UTF-8
    // text it encodes (docs/environ.md). The same for every ASCII path.
    PATH_INFO: nativeToText(String(pair['PATH_INFO'])),
    QUERY_STRING: pair['QUERY_STRING'],
    HTTP_HOST: host,
    REMOTE_ADDR: pair['REMOTE_ADDR'],
    'wsgi.url_scheme': scheme,
    // On purpose: the Python middleware reads only X-Script-Name, which a 0.1 front never sends,
    // and drops the traversal path, so its SCRIPT_NAME is always ''; ours is the front's mount
    // point (X-Forwarded-Script-Name), as the front meant.
    SCRIPT_NAME: c.restores['SCRIPT_NAME'] ?? '',
    // On purpose: the Python middleware sets only HTTP_HOST (SERVER_NAME stays its own name and
    // SERVER_PORT its own port); ours sets all three from the forwarded host, so URLs built from
    // SERVER_NAME/SERVER_PORT name the public host.
    SERVER_NAME: serverName,
    SERVER_PORT: serverPort,
  }
  for (const key of c.keys?.str ?? []) {
    // On purpose: a Python 3 str key is a native string of the bytes sent; compat mode reads
    // every value as UTF-8 text (docs/protocol.md, WSGIProxy 0.1 compatibility).
    expected[key] = nativeToText(String(pair[key]))
  }
  for (const key of [...(c.keys?.unicode ?? []), ...(c.keys?.json ?? [])]) expected[key] = pair[key]
  return expected
}

interface Pair {
  pairFront: Python01
  ourFront: Python01
  receiver: Receiver
}

/**
 * Starts the Python pair (middleware01.py behind a front01.py) and the same front01.py in front
 * of one of our receivers. Against Node, a front whose href has a path uses --slash-target: Node's
 * HTTP parser refuses the original's `GET myapp/p` with 400 (tested below).
 */
async function startPair(
  kind: ReceiverKind,
  c: Pick<FrontCase, 'args' | 'hrefPath' | 'https'>,
  options: Parameters<ReceiverKind['start']>[0] = COMPAT,
  { slashTarget = true, passHopByHop = kind.dropsConnectionHeaders } = {},
): Promise<Pair> {
  const script = c.https === true ? HTTPS_FRONT01 : FRONT01
  const hrefPath = c.hrefPath ?? ''
  const [middleware, receiver] = await Promise.all([
    startPython01(MIDDLEWARE01, ['--trust-ip', '127.0.0.1']),
    kind.start(options),
  ])
  const ourArgs = ['--href', receiver.origin + hrefPath, ...(c.args ?? [])]
  if (slashTarget && hrefPath.startsWith('/') && hrefPath !== '/') ourArgs.push('--slash-target')
  // The original passed every response header on; do so where the server allows it.
  if (passHopByHop) ourArgs.push('--pass-hop-by-hop')
  const [pairFront, ourFront] = await Promise.all([
    startPython01(script, ['--href', middleware.origin + hrefPath, ...(c.args ?? [])]),
    startPython01(script, ourArgs),
  ])
  return { pairFront, ourFront, receiver }
}

/** Asserts a 200 JSON answer and returns its environ; the body and stderr name what went wrong. */
function environOf(answer: Answer, python: Python01): Record<string, unknown> {
  expect({ status: answer.status, text: answer.text, stderr: python.stderr() }).toMatchObject({
    status: 200,
  })
  return answer.environ ?? {}
}

describe.each(RECEIVERS)('a WSGIProxy 0.1 front in front of $name', (kind) => {
  afterEach(closeAll)

  it.each(CASES)(
    'restores what the Python pair restores: $name',
    async (c) => {
      const { pairFront, ourFront, receiver } = await startPair(kind, c)
      const [pairAnswer, ourAnswer] = await Promise.all([
        get(pairFront.origin, c.path, c.headers),
        get(ourFront.origin, c.path, c.headers),
      ])
      const pair = environOf(pairAnswer, pairFront)
      const ours = environOf(ourAnswer, ourFront)
      const expected = expectedFrom(pair, c, pairFront, ourFront)
      expect(pick(ours, Object.keys(expected))).toEqual(expected)
      expect(ours).toMatchObject(c.restores)
      // Every request comes from CLIENT_ADDRESS through a front on 127.0.0.1: both restored it.
      expect(pair['REMOTE_ADDR']).toBe(CLIENT_ADDRESS)
      expect(pair['SCRIPT_NAME']).toBe('')
      // On purpose: ours removes every protocol header from the environ; the Python middleware
      // leaves X-Forwarded-Script-Name, X-Traversal-* and the X-WSGIProxy-* values in it.
      expect(protocolKeys(ours)).toEqual([])
      expect(receiver.warnings).toEqual([])
    },
    TEST_TIMEOUT,
  )

  it(
    'restores empty str and unicode values, where the Python pair answers 500',
    async () => {
      const c = { args: ['--string-key', 'S_EMPTY=', '--unicode-key', 'U_EMPTY='] }
      const { pairFront, ourFront } = await startPair(kind, c)
      const [pairAnswer, ourAnswer] = await Promise.all([
        get(pairFront.origin, '/e'),
        get(ourFront.origin, '/e'),
      ])
      // The 0.1 front writes "S_EMPTY " and the trailing space is lost on the wire; the Python
      // middleware's split(None, 1) then raises ValueError. Compat mode reads "KEY" as "".
      expect(pairAnswer.status).toBe(500)
      expect(pairAnswer.text).toMatch(/^ValueError: HTTP_X_WSGIPROXY_STR_0 has no value/)
      expect(pick(environOf(ourAnswer, ourFront), ['S_EMPTY', 'U_EMPTY', 'PATH_INFO'])).toEqual({
        S_EMPTY: '',
        U_EMPTY: '',
        PATH_INFO: '/e',
      })
    },
    TEST_TIMEOUT,
  )

  it(
    'drops pickle values with one PICKLE_DROPPED warning per key, where the Python pair unpickles them',
    async () => {
      const c = {
        args: ['--pickle-key', 'P_LIST=[1, "two"]', '--pickle-key', 'P_STR="x"'],
      }
      const { pairFront, ourFront, receiver } = await startPair(kind, c)
      const [pairAnswer, ourAnswer] = await Promise.all([
        get(pairFront.origin, '/p'),
        get(ourFront.origin, '/p'),
      ])
      // A second request warns no more.
      expect((await get(ourFront.origin, '/p')).status).toBe(200)
      expect(pick(environOf(pairAnswer, pairFront), ['P_LIST', 'P_STR'])).toEqual({
        P_LIST: [1, 'two'],
        P_STR: 'x',
      })
      // On purpose: JavaScript has no pickle, and unpickling network data runs code; a receiver
      // decodes pickle only through a pickleCodec it is given, and says what it dropped.
      const ours = environOf(ourAnswer, ourFront)
      expect(pick(ours, ['P_LIST', 'P_STR'])).toEqual({})
      expect(receiver.warnings.map(({ code, key }) => ({ code, key }))).toEqual([
        { code: 'PICKLE_DROPPED', key: 'P_LIST' },
        { code: 'PICKLE_DROPPED', key: 'P_STR' },
      ])
    },
    TEST_TIMEOUT,
  )

  it(
    "cannot get a request from the original front whose href has a path: Node's parser answers 400 to `GET myapp/p`",
    async () => {
      // The original 0.1 front sends the href's path without its leading slash as the request
      // target. Node's HTTP parser refuses it (HPE_INVALID_URL) before any JavaScript runs, so
      // nothing of this project sees the request: the href must have no path (docs/protocol.md).
      // The parser's 400 says `Connection: close`, which no code of ours can leave out: a front
      // passing every response header on (as the original) turns it into wsgiref's 500.
      const { ourFront, receiver } = await startPair(kind, { hrefPath: '/myapp' }, COMPAT, {
        slashTarget: false,
        passHopByHop: false,
      })
      const answer = await get(ourFront.origin, '/p')
      expect(answer.status).toBe(400)
      expect(receiver.calls()).toBe(0)
      expect(receiver.warnings).toEqual([])
    },
    TEST_TIMEOUT,
  )
})
