import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { cleanup, runCli } from '../test/run-cli.ts'
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

/** The message parseConfig throws for this data. */
function error(data: unknown): string {
  try {
    parseConfig(data, 'c.json')
  } catch (caught) {
    return (caught as Error).message
  }
  throw new Error('parseConfig accepted the data')
}

describe('parseConfig unknown keys', () => {
  it('reports a misspelt key first, with the key of that route type it is near', () => {
    expect(error({ routes: [{ path: '/s', type: 'spawn', comand: 'x' }] })).toBe(
      'config file c.json: routes[0]: unknown key "comand" (did you mean "command"?)',
    )
    expect(error({ routes: [{ path: '/s', type: 'spawn', command: 'x', readypath: '/' }] })).toBe(
      'config file c.json: routes[0]: unknown key "readypath" (did you mean "readyPath"?)',
    )
    expect(error({ route: [{ path: '/', type: 'echo' }] })).toBe(
      'config file c.json: unknown key "route" (did you mean "routes"?)',
    )
  })

  it('names our key for the option names of other proxies', () => {
    expect(error({ routes: [{ path: '/', type: 'proxy', url: 'http://127.0.0.1:1' }] })).toBe(
      'config file c.json: routes[0]: unknown key "url" (use "href", the URL to forward to; its path goes in front of the request path)',
    )
    expect(error({ routes: [{ route: '/', type: 'echo' }] })).toBe(
      'config file c.json: routes[0]: unknown key "route" (use "path", the prefix the route answers under)',
    )
    expect(
      error({
        routes: [{ path: '/', type: 'proxy', href: 'http://127.0.0.1:1', proxyTimeout: 5000 }],
      }),
    ).toBe(
      'config file c.json: routes[0]: unknown key "proxyTimeout" (use "timeouts": { "headers": ... }, how long the upstream may take to answer)',
    )
    expect(error({ routes: [{ path: '/', type: 'spawn', command: 'x', ws: true }] })).toBe(
      'config file c.json: routes[0]: unknown key "ws" (Upgrade (WebSocket) requests are forwarded already, byte for byte; the top-level "upgrade" section configures them)',
    )
  })

  it('puts an unknown key before the other issues and counts them', () => {
    expect(
      error({
        routes: [{ path: 'api', type: 'proxy', target: 'http://127.0.0.1:1', changeOrigin: true }],
      }),
    ).toBe(
      'config file c.json: routes[0]: unknown key "target" (use "href", the URL to forward to; its path goes in front of the request path) (and 2 more)',
    )
  })
})

describe('wsgiproxy serve --config with an unknown key', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wsgiproxy-config-'))
  })
  afterEach(async () => {
    await cleanup()
    await rm(dir, { recursive: true, force: true })
  })

  it.each([
    [
      { routes: [{ path: '/py', type: 'spawn', comand: 'python3 -m http.server __PORT__' }] },
      'routes[0]: unknown key "comand" (did you mean "command"?)',
    ],
    [
      { routes: [{ path: '/api', type: 'proxy', target: 'http://127.0.0.1:1' }] },
      'routes[0]: unknown key "target" (use "href", the URL to forward to; its path goes in front of the request path)',
    ],
    [{ route: [{ path: '/', type: 'echo' }] }, 'unknown key "route" (did you mean "routes"?)'],
  ])('exits 1 with one line for %j', async (config, line) => {
    await writeFile(join(dir, 'bad.json'), JSON.stringify(config))
    const result = await runCli(['serve', '--config', 'bad.json'], dir)
    expect(result).toEqual({
      code: 1,
      stdout: '',
      stderr: `wsgiproxy: config file bad.json: ${line}\n`,
    })
  })
})

