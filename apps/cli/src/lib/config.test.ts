import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { configJsonSchema } from './config-schema.ts'
import { parseConfig } from './config.ts'
import { parseUpgradeFlags } from './upgrade-settings.ts'
import { parseDuration } from './duration.ts'
import { parseListen } from './listen.ts'

describe('configJsonSchema', () => {
  it('matches the schema.json shipped in the package (run `pnpm run schema` after a change)', async () => {
    const shipped = JSON.parse(
      await readFile(new URL('../../schema.json', import.meta.url), 'utf8'),
    )
    expect(shipped).toEqual(configJsonSchema())
  })
})

describe('parseConfig', () => {
  it('resolves keyFile and cwd against the config file directory and converts listen', () => {
    const config = parseConfig(
      {
        listen: 9000,
        routes: [
          { path: '/a', type: 'proxy', href: 'http://127.0.0.1:1', keyFile: 'keys' },
          { path: '/b', type: 'spawn', command: ['x'], cwd: 'app' },
        ],
      },
      '/etc/wsgiproxy/config.json',
    )
    expect(config.listen).toEqual({ hostname: '127.0.0.1', port: 9000 })
    expect(config.routes[0]).toMatchObject({ keyFile: '/etc/wsgiproxy/keys' })
    expect(config.routes[1]).toMatchObject({ cwd: '/etc/wsgiproxy/app' })
  })

  it('names an unknown key and says to remove it', () => {
    expect(() =>
      parseConfig({ routes: [{ path: '/', type: 'echo', colour: 1 }] }, 'c.json'),
    ).toThrow(
      'config file c.json: routes[0]: unknown key "colour": remove it (see schema.json for the keys)',
    )
  })
})

describe('parseConfig allow', () => {
  it('keeps the allow list of an exact route', () => {
    const config = parseConfig(
      { routes: [{ path: '/', type: 'exact', allow: ['10.0.0.0/8:8080', '[::1]:*', 'public'] }] },
      'c.json',
    )
    expect(config.routes[0]).toMatchObject({ allow: ['10.0.0.0/8:8080', '[::1]:*', 'public'] })
  })

  it('names a bad allow entry by its place in the file', () => {
    expect(() =>
      parseConfig(
        { routes: [{ path: '/', type: 'exact', allow: ['127.0.0.1', '127.1'] }] },
        'c.json',
      ),
    ).toThrow(
      'config file c.json: routes[0].allow[1]: an IPv4 allow entry must be dotted decimal such as 127.0.0.1 (got "127.1")',
    )
    expect(() =>
      parseConfig({ routes: [{ path: '/', type: 'exact', allow: 'public' }] }, 'c.json'),
    ).toThrow(/^config file c\.json: routes\[0\]\.allow: expected array/)
  })
})

describe('parseConfig upgrade', () => {
  it('reads protocols, idleTimeout (false is 0: off) and maxConnections', () => {
    expect(
      parseConfig(
        {
          upgrade: { protocols: ['websocket', 'h2c'], idleTimeout: '2m', maxConnections: 50 },
          routes: [{ path: '/', type: 'echo' }],
        },
        'c.json',
      ).upgrade,
    ).toEqual({ protocols: ['websocket', 'h2c'], idleTimeout: 120_000, maxConnections: 50 })
    expect(
      parseConfig({ upgrade: { idleTimeout: false }, routes: [{ path: '/', type: 'echo' }] }, 'c')
        .upgrade,
    ).toEqual({ idleTimeout: 0 })
    expect(parseConfig({ routes: [{ path: '/', type: 'echo' }] }, 'c').upgrade).toEqual({})
  })

  it.each([
    [{ maxConnections: 0 }, /^config file c: upgrade\.maxConnections: too small/],
    [
      { protocols: ['web socket'] },
      /^config file c: upgrade\.protocols\[0\]: expected a protocol name such as "websocket" \(got "web socket"\)$/,
    ],
    [
      { idleTimeout: '5 min' },
      /^config file c: upgrade\.idleTimeout: expected a duration such as 500ms/,
    ],
    [{ idle: '5m' }, /^config file c: upgrade: unknown key "idle"/],
  ])('refuses the upgrade section %j naming the key', (upgrade, message) => {
    expect(() => parseConfig({ upgrade, routes: [{ path: '/', type: 'echo' }] }, 'c')).toThrow(
      message,
    )
  })
})

describe('parseUpgradeFlags', () => {
  it('reads --upgrade-protocol, --upgrade-idle and --max-upgrades', () => {
    expect(
      parseUpgradeFlags({
        'upgrade-protocol': ['websocket', 'h2c'],
        'upgrade-idle': '30s',
        'max-upgrades': '20',
      }),
    ).toEqual({ protocols: ['websocket', 'h2c'], idleTimeout: 30_000, maxConnections: 20 })
    expect(parseUpgradeFlags({ 'upgrade-idle': '0' })).toEqual({ idleTimeout: 0 })
    expect(parseUpgradeFlags({})).toEqual({})
  })

  it('refuses bad values naming the flag', () => {
    expect(() => parseUpgradeFlags({ 'upgrade-protocol': ['a,b'] })).toThrow(
      '--upgrade-protocol must be a protocol name such as websocket (got "a,b")',
    )
    expect(() => parseUpgradeFlags({ 'upgrade-idle': '1h' })).toThrow(
      '--upgrade-idle must be a duration such as 500ms, 30s, 5m or a number of milliseconds (got "1h")',
    )
    for (const max of ['0', '-1', '1.5', 'many', '']) {
      expect(() => parseUpgradeFlags({ 'max-upgrades': max })).toThrow(
        `--max-upgrades must be a whole number of at least 1 (got ${JSON.stringify(max)})`,
      )
    }
  })
})

describe('parseDuration', () => {
  it('reads milliseconds and the units ms, s and m', () => {
    expect(parseDuration('1500')).toBe(1500)
    expect(parseDuration(250)).toBe(250)
    expect(parseDuration('500ms')).toBe(500)
    expect(parseDuration('30s')).toBe(30_000)
    expect(parseDuration('1.5s')).toBe(1500)
    expect(parseDuration('5m')).toBe(300_000)
  })

  it('refuses anything else', () => {
    for (const text of ['', '5 m', '-1', '1h', 'soon', '1e3'])
      expect(parseDuration(text)).toBe(undefined)
    expect(parseDuration(-5)).toBe(undefined)
    expect(parseDuration(1.5)).toBe(undefined)
  })
})

describe('parseListen', () => {
  it('reads host:port, [ipv6]:port, :port and a bare port', () => {
    expect(parseListen('0.0.0.0:80')).toEqual({ hostname: '0.0.0.0', port: 80 })
    expect(parseListen('[::1]:8080')).toEqual({ hostname: '::1', port: 8080 })
    expect(parseListen(':0')).toEqual({ hostname: '127.0.0.1', port: 0 })
    expect(parseListen('9000')).toEqual({ hostname: '127.0.0.1', port: 9000 })
    expect(parseListen('localhost:99999')).toBe(undefined)
    expect(parseListen('nowhere')).toBe(undefined)
  })
})
