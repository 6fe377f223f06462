// The options of createSpawner: their types and their defaults. The one schema that checks them is
// _options-schema.ts.
import { WsgiProxyError } from '@wsgiproxy/core'
import type { PoolOptions, ProxyAppOptions } from '@wsgiproxy/core'
import { checkProxyAppOptions, parseOptions } from '@wsgiproxy/core/adapter'
import { commandName } from './_command.ts'
import { spawnerOptionsSchema } from './_options-schema.ts'
import { kernelPort } from './_ports.ts'

/** One line of backend output (or a message of the spawner itself). */
export interface SpawnerLogEntry {
  /** The spawner's name. */
  name: string
  /** The backend's pid, or `null` for a spawner message about no particular process. */
  pid: number | null
  /** Where the line came from: the backend's stdout or stderr, or the spawner. */
  stream: 'stdout' | 'stderr' | 'spawner'
  /** The line as written, without its line ending. */
  text: string
  /** The line with its prefix: `[name pid] text`. */
  line: string
}

/** Receives every log line; see {@link SpawnerOptions.logger}. */
export type SpawnerLogger = (entry: SpawnerLogEntry) => void

/** How to tell that a started backend is ready. */
export interface SpawnerReadiness {
  /**
   * Also require `GET <http>` (a path starting with `/`) to answer with a status below 500; a 5xx
   * while the app boots keeps polling. Default: a TCP connection is enough.
   */
  http?: string
  /**
   * Wait for an output line (stdout or stderr: many servers announce themselves on stderr) that
   * matches, then check TCP. A named group `port` gives the port the app chose (use it with
   * `port: 0`). Default: no output is awaited.
   */
  stdout?: RegExp
}

/** Crash-loop backoff; see {@link SpawnerOptions.backoff}. */
export interface SpawnerBackoff {
  /** The first delay, in milliseconds, after a second failure in a row. Default `1_000`. */
  base?: number
  /** The longest delay, in milliseconds; each failure in a row doubles it up to this. Default `30_000`. */
  max?: number
  /** The failure count resets after a backend has been ready this long, in milliseconds. Default `60_000`. */
  reset?: number
}

/** A pool of backend processes; see {@link SpawnerOptions.instances}. */
export interface SpawnerInstances {
  /**
   * Processes started together (by the first request or `start()`) and kept running: a crashed
   * one is replaced. From 1 to 64. Default `1`.
   */
  min?: number
  /**
   * The most processes: one more starts while every running one is busy (see `busyAt`). From
   * `min` to 64. Default: `min` (a pool of fixed size).
   */
  max?: number
  /**
   * Requests (and upgraded connections) in flight from which an instance counts as busy. Default `8`.
   */
  busyAt?: number
  /**
   * An instance above `min` with nothing in flight for this long is stopped, in milliseconds.
   * Default `30_000`.
   */
  idleTimeout?: number
}

/**
 * Options of {@link createSpawner}. The forwarding options are those of `createProxyApp`, but
 * its targets and pool options: the spawner's targets are its processes (see `instances`).
 */
export interface SpawnerOptions extends Omit<
  ProxyAppOptions,
  'href' | 'targets' | keyof PoolOptions
> {
  /**
   * The backend's command: an argv array, or a string split on whitespace (run by `/bin/sh -c`
   * with `exec` in front when it uses shell syntax: quotes, `$`, `&&`, ...). `__PORT__` is
   * replaced by the port in either form. Required.
   */
  command: string | readonly string[]
  /** The name in log prefixes (`[name pid]`) and messages. Default: the program's base name. */
  name?: string
  /** The working directory. Default: the host's. */
  cwd?: string
  /**
   * Environment variables merged over the host's (`undefined` removes one). `PORT` is always
   * set to the backend's port, and `PYTHONUNBUFFERED=1` unless given, so Python output is not
   * held back in a buffer. Default `{}`.
   */
  env?: Record<string, string | undefined>
  /** Start from the host's environment. Default `true`; `false` passes only `env` and `PORT`. */
  inheritEnv?: boolean
  /** Run a string command through the shell (`true`) or never (`false`). Default: when it uses shell syntax. */
  shell?: boolean
  /**
   * The backend's port. Default: a kernel-assigned port, new for every start and reserved in this
   * process while the backend lives. A fixed port that is already in use fails the start without
   * spawning (502). `0`: the app picks its own port and reports it through `ready.stdout`.
   */
  port?: number
  /**
   * Picks a port for a start (the default asks the kernel for a free one); a port another backend
   * of this process holds is asked for again. Only without `port`.
   */
  allocatePort?: () => number | Promise<number>
  /** How readiness is checked. Default: a TCP connection on 127.0.0.1 or ::1. */
  ready?: SpawnerReadiness
  /** How long a start may take before waiting requests get 504, in milliseconds. Default `60_000`. */
  startTimeout?: number
  /** How long a stopping backend has between SIGTERM and SIGKILL, in milliseconds. Default `5_000`. */
  killTimeout?: number
  /** How long `restart()` waits for requests in flight before stopping, in milliseconds. Default: `killTimeout`. */
  drainTimeout?: number
  /**
   * Stop the backend after this long with nothing in flight (no request, response body or
   * upgraded connection), in milliseconds; the next request starts it again. Default `false` (never).
   */
  idleTimeout?: number | false
  /** Requests that may wait for a start; more get 503 at once. Default `100`. */
  maxQueue?: number
  /** Crash-loop backoff: 503 with `Retry-After` after failures in a row. Defaults: 1 s doubling to 30 s, reset after 60 s ready. */
  backoff?: SpawnerBackoff
  /** Output lines kept for `status()` and start errors. Default `200`. */
  logLines?: number
  /** Where output lines and spawner messages go, or `false` for nowhere. Default: the host's stderr. */
  logger?: SpawnerLogger | false
  /**
   * Kill the backends when the host gets SIGINT, SIGTERM or SIGHUP and has no listener of its own
   * for it (the signal is then raised again, so the host still ends as it would have). Default `true`.
   */
  handleSignals?: boolean
  /**
   * Run one small watchdog process per host that kills the backends if the host is killed with
   * SIGKILL or crashes natively. Default `true` (POSIX only).
   */
  orphanGuard?: boolean
  /**
   * Run a pool of processes instead of one: each request goes to the least busy ready instance,
   * the pool grows up to `max` while every instance is busy and shrinks back to `min` when the
   * extras are idle, a crashed instance is replaced (idempotent requests it failed are retried on
   * another one), and `restart()` replaces the instances one at a time without failing a
   * request. Every instance gets its own port, so a fixed `port` allows only `max: 1`.
   * Default: one process, as without a pool (see docs/spawner.md, "Pools of instances").
   */
  instances?: SpawnerInstances
}

