// TLS on the command's listener: the certificate files of `--tls-cert`/`--tls-key` or the config
// file's `tls`, read at start, and read again when one of them changes or on SIGHUP, without a
// restart (docs/tls-http2.md). A reload that fails is logged and the old certificates stay.
import { unwatchFile, watchFile } from 'node:fs'
import { readFile } from 'node:fs/promises'
import type { Served, ServeTls } from '@wsgiproxy/node'
import { usageError } from './errors.ts'
import type { Logger } from './log.ts'

/** A certificate and its key, as files. */
export interface TlsPair {
  cert: string
  key: string
}

/** The certificate files of a listener (paths already resolved). */
export interface TlsFiles extends TlsPair {
  /** More certificates by server name (`api.example.com`, `*.example.com`). */
  sni?: Record<string, TlsPair> | undefined
  /** The oldest TLS version accepted. Default TLS 1.2. */
  minVersion?: 'TLSv1.2' | 'TLSv1.3' | undefined
}

// How often a certificate file is looked at (its size and time): renewals replace files or swap
// symlinks, which a stat poll sees and an inotify watch on the old inode does not.
const POLL_MS = 1_000

/**
 * The `tls` of `serve()` from the files, read now.
 *
 * @param files - the certificate files
 * @returns the PEM contents
 * @throws CliError (exit 1) naming the file that cannot be read
 */
export async function readTls(files: TlsFiles): Promise<ServeTls> {
  const tls: ServeTls = await pair('tls.', files)
  if (files.sni !== undefined) {
    const sni: Record<string, { cert: Buffer; key: Buffer }> = {}
    for (const [name, entry] of Object.entries(files.sni)) {
      sni[name] = await pair(`tls.sni[${JSON.stringify(name)}].`, entry)
    }
    tls.sni = sni
  }
  if (files.minVersion !== undefined) tls.minVersion = files.minVersion
  return tls
}

/**
 * Reads the files again when one changes, and on SIGHUP, and hands the certificates to the
 * server; logs `tls-reloaded`, or an error and keeps the old ones.
 *
 * @param files - the certificate files
 * @param served - the running server
 * @param logger - the command's logger
 * @returns stops watching
 */
export function watchTls(files: TlsFiles, served: Served, logger: Logger): () => void {
  let running: Promise<void> | undefined
  let again = false
  const reload = (why: string): void => {
    if (running !== undefined) {
      again = true
      return
    }
    running = (async () => {
      try {
        served.setTls(await readTls(files))
        logger.event('tls-reloaded', `tls: certificates read again (${why})`, { why })
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error)
        logger.error(`tls: ${message}; keeping the certificates in use`)
      }
    })().finally(() => {
      running = undefined
      if (again) {
        again = false
        reload(why)
      }
    })
  }
  const paths = [files, ...Object.values(files.sni ?? {})].flatMap(({ cert, key }) => [cert, key])
  const onChange = (path: string) => (now: { mtimeMs: number }, before: { mtimeMs: number }) => {
    if (now.mtimeMs !== before.mtimeMs) reload(`${path} changed`)
  }
  const listeners = new Map(paths.map((path) => [path, onChange(path)]))
  for (const [path, listener] of listeners) {
    watchFile(path, { interval: POLL_MS, persistent: false }, listener)
  }
  const onHangup = (): void => reload('SIGHUP')
  process.on('SIGHUP', onHangup)
  return () => {
    process.off('SIGHUP', onHangup)
    for (const [path, listener] of listeners) unwatchFile(path, listener)
  }
}

// A certificate and its key, read; `which` prefixes the names in messages (`tls.`).
async function pair(which: string, { cert, key }: TlsPair): Promise<{ cert: Buffer; key: Buffer }> {
  return { cert: await read(`${which}cert`, cert), key: await read(`${which}key`, key) }
}

/**
 * Reads a PEM file.
 *
 * @param what - what it is, for the message (`tls.cert`)
 * @param path - the file
 * @returns its bytes
 * @throws CliError (exit 1) naming the file and why it cannot be read
 */
export async function read(what: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path)
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? String(error)
    throw usageError(`cannot read ${what} ${path}: ${reason}`)
  }
}
