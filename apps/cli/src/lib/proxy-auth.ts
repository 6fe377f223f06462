import { createHmac, randomBytes, scrypt, timingSafeEqual } from 'node:crypto'
import type { ScryptOptions } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { usageError } from './errors.ts'
import type { Logger } from './log.ts'
import type { Problem } from './problem.ts'

// Proxy authentication for `wsgiproxy forward --auth-file FILE`: HTTP Basic credentials in
// `Proxy-Authorization` (RFC 9110 §11.7.2, RFC 7617), checked against a file of `user:HASH` lines
// where HASH is a salted scrypt hash (RFC 7914): `scrypt$N$r$p$salt$hash`, salt and hash in
// base64. `wsgiproxy passwd USER` prints such a line.

/** The cost parameters of a scrypt hash (RFC 7914 §2). */
export interface ScryptParams {
  /** CPU and memory cost, a power of two. */
  N: number
  /** Block size. */
  r: number
  /** Parallelisation. */
  p: number
}

/**
 * The parameters `wsgiproxy passwd` hashes with: N = 2^14, r = 8, p = 1, the interactive-login
 * parameters of the scrypt paper (about 16 MiB and a few tens of milliseconds per check).
 */
export const DEFAULT_SCRYPT: ScryptParams = { N: 16_384, r: 8, p: 1 }

/** What the client gets without valid credentials: 407 (RFC 9110 §15.5.8). */
export const PROXY_AUTH_REQUIRED: Problem = {
  status: 407,
  code: 'PROXY_AUTH_REQUIRED',
  detail: 'this proxy needs a user name and password (Proxy-Authorization: Basic)',
}

/** The challenge sent with a 407 (RFC 9110 §11.7.1, RFC 7617 §2). */
export const PROXY_AUTHENTICATE: [string, string] = [
  'proxy-authenticate',
  'Basic realm="wsgiproxy"',
]

/** The answer of {@link ProxyAuth.check}. */
export type AuthResult =
  | { ok: true; user: string }
  | {
      ok: false
      /** Why: no header, not Basic credentials, a user not in the file, a wrong password. */
      reason: 'missing' | 'malformed' | 'unknown user' | 'wrong password'
      /** The user name sent, when there was one. */
      user?: string
    }

/** Checks `Proxy-Authorization` against the users of an auth file. */
export interface ProxyAuth {
  /**
   * Checks a `Proxy-Authorization` value. Passwords are compared as scrypt hashes in constant
   * time; an unknown user costs the same hash, so the time taken does not tell users apart.
   *
   * @param header - the header's value, if any
   * @returns the user, or why not
   */
  check(header: string | undefined): Promise<AuthResult>
}

/** A stored password hash. */
interface PasswordHash extends ScryptParams {
  salt: Buffer
  hash: Buffer
}

const SALT_BYTES = 16
const KEY_BYTES = 32
// User names: no ':' (RFC 7617 §2 splits user-pass at the first), no spaces or control
// characters (they would not survive a line of the file).
const USER_NAME = /^[^\s:\p{Cc}]{1,128}$/u
const HASH_FORMAT = 'scrypt$N$r$p$salt$hash'
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/
// RFC 7617 §2: "Basic" and the base64 of user-pass; bounded before it is decoded.
const BASIC = /^basic +([A-Za-z0-9+/]+={0,2}) *$/i
const MAX_HEADER = 4096
// Checks that passed, remembered so that a client sending the same credentials with every
// request does not cost a scrypt each time.
const MAX_REMEMBERED = 1024
// scrypt runs on libuv's thread pool, which DNS lookups share: at most this many at once.
const MAX_HASHING = 2

/**
 * Hashes a password for an auth file line.
 *
 * @param password - the password
 * @param params - the cost; default {@link DEFAULT_SCRYPT}
 * @returns `scrypt$N$r$p$salt$hash`, salt and hash in base64
 */
