import {
  chmod,
  mkdir,
  mkdtemp,
  open,
  rename,
  rm,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { WsgiProxyError } from '@wsgiproxy/core'
import type { SigningKey } from '@wsgiproxy/core'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { loadKeyFile, watchKeyFile } from './key-file.ts'
import type { KeyFileWatcher, LoadKeyFileOptions } from './key-file.ts'

const secret = (seed: number, length = 32): Uint8Array =>
  Uint8Array.from({ length }, (_, index) => (seed * 31 + index * 7) % 256)
const line = (id: string, bytes: Uint8Array): string =>
  `${id} base64:${Buffer.from(bytes).toString('base64')}\n`

const K1 = secret(1)
const K2 = secret(2)
const K3 = secret(3)
const FILE_1 = `# keys\n${line('k1', K1)}${line('k0', K2)}`
const FILE_2 = line('k2', K3) + line('k1', K1)
const ids = (keys: readonly SigningKey[]): string[] => keys.map((key) => key.id)
const POLL = { timeout: 3000, interval: 20 }

let dir: string
let file: string
const watchers: KeyFileWatcher[] = []

/** Writes `text` to `path` with mode 0600 (whatever the umask), replacing it in place. */
async function writeKeys(path: string, text: string | Uint8Array, mode = 0o600): Promise<void> {
  await writeFile(path, text)
  await chmod(path, mode)
}

/** Replaces `path` by renaming a new file over it, as editors and `mv` do. */
async function renameOver(path: string, text: string): Promise<void> {
  const temporary = `${path}.tmp-${Math.random().toString(36).slice(2)}`
  await writeKeys(temporary, text)
  await rename(temporary, path)
}

/** The error `promise` rejects with; fails the test when it is not a WsgiProxyError. */
async function rejection(promise: Promise<unknown>): Promise<WsgiProxyError> {
  const error: unknown = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  )
  if (error instanceof WsgiProxyError) return error
  throw new Error(`expected a WsgiProxyError, got ${String(error)}`)
}

async function watched(
  options?: LoadKeyFileOptions & { pollInterval?: number },
): Promise<{ watcher: KeyFileWatcher; reloads: string[][]; errors: WsgiProxyError[] }> {
  const watcher = await watchKeyFile(file, options)
  watchers.push(watcher)
  const reloads: string[][] = []
  const errors: WsgiProxyError[] = []
  watcher.on('reload', (keys) => reloads.push(ids(keys)))
  watcher.on('error', (error) => errors.push(error))
  return { watcher, reloads, errors }
}

const sleep = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms))

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wsgiproxy-keys-'))
  file = join(dir, 'keys')
  await writeKeys(file, FILE_1)
})

afterEach(async () => {
  for (const watcher of watchers.splice(0)) watcher.close()
  vi.restoreAllMocks()
  await rm(dir, { recursive: true, force: true })
})

