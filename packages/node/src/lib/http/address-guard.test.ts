import type { AddressInfo } from 'node:net'
import { networkInterfaces } from 'node:os'
import type { ExactProxyOptions } from '@wsgiproxy/core'
import { exactProxy } from '@wsgiproxy/core'
import { afterEach, describe, expect, it } from 'vitest'
import { closeAll, register, send, startUpstream } from '@wsgiproxy/test-kit/servers'
import { createSelfCheck, resolveHost } from './address-guard.ts'
import type { Served } from './serve.ts'
import { serve } from './serve.ts'
import { undiciTransport } from '@wsgiproxy/core/undici'

/**
 * Serves the exact proxy as a Node deployment would: undici, `resolveHost`, and `createSelfCheck`
 * on the server's own address; counts the requests it receives.
 */
async function startGuardedProxy(
  options: ExactProxyOptions = {},
  hostname = '127.0.0.1',
): Promise<{ port: number; origin: string; hits: () => number }> {
  let served: Served | undefined
  let hits = 0
  const transport = undiciTransport()
  const proxy = exactProxy({
    transport,
    resolve: resolveHost,
    isSelf: createSelfCheck(() => served?.server.address()),
    onError: () => {},
    ...options,
  })
  served = await serve(
    (environ) => {
      hits++
      return proxy(environ)
    },
    { hostname },
  )
  const { port } = served
  const close = served.close
  register({
    port,
    origin: `http://127.0.0.1:${port}`,
    close: async () => {
      await close()
      await transport.close()
    },
  })
  return { port, origin: `http://127.0.0.1:${port}`, hits: () => hits }
}

function listener(address: string, port = 8080): () => AddressInfo {
  return () => ({ address, port, family: address.includes(':') ? 'IPv6' : 'IPv4' })
}

function firstInterfaceAddress(): string | undefined {
  for (const entries of Object.values(networkInterfaces())) {
    for (const entry of entries ?? []) {
      if (!entry.internal && entry.family === 'IPv4') return entry.address
    }
  }
  return undefined
}

describe('resolveHost', () => {
  it('resolves localhost to loopback addresses, in the resolver order', async () => {
    const addresses = await resolveHost('localhost')
    expect(addresses.length).toBeGreaterThan(0)
    for (const address of addresses) expect(['127.0.0.1', '::1']).toContain(address)
  })
})

describe('createSelfCheck', () => {
  it('is true for the listening address and port, in any spelling, and for unspecified', () => {
    const isSelf = createSelfCheck(listener('127.0.0.1'))
    expect(isSelf('127.0.0.1', 8080)).toBe(true)
    expect(isSelf('::ffff:127.0.0.1', 8080)).toBe(true)
    expect(isSelf('::ffff:7f00:1', 8080)).toBe(true)
    expect(isSelf('0.0.0.0', 8080)).toBe(true)
    expect(isSelf('::', 8080)).toBe(true)
    expect(isSelf('127.0.0.1', 8081)).toBe(false)
    expect(isSelf('127.0.0.2', 8080)).toBe(false)
    expect(isSelf('::1', 8080)).toBe(false)
    expect(isSelf('127.1', 8080)).toBe(false)
    expect(createSelfCheck(listener('::1'))('0:0:0:0:0:0:0:1', 8080)).toBe(true)
  })

  it.each(['0.0.0.0', '::'])(
    'counts every loopback and interface address as itself on %s',
    (wildcard) => {
      const isSelf = createSelfCheck(listener(wildcard))
      expect(isSelf('127.0.0.1', 8080)).toBe(true)
      expect(isSelf('127.255.0.9', 8080)).toBe(true)
      expect(isSelf('::1', 8080)).toBe(true)
      expect(isSelf('::ffff:127.0.0.2', 8080)).toBe(true)
      for (const entries of Object.values(networkInterfaces())) {
        for (const entry of entries ?? []) expect(isSelf(entry.address, 8080)).toBe(true)
      }
      expect(isSelf('93.184.215.14', 8080)).toBe(false)
      expect(isSelf('127.0.0.1', 8081)).toBe(false)
    },
  )

  it('is false before the server listens and for a unix socket', () => {
    expect(createSelfCheck(() => null)('127.0.0.1', 8080)).toBe(false)
    expect(createSelfCheck(() => undefined)('127.0.0.1', 8080)).toBe(false)
    expect(createSelfCheck(() => '/tmp/x.sock')('127.0.0.1', 8080)).toBe(false)
  })
})

