// Reading a key file safely (no symlinks, owner-only permissions, size bound) and the errors that
// name the file: the part of key-file.ts that touches the file system once per read.
import { createHash } from 'node:crypto'
import { constants } from 'node:fs'
import { open, stat } from 'node:fs/promises'
import { WsgiProxyError, parseKeyFile } from '@wsgiproxy/core'
import type { SigningKey } from '@wsgiproxy/core'

// A key file is a few lines; anything much larger is a wrong path.
const MAX_KEY_FILE_BYTES = 1024 * 1024

export async function readKeyFileBytes(path: string, allowInsecure: boolean): Promise<Uint8Array> {
  let handle
  try {
    // O_NONBLOCK: opening a FIFO by mistake must not hang; it is then refused as not a file.
    handle = await open(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0))
  } catch (error) {
    throw fileError(path, `cannot open it: ${describeFsError(error)}`, error)
  }
  try {
    const info = await handle.stat()
    if (!info.isFile()) throw fileError(path, 'it is not a regular file')
    const access = info.mode & 0o077
    if (access !== 0 && !allowInsecure && process.platform !== 'win32') {
      const mode = (info.mode & 0o777).toString(8).padStart(4, '0')
      throw fileError(
        path,
        `group or others may access it (mode ${mode}); run \`chmod 600 ${path}\` ` +
          '(or pass allowInsecurePermissions: true)',
      )
    }
    // As OpenSSH's StrictModes: a key file another user owns could be rewritten by them.
    const uid = process.getuid?.()
    if (uid !== undefined && info.uid !== uid && info.uid !== 0 && !allowInsecure) {
      throw fileError(
        path,
        `it is owned by uid ${info.uid}, not by this process (uid ${uid}) or root; ` +
          `run \`chown ${uid} ${path}\` (or pass allowInsecurePermissions: true)`,
      )
    }
    if (info.size > MAX_KEY_FILE_BYTES) {
      throw fileError(path, `it has ${info.size} bytes; a key file has at most 1 MiB`)
    }
    const bytes = await handle.readFile()
    if (bytes.length > MAX_KEY_FILE_BYTES) {
      throw fileError(path, 'it grew past 1 MiB while being read')
    }
    return bytes
  } catch (error) {
    if (error instanceof WsgiProxyError) throw error
    throw fileError(path, `cannot read it: ${describeFsError(error)}`, error)
  } finally {
    await handle.close().catch(() => undefined)
  }
}

export function parseKeyFileBytes(
  path: string,
  bytes: Uint8Array,
  allowWeakSecret: boolean,
): SigningKey[] {
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes)
  } catch (error) {
    throw fileError(
      path,
      'it is not UTF-8 text; write a binary secret as a `keyid base64:<secret>` line',
      error,
    )
  }
  try {
    return parseKeyFile(text, { allowWeakSecret })
  } catch (error) {
    if (error instanceof WsgiProxyError && error.code === 'INVALID_KEY_FILE') {
      const detail = error.message.replace(/^invalid key file: /, '')
      throw new WsgiProxyError('INVALID_KEY_FILE', `invalid key file ${path}: ${detail}`, {
        cause: error,
      })
    }
    throw error
  }
}

// Metadata that changes whenever the file is rewritten, replaced or re-permissioned.
export async function statIdentity(path: string): Promise<string> {
  try {
    const info = await stat(path, { bigint: true })
    return [info.dev, info.ino, info.size, info.mtimeNs, info.ctimeNs, info.mode].join(':')
  } catch (error) {
    return `error:${errorCode(error) ?? String(error)}`
  }
}

export function contentHash(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

export function asKeyFileError(path: string, error: unknown): WsgiProxyError {
  if (error instanceof WsgiProxyError) return error
  return fileError(path, `reload failed: ${String(error)}`, error)
}

export function fileError(path: string, problem: string, cause?: unknown): WsgiProxyError {
  // Not exposed: the message names a path on this machine.
  return new WsgiProxyError(
    'INVALID_KEY_FILE',
    `invalid key file ${path}: ${problem}`,
    cause === undefined ? {} : { cause },
  )
}

function describeFsError(error: unknown): string {
  const code = errorCode(error)
  if (code === 'ENOENT') return 'no such file (ENOENT)'
  if (code === 'EACCES' || code === 'EPERM') return `permission denied (${code})`
  if (code === 'EISDIR') return 'it is a directory (EISDIR)'
  return error instanceof Error ? error.message : String(error)
}

function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}
