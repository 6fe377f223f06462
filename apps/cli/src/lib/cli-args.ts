import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import type { ParseArgsConfig } from 'node:util'
import { HELP } from './cli-help.ts'
import type { HelpTopic } from './cli-help.ts'
import { usageError } from './errors.ts'
import { DEFAULT_LISTEN, listenFlag } from './listen.ts'
import type { ListenChoice } from './listen.ts'
import type { LogFormat } from './log.ts'
import type { TlsFiles } from './tls-files.ts'

/** Where the command writes; replaceable for tests. */
export interface CliIo {
  stdout: (text: string) => void
  stderr: (text: string) => void
}

/** The flags of every serving subcommand. */
export const COMMON_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  listen: { type: 'string' },
  'log-format': { type: 'string' },
  'upgrade-protocol': { type: 'string', multiple: true },
  'upgrade-idle': { type: 'string' },
  'max-upgrades': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  http2: { type: 'boolean' },
  h2c: { type: 'boolean' },
  admin: { type: 'string' },
} as const

/** The flags of `wsgiproxy serve` beside {@link COMMON_OPTIONS}. */
export const SERVE_OPTIONS = {
  config: { type: 'string', short: 'c' },
  workers: { type: 'string' },
  'drain-timeout': { type: 'string' },
  'pid-file': { type: 'string' },
} as const

/** The flags of `wsgiproxy serve`, parsed. */
export interface ServeFlags {
  listen?: string | undefined
  'log-format'?: string | undefined
  'upgrade-protocol'?: string[] | undefined
  'upgrade-idle'?: string | undefined
  'max-upgrades'?: string | undefined
  'tls-cert'?: string | undefined
  'tls-key'?: string | undefined
  http2?: boolean | undefined
  h2c?: boolean | undefined
  workers?: string | undefined
  'drain-timeout'?: string | undefined
  admin?: string | undefined
}

/** The flags of the subcommands that forward with the protocol headers (proxy, spawn). */
export const KEY_OPTIONS = {
  'key-file': { type: 'string' },
  'string-key': { type: 'string', multiple: true },
  'unicode-key': { type: 'string', multiple: true },
  'json-key': { type: 'string', multiple: true },
  forwarded: { type: 'boolean' },
  'x-forwarded': { type: 'boolean' },
  compat: { type: 'string' },
} as const

/** The flag of `wsgiproxy echo` that names a shared replay store (the route's `replayStore`). */
export const REPLAY_OPTIONS = {
  'replay-redis': { type: 'string' },
} as const

/**
 * The echo route's `replayStore` of a `--replay-redis` flag.
 *
 * @param values - the parsed flags
 * @returns `{ replayStore: { redis } }`, or nothing without the flag
 * @throws CliError (exit 1) for a value that is not a redis:// URL, or the flag without --key-file
 */