/** Checked options with their defaults filled in: what the parts of a spawner read. */
export interface SpawnerSettings {
  command: string | readonly string[]
  name: string
  cwd: string | undefined
  env: Record<string, string | undefined>
  inheritEnv: boolean
  shell: boolean | undefined
  port: number | undefined
  allocatePort: () => number | Promise<number>
  readyHttp: string | undefined
  /** A private copy of `ready.stdout` without the `g` and `y` flags. */
  readyStdout: RegExp | undefined
  startTimeout: number
  killTimeout: number
  drainTimeout: number
  idleTimeout: number | false
  maxQueue: number
  backoff: Required<SpawnerBackoff>
  logLines: number
  logger: SpawnerLogger | undefined
  handleSignals: boolean
  orphanGuard: boolean
  /** The pool, with its defaults filled in, or `undefined` for a single process. */
  instances: Required<SpawnerInstances> | undefined
  /** The forwarding options that were given (checked), for `createProxyApp`. */
  proxy: Omit<ProxyAppOptions, 'href'>
}

const DEFAULT_START_TIMEOUT = 60_000
const DEFAULT_KILL_TIMEOUT = 5_000
const DEFAULT_MAX_QUEUE = 100
const DEFAULT_LOG_LINES = 200
const DEFAULT_BACKOFF = { base: 1_000, max: 30_000, reset: 60_000 } as const
const DEFAULT_BUSY_AT = 8
const DEFAULT_INSTANCE_IDLE = 30_000

/**
 * Checks `createSpawner` options (every problem named `createSpawner.<option>`) and fills in the
 * defaults; the forwarding options are checked by core as `createProxyApp` would check them.
 *
 * @param options - what the caller passed
 * @returns the settings
 * @throws WsgiProxyError `INVALID_OPTIONS` for bad options
 */
export function parseSpawnerOptions(options: SpawnerOptions): SpawnerSettings {
  if (typeof options !== 'object' || options === null) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      `invalid options: createSpawner expects an options object (got ${String(options)})`,
      { expose: true },
    )
  }
  const {
    command,
    name,
    cwd,
    env,
    inheritEnv,
    shell,
    port,
    allocatePort,
    ready,
    startTimeout,
    killTimeout,
    drainTimeout,
    idleTimeout,
    maxQueue,
    backoff,
    logLines,
    logger,
    handleSignals,
    orphanGuard,
    instances,
    ...proxy
  } = parseOptions<SpawnerOptions>(spawnerOptionsSchema, options, 'createSpawner')
  // What is not the spawner's own is createProxyApp's (or unknown, which core then names). The
  // values go on as given: createProxyApp reads them again for every backend.
  const proxyOptions = definedOnly(proxy)
  checkProxyAppOptions(proxyOptions, 'createSpawner')
  const stdout = ready?.stdout
  return {
    command,
    name: name ?? commandName(command),
    cwd,
    env: { ...env },
    inheritEnv: inheritEnv ?? true,
    shell,
    port,
    allocatePort: allocatePort ?? kernelPort,
    readyHttp: ready?.http,
    // A private copy without `g`/`y`, whose `lastIndex` would make `exec` skip matches.
    readyStdout:
      stdout === undefined
        ? undefined
        : new RegExp(stdout.source, stdout.flags.replace(/[gy]/g, '')),
    startTimeout: startTimeout ?? DEFAULT_START_TIMEOUT,
    killTimeout: killTimeout ?? DEFAULT_KILL_TIMEOUT,
    drainTimeout: drainTimeout ?? killTimeout ?? DEFAULT_KILL_TIMEOUT,
    idleTimeout: idleTimeout ?? false,
    maxQueue: maxQueue ?? DEFAULT_MAX_QUEUE,
    backoff: { ...DEFAULT_BACKOFF, ...definedOnly(backoff ?? {}) },
    logLines: logLines ?? DEFAULT_LOG_LINES,
    logger: logger === false ? undefined : (logger ?? writeToStderr),
    handleSignals: handleSignals ?? true,
    orphanGuard: orphanGuard ?? true,
    instances: instances === undefined ? undefined : poolSettings(instances),
    proxy: proxyOptions,
  }
}

function poolSettings(instances: SpawnerInstances): Required<SpawnerInstances> {
  const min = instances.min ?? 1
  return {
    min,
    max: instances.max ?? min,
    busyAt: instances.busyAt ?? DEFAULT_BUSY_AT,
    idleTimeout: instances.idleTimeout ?? DEFAULT_INSTANCE_IDLE,
  }
}

function writeToStderr(entry: SpawnerLogEntry): void {
  process.stderr.write(`${entry.line}\n`)
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>
}
