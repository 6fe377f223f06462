import { watch } from 'node:fs'
import type { FSWatcher } from 'node:fs'
import { basename, dirname, resolve } from 'node:path'
import { WsgiProxyError } from '@wsgiproxy/core'
import type { SigningKey } from '@wsgiproxy/core'
import { parseOptions } from '@wsgiproxy/core/adapter'
import { flag, milliseconds, optionsObject } from './http/_options.ts'
import {
  readKeyFileBytes,
  parseKeyFileBytes,
  statIdentity,
  contentHash,
  asKeyFileError,
} from './_key-file-read.ts'

/** Options of {@link loadKeyFile} and {@link watchKeyFile}. */
export interface LoadKeyFileOptions {
  /**
   * Accept a key file that group or others may access (`mode & 0o077`), or that another user
   * (not root) owns. Default `false`: such a file is refused with a message saying to run
   * `chmod 600` / `chown`, since anyone who can read or rewrite the key can forge trusted
   * requests. Not checked on Windows, where POSIX modes mean nothing.
   */
  allowInsecurePermissions?: boolean
  /**
   * Accept secrets shorter than 32 bytes, with a warning. Default `false` (see `parseKeyFile`
   * in `@wsgiproxy/core`).
   */
  allowWeakSecret?: boolean
}

/** Options of {@link watchKeyFile}. */
export interface WatchKeyFileOptions extends LoadKeyFileOptions {
  /**
   * How often the file's metadata is checked in case a change event was missed (network file
   * systems, Kubernetes secret volumes that swap a symlink), in milliseconds. Default 1000.
   */
  pollInterval?: number
}

/**
 * Keys loaded from a file and kept up to date while it changes; see {@link watchKeyFile}.
 *
 * @example
 * using watcher = await watchKeyFile('/etc/wsgiproxy/keys')
 * watcher.on('error', (error) => log.warn(error.message))
 * const keys = watcher.keys // a KeySource: call it for the current list
 */
export interface KeyFileWatcher {
  /**
   * The keys as last loaded successfully, the first one signing. A function that does not need
   * `this`, so it can be passed on as a key source: `watcher.keys`.
   */
  keys(): readonly SigningKey[]
  /** Resolves when the first load finished; already resolved when `watchKeyFile` resolves. */
  ready: Promise<void>
  /** Stops watching: closes the file system watcher and clears every timer. Idempotent. */
  close(): void
  /** The same as {@link KeyFileWatcher.close}, for `using`. */
  [Symbol.dispose](): void
  /** Calls `listener` with the new keys after every successful reload. */
  on(event: 'reload', listener: (keys: readonly SigningKey[]) => void): this
  /**
   * Calls `listener` when a reload failed (on two checks 50 ms apart); the previous keys stay
   * in use. The same failure is reported once, not on every check. Without an error listener,
   * failures go to `console.warn`.
   */
  on(event: 'error', listener: (error: WsgiProxyError) => void): this
}

const DEBOUNCE_MS = 50
const DEFAULT_POLL_INTERVAL = 1000

const LOAD_KEY_FILE_FIELDS = {
  allowInsecurePermissions: flag().optional(),
  allowWeakSecret: flag().optional(),
}
const loadKeyFileOptions = optionsObject(LOAD_KEY_FILE_FIELDS)
const watchKeyFileOptions = optionsObject({
  ...LOAD_KEY_FILE_FIELDS,
  pollInterval: milliseconds(1).optional(),
})

/**
 * Reads and parses a key file (see `parseKeyFile` in `@wsgiproxy/core` for the format).
 *
 * The file must be a regular file of at most 1 MiB holding UTF-8 text (a byte order mark is
 * ignored); a binary secret has to be written as a `keyid base64:<secret>` line. Unless
 * `allowInsecurePermissions` is set, the file (after following symlinks) must not be accessible
 * to group or others: `chmod 600` it, or mount a Kubernetes secret with `defaultMode: 0400`.
 * The mode is checked on the same open file that is read.
 *
 * @param path - the key file
 * @param options - permission and weak-secret policy
 * @returns the keys in file order; the first one signs
 * @throws WsgiProxyError `INVALID_KEY_FILE` naming the path, the problem and the fix (the
 * message never contains a secret); `INVALID_OPTIONS` for bad options
 * @example
 * const keys = await loadKeyFile('/etc/wsgiproxy/keys')
 */
