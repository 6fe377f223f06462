// Header values are client input: every entry point that parses one must cost about as much for
// 64 KiB of inner whitespace (or slashes) as for 64 KiB of letters. A regular expression such as
// /^[\t ]+|[\t ]+$/g or /\/+$/ is retried from every position of such a run: O(n²).
//
// Measured on the old code (Node 20, a loaded 2-core machine, best of 3, 64 KiB against 64 KiB
// of letters): the verifier 1.9 s against 0.8 ms, the signer 2.1 s against 0.7 ms, the
// X-Forwarded-For walk 2.0 s against 0.2 ms, X-Forwarded-Script-Name / X-Traversal-Path of
// slashes 1.8-2.0 s against 0.1 ms, the Upgrade header 2.0 s against 0.2 ms; at 15 KiB (under
// Node's default 16 KiB header cap) 106-283 ms per request. With the fix each costs 0.0-1.0 ms,
// as its letters do. The extra-key codec was linear already (a value over 4 KiB is refused
// before any parsing): those two tests guard that.
import { describe, expect, it } from 'vitest'
import type { AppResponse, Environ, EnvironApp, SigningKey, Transport } from '../index.ts'
import {
  createEnvironRestorer,
  createProxyApp,
  createSigner,
  createVerifier,
  proxyMiddleware,
  toEnviron,
} from '../index.ts'
import { decodeExtraKeys } from '../protocol.ts'

const SIZE = 64 * 1024
const RUNS = 5
// The bound: 10 x the letters' time plus a floor for timer noise and a loaded machine. The old
// code was over it 60-100x; a linear one stays far below it.
const RATIO = 10
const FLOOR_MS = 20
// Five samples of the quadratic code take about 10 s: time enough to fail by the assertion.
const TIMEOUT_MS = 60_000

const KEY: SigningKey = { id: 'k1', secret: new Uint8Array(32).fill(7) }
const NOW = 1_700_000_000

const inner = (filler: string): string => `a${filler.repeat(SIZE)}a`
const SPACES = inner(' ')
const TABS = inner('\t')
const LETTERS = inner('b')
const SLASHES = `/${'/'.repeat(SIZE)}a`
const PATH_LETTERS = `/${'b'.repeat(SIZE)}a`

/** The fastest of {@link RUNS} calls in milliseconds; stops early once one is below `enough`. */
async function fastest(work: () => unknown, enough = 0): Promise<number> {
  let best = Number.POSITIVE_INFINITY
  for (let i = 0; i < RUNS && best >= enough; i++) {
    const start = performance.now()
    await work()
    best = Math.min(best, performance.now() - start)
  }
  return best
}

/** Asserts that `run(hostile)` costs at most RATIO x `run(baseline)` plus FLOOR_MS. */
async function expectLinear(
  run: (value: string) => () => unknown,
  hostile: string,
  baseline: string,
): Promise<void> {
  const work = run(baseline)
  await work() // warm-up: the same code path, JIT-compiled before anything is timed
  const letters = await fastest(work)
  const bound = RATIO * letters + FLOOR_MS
  const spaces = await fastest(run(hostile), bound)
  expect(spaces, `${spaces.toFixed(1)} ms against ${letters.toFixed(1)} ms`).toBeLessThan(bound)
}

function backendEnviron(headers: Record<string, string>): Environ {
  return toEnviron(new Request('http://backend.test:8080/app/x', { headers }), {
    remoteAddr: '127.0.0.1',
  })
}

const ok: EnvironApp = () => ({ status: 200, headers: [], body: null })
const transport: Transport = async () => ({ status: 200, headers: [], body: null })

const verifier = createVerifier({ keys: [KEY], clock: () => NOW * 1000 })
const signer = createSigner({ keys: [KEY], clock: () => NOW * 1000, random: (b) => b.fill(1) })
const trusting = proxyMiddleware(ok, { trustIps: ['loopback'] })
const restore = createEnvironRestorer({ trustIps: ['loopback'] })
const proxyApp = createProxyApp({ href: 'http://backend.test/base', transport })

/** A forged signature with a known keyid: its covered field is trimmed before the MAC check. */
function forged(value: string): Environ {
  return backendEnviron({
    'x-forwarded-for': value,
    'signature-input':
      'wsgiproxy=("@method" "@authority" "@path" "@query" "x-forwarded-for")' +
      `;created=${NOW};expires=${NOW + 60};nonce="AAAAAAAAAAAAAAAAAAAAAA";keyid="k1";tag="wsgiproxy"`,
    signature: `wsgiproxy=:${btoa('\u0000'.repeat(32))}:`,
  })
}

