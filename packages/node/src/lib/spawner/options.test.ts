import { describe, expect, it } from 'vitest'
import { kernelPort } from './_ports.ts'
import { parseSpawnerOptions } from './options.ts'
import type { SpawnerOptions } from './options.ts'

const command = 'python3 -m app --port __PORT__'

const onError = (): undefined => undefined

/** The message `options` are refused with; they must be refused as INVALID_OPTIONS. */
function refusal(options: unknown): string {
  let refused: unknown
  try {
    parseSpawnerOptions(options as SpawnerOptions)
  } catch (error) {
    refused = error
  }
  expect(refused).toMatchObject({ code: 'INVALID_OPTIONS', expose: true })
  return (refused as Error).message
}

describe('parseSpawnerOptions', () => {
  it('fills in the defaults', () => {
    const settings = parseSpawnerOptions({ command })
    expect(settings).toMatchObject({
      command,
      name: 'python3',
      env: {},
      inheritEnv: true,
      allocatePort: kernelPort,
      startTimeout: 60_000,
      killTimeout: 5_000,
      drainTimeout: 5_000,
      idleTimeout: false,
      maxQueue: 100,
      backoff: { base: 1_000, max: 30_000, reset: 60_000 },
      logLines: 200,
      handleSignals: true,
      orphanGuard: true,
      proxy: {},
    })
    expect(settings.logger).toBeTypeOf('function')
    expect(parseSpawnerOptions({ command, killTimeout: 900 }).drainTimeout).toBe(900)
    expect(parseSpawnerOptions({ command, logger: false }).logger).toBeUndefined()
  })

  it('passes on the forwarding options as given, without undefined ones', () => {
    const timeouts = {}
    // (As JavaScript may pass it: an option set to undefined is left out.)
    const given: object = { command, onError, timeouts, exposeErrors: undefined }
    const settings = parseSpawnerOptions(given as SpawnerOptions)
    expect(settings.proxy).toStrictEqual({ onError, timeouts })
    expect(settings.proxy.timeouts).toBe(timeouts)
  })

  it('copies ready.stdout without the g and y flags', () => {
    const stdout = /listening on (?<port>\d+)/gy
    const { readyStdout } = parseSpawnerOptions({ command, port: 0, ready: { stdout } })
    expect(readyStdout?.source).toBe(stdout.source)
    expect(readyStdout?.flags).toBe('')
  })

  it('accepts process.env as env and undefined to remove a variable', () => {
    expect(parseSpawnerOptions({ command, env: process.env }).env).toEqual({ ...process.env })
    expect(parseSpawnerOptions({ command, env: { A: undefined } }).env).toEqual({ A: undefined })
  })

  it.each([
    [undefined, 'createSpawner expects an options object (got undefined)'],
    [
      {},
      'createSpawner.command: expected a string or a non-empty array of strings (got undefined)',
    ],
    [{ command: '  ' }, 'createSpawner.command: expected a command (got an empty string)'],
    [
      { command: [''] },
      'createSpawner.command: expected a string or a non-empty array of strings (got an array)',
    ],
    [{ command, name: '' }, 'createSpawner.name: expected a non-empty string (got "")'],
    [{ command, env: { A: 1 } }, 'createSpawner.env.A: expected a string or undefined (got 1)'],
    [{ command, shell: 'yes' }, 'createSpawner.shell: expected a boolean (got "yes")'],
    [{ command, port: 70_000 }, 'createSpawner.port: expected 0–65535 (got 70000)'],
    [{ command, allocatePort: 8000 }, 'createSpawner.allocatePort: expected a function (got 8000)'],
    [
      { command, ready: { http: 'health' } },
      'createSpawner.ready.http: expected a path starting with "/" (got "health")',
    ],
    [{ command, ready: { tcp: true } }, 'createSpawner.ready.tcp: unknown option'],
    [
      { command, startTimeout: 1.5 },
      'createSpawner.startTimeout: expected whole milliseconds from 1 to 2147483647 (got 1.5)',
    ],
    [
      { command, drainTimeout: -1 },
      'createSpawner.drainTimeout: expected whole milliseconds from 0 to 2147483647 (got -1)',
    ],
    [
      { command, idleTimeout: 'soon' },
      'createSpawner.idleTimeout: expected whole milliseconds from 1 to 2147483647 or false (got "soon")',
    ],
    [
      { command, idleTimeout: 0 },
      'createSpawner.idleTimeout: expected at least 1 ms (use false to turn it off)',
    ],
    [{ command, maxQueue: 0 }, 'createSpawner.maxQueue: expected a positive integer (got 0)'],
    [
      { command, backoff: { base: 0 } },
      'createSpawner.backoff.base: expected whole milliseconds from 1 to 2147483647 (got 0)',
    ],
    [{ command, logger: true }, 'createSpawner.logger: expected a function or false (got true)'],
  ])('names the option in what it refuses (%j)', (options, message) => {
    expect(refusal(options)).toBe(`invalid options: ${message}`)
  })

  it('refuses combinations that cannot work', () => {
    expect(refusal({ command, port: 8000, allocatePort: () => 8001 })).toBe(
      'invalid options: createSpawner.allocatePort: cannot be combined with port',
    )
    expect(refusal({ command, port: 0, ready: { stdout: /ready/ } })).toBe(
      'invalid options: createSpawner.port: 0 (the app picks its port) needs ready.stdout with a named group "port" to read it from',
    )
  })

  it('checks the forwarding options as createProxyApp would, named after createSpawner', () => {
    expect(refusal({ command, onError: 5 })).toBe(
      'invalid options: createSpawner.onError: expected a function',
    )
    expect(refusal({ command, pickleKeys: ['session'] })).toMatch(
      /^invalid options: createSpawner\.pickleKeys needs createSpawner\.pickleCodec/,
    )
    expect(refusal({ command, trustClientHeaders: ['X-Forwarded-For'] })).toMatch(
      /"X-Forwarded-For", a protocol header, which the front always replaces/,
    )
    expect(refusal({ command, href: 'http://127.0.0.1:8000' })).toMatch(/"href"/)
  })

  it('reports every problem at once', () => {
    expect(refusal({ command: '', port: 'x' })).toBe(
      'invalid options: createSpawner.command: expected a command (got an empty string); ' +
        'createSpawner.port: expected 0–65535 (got "x")',
    )
  })
})

