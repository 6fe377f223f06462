import { readFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { parseAllowList, WsgiProxyError } from '@wsgiproxy/core'
import * as z from 'zod'
import { durationFlag, parseDuration } from './duration.ts'
import { usageError } from './errors.ts'
import { listenFlag } from './listen.ts'
import type { ListenAddress } from './listen.ts'

const DURATION_HINT = 'expected a duration such as 500ms, 30s, 5m or a number of milliseconds'

// A number is milliseconds; a string carries a unit (DESIGN.md §9).
const duration = z.union(
  [z.int().min(0).max(2_147_483_647), z.string().regex(/^\d+(\.\d+)?(ms|s|m)?$/, DURATION_HINT)],
  { error: DURATION_HINT },
)
const durationOrOff = z.union([duration, z.literal(false)], {
  error: `${DURATION_HINT}, or false`,
})

const routePath = z
  .string()
  .regex(
    /^\/([^/?#]+(\/[^/?#]+)*)?\/?$/,
    'expected a path prefix starting with "/" such as "/api" (no "//", "?" or "#")',
  )
  .describe('The path prefix this route answers under; it becomes SCRIPT_NAME for the app.')

// DESIGN.md §6: extra environ keys.
const envKey = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,127}$/, 'expected an environ key such as REMOTE_USER')
const keyList = z.array(envKey)

const timeouts = z
  .strictObject({
    headers: durationOrOff
      .optional()
      .describe('Until the response headers arrive (504 when missed). Default 60s.'),
    body: durationOrOff
      .optional()
      .describe('The longest pause between two body chunks. Default 60s.'),
  })
  .describe('Timeouts of forwarded requests.')

const forwardFields = {
  timeouts: timeouts.optional(),
  exposeErrors: z
    .boolean()
    .optional()
    .describe(
      'Show error details (which may name internal addresses) in error bodies. Default false.',
    ),
}

const protocolFields = {
  ...forwardFields,
  stringKeys: keyList.optional().describe('Environ keys sent as X-WSGIProxy-Str-N headers.'),
  unicodeKeys: keyList.optional().describe('Environ keys sent as X-WSGIProxy-Unicode-N headers.'),
  jsonKeys: keyList.optional().describe('Environ keys sent as X-WSGIProxy-Json-N headers.'),
  keyFile: z
    .string()
    .min(1)
    .optional()
    .describe(
      'Sign every forwarded request with this key file (relative to the config file; reloaded when it changes).',
    ),
  forwarded: z.boolean().optional().describe('Also send an RFC 7239 Forwarded header.'),
  rewriteLocation: z
    .boolean()
    .optional()
    .describe('Rewrite Location headers that point at the backend. Default true.'),
}

const proxyRoute = z
  .strictObject({
    path: routePath,
    type: z.literal('proxy'),
    href: z
      .url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' })
      .describe('Where to forward: http://host:port/path?query.'),
    ...protocolFields,
  })
  .describe('Forward to another server with the wsgiproxy protocol headers.')

const spawnRoute = z
  .strictObject({
    path: routePath,
    type: z.literal('spawn'),
    command: z
      .union([z.string().min(1), z.array(z.string()).min(1)], {
        error: 'expected a command line or an argv array',
      })
      .describe('The backend command; __PORT__ is replaced by its port, PORT is set too.'),
    name: z.string().min(1).optional().describe('The name in log lines.'),
    cwd: z.string().optional().describe('Working directory, relative to the config file.'),
    env: z
      .record(z.string(), z.string())
      .optional()
      .describe('Environment variables merged over the host environment.'),
    port: z.int().min(1).max(65535).optional().describe('A fixed port. Default: a free one.'),
    readyPath: z
      .string()
      .startsWith('/', 'expected a path starting with "/"')
      .optional()
      .describe('Also wait for GET readyPath to answer below 500 before forwarding.'),
    startTimeout: duration.optional().describe('How long a start may take. Default 60s.'),
    idleTimeout: durationOrOff
      .optional()
      .describe('Stop the backend after this long without requests. Default false (never).'),
    killTimeout: duration.optional().describe('SIGTERM to SIGKILL delay. Default 5s.'),
    maxQueue: z.int().min(0).optional().describe('Requests waiting for a start. Default 100.'),
    ...protocolFields,
  })
  .describe('Start a backend on the first request and forward to it.')

// One allow entry, checked as exactProxy checks it, so an error names its place in the file.
const allowEntry = z.string().superRefine((entry, context) => {
  try {
    parseAllowList([entry])
  } catch (error) {
    if (!(error instanceof WsgiProxyError)) throw error
    context.addIssue({ code: 'custom', message: error.message.replace(/^.*?allow\.0: /, '') })
  }
})

const exactRoute = z
  .strictObject({
    path: routePath,
    type: z.literal('exact'),
    ...forwardFields,
    allow: z
      .array(allowEntry)
      .optional()
      .describe(
        'Where the exact proxy may connect: host names (example.com, *.example.com), IP addresses and CIDR ranges (10.0.0.0/8, ::1), presets (public, loopback, linklocal, uniquelocal), each optionally with :port, :port,port or :* ([::1]:8080). Other targets get 403. Default ["public"]: no loopback, private, link-local or other internal address, in any spelling or through a name that resolves to one.',
      ),
  })
  .describe(
    'The exact proxy: send the request to the host its Host header names, if allow permits it (a request addressed to this server itself gets 508).',
  )

// RFC 9110 §5.6.2: an Upgrade protocol name is a token.
const protocolName = z
  .string()
  .regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'expected a protocol name such as "websocket"')

