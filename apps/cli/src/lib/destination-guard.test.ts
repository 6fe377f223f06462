import { WsgiProxyError } from '@wsgiproxy/core'
import { describe, expect, it } from 'vitest'
import { createDestinationGuard, refusalProblem } from './destination-guard.ts'
import type { DestinationGuardOptions } from './destination-guard.ts'

const PUBLIC_ADDRESS = '93.184.216.34'

/** A guard whose resolver answers from a table, counting lookups. */
function guardWith(
  answers: Record<string, string[] | Error>,
  options: Partial<DestinationGuardOptions> = {},
) {
  const lookups: string[] = []
  const guard = createDestinationGuard({
    resolve: async (hostname) => {
      lookups.push(hostname)
      const answer = answers[hostname]
      if (answer instanceof Error) throw answer
      return answer ?? []
    },
    ...options,
  })
  return { guard, lookups }
}

function codeOf(result: unknown): string {
  return result instanceof WsgiProxyError ? result.code : 'ALLOWED'
}

describe('createDestinationGuard', () => {
  it('looks a name up once and answers the addresses it checked, to connect to', async () => {
    // A rebinding resolver: public the first time, loopback after.
    let calls = 0
    const guard = createDestinationGuard({
      resolve: async () => (calls++ === 0 ? [PUBLIC_ADDRESS] : ['127.0.0.1']),
    })
    const checked = await guard.check('rebind.example', 443)
    expect(checked).toEqual({ host: 'rebind.example', port: 443, addresses: [PUBLIC_ADDRESS] })
    expect(calls).toBe(1)
  })

  it('checks every address a name resolves to', async () => {
    const { guard } = guardWith({ 'mixed.example': [PUBLIC_ADDRESS, '10.0.0.1'] })
    const refused = await guard.check('mixed.example', 80)
    expect(codeOf(refused)).toBe('TARGET_NOT_ALLOWED')
    expect((refused as WsgiProxyError).message).toBe(
      'the target mixed.example:80, which resolves to 10.0.0.1, is not in the allow list (add --allow mixed.example:80 to permit it)',
    )
  })

  it('reads every spelling of an address as the URL parser does', async () => {
    const { guard, lookups } = guardWith({})
    for (const host of [
      '127.0.0.1',
      '127.1',
      '2130706433',
      '0x7f000001',
      '127.000.000.001',
      '127.0.0.1.',
      '[::ffff:127.0.0.1]',
      '::ffff:127.0.0.1',
      'LOCALHOST.',
      'foo.localhost',
      '::1',
      '0',
    ]) {
      expect({ host, code: codeOf(await guard.check(host, 6379)) }).toEqual({
        host,
        code: 'TARGET_NOT_ALLOWED',
      })
    }
    expect(lookups).toEqual([])
    const loopback = createDestinationGuard({ allow: ['loopback'], resolve: async () => [] })
    expect(await loopback.check('[::ffff:127.0.0.1]', 6379)).toEqual({
      host: '127.0.0.1',
      port: 6379,
      addresses: ['127.0.0.1'],
    })
    expect(await loopback.check('localhost', 6379)).toEqual({
      host: 'localhost',
      port: 6379,
      addresses: ['127.0.0.1', '::1'],
    })
  })

  it('lets --deny win over --allow: a name before any lookup, an address after it', async () => {
    const { guard, lookups } = guardWith(
      { 'internal.example': ['10.1.2.3'], 'other.example': [PUBLIC_ADDRESS] },
      { allow: ['internal.example', 'public'], deny: ['*.other.example', 'other.example:443'] },
    )
    const name = await guard.check('other.example', 443)
    expect((name as WsgiProxyError).message).toBe(
      'the target other.example:443 is denied by --deny other.example:443',
    )
    expect(lookups).toEqual([])
    expect(codeOf(await guard.check('other.example', 80))).toBe('ALLOWED')
    expect(codeOf(await guard.check('a.other.example', 80))).toBe('TARGET_NOT_ALLOWED')
    // A listed name is connected to whatever it resolves to...
    expect(await guard.check('internal.example', 80)).toEqual({
      host: 'internal.example',
      port: 80,
      addresses: ['10.1.2.3'],
    })
    // ...unless an address it resolves to is denied.
    const { guard: denied } = guardWith(
      { 'internal.example': ['10.1.2.3'] },
      { allow: ['internal.example'], deny: ['10.0.0.0/8'] },
    )
    const refused = await denied.check('internal.example', 80)
    expect((refused as WsgiProxyError).message).toBe(
      'the target internal.example:80, which resolves to 10.1.2.3, is denied by --deny 10.0.0.0/8',
    )
    const { guard: literal } = guardWith({}, { allow: ['loopback'], deny: ['[::1]:22'] })
    expect(codeOf(await literal.check('[::1]', 22))).toBe('TARGET_NOT_ALLOWED')
    expect(codeOf(await literal.check('[::1]', 23))).toBe('ALLOWED')
  })

  it('answers LOOP_DETECTED for this proxy itself, whatever the lists say', async () => {
    const { guard } = guardWith(
      { 'self.example': [PUBLIC_ADDRESS, '127.0.0.1'] },
      {
        allow: ['loopback', 'public'],
        isSelf: (address, port) => address === '127.0.0.1' && port === 8080,
      },
    )
    expect(codeOf(await guard.check('127.1', 8080))).toBe('LOOP_DETECTED')
    expect(codeOf(await guard.check('localhost', 8080))).toBe('LOOP_DETECTED')
    expect(codeOf(await guard.check('self.example', 8080))).toBe('LOOP_DETECTED')
    expect(codeOf(await guard.check('127.0.0.1', 8081))).toBe('ALLOWED')
  })

  it('answers 502 for a name that does not resolve, 403 for an answer that is not an address', async () => {
    const { guard } = guardWith({
      'gone.example': Object.assign(new Error('getaddrinfo ENOTFOUND gone.example'), {
        code: 'ENOTFOUND',
      }),
      'odd.example': ['not-an-address'],
    })
    const gone = await guard.check('gone.example', 80)
    expect(codeOf(gone)).toBe('UPSTREAM_UNREACHABLE')
    expect(codeOf(await guard.check('empty.example', 80))).toBe('UPSTREAM_UNREACHABLE')
    expect(codeOf(await guard.check('odd.example', 80))).toBe('TARGET_NOT_ALLOWED')
    for (const [host, port] of [
      ['', 80],
      ['a b', 80],
      ['example.com', 0],
      ['example.com', 65536],
    ] as const) {
      expect(codeOf(await guard.check(host, port))).toBe('BAD_REQUEST')
    }
  })
})

describe('refusalProblem', () => {
  it('answers a fixed detail that names no target', () => {
    const error = new WsgiProxyError('TARGET_NOT_ALLOWED', 'the target secret.internal:22 ...')
    const problem = refusalProblem(error)
    expect(problem).toEqual({
      status: 403,
      code: 'TARGET_NOT_ALLOWED',
      detail:
        'this proxy does not connect to the target (the proxy operator decides where it may connect)',
    })
    expect(refusalProblem(new WsgiProxyError('UPSTREAM_UNREACHABLE', 'cannot resolve x'))).toEqual({
      status: 502,
      code: 'UPSTREAM_UNREACHABLE',
      detail: 'the target could not be reached',
    })
  })
})