export async function hashPassword(
  password: string,
  params: ScryptParams = DEFAULT_SCRYPT,
): Promise<string> {
  const salt = randomBytes(SALT_BYTES)
  const hash = await derive(password, { ...params, salt, hash: Buffer.alloc(KEY_BYTES) })
  return `scrypt$${params.N}$${params.r}$${params.p}$${salt.toString('base64')}$${hash.toString('base64')}`
}

/**
 * Why a user name cannot be in an auth file, or `undefined` when it can.
 *
 * @param user - the name
 * @returns the problem, lower-case
 */
export function userNameProblem(user: string): string | undefined {
  if (USER_NAME.test(user) && !user.startsWith('#')) return undefined
  return `a user name must be 1–128 characters without ":", spaces or control characters, not starting with "#" (got ${JSON.stringify(user.length > 40 ? `${user.slice(0, 37)}...` : user)})`
}

/**
 * Reads an auth file: `user:HASH` lines, blank lines and `#` comments.
 *
 * @param file - the path
 * @returns the checker
 * @throws CliError (exit 1) for a file that cannot be read, a line that is not a user and a
 * hash (naming the line, never quoting the hash), a user listed twice, or no users
 */
export async function loadAuthFile(file: string): Promise<ProxyAuth> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    throw usageError(
      code === 'ENOENT'
        ? `auth file ${file} does not exist: create it with wsgiproxy passwd USER >> ${file}`
        : `cannot read auth file ${file} (${code ?? String(error)})`,
    )
  }
  return createProxyAuth(parseAuthFile(text, file))
}

/**
 * Parses the text of an auth file.
 *
 * @param text - the file's text
 * @param file - its path, for messages
 * @returns the users and their hashes
 * @throws CliError (exit 1) naming the line
 */
export function parseAuthFile(text: string, file: string): ReadonlyMap<string, PasswordHash> {
  const users = new Map<string, PasswordHash>()
  for (const [index, raw] of text.split('\n').entries()) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const where = `auth file ${file} line ${index + 1}`
    const colon = line.indexOf(':')
    if (colon < 1) {
      throw usageError(`${where}: expected user:${HASH_FORMAT} (wsgiproxy passwd USER prints one)`)
    }
    const user = line.slice(0, colon)
    const nameProblem = userNameProblem(user)
    if (nameProblem !== undefined) throw usageError(`${where}: ${nameProblem}`)
    if (users.has(user)) throw usageError(`${where}: user ${JSON.stringify(user)} is listed twice`)
    const hash = parseHash(line.slice(colon + 1))
    if (typeof hash === 'string') throw usageError(`${where}: ${hash}`)
    users.set(user, hash)
  }
  if (users.size === 0) {
    throw usageError(
      `auth file ${file} has no users: add user:${HASH_FORMAT} lines (wsgiproxy passwd USER prints one)`,
    )
  }
  return users
}

/**
 * Creates the checker of these users.
 *
 * @param users - user names and their hashes (from {@link parseAuthFile})
 * @returns the checker
 */
export function createProxyAuth(users: ReadonlyMap<string, PasswordHash>): ProxyAuth {
  const first = users.values().next().value
  // An unknown user is checked against this, at the cost of a real one.
  const dummy: PasswordHash = {
    ...(first ?? { ...DEFAULT_SCRYPT, hash: Buffer.alloc(KEY_BYTES) }),
    salt: randomBytes(SALT_BYTES),
  }
  // Remembered credentials are keyed by an HMAC under a key of this process, not kept as sent.
  const memoKey = randomBytes(32)
  const remembered = new Map<string, string>()
  const gate = createGate(MAX_HASHING)
  return {
    async check(header) {
      if (header === undefined || header === '') return { ok: false, reason: 'missing' }
      const credentials = parseBasic(header)
      if (credentials === undefined) return { ok: false, reason: 'malformed' }
      const { user, password } = credentials
      const memo = createHmac('sha256', memoKey).update(`${user}\0${password}`).digest('base64')
      if (remembered.get(memo) === user) return { ok: true, user }
      const stored = users.get(user)
      const expected = stored ?? dummy
      const derived = await gate(() => derive(password, expected))
      const same = timingSafeEqual(derived, expected.hash)
      if (stored === undefined) return { ok: false, reason: 'unknown user', user }
      if (!same) return { ok: false, reason: 'wrong password', user }
      if (remembered.size >= MAX_REMEMBERED) {
        remembered.delete(remembered.keys().next().value ?? '')
      }
      remembered.set(memo, user)
      return { ok: true, user }
    },
  }
}

