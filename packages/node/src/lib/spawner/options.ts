// The options of createSpawner: their types, their defaults, and the one schema that checks them.
import { WsgiProxyError } from '@wsgiproxy/core'
import type { ProxyAppOptions } from '@wsgiproxy/core'
import { checkProxyAppOptions, duration, fn, parseOptions } from '@wsgiproxy/core/adapter'
import * as z from 'zod'
import { commandName } from './_command.ts'
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

/** Options of {@link createSpawner}. The forwarding options are those of `createProxyApp`. */
export interface SpawnerOptions extends Omit<ProxyAppOptions, 'href'> {
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
  /** The forwarding options that were given (checked), for `createProxyApp`. */
  proxy: Omit<ProxyAppOptions, 'href'>
}

const DEFAULT_START_TIMEOUT = 60_000
const DEFAULT_KILL_TIMEOUT = 5_000
const DEFAULT_MAX_QUEUE = 100
const DEFAULT_LOG_LINES = 200
const DEFAULT_BACKOFF = { base: 1_000, max: 30_000, reset: 60_000 } as const
// The longest delay setTimeout keeps (a longer one fires at once).
const MAX_TIMER_MS = 2_147_483_647

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
    proxy: proxyOptions,
  }
}

function writeToStderr(entry: SpawnerLogEntry): void {
  process.stderr.write(`${entry.line}\n`)
}

// --- the schema -------------------------------------------------------------------------------

/** How a refused value is shown in a message. */
function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return 'a function'
  if (Array.isArray(value)) return 'an array'
  return String(value)
}

/** The error option of a check whose message reads `expected <expected> (got <the value>)`. */
function got(expected: string): { error: (issue: { input?: unknown }) => string } {
  return { error: (issue) => `expected ${expected} (got ${describe(issue.input)})` }
}

/** A whole number from `min` to `max`: one message for whichever bound or type is missed. */
function wholeNumber(expected: string, min: number, max = Number.POSITIVE_INFINITY): z.ZodNumber {
  const message = got(expected)
  return z
    .number(message)
    .refine(Number.isInteger, { ...message, abort: true })
    .min(min, message)
    .max(max, message)
}

/** Whole milliseconds a timer can wait, from `min`. */
function milliseconds(min: number): z.ZodNumber {
  return wholeNumber(`whole milliseconds from ${min} to ${MAX_TIMER_MS}`, min, MAX_TIMER_MS)
}

/**
 * An optional option whose refused values read `expected <expected> (got <the value>)`, for
 * shared schemas with a message of their own for a wrong type (or none). The union with
 * `undefined` is what makes zod use this message: it answers a one-option union with the
 * option's own issues.
 */
function optional(schema: z.ZodType, expected: string): z.ZodType {
  return z.union([schema, z.undefined()], got(expected)).optional()
}

/** An object of the options in `shape`, naming any other key `<key>: unknown option`. */
function optionGroup(shape: z.ZodRawShape, expected: string): z.ZodType {
  return z.looseObject(shape, got(expected)).superRefine((value, ctx) => {
    for (const key of Object.keys(value)) {
      if (!Object.hasOwn(shape, key)) {
        ctx.addIssue({ code: 'custom', path: [key], message: 'unknown option' })
      }
    }
  })
}

const COMMAND = 'a string or a non-empty array of strings'
const flag = z.boolean(got('a boolean')).optional()
// (Not `.min(1)`: zod runs length checks on any value with a length, a function too.)
const nonEmptyString = z
  .string(got('a non-empty string'))
  .refine((value) => value !== '', got('a non-empty string'))
const PATH = 'a path starting with "/"'

const command = z.union(
  [
    z.string().refine((value) => value.trim() !== '', 'expected a command (got an empty string)'),
    z
      .array(z.string())
      .min(1, got(COMMAND))
      .refine((argv) => argv[0] !== '', got(COMMAND)),
  ],
  got(COMMAND),
)

// Any object (process.env too, which is not a plain one), its values strings or undefined.
const env = z
  .custom<Record<string, string | undefined>>(
    (value) => typeof value === 'object' && value !== null && !Array.isArray(value),
    { ...got('an object of strings'), abort: true },
  )
  .superRefine((value, ctx) => {
    for (const [key, entry] of Object.entries(value)) {
      if (entry !== undefined && typeof entry !== 'string') {
        const message = `expected a string or undefined (got ${describe(entry)})`
        ctx.addIssue({ code: 'custom', path: [key], message })
      }
    }
  })

// The spawner's own options. The rest pass through to checkProxyAppOptions.
const spawnerOptionsSchema = z
  .looseObject(
    {
      command,
      name: nonEmptyString.optional(),
      cwd: nonEmptyString.optional(),
      env: env.optional(),
      inheritEnv: flag,
      shell: flag,
      handleSignals: flag,
      orphanGuard: flag,
      port: wholeNumber('0–65535', 0, 65535).optional(),
      allocatePort: optional(fn<() => number | Promise<number>>(), 'a function'),
      ready: optionGroup(
        {
          http: z.string(got(PATH)).startsWith('/', got(PATH)).optional(),
          stdout: z.instanceof(RegExp, got('a RegExp')).optional(),
        },
        '{ http?, stdout? }',
      ).optional(),
      startTimeout: milliseconds(1).optional(),
      killTimeout: milliseconds(1).optional(),
      drainTimeout: milliseconds(0).optional(),
      idleTimeout: optional(duration, `whole milliseconds from 1 to ${MAX_TIMER_MS} or false`),
      maxQueue: wholeNumber('a positive integer', 1).optional(),
      backoff: optionGroup(
        {
          base: milliseconds(1).optional(),
          max: milliseconds(1).optional(),
          reset: milliseconds(1).optional(),
        },
        '{ base?, max?, reset? }',
      ).optional(),
      logLines: wholeNumber('a non-negative integer', 0).optional(),
      logger: z
        .union([z.literal(false), fn<SpawnerLogger>()], got('a function or false'))
        .optional(),
    },
    got('an options object'),
  )
  .superRefine(checkCombinations)

// Rules across options; each problem names the option to change.
function checkCombinations(options: Record<string, unknown>, ctx: z.RefinementCtx): void {
  if (options.allocatePort !== undefined && options.port !== undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['allocatePort'],
      message: 'cannot be combined with port',
    })
  }
  const ready = options.ready as SpawnerReadiness | undefined
  if (options.port === 0 && !(ready?.stdout?.source.includes('(?<port>') ?? false)) {
    const message =
      '0 (the app picks its port) needs ready.stdout with a named group "port" to read it from'
    ctx.addIssue({ code: 'custom', path: ['port'], message })
  }
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>
}