export async function loadKeyFile(
  path: string,
  options?: LoadKeyFileOptions,
): Promise<SigningKey[]> {
  const opts = parseOptions(loadKeyFileOptions, options, 'loadKeyFile')
  const bytes = await readKeyFileBytes(path, opts.allowInsecurePermissions ?? false)
  return parseKeyFileBytes(path, bytes, opts.allowWeakSecret ?? false)
}

/**
 * Loads a key file and reloads it when it changes, for key rotation without a restart.
 *
 * Changes are noticed through `fs.watch` on the file's directory (so a file replaced by a
 * rename, as editors and `mv` do, is seen too), checked after a 50 ms debounce, and by a
 * metadata poll every `pollInterval` (an unref'd timer) in case an event was missed. A change
 * event always re-reads the file; a poll re-reads it only when its size, times, inode or mode
 * changed. The keys are replaced only when the content's SHA-256 differs from the content in
 * use, so touching or rewriting the same content is not a reload. A reload that fails keeps
 * the previous keys and emits `error`; a failure is first checked again after 50 ms, so a file
 * caught half-written (written in place rather than renamed) is not reported. Nothing here
 * keeps the process alive.
 *
 * @param path - the key file
 * @param options - permission and weak-secret policy, poll interval
 * @returns a watcher whose first load has finished
 * @throws WsgiProxyError `INVALID_KEY_FILE` when the first load fails (as for
 * {@link loadKeyFile}); `INVALID_OPTIONS` for bad options
 * @example
 * const watcher = await watchKeyFile('/etc/wsgiproxy/keys')
 * watcher.on('reload', (keys) => console.info(`signing with ${keys[0]?.id}`))
 * process.on('SIGTERM', () => watcher.close())
 */
export async function watchKeyFile(
  path: string,
  options?: WatchKeyFileOptions,
): Promise<KeyFileWatcher> {
  // A copy: later changes to the caller's object do not reach a running watcher.
  const opts = parseOptions(watchKeyFileOptions, options, 'watchKeyFile')
  // Metadata first: a change after this point shows up at the next poll at the latest.
  const statId = await statIdentity(path)
  const bytes = await readKeyFileBytes(path, opts.allowInsecurePermissions ?? false)
  const keys = parseKeyFileBytes(path, bytes, opts.allowWeakSecret ?? false)
  return new Watcher(path, opts, keys, contentHash(bytes), statId)
}

type ReloadListener = (keys: readonly SigningKey[]) => void
type ErrorListener = (error: WsgiProxyError) => void

class Watcher implements KeyFileWatcher {
  readonly ready: Promise<void> = Promise.resolve()
  readonly keys = (): readonly SigningKey[] => this.#keys
  readonly #path: string
  readonly #options: WatchKeyFileOptions
  readonly #reloadListeners = new Set<ReloadListener>()
  readonly #errorListeners = new Set<ErrorListener>()
  #keys: readonly SigningKey[]
  #contentId: string
  #statId: string
  // The failure last reported, so a file that stays broken is reported once.
  #problem: string | undefined
  // A failure seen once and being checked again: a file written in place (truncate, then
  // write) can be read half-written, which is not worth an error event.
  #suspect: { problem: string; since: number } | undefined
  #closed = false
  #running = false
  // A check requested while one runs: undefined for none, true when it must re-read the file.
  #again: boolean | undefined
  #debounce: ReturnType<typeof setTimeout> | undefined
  #debounceForced = false
  #poll: ReturnType<typeof setInterval> | undefined
  #fsWatcher: FSWatcher | undefined

