// Hostile input fuzzing (issue 8, item 5) with fast-check: arbitrary bytes in the method, path,
// header names and values of raw HTTP requests sent over real sockets to the node listener
// (serve + exactProxy + undiciTransport); arbitrary protocol header values given to
// proxyMiddleware from a trusted peer, so decoding runs; arbitrary Signature and Signature-Input
// values given to createVerifier().verify.
import { connect } from 'node:net'
import type { AppResponse, Environ } from '@wsgiproxy/core'
import { createVerifier, proxyMiddleware } from '@wsgiproxy/core'
import * as fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Running } from '@wsgiproxy/test-kit/servers'
import { closeAll, readBody, send, startUpstream } from '@wsgiproxy/test-kit/servers'
import { startNodeExactProxy } from '@wsgiproxy/test-kit/node-proxy'
import { makeEnviron } from '@wsgiproxy/test-kit/environ-fixture'
import { scale } from './scale.ts'

const RUNS = scale(10_000, 300)
const CASE_LIMIT_MS = 5_000

/** A status a hostile request may get: the upstream's 200, any 4xx, or 501 / 505 (unsupported). */
function allowedRaw(status: number): boolean {
  return status === 200 || (status >= 400 && status < 500) || status === 501 || status === 505
}

interface RawOutcome {
  status: number | undefined
  /** The connection neither answered nor closed within the limit. */
  hung: boolean
}

// Without an answer this soon the request is taken as incomplete (a Content-Length it does not
// fill, no end of head) and the client half-closes, which must end the exchange.
const HALF_CLOSE_AFTER_MS = 300

/**
 * Writes one raw request and reads until the first response is complete or the socket closes;
 * half-closes when nothing comes back for a while.
 */
function rawCase(port: number, bytes: Buffer, head: boolean): Promise<RawOutcome> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    const received: Buffer[] = []
    let done = false
    const finish = (hung: boolean): void => {
      if (done) return
      done = true
      clearTimeout(limit)
      clearTimeout(halfClose)
      socket.destroy()
      const text = Buffer.concat(received).toString('latin1')
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(text)
      resolve({ status: match ? Number(match[1]) : undefined, hung })
    }
    const limit = setTimeout(() => finish(true), CASE_LIMIT_MS)
    const halfClose = setTimeout(() => socket.end(), HALF_CLOSE_AFTER_MS)
    socket.on('data', (data: Buffer) => {
      received.push(data)
      clearTimeout(halfClose)
      const text = Buffer.concat(received).toString('latin1')
      const end = text.indexOf('\r\n\r\n')
      if (end < 0) return
      const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end))?.[1]
      // A response to HEAD ends with its head, whatever its Content-Length says.
      if (head) finish(false)
      else if (length !== undefined && text.length - end - 4 >= Number(length)) finish(false)
      else if (text.endsWith('\r\n0\r\n\r\n')) finish(false)
    })
    socket.on('error', () => finish(false))
    socket.on('close', () => finish(false))
    socket.on('connect', () => socket.write(bytes))
  })
}

const token = fc.constantFrom('GET', 'POST', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE')
const anyText = (maxLength: number): fc.Arbitrary<string> =>
  fc.oneof(
    fc.string({ unit: 'binary', maxLength }),
    fc.string({ unit: 'grapheme-ascii', maxLength }),
  )
// Field values made of visible latin1 characters, tabs and spaces: what a parser lets through.
const fieldValue = fc.string({
  unit: fc
    .oneof(
      fc.integer({ min: 0x20, max: 0x7e }),
      fc.integer({ min: 0x80, max: 0xff }),
      fc.constant(0x09),
    )
    .map((code) => String.fromCharCode(code)),
  maxLength: 200,
})
const headerName = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      'Host',
      'Content-Length',
      'Transfer-Encoding',
      'Expect',
      'Connection',
      'Upgrade',
      'Cookie',
      'X-Forwarded-For',
      'Forwarded',
      'Signature',
      'Signature-Input',
      'X-WSGIProxy-String-REMOTE_USER',
    ),
  },
  { weight: 3, arbitrary: fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}$/) },
  { weight: 1, arbitrary: anyText(30) },
)
// Mostly well-formed requests with a hostile part, so many get past the parser to the proxy.
const rawRequest = fc.record({
  method: fc.oneof({ weight: 4, arbitrary: token }, { weight: 1, arbitrary: anyText(20) }),
  path: fc.oneof(
    { weight: 4, arbitrary: fc.webPath() },
    { weight: 1, arbitrary: anyText(200) },
    { weight: 1, arbitrary: fc.constant('*') },
  ),
  version: fc.oneof(
    { weight: 8, arbitrary: fc.constant('HTTP/1.1') },
    { weight: 1, arbitrary: fc.constant('HTTP/1.0') },
    { weight: 1, arbitrary: anyText(10) },
  ),
  host: fc.boolean(),
  headers: fc.array(
    fc.tuple(
      headerName,
      fc.oneof({ weight: 8, arbitrary: fieldValue }, { weight: 1, arbitrary: anyText(200) }),
    ),
    { maxLength: 8 },
  ),
  body: fc.oneof(fc.constant(''), anyText(100)),
})

