import * as z from 'zod'
import { WsgiProxyError } from '../errors.ts'
import { parseOptions } from '../options.ts'
import { trimOws } from '../_text.ts'
import type { SigningKey } from '../types.ts'

/**
 * The fewest secret bytes a key may have: 32 random bytes, the output size of SHA-256
 * (RFC 2104 §3: keys shorter than the hash output are discouraged; docs/design.md §7).
 */
export const MIN_SECRET_BYTES = 32

/** Options of {@link parseKeyFile}. */
export interface ParseKeyFileOptions {
  /**
   * Accept secrets shorter than {@link MIN_SECRET_BYTES} bytes, with a `console.warn` naming the
   * key id. Default `false`: such a key is refused, since a short HMAC key can be guessed.
   */
  allowWeakSecret?: boolean
}

const parseKeyFileOptions = z.strictObject({
  allowWeakSecret: z.boolean().optional(),
})

// Key ids are public and go into the `keyid` signature parameter (docs/signing.md, "Keys").
const KEY_ID = /^[A-Za-z0-9._~-]{1,64}$/
// RFC 4648 §4: the standard alphabet with `=` padding; nothing else is accepted.
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/
const KEY_LINE = /^(\S+)[ \t]+base64:(\S*)$/
const COMMENT = /^[ \t]*#/
const MARKER = /(?:^|[ \t])base64:/
const BARE_KEY_ID = 'default'

/**
 * Parses a key file into signing keys: the first key signs, all of them verify.
 *
 * A file is one of two kinds:
 * - a **key list** when any line is a `#` comment or contains `base64:` at its start or after a
 *   space or tab. Every line that is not blank or a `#` comment must then be
 *   `keyid base64:secret`: a key id matching `^[A-Za-z0-9._~-]{1,64}$`, unique in the file, and
 *   a non-empty secret in standard base64 with `=` padding (RFC 4648 §4; base64url, missing
 *   padding and non-zero padding bits are refused). Surrounding spaces and `\r` are ignored.
 *   A file that looks like a key list but has one bad line is therefore an error, never
 *   silently read as a bare secret;
 * - otherwise a **bare secret** (the legacy format): the whole content minus one trailing `\n`
 *   or `\r\n`, with key id `default`; its bytes are the UTF-8 of the text. A bare secret that
 *   contains whitespace is accepted with a `console.warn`, since that is usually a mistake.
 *   A bare secret cannot start a line with `#` (such a file is a key list without keys).
 *
 * ```
 * # wsgiproxy keys v1: the first line signs, all lines verify
 * k2026-11 base64:uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==
 * k2026-05 base64:<the previous key, verify-only until removed>
 * ```
 *
 * To rotate: add the new key to every verifier, then put it first on the signers, then remove
 * the old key once the signature validity window (max age + 2 x skew) has passed.
 *
 * @param text - the file's content
 * @param options - whether weak secrets are accepted
 * @returns the keys in file order; the first one signs
 * @throws WsgiProxyError `INVALID_KEY_FILE` for an empty file or one without keys, an empty
 * key, bad base64, a duplicate or malformed key id, a malformed line, or a secret shorter than
 * {@link MIN_SECRET_BYTES} without `allowWeakSecret`; the message names the line and the
 * problem, never the secret. `INVALID_OPTIONS` for bad options.
 * @example
 * const [signingKey, ...verifyOnly] = parseKeyFile(await readFile('keys', 'utf8'))
 */
export function parseKeyFile(text: string, options?: ParseKeyFileOptions): SigningKey[] {
  const opts = parseOptions(parseKeyFileOptions, options, 'parseKeyFile')
  if (typeof text !== 'string') {
    throw invalidFile(`expected the key file as a string (got ${typeName(text)})`)
  }
  const body = text.replace(/\r?\n$/, '')
  if (body.trim() === '') throw invalidFile('the key file is empty')
  const lines = body.split('\n')
  const isKeyList = lines.some((line) => COMMENT.test(line) || MARKER.test(line))
  if (!isKeyList) return [bareSecret(body, opts.allowWeakSecret ?? false)]

  const keys: SigningKey[] = []
  const firstLine = new Map<string, number>()
  for (const [index, raw] of lines.entries()) {
    const number = index + 1
    // Linear time, unlike /^[ \t]+|[ \t]+$/g on a line with a long run of inner spaces.
    const line = trimOws(raw.endsWith('\r') ? raw.slice(0, -1) : raw)
    if (line === '' || line.startsWith('#')) continue
    const match = KEY_LINE.exec(line)
    if (match === null) throw invalidFile(`line ${number}: ${describeMalformed(line)}`)
    const id = match[1] ?? ''
    const encoded = match[2] ?? ''
    if (!KEY_ID.test(id)) {
      // Not echoed: a malformed id may be a secret pasted into the wrong place.
      throw invalidFile(
        `line ${number}: the key id must be 1-64 characters of A-Z a-z 0-9 . _ ~ - ` +
          `(got ${id.length} characters)`,
      )
    }
    const seen = firstLine.get(id)
    if (seen !== undefined) {
      throw invalidFile(`line ${number}: duplicate key id "${id}" (first on line ${seen})`)
    }
    if (encoded === '') throw invalidFile(`line ${number}: key "${id}" is empty`)
    const secret = decodeBase64(encoded)
    if (secret === undefined) {
      throw invalidFile(`line ${number}: key "${id}" is not valid base64 (${base64Hint(encoded)})`)
    }
    checkStrength(`line ${number}: key "${id}"`, id, secret, opts.allowWeakSecret ?? false)
    firstLine.set(id, number)
    keys.push({ id, secret })
  }
  if (keys.length === 0) {
    throw invalidFile(
      'the key file has no keys: every line is blank or a # comment ' +
        '(expected `keyid base64:secret` lines; a bare secret cannot start with #)',
    )
  }
  return keys
}

