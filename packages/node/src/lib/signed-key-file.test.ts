import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AppResponse, Environ, SigningKey, Transport } from '@wsgiproxy/core'
import {
  createProxyApp,
  createSigner,
  createVerifier,
  formatKeyFile,
  proxyMiddleware,
  toEnviron,
} from '@wsgiproxy/core'
import { afterEach, describe, expect, it } from 'vitest'
import type { KeyFileWatcher } from './key-file.ts'
import { loadKeyFile, watchKeyFile } from './key-file.ts'

const FIRST: SigningKey = { id: 'k2026-05', secret: new Uint8Array(32).fill(3) }
const SECOND: SigningKey = { id: 'k2026-11', secret: new Uint8Array(32).fill(4) }

let dir = ''
let watcher: KeyFileWatcher | undefined
afterEach(async () => {
  watcher?.close()
  watcher = undefined
  if (dir !== '') await rm(dir, { recursive: true, force: true })
  dir = ''
})

/** A transport that hands the request to the backend app in-process, as a server would. */
function inProcess(backend: (environ: Environ) => AppResponse | Promise<AppResponse>): Transport {
  return async (outbound) => {
    const chunks: Uint8Array[] = []
    for await (const chunk of outbound.body ?? []) chunks.push(chunk)
    const init: RequestInit = { method: outbound.method, headers: outbound.headers }
    if (chunks.length > 0) init.body = Buffer.concat(chunks)
    return backend(toEnviron(new Request(outbound.url, init), { remoteAddr: '10.0.0.5' }))
  }
}

async function keyFile(keys: SigningKey[]): Promise<string> {
  dir ||= await mkdtemp(join(tmpdir(), 'wsgiproxy-keys-'))
  const path = join(dir, 'wsgiproxy.keys')
  await writeFile(path, formatKeyFile(keys), { mode: 0o600 })
  return path
}

describe('a front and a backend sharing a key file', () => {
  it('forwards signed requests that the backend believes, and reloads rotated keys', async () => {
    const path = await keyFile([FIRST])
    watcher = await watchKeyFile(path, { pollInterval: 50 })
    const keys = watcher
    let seen: Environ | undefined
    const backend = proxyMiddleware(
      (environ) => {
        seen = environ
        return { status: 204, headers: [], body: null }
      },
      { verifier: createVerifier({ keys: keys.keys }), requireSignature: true },
    )
    const frontWith = (signingKeys: SigningKey[]) =>
      createProxyApp({
        href: 'http://backend.internal:8080/',
        signer: createSigner({ keys: signingKeys }),
        stringKeys: ['REMOTE_USER'],
        transport: inProcess(backend),
      })
    const request = (front: ReturnType<typeof frontWith>) =>
      front({
        ...toEnviron(
          new Request('https://public.example/x', { headers: { host: 'public.example' } }),
          {
            remoteAddr: '203.0.113.9',
          },
        ),
        REMOTE_USER: 'alice',
      })

    const front = frontWith(await loadKeyFile(path))
    expect((await request(front)).status).toBe(204)
    expect(seen).toMatchObject({
      REMOTE_USER: 'alice',
      REMOTE_ADDR: '203.0.113.9',
      'wsgi.url_scheme': 'https',
    })

    // Rotation step 1: the backend's file gains the new key (last); old-key requests still pass.
    await writeFile(path, formatKeyFile([FIRST, SECOND]), { mode: 0o600 })
    await expect.poll(() => keys.keys().length, { timeout: 3_000 }).toBe(2)
    expect((await request(frontWith([SECOND, FIRST]))).status).toBe(204)
    expect((await request(front)).status).toBe(204)

    // Step 3: the old key is removed; requests signed with it are refused.
    await writeFile(path, formatKeyFile([SECOND]), { mode: 0o600 })
    await expect.poll(() => keys.keys().map((k) => k.id), { timeout: 3_000 }).toEqual([SECOND.id])
    expect((await request(front)).status).toBe(401)
    expect((await request(frontWith([SECOND]))).status).toBe(204)
  })

  it('refuses a key file that others can read', async () => {
    const path = await keyFile([FIRST])
    await writeFile(path, formatKeyFile([FIRST]), { mode: 0o644 })
    const { chmod } = await import('node:fs/promises')
    await chmod(path, 0o644)
    await expect(loadKeyFile(path)).rejects.toThrow(/chmod 600/)
  })
})

describe('key file ownership', () => {
  it('refuses a key file another user owns, unless told otherwise', async () => {
    const path = await keyFile([FIRST])
    const { chown } = await import('node:fs/promises')
    // The tests run as root (as CI does), so the file can be given to "nobody".
    await chown(path, 65534, 65534)
    await expect(loadKeyFile(path)).rejects.toThrow(/owned by uid 65534/)
    await expect(loadKeyFile(path, { allowInsecurePermissions: true })).resolves.toHaveLength(1)
  })
})