describe('exactProxy on Node with resolveHost and createSelfCheck', () => {
  afterEach(closeAll)

  it('answers 508 after one hop to every spelling of its own address', async () => {
    const proxy = await startGuardedProxy()
    const p = proxy.port
    const spellings = [
      `127.0.0.1:${p}`,
      `127.1:${p}`,
      `0:${p}`,
      `2130706433:${p}`,
      `0x7f000001:${p}`,
      `127.0.0.1.:${p}`,
      `127.000.000.001:${p}`,
      `[::ffff:127.0.0.1]:${p}`,
      `[::]:${p}`,
      `localhost:${p}`,
      `LOCALHOST.:${p}`,
      `foo.localhost:${p}`,
    ]
    for (const [i, host] of spellings.entries()) {
      const res = await send(proxy.origin, { path: `/loop-${i}`, headers: { host } })
      expect({ host, status: res.status }).toEqual({ host, status: 508 })
      expect(JSON.parse(res.body.toString())).toMatchObject({ code: 'LOOP_DETECTED' })
      expect(proxy.hits()).toBe(i + 1)
    }
  })

  it('on 0.0.0.0, counts any loopback and interface address as itself', async () => {
    // Listening on every interface is what this test is about; it answers only 508 and 403.
    const proxy = await startGuardedProxy({}, '0.0.0.0')
    const hosts = [`127.0.0.2:${proxy.port}`, `[::ffff:127.0.0.3]:${proxy.port}`]
    const external = firstInterfaceAddress()
    if (external !== undefined) hosts.push(`${external}:${proxy.port}`)
    for (const host of hosts) {
      const res = await send(proxy.origin, { headers: { host } })
      expect({ host, status: res.status }).toEqual({ host, status: 508 })
    }
    expect(proxy.hits()).toBe(hosts.length)
  })

  it('refuses a Host naming an unlisted internal port in any spelling; the server receives nothing', async () => {
    let internalHits = 0
    const internal = await startUpstream((_req, res) => {
      internalHits++
      res.end('internal secret')
    })
    const i = internal.port
    const proxy = await startGuardedProxy()
    for (const host of [
      `127.0.0.1:${i}`,
      `2130706433:${i}`,
      `[::ffff:127.0.0.1]:${i}`,
      `[::ffff:7f00:1]:${i}`,
      `localhost:${i}`,
    ]) {
      const res = await send(proxy.origin, { path: '/secret', headers: { host } })
      expect({ host, status: res.status }).toEqual({ host, status: 403 })
      expect(res.body.toString()).not.toContain('secret')
    }
    expect(internalHits).toBe(0)

    const open = await startGuardedProxy({ allow: [`127.0.0.1:${i}`] })
    const res = await send(open.origin, { path: '/secret', headers: { host: `127.1:${i}` } })
    expect(res.status).toBe(200)
    expect(res.body.toString()).toBe('internal secret')
    expect(internalHits).toBe(1)
  })

  it('connects to the address it resolved and checked, sending the name as Host', async () => {
    let host: string | undefined
    const upstream = await startUpstream((req, res) => {
      host = req.headers.host
      res.end('resolved')
    })
    const asked: string[] = []
    const proxy = await startGuardedProxy({
      allow: [`127.0.0.1:${upstream.port}`],
      resolve: (name) => {
        asked.push(name)
        return ['127.0.0.1']
      },
    })
    const res = await send(proxy.origin, { headers: { host: `upstream.test:${upstream.port}` } })
    expect(res.status).toBe(200)
    expect(res.body.toString()).toBe('resolved')
    expect(host).toBe(`upstream.test:${upstream.port}`)
    expect(asked).toEqual(['upstream.test'])
  })
})