describe('parseSpawnerOptions instances', () => {
  it('fills in the defaults of a pool, and has none without one', () => {
    expect(parseSpawnerOptions({ command }).instances).toBeUndefined()
    expect(parseSpawnerOptions({ command, instances: {} }).instances).toEqual({
      min: 1,
      max: 1,
      busyAt: 8,
      idleTimeout: 30_000,
    })
    expect(parseSpawnerOptions({ command, instances: { min: 3 } }).instances).toMatchObject({
      min: 3,
      max: 3,
    })
    expect(parseSpawnerOptions({ command, instances: { max: 4 } }).instances).toMatchObject({
      min: 1,
      max: 4,
    })
  })

  it('allows a fixed port for one instance and port 0 for many', () => {
    expect(parseSpawnerOptions({ command, port: 8000, instances: { max: 1 } }).port).toBe(8000)
    const stdout = /listening on (?<port>\d+)/
    const settings = parseSpawnerOptions({
      command,
      port: 0,
      ready: { stdout },
      instances: { max: 8 },
    })
    expect(settings.instances?.max).toBe(8)
  })

  it.each([
    [
      { instances: 2 },
      'createSpawner.instances: expected { min?, max?, busyAt?, idleTimeout? } (got 2)',
    ],
    [
      { instances: { min: 0 } },
      'createSpawner.instances.min: expected an integer from 1 to 64 (got 0)',
    ],
    [
      { instances: { min: 1.5 } },
      'createSpawner.instances.min: expected an integer from 1 to 64 (got 1.5)',
    ],
    [
      { instances: { max: 65 } },
      'createSpawner.instances.max: expected an integer from 1 to 64 (got 65)',
    ],
    [
      { instances: { min: 4, max: 2 } },
      'createSpawner.instances.max: expected at least instances.min, 4 (got 2)',
    ],
    [
      { instances: { busyAt: 0 } },
      'createSpawner.instances.busyAt: expected a positive integer (got 0)',
    ],
    [
      { instances: { idleTimeout: false } },
      'createSpawner.instances.idleTimeout: expected whole milliseconds from 1 to 2147483647 (got false)',
    ],
    [{ instances: { size: 2 } }, 'createSpawner.instances.size: unknown option'],
  ])('names the pool option in what it refuses (%j)', (options, message) => {
    expect(refusal({ command, ...options })).toBe(`invalid options: ${message}`)
  })

  it('refuses a fixed port for a pool of more than one instance, saying what to do', () => {
    expect(refusal({ command, port: 8000, instances: { min: 2 } })).toBe(
      'invalid options: createSpawner.port: 8000 cannot serve a pool of up to 2 instances: ' +
        'each instance needs a port of its own. Leave port out (each instance gets a free port), ' +
        'use port: 0 with a ready.stdout pattern that reads the port each instance picks, or set ' +
        'instances.max to 1',
    )
  })
})