describe('parseConfig compat and xForwarded', () => {
  it('keeps "compat" on proxy, spawn and echo routes and "xForwarded" on proxy and spawn', () => {
    const compat = 'wsgiproxy-0.1'
    const config = parseConfig(
      {
        routes: [
          { path: '/a', type: 'proxy', href: 'http://127.0.0.1:1', compat, xForwarded: true },
          { path: '/b', type: 'spawn', command: 'x', compat, xForwarded: false },
          { path: '/c', type: 'echo', compat },
        ],
      },
      'c.json',
    )
    expect(config.routes).toEqual([
      expect.objectContaining({ compat, xForwarded: true }),
      expect.objectContaining({ compat, xForwarded: false }),
      expect.objectContaining({ compat }),
    ])
  })

  it('names the accepted value for another one', () => {
    expect(
      error({ routes: [{ path: '/', type: 'proxy', href: 'http://127.0.0.1:1', compat: 0.1 }] }),
    ).toBe(
      'config file c.json: routes[0].compat: expected "wsgiproxy-0.1", for Python Paste\'s WSGIProxy 0.1 (got 0.1)',
    )
  })

  it('says which route types take a key given to a route of another type', () => {
    expect(error({ routes: [{ path: '/', type: 'exact', compat: 'wsgiproxy-0.1' }] })).toBe(
      'config file c.json: routes[0]: key "compat" belongs to proxy, spawn and echo routes, not to type "exact": remove it or change "type"',
    )
    expect(error({ routes: [{ path: '/', type: 'echo', xForwarded: true }] })).toBe(
      'config file c.json: routes[0]: key "xForwarded" belongs to proxy and spawn routes, not to type "echo": remove it or change "type"',
    )
    expect(error({ routes: [{ path: '/', type: 'echo', href: 'http://127.0.0.1:1' }] })).toBe(
      'config file c.json: routes[0]: key "href" belongs to proxy routes, not to type "echo": remove it or change "type"',
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

describe('parseConfig pools', () => {
  it('keeps a list of hrefs, weighted targets and the pool keys of a proxy route', () => {
    const config = parseConfig(
      {
        routes: [
          { path: '/a', type: 'proxy', href: ['http://127.0.0.1:1', 'http://127.0.0.1:2'] },
          {
            path: '/b',
            type: 'proxy',
            targets: [{ href: 'http://127.0.0.1:3', weight: 3 }],
            balance: { hash: { cookie: 'sid' } },
            ejection: { consecutiveFailures: 2, baseTime: '10s' },
            healthCheck: { path: '/healthz', interval: '1s' },
            retries: { attempts: 2, header: 'x-tries' },
            limits: { maxConcurrent: 10, queueTimeout: '2s' },
          },
        ],
      },
      'c.json',
    )
    expect(config.routes[0]).toMatchObject({ href: ['http://127.0.0.1:1', 'http://127.0.0.1:2'] })
    expect(config.routes[1]).toMatchObject({
      targets: [{ href: 'http://127.0.0.1:3', weight: 3 }],
      limits: { maxConcurrent: 10, queueTimeout: '2s' },
    })
  })

  it.each([
    [
      {
        path: '/',
        type: 'proxy',
        href: 'http://127.0.0.1:1',
        targets: [{ href: 'http://127.0.0.1:2' }],
      },
      'routes[0]: give "href" or "targets", not both',
    ],
    [{ path: '/', type: 'proxy', href: [] }, 'routes[0].href: expected at least one URL'],
    [
      { path: '/', type: 'proxy', href: 'http://127.0.0.1:1', balance: 'random' },
      'routes[0].balance: expected "least-outstanding", "round-robin" or',
    ],
    [
      { path: '/', type: 'proxy', targets: [{ href: 'http://127.0.0.1:1', weight: 0 }] },
      'routes[0].targets[0].weight',
    ],
  ])('names a bad pool key: %j', (route, message) => {
    expect(() => parseConfig({ routes: [route] }, 'c.json')).toThrow(message)
  })
})

describe('docs/operations.md', () => {
  it('shows a front config the schema accepts, with admin, tracing and a pool', async () => {
    const doc = await readFile(new URL('../../../../docs/operations.md', import.meta.url), 'utf8')
    const blocks = [...doc.matchAll(/^```json\n([\s\S]*?)^```$/gm)].map((m) => m[1] ?? '')
    expect(blocks).toHaveLength(1)
    const config = parseConfig(JSON.parse(blocks[0] ?? ''), '/etc/wsgiproxy/front.json')
    expect(config).toMatchObject({
      tracing: { otlp: 'http://10.0.3.1:4318/v1/traces', serviceName: 'front' },
    })
    expect(config.routes[0]).toMatchObject({ keyFile: '/etc/wsgiproxy/keys' })
  })
})