/**
 * Logs a refused check for the operator: the user name and the reason (never the password);
 * nothing for a request without credentials, which is how every client starts.
 *
 * @param logger - the logger
 * @param result - the check's answer
 */
export function logAuthFailure(logger: Logger, result: AuthResult): void {
  if (result.ok || result.reason === 'missing') return
  const user = result.user === undefined ? '' : ` for user ${JSON.stringify(result.user)}`
  logger.error(`proxy authentication failed${user}: ${result.reason}`)
}

function parseBasic(header: string): { user: string; password: string } | undefined {
  if (header.length > MAX_HEADER) return undefined
  const match = BASIC.exec(header)
  if (match === null) return undefined
  const decoded = Buffer.from(match[1] ?? '', 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 1) return undefined
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) }
}

// `scrypt$N$r$p$salt$hash`, or what is wrong with it (never quoting it).
function parseHash(text: string): PasswordHash | string {
  const parts = text.split('$')
  if (parts.length !== 6 || parts[0] !== 'scrypt') {
    return `expected user:${HASH_FORMAT} after the user name (wsgiproxy passwd USER prints one)`
  }
  const N = whole(parts[1])
  const r = whole(parts[2])
  const p = whole(parts[3])
  if (N < 1024 || N > 1_048_576 || (N & (N - 1)) !== 0) {
    return 'scrypt N must be a power of two from 1024 to 1048576'
  }
  if (r < 1 || r > 32 || p < 1 || p > 16) return 'scrypt r must be 1–32 and p 1–16'
  if (128 * N * r > 256 * 1024 * 1024) return 'scrypt N × r needs more than 256 MiB; use a lower N'
  const salt = base64(parts[4] ?? '')
  const hash = base64(parts[5] ?? '')
  if (salt === undefined || salt.byteLength < 8 || salt.byteLength > 64) {
    return 'the salt must be 8–64 bytes in base64'
  }
  if (hash === undefined || hash.byteLength < 16 || hash.byteLength > 64) {
    return 'the hash must be 16–64 bytes in base64'
  }
  return { N, r, p, salt, hash }
}

// A whole number as the file writes it, 0 for anything else.
function whole(text: string | undefined): number {
  return text !== undefined && /^[1-9][0-9]{0,8}$/.test(text) ? Number(text) : 0
}

function base64(text: string): Buffer | undefined {
  if (!BASE64.test(text)) return undefined
  const bytes = Buffer.from(text, 'base64')
  // Only the canonical spelling: a stray bit would otherwise be dropped silently.
  return bytes.toString('base64') === text ? bytes : undefined
}

// The scrypt hash of a password with a stored hash's parameters, salt and length.
function derive(password: string, stored: PasswordHash): Promise<Buffer> {
  const { N, r, p, salt, hash } = stored
  // OpenSSL needs 128·r·(N + p + 2) bytes; Node's default limit (32 MiB) is too low for some.
  const options: ScryptOptions = { N, r, p, maxmem: 128 * r * (N + p + 2) + 1024 * 1024 }
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, hash.byteLength, options, (error, key) => {
      if (error === null) resolve(key)
      else reject(error)
    })
  })
}

// Runs at most `limit` tasks at once; the others wait their turn.
function createGate(limit: number): <T>(task: () => Promise<T>) => Promise<T> {
  let running = 0
  const waiting: Array<() => void> = []
  return async (task) => {
    if (running < limit) running++
    // A finished task hands its place over, so `running` stays at most `limit`.
    else await new Promise<void>((resolve) => waiting.push(resolve))
    try {
      return await task()
    } finally {
      const next = waiting.shift()
      if (next === undefined) running--
      else next()
    }
  }
}