/**
 * Formats keys as a key file {@link parseKeyFile} reads back: one `keyid base64:<secret>` line
 * per key, in order (the first one signs), each ending in `\n`.
 *
 * @param keys - the keys; ids valid and unique, secrets non-empty
 * @returns the file's content
 * @throws WsgiProxyError `INVALID_OPTIONS` for an empty list, an invalid or duplicate key id or
 * an empty secret
 * @example
 * const secret = crypto.getRandomValues(new Uint8Array(32))
 * await writeFile('keys', formatKeyFile([{ id: 'k2026-11', secret }]), { mode: 0o600 })
 */
export function formatKeyFile(keys: readonly SigningKey[]): string {
  if (!Array.isArray(keys) || keys.length === 0) {
    throw invalidKeys('formatKeyFile expects a non-empty array of keys')
  }
  const ids = new Set<string>()
  const lines = (keys as readonly unknown[]).map((key, index) => {
    const { id, secret } = (key ?? {}) as Partial<SigningKey>
    if (typeof id !== 'string' || !KEY_ID.test(id)) {
      throw invalidKeys(`key ${index}: the id must match ${KEY_ID.source}`)
    }
    if (ids.has(id)) throw invalidKeys(`key ${index}: duplicate key id "${id}"`)
    ids.add(id)
    if (!(secret instanceof Uint8Array) || secret.length === 0) {
      throw invalidKeys(`key ${index} ("${id}"): the secret must be a non-empty Uint8Array`)
    }
    return `${id} base64:${encodeBase64(secret)}\n`
  })
  return lines.join('')
}

function bareSecret(body: string, allowWeakSecret: boolean): SigningKey {
  const secret = new TextEncoder().encode(body)
  checkStrength('the bare secret', BARE_KEY_ID, secret, allowWeakSecret)
  if (/\s/.test(body)) {
    console.warn(
      `wsgiproxy: the bare secret in the key file (key id "${BARE_KEY_ID}") contains ` +
        'whitespace; check that the file holds only the secret',
    )
  }
  return { id: BARE_KEY_ID, secret }
}

function checkStrength(what: string, id: string, secret: Uint8Array, allowWeak: boolean): void {
  if (secret.length >= MIN_SECRET_BYTES) return
  if (!allowWeak) {
    throw invalidFile(
      `${what} has ${secret.length} bytes; at least ${MIN_SECRET_BYTES} random bytes are ` +
        'required (allowWeakSecret accepts it with a warning)',
    )
  }
  console.warn(
    `wsgiproxy: key "${id}" has ${secret.length} bytes; use at least ${MIN_SECRET_BYTES} ` +
      'random bytes (accepted because allowWeakSecret is set)',
  )
}

// Says what is wrong with a line that is not `keyid base64:secret`, without echoing it.
function describeMalformed(line: string): string {
  const expected = 'expected `keyid base64:secret`'
  if (line.startsWith('base64:')) return `${expected}; the key id is missing`
  const fields = line.split(/[ \t]+/)
  if (fields.length === 1) return `${expected} (got one field)`
  if (fields.length > 2) return `${expected} (got ${fields.length} fields separated by spaces)`
  return `${expected}; the secret must start with base64:`
}

function base64Hint(encoded: string): string {
  if (/[-_]/.test(encoded)) return 'expected the standard alphabet with + and /, not base64url'
  if (encoded.length % 4 !== 0) return 'expected = padding to a multiple of 4 characters'
  return 'expected the standard alphabet with = padding and zero padding bits'
}

function decodeBase64(encoded: string): Uint8Array | undefined {
  if (!BASE64.test(encoded)) return undefined
  const binary = atob(encoded)
  const bytes = Uint8Array.from(binary, (char) => char.charCodeAt(0))
  // atob ignores the bits after the last full byte; only the canonical spelling is accepted.
  return encodeBase64(bytes) === encoded ? bytes : undefined
}

function encodeBase64(bytes: Uint8Array): string {
  let binary = ''
  for (let start = 0; start < bytes.length; start += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(start, start + 0x8000))
  }
  return btoa(binary)
}

function invalidFile(message: string): WsgiProxyError {
  return new WsgiProxyError('INVALID_KEY_FILE', `invalid key file: ${message}`, { expose: true })
}

function invalidKeys(message: string): WsgiProxyError {
  return new WsgiProxyError('INVALID_OPTIONS', message, { expose: true })
}

function typeName(value: unknown): string {
  return value === null ? 'null' : typeof value
}