  constructor(
    path: string,
    options: WatchKeyFileOptions,
    keys: SigningKey[],
    contentId: string,
    statId: string,
  ) {
    this.#path = path
    this.#options = options
    this.#keys = Object.freeze(keys)
    this.#contentId = contentId
    this.#statId = statId
    this.#startWatching()
    this.#poll = setInterval(() => {
      void this.#run(false)
    }, options.pollInterval ?? DEFAULT_POLL_INTERVAL)
    this.#poll.unref()
  }

  on(event: 'reload' | 'error', listener: ReloadListener | ErrorListener): this {
    if (typeof listener !== 'function') {
      throw invalidOptions(`KeyFileWatcher.on: expected a listener function`)
    }
    if (event === 'reload') this.#reloadListeners.add(listener as ReloadListener)
    else if (event === 'error') this.#errorListeners.add(listener as ErrorListener)
    else
      throw invalidOptions(`KeyFileWatcher.on: expected "reload" or "error" (got ${String(event)})`)
    return this
  }

  close(): void {
    if (this.#closed) return
    this.#closed = true
    clearTimeout(this.#debounce)
    clearInterval(this.#poll)
    this.#debounce = undefined
    this.#poll = undefined
    this.#fsWatcher?.close()
    this.#fsWatcher = undefined
    this.#reloadListeners.clear()
    this.#errorListeners.clear()
  }

  [Symbol.dispose](): void {
    this.close()
  }

  #startWatching(): void {
    const name = basename(this.#path)
    try {
      this.#fsWatcher = watch(dirname(resolve(this.#path)), { persistent: false }, (_, file) => {
        // Our file itself (or an unnamed event) is re-read; other names in the directory (a
        // Kubernetes `..data` symlink swap, say) only trigger the metadata check.
        this.#schedule(file === null || file.toString() === name)
      })
      this.#fsWatcher.on('error', () => {
        // The directory went away or the watcher broke: the poll carries on alone.
        this.#fsWatcher?.close()
        this.#fsWatcher = undefined
      })
    } catch {
      // fs.watch is unavailable here (inotify limits, some network file systems): poll only.
      this.#fsWatcher = undefined
    }
  }

  #schedule(force: boolean): void {
    if (this.#closed) return
    this.#debounceForced ||= force
    if (this.#debounce !== undefined) return
    this.#debounce = setTimeout(() => {
      const forced = this.#debounceForced
      this.#debounce = undefined
      this.#debounceForced = false
      void this.#run(forced)
    }, DEBOUNCE_MS)
    this.#debounce.unref()
  }

  // Runs one check at a time; a request during a check runs once more afterwards.
  async #run(force: boolean): Promise<void> {
    if (this.#closed) return
    if (this.#running) {
      this.#again = (this.#again ?? false) || force
      return
    }
    this.#running = true
    try {
      await this.#check(force)
    } catch (error) {
      this.#fail(`unexpected:${String(error)}`, asKeyFileError(this.#path, error))
    } finally {
      this.#running = false
      const again = this.#again
      this.#again = undefined
      if (again !== undefined) void this.#run(again)
    }
  }

  async #check(force: boolean): Promise<void> {
    const statId = await statIdentity(this.#path)
    if (this.#closed || (!force && statId === this.#statId)) return
    this.#statId = statId
    let bytes: Uint8Array
    try {
      bytes = await readKeyFileBytes(this.#path, this.#options.allowInsecurePermissions ?? false)
    } catch (error) {
      const reported = asKeyFileError(this.#path, error)
      this.#fail(`read:${reported.message}`, reported)
      return
    }
    if (this.#closed) return
    const contentId = contentHash(bytes)
    if (contentId === this.#contentId) {
      // The content in use, perhaps touched or rewritten unchanged: nothing to reload.
      this.#problem = undefined
      this.#suspect = undefined
      return
    }
    let keys: SigningKey[]
    try {
      keys = parseKeyFileBytes(this.#path, bytes, this.#options.allowWeakSecret ?? false)
    } catch (error) {
      this.#fail(`content:${contentId}`, asKeyFileError(this.#path, error))
      return
    }
    this.#keys = Object.freeze(keys)
    this.#contentId = contentId
    this.#problem = undefined
    this.#suspect = undefined
    for (const listener of this.#reloadListeners) call(listener, this.#keys)
  }

  #fail(problem: string, error: WsgiProxyError): void {
    if (this.#closed || problem === this.#problem) return
    const now = performance.now()
    if (this.#suspect?.problem !== problem) this.#suspect = { problem, since: now }
    if (now - this.#suspect.since < DEBOUNCE_MS) {
      this.#schedule(true)
      return
    }
    this.#suspect = undefined
    this.#problem = problem
    if (this.#errorListeners.size === 0) {
      console.warn(`wsgiproxy: keeping the previous keys: ${error.message}`)
      return
    }
    for (const listener of this.#errorListeners) call(listener, error)
  }
}

function call<T>(listener: (value: T) => void, value: T): void {
  try {
    listener(value)
  } catch (error) {
    console.error('wsgiproxy: a key file watcher listener threw', error)
  }
}

function invalidOptions(message: string): WsgiProxyError {
  return new WsgiProxyError('INVALID_OPTIONS', `invalid options: ${message}`, { expose: true })
}