export function replayStoreOf(values: {
  'replay-redis'?: string | undefined
  'key-file'?: string | undefined
}): { replayStore?: { redis: string } } {
  const redis = values['replay-redis']
  if (redis === undefined) return {}
  if (!/^rediss?:\/\/[^/?#\s]+/.test(redis)) {
    throw usageError(
      `--replay-redis must be a redis:// or rediss:// URL such as redis://127.0.0.1:6379 (got ${JSON.stringify(redis.replace(/(\/\/[^/@\s]*?:)[^/\s]*@/, '$1***@'))})`,
    )
  }
  if (values['key-file'] === undefined) {
    throw usageError('--replay-redis needs --key-file: it keeps the nonces of verified signatures')
  }
  return { replayStore: { redis } }
}

/** The values of `--compat` and of the config key `compat`. */
export const COMPAT_VALUES: readonly ['wsgiproxy-0.1'] = ['wsgiproxy-0.1']

/** A protocol compatibility mode: `wsgiproxy-0.1` speaks to Python Paste's WSGIProxy 0.1. */
export type Compat = (typeof COMPAT_VALUES)[number]

/**
 * Prints the help of a subcommand.
 *
 * @param command - the subcommand
 * @param io - where output goes
 * @returns the exit status, 0
 */
export function help(command: HelpTopic, io: CliIo): number {
  io.stdout(`${HELP[command]}\n`)
  return 0
}

/**
 * Parses the flags of a subcommand strictly.
 *
 * @param command - the subcommand, for the message
 * @param args - the arguments after it
 * @param config - its flags, and whether it takes positionals
 * @returns what `parseArgs` gives
 * @throws CliError (exit 1) naming the subcommand and the bad flag or argument
 */
export function parseCommandArgs<T extends ParseArgsConfig['options']>(
  command: HelpTopic,
  args: string[],
  config: { options: T; allowPositionals?: boolean },
): ReturnType<typeof parseArgs<{ options: T; allowPositionals: boolean; args: string[] }>> {
  try {
    return parseArgs({
      args,
      options: config.options,
      allowPositionals: config.allowPositionals ?? false,
      strict: true,
    })
  } catch (error) {
    const message = (error as Error).message.split('. ')[0] ?? ''
    throw usageError(
      `${command}: ${message.charAt(0).toLowerCase()}${message.slice(1)} (see wsgiproxy ${command} --help)`,
    )
  }
}

/**
 * Refuses options after the command of a subcommand that runs one (spawn) unless `--` comes
 * before the command: without it, `wsgiproxy spawn python3 -m http.server __PORT__` reads `-m`
 * as an option of wsgiproxy, unknown or, worse, one it has (`--name`, `-h`).
 *
 * @param command - the subcommand, for the message
 * @param args - the arguments after it
 * @param options - its flags
 * @throws CliError (exit 1) naming the option and giving the line with `--` in its place
 */
export function requireCommandSeparator(
  command: HelpTopic,
  args: string[],
  options: NonNullable<ParseArgsConfig['options']>,
): void {
  const { tokens } = parseArgs({
    args,
    options,
    allowPositionals: true,
    strict: false,
    tokens: true,
  })
  if (tokens.some((token) => token.kind === 'option-terminator')) return
  const first = tokens.find((token) => token.kind === 'positional')
  if (first === undefined) return
  const option = tokens.find((token) => token.kind === 'option' && token.index > first.index)
  if (option?.kind !== 'option') return
  const line = [command, ...args.slice(0, first.index), '--', ...args.slice(first.index)]
  throw usageError(
    `${command}: ${JSON.stringify(option.rawName)} after the command would be read as an option of wsgiproxy; ` +
      `put the command after -- (wsgiproxy ${command} [options] -- <command...>): wsgiproxy ${line.map(shellQuote).join(' ')}`,
  )
}

/**
 * The address of a `--listen` flag, with the certificate files of `--tls-cert`/`--tls-key`.
 *
 * @param values - the parsed flags
 * @returns the address, {@link DEFAULT_LISTEN} without the flag
 * @throws CliError (exit 1) for a value that is not an address, or one TLS flag without the other
 */
export function listenOf(values: {
  listen?: string | undefined
  'tls-cert'?: string | undefined
  'tls-key'?: string | undefined
  http2?: boolean | undefined
  h2c?: boolean | undefined
}): ListenChoice {
  const tls = tlsFlags(values)
  return withHttp2(
    {
      address: values.listen === undefined ? DEFAULT_LISTEN : listenFlag('--listen', values.listen),
      source: { from: 'flag' },
      ...(tls === undefined ? {} : { tls }),
    },
    http2Flags(values),
  )
}

/**
 * What `--http2` and `--h2c` ask for.
 *
 * @param values - the parsed flags
 * @returns `true`, `'h2c'`, or `undefined` for neither
 * @throws CliError (exit 1) for both
 */
export function http2Flags(values: {
  http2?: boolean | undefined
  h2c?: boolean | undefined
}): boolean | 'h2c' | undefined {
  if (values.h2c === true && values.http2 === true) {
    throw usageError(
      '--http2 and --h2c do not go together: --http2 is HTTP/2 beside HTTP/1.1 over TLS, --h2c cleartext HTTP/2 only',
    )
  }
  return values.h2c === true ? 'h2c' : values.http2
}

/**
 * The listen choice with HTTP/2 on: `--http2` or the config file's `http2: true` (over TLS, beside
 * HTTP/1.1), or `--h2c` / `"h2c"` (cleartext HTTP/2 only, without TLS).
 *
 * @param listen - the choice so far
 * @param http2 - what was asked for
 * @returns the choice
 * @throws CliError (exit 1) for `true` without TLS or `'h2c'` with it
 */
export function withHttp2(listen: ListenChoice, http2: boolean | 'h2c' | undefined): ListenChoice {
  if (http2 === undefined || http2 === false) return listen
  if (http2 === 'h2c') {
    if (listen.tls !== undefined) {
      throw usageError(
        'h2c is cleartext HTTP/2: without TLS; over TLS use --http2 (or "http2": true), which keeps HTTP/1.1 beside it',
      )
    }
    return { ...listen, http2: 'h2c' }
  }
  if (listen.tls === undefined) {
    throw usageError(
      'HTTP/2 needs TLS: give --tls-cert and --tls-key (or tls in the config file); for cleartext HTTP/2 only (no HTTP/1.1 clients, no WebSockets) use --h2c (or "http2": "h2c")',
    )
  }
  return { ...listen, http2: true }
}

/**
 * The certificate files of `--tls-cert` and `--tls-key` (relative to the working directory).
 *
 * @param values - the parsed flags
 * @returns the files, or `undefined` without the flags
 * @throws CliError (exit 1) when only one of the two is given
 */
export function tlsFlags(values: {
  'tls-cert'?: string | undefined
  'tls-key'?: string | undefined
}): TlsFiles | undefined {
  const cert = values['tls-cert']
  const key = values['tls-key']
  if (cert === undefined && key === undefined) return undefined
  if (cert === undefined || key === undefined) {
    throw usageError(
      `${cert === undefined ? '--tls-key needs --tls-cert' : '--tls-cert needs --tls-key'} (the certificate and its private key, PEM files)`,
    )
  }
  return { cert: resolve(cert), key: resolve(key) }
}

/**
 * The log format of a `--log-format` flag.
 *
 * @param value - the flag value, if given
 * @returns the format, `undefined` without the flag
 * @throws CliError (exit 1) for anything but text or json
 */
export function logFormat(value: string | undefined): LogFormat | undefined {
  if (value === undefined || value === 'text' || value === 'json') return value
  throw usageError(`--log-format must be text or json (got ${JSON.stringify(value)})`)
}

/**
 * The compatibility mode of a `--compat` flag.
 *
 * @param value - the flag value, if given
 * @returns the mode, `undefined` without the flag
 * @throws CliError (exit 1) for anything but an accepted value
 */
export function compatOf(value: string | undefined): Compat | undefined {
  if (value === undefined) return undefined
  const known = COMPAT_VALUES.find((accepted) => accepted === value)
  if (known !== undefined) return known
  throw usageError(
    `--compat must be ${COMPAT_VALUES.join(' or ')}, for Python Paste's WSGIProxy 0.1 (got ${JSON.stringify(value)})`,
  )
}

/**
 * The route options of the {@link KEY_OPTIONS} flags.
 *
 * @param values - the flag values
 * @returns the options given, as the config file spells them
 */
export function keyRouteOptions(values: {
  'key-file'?: string | undefined
  'string-key'?: string[] | undefined
  'unicode-key'?: string[] | undefined
  'json-key'?: string[] | undefined
  forwarded?: boolean | undefined
  'x-forwarded'?: boolean | undefined
  compat?: string | undefined
}): {
  keyFile?: string
  stringKeys?: string[]
  unicodeKeys?: string[]
  jsonKeys?: string[]
  forwarded?: boolean
  xForwarded?: boolean
  compat?: Compat
} {
  const compat = compatOf(values.compat)
  return {
    ...(values['key-file'] === undefined ? {} : { keyFile: values['key-file'] }),
    ...(values['string-key'] === undefined ? {} : { stringKeys: values['string-key'] }),
    ...(values['unicode-key'] === undefined ? {} : { unicodeKeys: values['unicode-key'] }),
    ...(values['json-key'] === undefined ? {} : { jsonKeys: values['json-key'] }),
    ...(values.forwarded === undefined ? {} : { forwarded: values.forwarded }),
    ...(values['x-forwarded'] === undefined ? {} : { xForwarded: values['x-forwarded'] }),
    ...(compat === undefined ? {} : { compat }),
  }
}

// Quotes an argument for a POSIX shell when it needs it, so the suggested line can be pasted.
function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`
}