const upgradeSchema = z
  .strictObject({
    protocols: z
      .array(protocolName)
      .optional()
      .describe(
        'The Upgrade protocols forwarded, compared without regard to case; a request offering none of them is served with its Upgrade ignored. Default ["websocket"].',
      ),
    idleTimeout: durationOrOff
      .optional()
      .describe(
        'Close an upgraded tunnel after this long with no bytes either way; false (or 0) keeps idle tunnels open. Default 5m.',
      ),
    maxConnections: z
      .int()
      .min(1)
      .max(Number.MAX_SAFE_INTEGER)
      .optional()
      .describe('Upgraded tunnels open at once; one more gets 503. Default 1000.'),
  })
  .describe('Upgrade (WebSocket) forwarding, for every route.')

const echoRoute = z
  .strictObject({
    path: routePath,
    type: z.literal('echo'),
    trustIps: z
      .array(z.string().min(1))
      .optional()
      .describe('Peers whose protocol headers are believed. Default ["loopback"].'),
    keyFile: z
      .string()
      .min(1)
      .optional()
      .describe('Verify signatures with this key file (relative to the config file).'),
  })
  .describe('Answer with the restored environ (HTML, or JSON for Accept: application/json).')

const routeSchema = z.discriminatedUnion('type', [proxyRoute, spawnRoute, exactRoute, echoRoute], {
  error: 'expected "type" to be "proxy", "spawn", "exact" or "echo"',
})

/** The zod schema of `wsgiproxy.config.json`. */
export const configSchema: z.ZodType<ConfigInput> = z
  .strictObject({
    $schema: z.string().optional().describe('The JSON Schema of this file, for editors.'),
    listen: z
      .union([z.string(), z.int().min(0).max(65535)], {
        error: 'expected "host:port" or a port number',
      })
      .optional()
      .describe('Where to listen: "host:port" or a port. Default "127.0.0.1:8080".'),
    logFormat: z.enum(['text', 'json']).optional().describe('Log lines as text or JSON.'),
    upgrade: upgradeSchema.optional(),
    routes: z
      .array(routeSchema)
      .min(1, 'expected at least one route')
      .describe('The mounted apps.'),
  })
  .describe('wsgiproxy serve configuration')

/** Timeouts as written in the config file. */
export interface TimeoutsInput {
  headers?: string | number | false | undefined
  body?: string | number | false | undefined
}

interface ForwardInput {
  timeouts?: TimeoutsInput | undefined
  exposeErrors?: boolean | undefined
}

interface ProtocolInput extends ForwardInput {
  stringKeys?: string[] | undefined
  unicodeKeys?: string[] | undefined
  jsonKeys?: string[] | undefined
  keyFile?: string | undefined
  forwarded?: boolean | undefined
  rewriteLocation?: boolean | undefined
}

/** A proxy route. */
export interface ProxyRoute extends ProtocolInput {
  path: string
  type: 'proxy'
  href: string
}

/** A spawned backend route. */
export interface SpawnRoute extends ProtocolInput {
  path: string
  type: 'spawn'
  command: string | string[]
  name?: string | undefined
  cwd?: string | undefined
  env?: Record<string, string> | undefined
  port?: number | undefined
  readyPath?: string | undefined
  startTimeout?: string | number | undefined
  idleTimeout?: string | number | false | undefined
  killTimeout?: string | number | undefined
  maxQueue?: number | undefined
}