describe('loadKeyFile', () => {
  it('reads a key list from a 0600 file', async () => {
    expect(await loadKeyFile(file)).toEqual([
      { id: 'k1', secret: K1 },
      { id: 'k0', secret: K2 },
    ])
  })

  it('reads a 0400 file and a bare secret', async () => {
    await writeKeys(file, 'a-legacy-shared-secret-of-forty-two-bytes!\n', 0o400)
    expect(await loadKeyFile(file)).toEqual([
      {
        id: 'default',
        secret: new TextEncoder().encode('a-legacy-shared-secret-of-forty-two-bytes!'),
      },
    ])
  })

  it.each(['0644', '0640', '0604', '0620', '0660', '0601'])(
    'refuses a file with mode %s and says to chmod 600',
    async (octal) => {
      const mode = Number.parseInt(octal, 8)
      await chmod(file, mode)
      const error = await rejection(loadKeyFile(file))
      expect(error.code).toBe('INVALID_KEY_FILE')
      expect(error.message).toContain(file)
      expect(error.message).toContain(`(mode ${octal})`)
      expect(error.message).toContain(`chmod 600 ${file}`)
      expect(error.message).toContain('allowInsecurePermissions')
    },
  )

  it('accepts a 0644 file with allowInsecurePermissions', async () => {
    await chmod(file, 0o644)
    expect(ids(await loadKeyFile(file, { allowInsecurePermissions: true }))).toEqual(['k1', 'k0'])
  })

  it('checks the mode of the file a symlink points to', async () => {
    const link = join(dir, 'link')
    await symlink(file, link)
    expect(ids(await loadKeyFile(link))).toEqual(['k1', 'k0'])
    await chmod(file, 0o644)
    expect((await rejection(loadKeyFile(link))).message).toMatch(/mode 0644/)
  })

  it('names the path, the line and the problem for a bad key file, never the secret', async () => {
    const weak = Buffer.from(secret(4, 16)).toString('base64')
    await writeKeys(file, `${line('k1', K1)}k2 base64:${weak}\n`)
    const error = await rejection(loadKeyFile(file))
    expect(error.code).toBe('INVALID_KEY_FILE')
    expect(error.message).toBe(
      `invalid key file ${file}: line 2: key "k2" has 16 bytes; at least 32 random bytes ` +
        'are required (allowWeakSecret accepts it with a warning)',
    )
    expect(error.message).not.toContain(weak)
    expect(error.cause).toBeInstanceOf(WsgiProxyError)
  })

  it('accepts a weak secret with allowWeakSecret and warns', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined)
    await writeKeys(file, line('weak', secret(5, 16)))
    expect(ids(await loadKeyFile(file, { allowWeakSecret: true }))).toEqual(['weak'])
    expect(warn).toHaveBeenCalledWith(expect.stringMatching(/key "weak" has 16 bytes/))
  })

  it.each([
    ['a missing file', async () => join(dir, 'missing'), /cannot open it: no such file \(ENOENT\)/],
    ['a directory', async () => dir, /not a regular file|EISDIR/],
    [
      'a file that is not UTF-8',
      async () => {
        await writeKeys(file, Uint8Array.from([0xff, 0xfe, 0x00, 0x80, ...secret(6)]))
        return file
      },
      /not UTF-8 text; write a binary secret as a `keyid base64:<secret>` line/,
    ],
    [
      'an empty file',
      async () => {
        await writeKeys(file, '')
        return file
      },
      /the key file is empty/,
    ],
    [
      'a file over 1 MiB',
      async () => {
        await writeKeys(file, `# ${'x'.repeat(1024 * 1024)}\n${line('k1', K1)}`)
        return file
      },
      /at most 1 MiB/,
    ],
  ])('refuses %s, naming the path', async (_, setup, message) => {
    const path = await setup()
    const error = await rejection(loadKeyFile(path))
    expect(error.code).toBe('INVALID_KEY_FILE')
    expect(error.message).toContain(`invalid key file ${path}: `)
    expect(error.message).toMatch(message)
  })

  it.each([
    [{ allowInsecurePermissions: 'yes' }, /allowInsecurePermissions: expected a boolean/],
    [{ allowWeakSecret: 1 }, /allowWeakSecret: expected a boolean/],
    [{ pollInterval: 10 }, /unknown option "pollInterval"/],
    [null, /expected an object/],
  ])('refuses options %j with INVALID_OPTIONS', async (options, message) => {
    const error = await rejection(loadKeyFile(file, options as LoadKeyFileOptions))
    expect(error.code).toBe('INVALID_OPTIONS')
    expect(error.message).toMatch(message)
  })
})

