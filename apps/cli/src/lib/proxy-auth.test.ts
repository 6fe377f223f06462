import { describe, expect, it } from 'vitest'
import { CliError } from './errors.ts'
import { createProxyAuth, hashPassword, parseAuthFile, userNameProblem } from './proxy-auth.ts'

// Cheap parameters: the format and the checks are what is tested here, not the cost.
const FAST = { N: 1024, r: 8, p: 1 }

function basic(userPass: string): string {
  return `Basic ${Buffer.from(userPass).toString('base64')}`
}

function problemOf(run: () => unknown): string {
  let caught: unknown
  try {
    run()
  } catch (error) {
    caught = error
  }
  expect(caught).toBeInstanceOf(CliError)
  return (caught as CliError).message
}

describe('hashPassword', () => {
  it('writes scrypt$N$r$p$salt$hash with a fresh salt each time', async () => {
    const first = await hashPassword('secret', FAST)
    const second = await hashPassword('secret', FAST)
    expect(first).toMatch(/^scrypt\$1024\$8\$1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$/)
    expect(second).not.toBe(first)
  })
})

describe('createProxyAuth', () => {
  it('accepts the right password of a listed user, from Proxy-Authorization: Basic', async () => {
    const text = `alice:${await hashPassword('open: sesame ✓', FAST)}\nbob:${await hashPassword('pw', FAST)}\n`
    const auth = createProxyAuth(parseAuthFile(text, 'users'))
    expect(await auth.check(basic('alice:open: sesame ✓'))).toEqual({ ok: true, user: 'alice' })
    // Remembered: the same credentials again, and the scheme in any case.
    expect(
      await auth.check(`basic  ${Buffer.from('alice:open: sesame ✓').toString('base64')}`),
    ).toEqual({
      ok: true,
      user: 'alice',
    })
    expect(await auth.check(basic('bob:pw'))).toEqual({ ok: true, user: 'bob' })
    expect(await auth.check(basic('alice:pw'))).toEqual({
      ok: false,
      reason: 'wrong password',
      user: 'alice',
    })
    expect(await auth.check(basic('carol:pw'))).toEqual({
      ok: false,
      reason: 'unknown user',
      user: 'carol',
    })
  })

  it('refuses missing and malformed credentials without hashing', async () => {
    const auth = createProxyAuth(parseAuthFile(`alice:${await hashPassword('pw', FAST)}`, 'users'))
    expect(await auth.check(undefined)).toEqual({ ok: false, reason: 'missing' })
    expect(await auth.check('')).toEqual({ ok: false, reason: 'missing' })
    for (const header of [
      'Bearer abc',
      'Basic',
      'Basic !!!',
      basic('no-colon'),
      basic(':pw'),
      `${basic('alice:pw')}, ${basic('alice:pw')}`,
      `Basic ${'A'.repeat(5000)}`,
    ]) {
      expect({ header, result: await auth.check(header) }).toEqual({
        header,
        result: { ok: false, reason: 'malformed' },
      })
    }
  })
})

describe('parseAuthFile', () => {
  it('reads user:hash lines, skipping blank lines and # comments, CRLF or LF', async () => {
    const hash = await hashPassword('pw', FAST)
    const users = parseAuthFile(`# users\r\n\r\nalice:${hash}\r\n  bob:${hash}  \n`, 'users')
    expect([...users.keys()]).toEqual(['alice', 'bob'])
  })

  it('names the line of a malformed entry without quoting it', async () => {
    const hash = await hashPassword('pw', FAST)
    const [, N, r, p, salt, key] = hash.split('$')
    const cases: Array<[string, string]> = [
      ['alice', 'expected user:scrypt$N$r$p$salt$hash (wsgiproxy passwd USER prints one)'],
      [':' + hash, 'expected user:scrypt$N$r$p$salt$hash (wsgiproxy passwd USER prints one)'],
      [
        'alice:bcrypt$2b$12$xyz',
        'expected user:scrypt$N$r$p$salt$hash after the user name (wsgiproxy passwd USER prints one)',
      ],
      [
        `alice:scrypt$1000$${r}$${p}$${salt}$${key}`,
        'scrypt N must be a power of two from 1024 to 1048576',
      ],
      [`alice:scrypt$${N}$0$${p}$${salt}$${key}`, 'scrypt r must be 1–32 and p 1–16'],
      [
        `alice:scrypt$1048576$32$${p}$${salt}$${key}`,
        'scrypt N × r needs more than 256 MiB; use a lower N',
      ],
      [`alice:scrypt$${N}$${r}$${p}$c2FsdA==$${key}`, 'the salt must be 8–64 bytes in base64'],
      [`alice:scrypt$${N}$${r}$${p}$${salt}$not base64`, 'the hash must be 16–64 bytes in base64'],
    ]
    for (const [line, message] of cases) {
      expect(problemOf(() => parseAuthFile(`# first\n${line}\n`, 'users'))).toBe(
        `auth file users line 2: ${message}`,
      )
    }
    expect(problemOf(() => parseAuthFile(`al ice:${hash}`, 'users'))).toMatch(
      /^auth file users line 1: a user name must be 1–128 characters without ":", spaces or control characters/,
    )
    expect(userNameProblem('#alice')).toMatch(/not starting with "#"/)
    expect(userNameProblem('alice@example.com')).toBeUndefined()
    expect(problemOf(() => parseAuthFile(`alice:${hash}\nalice:${hash}`, 'users'))).toBe(
      'auth file users line 2: user "alice" is listed twice',
    )
    expect(problemOf(() => parseAuthFile('# nobody yet\n', 'users'))).toBe(
      'auth file users has no users: add user:scrypt$N$r$p$salt$hash lines (wsgiproxy passwd USER prints one)',
    )
  })
})
