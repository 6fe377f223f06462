import { describe, expect, it } from 'vitest'
import { errorResponse, WsgiProxyError } from '@wsgiproxy/core'
import type { AppResponse, Environ, UpgradableApp, WsgiProxyErrorCode } from '@wsgiproxy/core'
import type { BackendProcess } from './_backend-process.ts'
import { TrackedBody } from '@wsgiproxy/core/adapter'
import { Attempts, createPoolApp, mayRetryElsewhere } from './_pool-requests.ts'

function environ(method = 'GET', body?: string): Environ {
  const input = body === undefined ? null : bodyOf(body)
  return {
    REQUEST_METHOD: method,
    SCRIPT_NAME: '',
    PATH_INFO: '/',
    QUERY_STRING: '',
    SERVER_NAME: 'front.test',
    SERVER_PORT: '80',
    SERVER_PROTOCOL: 'HTTP/1.1',
    'wsgi.url_scheme': 'http',
    'wsgi.input': input,
  }
}

function error(code: WsgiProxyErrorCode): WsgiProxyError {
  return new WsgiProxyError(code, `failed with ${code}`)
}

async function* bodyOf(value: string): AsyncIterable<Uint8Array> {
  yield new TextEncoder().encode(value)
}

async function text(body: AsyncIterable<Uint8Array> | null): Promise<string> {
  let out = ''
  for await (const chunk of body ?? []) out += new TextDecoder().decode(chunk)
  return out
}

/**
 * A pool of fake instances whose proxy apps behave as core's: a failure goes to the error hook
 * (`attempts.hook`), and its answer (or a problem response) is the response. `script` gives each
 * instance's behaviour by its index; `hooked` collects what reached the user's hook.
 */
function pool(
  script: Array<
    (environ: Environ, fail: (e: WsgiProxyError) => Promise<AppResponse>) => Promise<AppResponse>
  >,
) {
  const hooked: Array<{ code: string; environ: Environ }> = []
  const attempts = new Attempts((e, env) => {
    hooked.push({ code: e.code, environ: env })
  })
  const sent: number[] = []
  const backends = script.map((answer, index) => {
    const fail = async (e: WsgiProxyError): Promise<AppResponse> =>
      (await attempts.hook(e, current)) ?? errorResponse(e)
    let current: Environ
    const proxy = Object.assign(
      (env: Environ) => {
        current = env
        sent.push(index)
        return answer(env, fail)
      },
      { prepareUpgrade: () => Promise.reject(new Error('not here')) },
    ) as UpgradableApp
    return { pid: 100 + index, inFlight: 0, proxy, release() {} } as unknown as BackendProcess
  })
  const released: number[] = []
  const app = createPoolApp({
    acquire: () => Promise.resolve(backends[0] as BackendProcess),
    release: (backend) => released.push(backend.pid ?? 0),
    respond: async (e, env) => {
      hooked.push({ code: (e as WsgiProxyError).code, environ: env })
      return errorResponse(e as WsgiProxyError)
    },
    another: (failed) => backends.find((backend) => backend !== failed),
    attempts,
  })
  return { app, hooked, sent, released }
}

const ok = async (env: Environ): Promise<AppResponse> => ({
  status: 200,
  headers: [],
  body: bodyOf(`ok ${await text(env['wsgi.input'])}`),
})

describe('mayRetryElsewhere', () => {
  // The whole table of core's rule is in core's retry-rules.test.ts; here, that it is the rule.
  it.each([
    ['GET', undefined, 'UPSTREAM_RESET', false, true],
    ['POST', 'body', 'UPSTREAM_RESET', false, false],
    ['POST', 'body', 'UPSTREAM_UNREACHABLE', false, true],
    ['POST', 'body', 'UPSTREAM_UNREACHABLE', true, false],
  ] as const)(
    '%s with body %j after %s (body read: %s): %s',
    (method, body, code, touched, expected) => {
      const env = environ(method, body)
      const input = env['wsgi.input']
      const tracked = input === null ? null : new TrackedBody(input)
      if (touched) tracked?.[Symbol.asyncIterator]()
      expect(mayRetryElsewhere(env, error(code), tracked)).toBe(expected)
    },
  )

  it('never sends again for a client that has gone', () => {
    const controller = new AbortController()
    controller.abort()
    const env = { ...environ(), 'wsgiproxy.signal': controller.signal }
    expect(mayRetryElsewhere(env, error('UPSTREAM_UNREACHABLE'), null)).toBe(false)
  })
})

describe('createPoolApp', () => {
  it('sends a GET cut before its answer to another instance; the hook sees nothing', async () => {
    const { app, hooked, sent, released } = pool([(_, fail) => fail(error('UPSTREAM_RESET')), ok])
    const response = await app(environ())
    expect(response.status).toBe(200)
    expect(await text(response.body)).toBe('ok ')
    expect(sent).toEqual([0, 1])
    expect(released).toEqual([100, 101])
    expect(hooked).toEqual([])
  })

  it('sends a POST that never connected to another instance with its whole body', async () => {
    const { app, hooked, sent } = pool([(_, fail) => fail(error('UPSTREAM_UNREACHABLE')), ok])
    const response = await app(environ('POST', 'the body'))
    expect(await text(response.body)).toBe('ok the body')
    expect(sent).toEqual([0, 1])
    expect(hooked).toEqual([])
  })

  it('answers the failure of a POST whose body was read, calling the hook once', async () => {
    const request = environ('POST', 'the body')
    const { app, hooked, sent } = pool([
      async (env, fail) => {
        await text(env['wsgi.input'])
        return fail(error('UPSTREAM_UNREACHABLE'))
      },
      ok,
    ])
    const response = await app(request)
    expect(response.status).toBe(502)
    expect(sent).toEqual([0])
    // The user's hook gets the request as the client sent it.
    expect(hooked).toEqual([{ code: 'UPSTREAM_UNREACHABLE', environ: request }])
  })

  it('sends a request again once at most, and the hook sees only the last failure', async () => {
    const { app, hooked, sent } = pool([
      (_, fail) => fail(error('UPSTREAM_RESET')),
      (_, fail) => fail(error('UPSTREAM_UNREACHABLE')),
    ])
    const response = await app(environ())
    expect(response.status).toBe(502)
    expect(sent).toEqual([0, 1])
    expect(hooked.map((h) => h.code)).toEqual(['UPSTREAM_UNREACHABLE'])
  })

  it('answers the failure when no other instance is ready', async () => {
    const { app, hooked, sent } = pool([(_, fail) => fail(error('UPSTREAM_RESET'))])
    expect((await app(environ())).status).toBe(502)
    expect(sent).toEqual([0])
    expect(hooked.map((h) => h.code)).toEqual(['UPSTREAM_RESET'])
  })

  it('passes a failure after the answer began (a cut body) to the hook with the request', async () => {
    const request = environ('POST', 'x')
    let late: ((e: WsgiProxyError) => Promise<AppResponse>) | undefined
    const { app, hooked } = pool([
      async (_, fail) => {
        late = fail
        return { status: 200, headers: [], body: bodyOf('partial') }
      },
    ])
    expect((await app(request)).status).toBe(200)
    await late?.(error('UPSTREAM_RESET'))
    expect(hooked).toEqual([{ code: 'UPSTREAM_RESET', environ: request }])
  })
})