function encode(request: {
  method: string
  path: string
  version: string
  host: boolean
  headers: Array<[string, string]>
  body: string
}): Buffer {
  const lines = [`${request.method} ${request.path} ${request.version}`]
  if (request.host) lines.push('Host: 127.0.0.1')
  for (const [name, value] of request.headers) lines.push(`${name}: ${value}`)
  // Latin1 keeps field values byte for byte; a head with wider code points goes as UTF-8.
  const head = `${lines.join('\r\n')}\r\n\r\n`
  const encoding = [...head].every((char) => char.charCodeAt(0) <= 0xff) ? 'latin1' : 'utf8'
  return Buffer.concat([Buffer.from(head, encoding), Buffer.from(request.body, 'utf8')])
}

describe('raw hostile requests to the node listener', () => {
  let upstream: Running
  let front: Running
  let forwarded = 0

  beforeAll(async () => {
    upstream = await startUpstream(async (req, res) => {
      forwarded++
      const body = await readBody(req)
      res.end(`ok ${body.length}`)
    })
    front = await startNodeExactProxy(upstream.port, {
      onError: () => {},
      timeouts: { headers: 2_000, body: 2_000 },
    })
  })
  afterAll(closeAll)

  it(`${RUNS} requests: each answered 200/4xx/501/505 or closed, never a hang or 5xx`, async () => {
    const seen = new Map<string, number>()
    const failures: string[] = []
    // fast-check generates the cases; they run 16 at a time, as 16 clients would.
    const cases = fc.sample(rawRequest, { numRuns: RUNS, seed: 8 })
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < cases.length) {
        const request = cases[next++] as (typeof cases)[number]
        const outcome = await rawCase(front.port, encode(request), request.method === 'HEAD')
        const key = outcome.hung ? 'hung' : String(outcome.status ?? 'closed')
        seen.set(key, (seen.get(key) ?? 0) + 1)
        if (outcome.hung || (outcome.status !== undefined && !allowedRaw(outcome.status))) {
          failures.push(`${key}: ${JSON.stringify(request)}`)
        }
      }
    }
    await Promise.all(Array.from({ length: 16 }, worker))
    console.log(
      `raw fuzz: ${JSON.stringify(Object.fromEntries(seen))}, ${forwarded} reached the upstream`,
    )
    for (const failure of failures.slice(0, 5)) console.log(failure)
    expect(failures.slice(0, 5)).toEqual([])
    const after = await send(front.origin, { path: '/after' })
    expect(after.status).toBe(200)
  })
})

async function drain(response: AppResponse): Promise<void> {
  if (response.body === null) return
  for await (const chunk of response.body) void chunk
}

const PROTOCOL_NAMES = [
  'HTTP_X_FORWARDED_FOR',
  'HTTP_X_FORWARDED_PROTO',
  'HTTP_X_FORWARDED_HOST',
  'HTTP_X_FORWARDED_PORT',
  'HTTP_X_FORWARDED_SERVER',
  'HTTP_X_FORWARDED_SCHEME',
  'HTTP_X_FORWARDED_SCRIPT_NAME',
  'HTTP_X_FORWARDED_PREFIX',
  'HTTP_FORWARDED',
  'HTTP_X_TRAVERSAL_PATH',
  'HTTP_X_TRAVERSAL_QUERY_STRING',
  'HTTP_X_WSGIPROXY_VERSION',
  'HTTP_X_WSGIPROXY_STRING_REMOTE_USER',
  'HTTP_X_WSGIPROXY_JSON_ROLES',
  'HTTP_X_WSGIPROXY_PICKLE_SESSION',
  'HTTP_X_SCRIPT_NAME',
  'HTTP_X_SCHEME',
]

