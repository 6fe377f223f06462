import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { configJsonSchema, parseConfig } from './config.ts'
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