const verify = (value: string) => {
  const environ = forged(value)
  return () => verifier.verify(environ)
}

const sign = (value: string) => () =>
  signer.sign({
    method: 'POST',
    url: new URL('http://backend.test/x'),
    headers: [['content-type', value]],
    body: null,
  })

/** The trusting middleware on a request with one header. */
const withHeader = (name: string) => (value: string) => {
  const environ = backendEnviron({ [name]: value })
  return () => trusting(environ) as Promise<AppResponse>
}

// Reached through a trusted hop: the walk parses an entry only when the hop after it is trusted.
const forwardedFor = (value: string) => withHeader('x-forwarded-for')(`${value}, 127.0.0.2`)

const restoreExtraKey = (value: string) => {
  const environ = backendEnviron({ 'x-wsgiproxy-str-0': `REMOTE_USER ${value}` })
  return () => restore(environ)
}

const decodeExtraKey = (value: string) => {
  const environ = backendEnviron({ 'x-wsgiproxy-str-0': `REMOTE_USER ${value}` })
  return () => decodeExtraKeys(environ)
}

const prepareUpgrade = (value: string) => {
  const environ = toEnviron(new Request('http://front.test/ws', { headers: { upgrade: value } }))
  return () => proxyApp.prepareUpgrade(environ)
}

const capped = (filler: string): string => `a${filler.repeat(4000)}a`

describe('createVerifier(...).verify', () => {
  it(
    'costs linear time for a covered field of 64 KiB of inner spaces or tabs',
    async () => {
      for (const value of [SPACES, TABS, LETTERS]) {
        expect(await verify(value)()).toMatchObject({ status: 'invalid', reason: 'bad_mac' })
      }
      await expectLinear(verify, SPACES, LETTERS)
      await expectLinear(verify, TABS, LETTERS)
    },
    TIMEOUT_MS,
  )
})

describe('createSigner(...).sign', () => {
  it(
    "costs linear time for a client's Content-Type of 64 KiB of inner spaces",
    async () => {
      const { headers } = await sign(SPACES)()
      expect(headers.map(([name]) => name)).toContain('signature')
      await expectLinear(sign, SPACES, LETTERS)
    },
    TIMEOUT_MS,
  )
})

describe('proxyMiddleware', () => {
  it(
    'walks an X-Forwarded-For entry of 64 KiB of inner spaces in linear time',
    async () => {
      expect(await forwardedFor(SPACES)()).toMatchObject({ status: 200 })
      await expectLinear(forwardedFor, SPACES, LETTERS)
      await expectLinear(forwardedFor, TABS, LETTERS)
    },
    TIMEOUT_MS,
  )

  it(
    'checks X-Forwarded-Script-Name and X-Traversal-Path of 64 KiB of slashes in linear time',
    async () => {
      for (const name of ['x-forwarded-script-name', 'x-traversal-path']) {
        expect(await withHeader(name)(SLASHES)()).toMatchObject({ status: 400 })
        await expectLinear(withHeader(name), SLASHES, PATH_LETTERS)
      }
    },
    TIMEOUT_MS,
  )
})

describe('createEnvironRestorer', () => {
  it('refuses an extra-key header of 64 KiB of inner spaces at once, with 431', async () => {
    expect(await restoreExtraKey(SPACES)()).toMatchObject({ ok: false, response: { status: 431 } })
    await expectLinear(restoreExtraKey, SPACES, LETTERS)
  })
})

describe('decodeExtraKeys', () => {
  it('decodes a value of inner spaces at the 4 KiB cap in linear time', async () => {
    expect(decodeExtraKey(capped(' '))()).toEqual({ REMOTE_USER: capped(' ') })
    await expectLinear(decodeExtraKey, capped(' '), capped('b'))
  })
})

describe('createProxyApp(...).prepareUpgrade', () => {
  it(
    'refuses an Upgrade header of 64 KiB of inner spaces in linear time',
    async () => {
      expect(await prepareUpgrade(SPACES)()).toMatchObject({ status: 400 })
      await expectLinear(prepareUpgrade, SPACES, LETTERS)
    },
    TIMEOUT_MS,
  )
})