/** An exact proxy route. */
export interface ExactRoute extends ForwardInput {
  path: string
  type: 'exact'
  allow?: string[] | undefined
}

/** An echo route. */
export interface EchoRoute {
  path: string
  type: 'echo'
  trustIps?: string[] | undefined
  keyFile?: string | undefined
}

/** One route of the config file. */
export type RouteInput = ProxyRoute | SpawnRoute | ExactRoute | EchoRoute

/** The `upgrade` section as written in the config file. */
export interface UpgradeInput {
  protocols?: string[] | undefined
  idleTimeout?: string | number | false | undefined
  maxConnections?: number | undefined
}

/** The config file as written. */
export interface ConfigInput {
  $schema?: string | undefined
  listen?: string | number | undefined
  logFormat?: 'text' | 'json' | undefined
  upgrade?: UpgradeInput | undefined
  routes: RouteInput[]
}

/** Upgrade (WebSocket) settings for `serve()`, from the config file or the flags. */
export interface UpgradeSettings {
  /** `upgradeProtocols`. */
  protocols?: string[]
  /** `upgradeIdleTimeout` in milliseconds; 0 keeps idle tunnels open. */
  idleTimeout?: number
  /** `maxUpgradeConnections`. */
  maxConnections?: number
}

/** A config file read and validated, relative paths resolved. */
export interface Config {
  /** Where to listen, if the file says. */
  listen: ListenAddress | undefined
  /** The log format, if the file says. */
  logFormat: 'text' | 'json' | undefined
  /** The upgrade settings the file gives (none: `serve()`'s defaults). */
  upgrade: UpgradeSettings
  /** The routes, with `keyFile` and `cwd` resolved against the config file's directory. */
  routes: RouteInput[]
}

/**
 * The JSON Schema of the config file, generated from {@link configSchema}.
 *
 * @returns the schema as a plain object
 */
export function configJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(configSchema, { io: 'input', target: 'draft-2020-12' }) as Record<
    string,
    unknown
  >
}

/**
 * Reads, parses and validates a config file.
 *
 * @param file - the path
 * @returns the config, relative paths resolved
 * @throws CliError (exit 1) in one line: the file, the JSON syntax error or the path in the
 * file with the expected value
 */
export async function loadConfig(file: string): Promise<Config> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    throw usageError(
      code === 'ENOENT'
        ? `config file ${file} does not exist: create it or pass --config <file>`
        : `cannot read config file ${file} (${code ?? String(error)})`,
    )
  }
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch (error) {
    throw usageError(
      `config file ${file} is not valid JSON: ${jsonErrorMessage(error, text)} (fix the syntax; JSON has no comments or trailing commas)`,
    )
  }
  return parseConfig(data, file)
}

/**
 * Validates config data.
 *
 * @param data - the parsed JSON
 * @param file - the file it came from, for messages and relative paths
 * @returns the config
 * @throws CliError (exit 1) naming the path in the file and the expected value
 */
export function parseConfig(data: unknown, file: string): Config {
  const result = configSchema.safeParse(data, { reportInput: true })
  if (!result.success) {
    const [first, ...rest] = result.error.issues
    const more = rest.length === 0 ? '' : ` (and ${rest.length} more)`
    throw usageError(`config file ${file}: ${formatIssue(first)}${more}`)
  }
  const input = result.data
  const base = dirname(resolve(file))
  const routes = input.routes.map((route) => resolvePaths(route, base))
  const listen =
    input.listen === undefined
      ? undefined
      : listenFlag(`config file ${file}: listen`, String(input.listen))
  return { listen, logFormat: input.logFormat, upgrade: upgradeOf(input.upgrade), routes }
}

/**
 * The upgrade settings of the config file's `upgrade` section.
 *
 * @param input - the section as the schema accepted it
 * @returns the settings, durations in milliseconds (`false` is 0: off)
 */
export function upgradeOf(input: UpgradeInput | undefined): UpgradeSettings {
  const settings: UpgradeSettings = {}
  if (input === undefined) return settings
  if (input.protocols !== undefined) settings.protocols = input.protocols
  if (input.idleTimeout !== undefined) {
    settings.idleTimeout = input.idleTimeout === false ? 0 : toMs(input.idleTimeout)
  }
  if (input.maxConnections !== undefined) settings.maxConnections = input.maxConnections
  return settings
}

