import { readFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { dirname, resolve } from 'node:path'
import type { OptionProblem } from '@wsgiproxy/core/adapter'
import { explainIssues } from '@wsgiproxy/core/adapter'
import type * as z from 'zod'
import { configSchema, ROUTE_KEYS } from './config-schema.ts'
import { toMs } from './duration.ts'
import type { RouteInput, TlsInput, TracingInput } from './config-schema.ts'
import { usageError } from './errors.ts'
import { listenFlag } from './listen.ts'
import type { ListenAddress } from './listen.ts'
import { upgradeOf } from './upgrade-settings.ts'
import type { UpgradeSettings } from './upgrade-settings.ts'
import type { TlsFiles } from './tls-files.ts'

/** A config file read and validated, relative paths resolved. */
export interface Config {
  /** Where to listen, if the file says. */
  listen: ListenAddress | undefined
  /** The log format, if the file says. */
  logFormat: 'text' | 'json' | undefined
  /** The certificate files, resolved against the config file's directory, if the file says. */
  tls: TlsFiles | undefined
  /** Whether to speak HTTP/2 (`'h2c'`: cleartext only), if the file says. */
  http2: boolean | 'h2c' | undefined
  /** The upgrade settings the file gives (none: `serve()`'s defaults). */
  upgrade: UpgradeSettings
  /** The number of worker processes (`auto` resolved), if the file says. */
  workers: number | undefined
  /** The admin listener's address as written (`admin.listen`), if the file says. */
  admin: string | number | undefined
  /** The drain time on shutdown and reload in milliseconds, if the file says. */
  drainTimeout: number | undefined
  /** OpenTelemetry tracing, if the file says. */
  tracing: TracingInput | undefined
  /** The routes, with `keyFile` and `cwd` resolved against the config file's directory. */
  routes: RouteInput[]
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
    // An unknown key first: a misspelt required key is also reported missing, which says less.
    const [first, ...rest] = explainIssues(configSchema, data, result.error.issues, 'config')
    const more = rest.length === 0 ? '' : ` (and ${rest.length} more)`
    throw usageError(`config file ${file}: ${formatProblem(first, data)}${more}`)
  }
  const input = result.data
  input.routes.forEach((route, index) => {
    if (route.type !== 'proxy' || (route.href === undefined) !== (route.targets === undefined)) {
      return
    }
    throw usageError(
      route.href === undefined
        ? `config file ${file}: routes[${index}]: a proxy route needs "href" (a URL or a list of them) or "targets"`
        : `config file ${file}: routes[${index}]: give "href" or "targets", not both`,
    )
  })
  const base = dirname(resolve(file))
  const routes = input.routes.map((route) => resolvePaths(route, base))
  const listen =
    input.listen === undefined
      ? undefined
      : listenFlag(`config file ${file}: listen`, String(input.listen))
  const tls = input.tls === undefined ? undefined : tlsFilesOf(input.tls, base)
  return {
    listen,
    logFormat: input.logFormat,
    tls,
    http2: input.http2,
    upgrade: upgradeOf(input.upgrade),
    workers: input.workers === 'auto' ? availableParallelism() : input.workers,
    admin: input.admin?.listen,
    drainTimeout: input.drainTimeout === undefined ? undefined : toMs(input.drainTimeout),
    tracing: input.tracing,
    routes,
  }
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

function tlsFilesOf(tls: TlsInput, base: string): TlsFiles {
  const pair = ({ cert, key }: { cert: string; key: string }) => ({
    cert: resolve(base, cert),
    key: resolve(base, key),
  })
  return {
    ...pair(tls),
    ...(tls.sni === undefined
      ? {}
      : { sni: Object.fromEntries(Object.entries(tls.sni).map(([name, p]) => [name, pair(p)])) }),
    ...(tls.minVersion === undefined ? {} : { minVersion: tls.minVersion }),
  }
}

function resolvePaths(route: RouteInput, base: string): RouteInput {
  const copy = { ...route }
  if ('keyFile' in copy && copy.keyFile !== undefined) copy.keyFile = resolve(base, copy.keyFile)
  if (copy.type === 'spawn' && copy.cwd !== undefined) copy.cwd = resolve(base, copy.cwd)
  if (copy.type === 'proxy' && copy.upstream !== undefined) {
    const { ca, cert, key } = copy.upstream
    copy.upstream = {
      ...copy.upstream,
      ...(ca === undefined
        ? {}
        : { ca: Array.isArray(ca) ? ca.map((file) => resolve(base, file)) : resolve(base, ca) }),
      ...(cert === undefined ? {} : { cert: resolve(base, cert) }),
      ...(key === undefined ? {} : { key: resolve(base, key) }),
    }
  }
  return copy
}

function formatProblem(problem: OptionProblem | undefined, data: unknown): string {
  if (problem === undefined) return 'invalid'
  if (problem.kind === 'issue') return formatIssue(problem.issue)
  const where = formatPath(problem.path)
  const key = JSON.stringify(problem.key)
  const owners = otherRouteTypes(problem.path, problem.key, data)
  const message =
    owners !== undefined
      ? `key ${key} belongs to ${owners.types.join(', ').replace(/, ([^,]*)$/, ' and $1')} routes, not to type ${JSON.stringify(owners.type)}: remove it or change "type"`
      : problem.hint === undefined
        ? `unknown key ${key}: remove it (see schema.json for the keys)`
        : `unknown key ${key} (${problem.hint})`
  return where === '' ? message : `${where}: ${message}`
}

// A key of other route types on a route (`compat` on an exact route): the route's type and the
// types that take the key.
function otherRouteTypes(
  path: readonly PropertyKey[],
  key: string,
  data: unknown,
): { type: string; types: string[] } | undefined {
  if (path.length !== 2 || path[0] !== 'routes' || typeof path[1] !== 'number') return undefined
  const routes = (data as { routes?: unknown }).routes
  const type = Array.isArray(routes) ? (routes[path[1]] as { type?: unknown })?.type : undefined
  if (typeof type !== 'string' || !Object.hasOwn(ROUTE_KEYS, type)) return undefined
  const types = Object.entries(ROUTE_KEYS)
    .filter(([other, keys]) => other !== type && keys.includes(key))
    .map(([other]) => other)
  return types.length === 0 ? undefined : { type, types }
}

function formatIssue(issue: z.core.$ZodIssue): string {
  const where = formatPath(issue.path)
  let message = issue.message.replace(/^Invalid input: /, '')
  if (issue.code === 'invalid_type' && issue.input === undefined) {
    message = `is required: expected ${issue.expected}`
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