describe('watchKeyFile', () => {
  it('loads the keys before it resolves', async () => {
    const { watcher } = await watched()
    await expect(watcher.ready).resolves.toBeUndefined()
    const { keys } = watcher // usable detached, as a key source
    expect(keys()).toEqual([
      { id: 'k1', secret: K1 },
      { id: 'k0', secret: K2 },
    ])
  })

  it('picks up a file rewritten in place', async () => {
    const { watcher, reloads } = await watched()
    await writeKeys(file, FILE_2)
    await expect.poll(() => ids(watcher.keys()), POLL).toEqual(['k2', 'k1'])
    expect(watcher.keys()[0]?.secret).toEqual(K3)
    expect(reloads).toEqual([['k2', 'k1']])
  })

  it('picks up a file replaced by a rename', async () => {
    const { watcher, reloads } = await watched()
    await renameOver(file, FILE_2)
    await expect.poll(() => ids(watcher.keys()), POLL).toEqual(['k2', 'k1'])
    await renameOver(file, line('k3', K2))
    await expect.poll(() => ids(watcher.keys()), POLL).toEqual(['k3'])
    expect(reloads).toEqual([['k2', 'k1'], ['k3']])
  })

  it('does not reload a file rewritten or touched with the same content', async () => {
    // The legacy check was inverted: it reloaded unchanged files and missed changed ones.
    const { watcher, reloads, errors } = await watched({ pollInterval: 20 })
    const before = watcher.keys()
    await writeKeys(file, FILE_1)
    await renameOver(file, FILE_1)
    const later = new Date(Date.now() + 5000)
    await utimes(file, later, later)
    await sleep(400)
    expect(reloads).toEqual([])
    expect(errors).toEqual([])
    expect(watcher.keys()).toBe(before)
    await writeKeys(file, FILE_2)
    await expect.poll(() => reloads, POLL).toEqual([['k2', 'k1']])
  })

  it('notices a change by polling when the event names another file', async () => {
    // Kubernetes secret volumes: `keys -> ..data/keys`, and `..data` is a symlink swapped by
    // a rename. The event names `..data`, so only the metadata poll finds the new content.
    const first = join(dir, 'v1')
    const second = join(dir, 'v2')
    await mkdir(first)
    await mkdir(second)
    await writeKeys(join(first, 'keys'), FILE_1)
    await writeKeys(join(second, 'keys'), FILE_2)
    const data = join(dir, '..data')
    await symlink(first, data)
    await rm(file)
    await symlink(join('..data', 'keys'), file)
    const { watcher } = await watched({ pollInterval: 50 })
    expect(ids(watcher.keys())).toEqual(['k1', 'k0'])
    await symlink(second, join(dir, '..data_tmp'))
    await rename(join(dir, '..data_tmp'), data)
    await expect.poll(() => ids(watcher.keys()), POLL).toEqual(['k2', 'k1'])
  })

  it('keeps the previous keys and emits error once when a reload fails', async () => {
    const { watcher, reloads, errors } = await watched({ pollInterval: 20 })
    const before = watcher.keys()
    await writeKeys(file, `${line('k1', K1)}k2 base64:not-base64!\n`)
    await expect.poll(() => errors.length, POLL).toBe(1)
    expect(errors[0]?.code).toBe('INVALID_KEY_FILE')
    expect(errors[0]?.message).toMatch(
      /^invalid key file .*keys: line 2: key "k2" is not valid base64/,
    )
    expect(watcher.keys()).toBe(before)
    await sleep(200)
    expect(errors).toHaveLength(1) // a file that stays broken is reported once
    await writeKeys(file, FILE_2)
    await expect.poll(() => ids(watcher.keys()), POLL).toEqual(['k2', 'k1'])
    expect(reloads).toEqual([['k2', 'k1']])
  })

  it('does not report a file caught half-written in place', async () => {
    const { watcher, reloads, errors } = await watched({ pollInterval: 20 })
    const handle = await open(file, 'w') // truncates: the file is empty for a while
    await handle.write(FILE_2.slice(0, 12))
    // Broken for about 25 ms: the 20 ms poll reads it, the check 50 ms later does not.
    await sleep(25)
    await handle.write(FILE_2.slice(12))
    await handle.close()
    await expect.poll(() => reloads, POLL).toEqual([['k2', 'k1']])
    await sleep(150)
    expect(errors).toEqual([])
    expect(ids(watcher.keys())).toEqual(['k2', 'k1'])
  })

  it('keeps the previous keys when the file becomes readable by others', async () => {
    const { watcher, errors } = await watched({ pollInterval: 20 })
    await writeFile(file, FILE_2)
    await chmod(file, 0o644)
    await expect.poll(() => errors.length, POLL).toBe(1)
    expect(errors[0]?.message).toContain(`chmod 600 ${file}`)
    expect(ids(watcher.keys())).toEqual(['k1', 'k0'])
    await chmod(file, 0o600)
    await expect.poll(() => ids(watcher.keys()), POLL).toEqual(['k2', 'k1'])
  })

  it('keeps the previous keys while the file is missing', async () => {
    const { watcher, errors } = await watched({ pollInterval: 20 })
    await rm(file)
    await expect.poll(() => errors.length, POLL).toBe(1)
    expect(errors[0]?.message).toMatch(/ENOENT/)
    expect(ids(watcher.keys())).toEqual(['k1', 'k0'])
    await writeKeys(file, FILE_2)
    await expect.poll(() => ids(watcher.keys()), POLL).toEqual(['k2', 'k1'])
  })

  it('warns on the console when a reload fails and nobody listens for errors', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined)
    const watcher = await watchKeyFile(file, { pollInterval: 20 })
    watchers.push(watcher)
    await writeKeys(file, 'k1 base64:\n')
    await expect.poll(() => warn.mock.calls.length, POLL).toBe(1)
    expect(String(warn.mock.calls[0]?.[0])).toMatch(
      /keeping the previous keys: .*key "k1" is empty/,
    )
  })

  it('rejects when the first load fails', async () => {
    await chmod(file, 0o644)
    expect((await rejection(watchKeyFile(file))).code).toBe('INVALID_KEY_FILE')
    const watcher = await watchKeyFile(file, { allowInsecurePermissions: true })
    watchers.push(watcher)
    expect(ids(watcher.keys())).toEqual(['k1', 'k0'])
  })

  it('stops watching on close and clears its timers', async () => {
    const setIntervalSpy = vi.spyOn(globalThis, 'setInterval')
    const clearIntervalSpy = vi.spyOn(globalThis, 'clearInterval')
    const setTimeoutSpy = vi.spyOn(globalThis, 'setTimeout')
    const { watcher, reloads, errors } = await watched({ pollInterval: 23 })
    // Node's Timeout objects say in `_destroyed` whether they were cleared or have fired.
    type Timer = object
    const created = (spy: typeof setIntervalSpy | typeof setTimeoutSpy, delay: number): Timer[] =>
      spy.mock.results
        .filter((_, index) => spy.mock.calls[index]?.[1] === delay)
        .map((result) => result.value as Timer)
    const [poll] = created(setIntervalSpy, 23)
    expect(poll).toHaveProperty('_destroyed', false)
    // A change just before close leaves a debounce timer pending: close must clear it too.
    await writeKeys(file, FILE_2)
    await expect.poll(() => created(setTimeoutSpy, 50).length, POLL).toBeGreaterThan(0)
    watcher.close()
    watcher.close()
    expect(clearIntervalSpy).toHaveBeenCalledWith(poll)
    for (const timer of [...created(setIntervalSpy, 23), ...created(setTimeoutSpy, 50)]) {
      expect(timer).toHaveProperty('_destroyed', true)
    }
    await writeKeys(file, line('k9', K2))
    await renameOver(file, line('k8', K2))
    await sleep(300)
    expect(reloads).toEqual([])
    expect(errors).toEqual([])
    expect(ids(watcher.keys())).toEqual(['k1', 'k0'])
    expect(created(setIntervalSpy, 23)).toHaveLength(1)
  })

  it('closes with Symbol.dispose', async () => {
    const { watcher, reloads } = await watched({ pollInterval: 20 })
    watcher[Symbol.dispose]()
    await writeKeys(file, FILE_2)
    await sleep(200)
    expect(reloads).toEqual([])
  })

  it.each([
    [{ pollInterval: 0 }, /pollInterval: expected whole milliseconds/],
    [{ pollInterval: 1.5 }, /pollInterval: expected whole milliseconds/],
    [{ poll: 5 }, /unknown option "poll"/],
  ])('refuses options %j with INVALID_OPTIONS', async (options, message) => {
    const error = await rejection(watchKeyFile(file, options as LoadKeyFileOptions))
    expect(error.code).toBe('INVALID_OPTIONS')
    expect(error.message).toMatch(message)
  })
})