/** The upgrade flags of a serving subcommand, as `parseArgs` gives them. */
export interface UpgradeFlags {
  'upgrade-protocol'?: string[] | undefined
  'upgrade-idle'?: string | undefined
  'max-upgrades'?: string | undefined
}

/**
 * The upgrade settings of `--upgrade-protocol NAME` (repeatable), `--upgrade-idle DURATION`
 * (0 keeps idle tunnels open) and `--max-upgrades N`.
 *
 * @param flags - the flag values
 * @returns the settings the flags give
 * @throws CliError (exit 1) naming the flag and what it expects
 */
export function parseUpgradeFlags(flags: UpgradeFlags): UpgradeSettings {
  const settings: UpgradeSettings = {}
  const protocols = flags['upgrade-protocol']
  if (protocols !== undefined) {
    for (const protocol of protocols) {
      if (!protocolName.safeParse(protocol).success) {
        throw usageError(
          `--upgrade-protocol must be a protocol name such as websocket (got ${JSON.stringify(protocol)})`,
        )
      }
    }
    settings.protocols = protocols
  }
  const idle = flags['upgrade-idle']
  if (idle !== undefined) settings.idleTimeout = durationFlag('--upgrade-idle', idle)
  const max = flags['max-upgrades']
  if (max !== undefined) {
    if (!/^[1-9][0-9]{0,14}$/.test(max)) {
      throw usageError(
        `--max-upgrades must be a whole number of at least 1 (got ${JSON.stringify(max)})`,
      )
    }
    settings.maxConnections = Number(max)
  }
  return settings
}

/**
 * Milliseconds of a duration the schema accepted.
 *
 * @param value - a number of ms or a string with a unit
 * @returns whole milliseconds
 */
export function toMs(value: string | number): number {
  const ms = parseDuration(value)
  if (ms === undefined) throw usageError(`${DURATION_HINT} (got ${JSON.stringify(value)})`)
  return ms
}

// Node 20 reports only a character position: add the line and column an editor shows.
function jsonErrorMessage(error: unknown, text: string): string {
  // The message may quote the text, line breaks and all: the error stays on one line.
  const message = (error instanceof Error ? error.message : String(error)).replace(/\s*\n\s*/g, ' ')
  const match = /at position (\d+)$/.exec(message)
  if (match === null) return message
  const before = text.slice(0, Number(match[1]))
  const line = before.split('\n').length
  const column = before.length - before.lastIndexOf('\n')
  return `${message} (line ${line} column ${column})`
}

function resolvePaths(route: RouteInput, base: string): RouteInput {
  const copy = { ...route }
  if ('keyFile' in copy && copy.keyFile !== undefined) copy.keyFile = resolve(base, copy.keyFile)
  if (copy.type === 'spawn' && copy.cwd !== undefined) copy.cwd = resolve(base, copy.cwd)
  return copy
}

function formatIssue(issue: z.core.$ZodIssue | undefined): string {
  if (issue === undefined) return 'invalid'
  const where = formatPath(issue.path)
  let message = issue.message.replace(/^Invalid input: /, '')
  if (issue.code === 'invalid_type' && issue.input === undefined) {
    message = `is required: expected ${issue.expected}`
  } else if (issue.code === 'unrecognized_keys') {
    message = `unknown ${issue.keys.length === 1 ? 'key' : 'keys'} ${issue.keys.map((key) => JSON.stringify(key)).join(', ')}: remove ${issue.keys.length === 1 ? 'it' : 'them'} (see schema.json for the keys)`
  } else if ('input' in issue && issue.input !== undefined && !/\(got /.test(message)) {
    let input: unknown = issue.input
    // A discriminated union reports the whole object at the discriminator's path.
    const last = issue.path.at(-1)
    if (typeof last === 'string' && typeof input === 'object' && input !== null && last in input) {
      input = (input as Record<string, unknown>)[last]
    }
    message += ` (got ${preview(input)})`
  }
  message = message.charAt(0).toLowerCase() + message.slice(1)
  return where === '' ? message : `${where}: ${message}`
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = ''
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`
    else if (/^[A-Za-z_$][\w$]*$/.test(String(part)))
      out += `${out === '' ? '' : '.'}${String(part)}`
    else out += `[${JSON.stringify(String(part))}]`
  }
  return out
}

function preview(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value)
  return text.length > 40 ? `${text.slice(0, 37)}...` : text
}