describe('proxyMiddleware with arbitrary protocol header values from a trusted peer', () => {
  it(`${RUNS} environs: never throws, answers 200 or a documented 4xx`, async () => {
    const rejected: string[] = []
    const app = proxyMiddleware(
      (environ: Environ): AppResponse => ({
        status: 200,
        headers: [['content-type', 'text/plain']],
        body: (async function* () {
          yield new TextEncoder().encode(String(environ['PATH_INFO']))
        })(),
      }),
      { trustIps: ['loopback'], onReject: (error) => rejected.push(error.code) },
    )
    const statuses = new Map<number, number>()
    const headers = fc.dictionary(fc.constantFrom(...PROTOCOL_NAMES), anyText(300), {
      minKeys: 1,
      maxKeys: 6,
    })
    await fc.assert(
      fc.asyncProperty(headers, fc.oneof(fc.webPath(), anyText(50)), async (fields, path) => {
        const environ = makeEnviron({ REMOTE_ADDR: '127.0.0.1', PATH_INFO: path, ...fields })
        const response = await app(environ)
        await drain(response)
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1)
        expect([200, 400, 431]).toContain(response.status)
      }),
      { numRuns: RUNS },
    )
    console.log(
      `middleware fuzz: ${JSON.stringify(Object.fromEntries(statuses))}, ${rejected.length} rejected`,
    )
  })
})

describe('createVerifier().verify with arbitrary Signature and Signature-Input', () => {
  it(`${RUNS} environs: never throws, never valid`, async () => {
    const verifier = createVerifier({
      keys: [{ id: 'k1', secret: new TextEncoder().encode('s'.repeat(32)) }],
    })
    const component = fc.oneof(
      fc.constantFrom('"@method"', '"@authority"', '"@path"', '"@query"', '"content-digest"'),
      anyText(20),
    )
    const structured = fc
      .record({
        label: fc.oneof(fc.constant('wsgiproxy'), anyText(10)),
        components: fc.array(component, { maxLength: 40 }),
        params: fc.array(
          fc.tuple(
            fc.constantFrom('created', 'expires', 'keyid', 'alg', 'nonce', 'tag', 'x'),
            fc.oneof(
              fc.integer().map(String),
              anyText(20).map((s) => JSON.stringify(s)),
            ),
          ),
          { maxLength: 8 },
        ),
      })
      .map(
        ({ label, components, params }) =>
          `${label}=(${components.join(' ')})${params.map(([k, v]) => `;${k}=${v}`).join('')}`,
      )
    const signature = fc.oneof(
      anyText(200),
      fc
        .tuple(fc.oneof(fc.constant('wsgiproxy'), anyText(10)), fc.base64String({ maxLength: 120 }))
        .map(([label, b64]) => `${label}=:${b64}:`),
    )
    const outcomes = new Map<string, number>()
    await fc.assert(
      fc.asyncProperty(
        fc.option(fc.oneof(structured, anyText(300)), { nil: undefined }),
        fc.option(signature, { nil: undefined }),
        async (input, sig) => {
          const environ = makeEnviron({
            HTTP_HOST: 'example.com',
            ...(input === undefined ? {} : { HTTP_SIGNATURE_INPUT: input }),
            ...(sig === undefined ? {} : { HTTP_SIGNATURE: sig }),
          })
          const outcome = await verifier.verify(environ)
          const key = outcome.status === 'invalid' ? outcome.reason : outcome.status
          outcomes.set(key, (outcomes.get(key) ?? 0) + 1)
          expect(['absent', 'invalid']).toContain(outcome.status)
        },
      ),
      { numRuns: RUNS },
    )
    console.log(`verifier fuzz: ${JSON.stringify(Object.fromEntries(outcomes))}`)
  })
})
