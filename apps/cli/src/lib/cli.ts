import { existsSync } from 'node:fs'
import { chmod, writeFile } from 'node:fs/promises'
import type { Socket } from 'node:net'
import { parseArgs } from 'node:util'
import type { ParseArgsConfig } from 'node:util'
import { formatKeyFile, MIN_SECRET_BYTES, parseAllowList } from '@wsgiproxy/core'
import type { EnvironApp, UpgradableApp } from '@wsgiproxy/core'
import { serve } from '@wsgiproxy/node'
import type { Served } from '@wsgiproxy/node'
import { buildRouteApp, closeResources, createResources, exactApp, exactUpstream } from './apps.ts'
import type { Resources } from './apps.ts'
import { configJsonSchema, loadConfig, parseUpgradeFlags } from './config.ts'
import type { RouteInput, UpgradeSettings } from './config.ts'
import { durationFlag } from './duration.ts'
import { CliError, EXIT_RUNTIME, usageError } from './errors.ts'
import { DEFAULT_LISTEN, formatListen, listenFlag } from './listen.ts'
import type { ListenAddress } from './listen.ts'
import { createLogger, withRequestLog } from './log.ts'
import type { LogFormat } from './log.ts'
import { createRouter, notFound } from './router.ts'

/** Where the command writes; replaceable for tests. */
export interface CliIo {
  stdout: (text: string) => void
  stderr: (text: string) => void
}

const DEFAULT_IO: CliIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
}

const COMMON_HELP = `  --listen host:port     where to listen (default ${formatListen(DEFAULT_LISTEN)}; port 0 picks a free one)
  --log-format text|json request and event lines on stderr as text (default) or JSON lines
  --upgrade-protocol NAME  forward Upgrade requests for this protocol (repeatable; default
                         websocket); others are served with their Upgrade ignored
  --upgrade-idle DURATION  close an upgraded tunnel idle this long (default 5m; 0: never)
  --max-upgrades N       upgraded tunnels open at once; more get 503 (default 1000)
  -h, --help             show this help`

const KEY_HELP = `  --key-file FILE        sign forwarded requests with this key file (wsgiproxy keygen makes one)
  --string-key KEY       forward environ KEY as X-WSGIProxy-Str-N (repeatable)
  --unicode-key KEY      forward environ KEY as X-WSGIProxy-Unicode-N (repeatable)
  --json-key KEY         forward environ KEY as X-WSGIProxy-Json-N (repeatable)
  --forwarded            also send an RFC 7239 Forwarded header`

const HELP = {
  main: `usage: wsgiproxy <command> [options]

commands:
  serve     serve the routes of a config file (wsgiproxy.config.json)
  proxy     forward every request to one server: wsgiproxy proxy http://127.0.0.1:9000
  spawn     start a backend on the first request: wsgiproxy spawn -- python3 app.py __PORT__
  forward   a real HTTP forward proxy (curl -x http://127.0.0.1:8080 http://example.test/)
  echo      answer with the restored environ (HTML, or JSON for Accept: application/json)
  keygen    print or write a key file with a fresh 32-byte secret
  schema    print the JSON Schema of the config file

Run wsgiproxy <command> --help for its options.`,
  serve: `usage: wsgiproxy serve [--config FILE] [options]

Serves the routes of a config file; see the README for the format and schema.json for editors.

  -c, --config FILE      the config file (default wsgiproxy.config.json)
${COMMON_HELP}
  (--listen, --log-format and the upgrade flags override the config file)`,
  proxy: `usage: wsgiproxy proxy <href> [options]

Forwards every request to href (http://host:port/path?query) with the wsgiproxy protocol
headers (X-Forwarded-*, X-Traversal-*, extra keys, signature).

${KEY_HELP}
${COMMON_HELP}`,
  spawn: `usage: wsgiproxy spawn [options] -- <command...>

Starts the command on the first request (its port in __PORT__ and $PORT), forwards to it,
and stops it when idle or when wsgiproxy stops.

  --idle DURATION        stop the backend after this long without requests (500ms, 30s, 5m)
  --start-timeout DURATION  how long a start may take (default 60s)
  --ready-path PATH      also wait until GET PATH answers below 500
  --name NAME            the backend's name in log lines
${KEY_HELP}
${COMMON_HELP}`,
  forward: `usage: wsgiproxy forward [options]

A real HTTP forward proxy on the exact proxy: requests in absolute form
(GET http://host:port/path HTTP/1.1) are sent to the server they name.
Use it as curl -x http://127.0.0.1:8080 http://upstream/path. http:// only: CONNECT gets 501.
Only public addresses are reached unless --allow says more: loopback, private, link-local and
other internal targets get 403 in any spelling, also through a name that resolves to one.
A request that would come back to this proxy gets 508.

  --allow ENTRY          also allow this target (repeatable): a host name (example.com,
                         *.example.com), an address or CIDR range (127.0.0.1, 10.0.0.0/8,
                         ::1) or a preset (public, loopback, linklocal, uniquelocal),
                         optionally with :port, :port,port or :* ([::1]:8080); giving
                         --allow replaces the default public, so add it back to keep it
${COMMON_HELP}`,
  echo: `usage: wsgiproxy echo [options]

The sample app behind the proxy middleware: answers with the restored environ as an HTML
table, or as JSON when the request sends Accept: application/json.

  --trust-ip ADDR        believe protocol headers from this address, CIDR range or preset
                         (loopback, linklocal, uniquelocal; repeatable; default loopback)
  --key-file FILE        also require a valid signature made with this key file
${COMMON_HELP}`,
  keygen: `usage: wsgiproxy keygen [--out FILE] [--force] [--id KEYID]

Prints a key file line (keyid base64:secret) with a fresh ${MIN_SECRET_BYTES}-byte secret, or writes it
to FILE with mode 0600.

  -o, --out FILE         write the key file here instead of printing it
  -f, --force            overwrite FILE if it exists
  --id KEYID             the key id (default k<today's date>)
  -h, --help             show this help`,
  schema: `usage: wsgiproxy schema

Prints the JSON Schema of wsgiproxy.config.json (the package also ships it as schema.json).`,
} as const

type Command = keyof typeof HELP

const COMMON_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  listen: { type: 'string' },
  'log-format': { type: 'string' },
  'upgrade-protocol': { type: 'string', multiple: true },
  'upgrade-idle': { type: 'string' },
  'max-upgrades': { type: 'string' },
} as const

const KEY_OPTIONS = {
  'key-file': { type: 'string' },
  'string-key': { type: 'string', multiple: true },
  'unicode-key': { type: 'string', multiple: true },
  'json-key': { type: 'string', multiple: true },
  forwarded: { type: 'boolean' },
} as const

/**
 * Runs the `wsgiproxy` command: parses the arguments, runs the subcommand and, for the serving
 * ones, serves until SIGINT or SIGTERM, then drains and stops every backend.
 *
 * @param argv - the arguments after the program name
 * @param io - where output goes
 * @returns the exit status
 */
export async function runCli(argv: readonly string[], io: CliIo = DEFAULT_IO): Promise<number> {
  const [first, ...rest] = argv
  try {
    if (first === undefined || first === '-h' || first === '--help' || first === 'help') {
      io.stdout(`${HELP.main}\n`)
      return first === undefined ? 1 : 0
    }
    if (first === '--version' || first === '-v') {
      io.stdout('wsgiproxy 0.0.0\n')
      return 0
    }
    if (!(first in HELP) || first === 'main') {
      throw usageError(
        `unknown command ${JSON.stringify(first)}: expected serve, proxy, spawn, forward, echo, keygen or schema (see wsgiproxy --help)`,
      )
    }
    return await COMMANDS[first as Exclude<Command, 'main'>](rest, io)
  } catch (error) {
    if (error instanceof CliError) {
      io.stderr(`wsgiproxy: ${error.message}\n`)
      return error.exitCode
    }
    io.stderr(`wsgiproxy: ${error instanceof Error ? error.message : String(error)}\n`)
    return EXIT_RUNTIME
  }
}

const COMMANDS: Record<Exclude<Command, 'main'>, (args: string[], io: CliIo) => Promise<number>> = {
  async serve(args, io) {
    const { values } = parse('serve', args, {
      options: { ...COMMON_OPTIONS, config: { type: 'string', short: 'c' } },
    })
    if (values.help === true) return help('serve', io)
    const file = values.config ?? 'wsgiproxy.config.json'
    const config = await loadConfig(file)
    const listen =
      values.listen === undefined
        ? (config.listen ?? DEFAULT_LISTEN)
        : listenFlag('--listen', values.listen)
    const format = logFormat(values['log-format']) ?? config.logFormat ?? 'text'
    const upgrade = { ...config.upgrade, ...parseUpgradeFlags(values) }
    return serveUntilSignal('serve', listen, format, upgrade, async (resources) => {
      const mounts = []
      for (const route of config.routes) {
        mounts.push({ prefix: route.path, ...(await buildRouteApp(route, resources)) })
      }
      return createRouter(
        mounts,
        withRequestLog(notFound, resources.logger, () => '-'),
      )
    })
  },

  async proxy(args, io) {
    const { values, positionals } = parse('proxy', args, {
      options: { ...COMMON_OPTIONS, ...KEY_OPTIONS },
      allowPositionals: true,
    })
    if (values.help === true) return help('proxy', io)
    if (positionals.length !== 1) {
      throw usageError(
        `proxy expects one href such as http://127.0.0.1:9000 (got ${positionals.length} arguments; see wsgiproxy proxy --help)`,
      )
    }
    const href = positionals[0] ?? ''
    if (!/^https?:\/\/[^/]/i.test(href) || URL.parse(href) === null) {
      throw usageError(
        `proxy: the href must be an http:// or https:// URL such as http://127.0.0.1:9000 (got ${JSON.stringify(href)})`,
      )
    }
    const route: RouteInput = { path: '/', type: 'proxy', href, ...keyRouteOptions(values) }
    return serveUntilSignal(
      'proxy',
      listenOf(values.listen),
      logFormat(values['log-format']) ?? 'text',
      parseUpgradeFlags(values),
      async (resources) => (await buildRouteApp(route, resources)).app,
    )
  },

  async spawn(args, io) {
    const { values, positionals } = parse('spawn', args, {
      options: {
        ...COMMON_OPTIONS,
        ...KEY_OPTIONS,
        idle: { type: 'string' },
        'start-timeout': { type: 'string' },
        'ready-path': { type: 'string' },
        name: { type: 'string' },
      },
      allowPositionals: true,
    })
    if (values.help === true) return help('spawn', io)
    if (positionals.length === 0) {
      throw usageError(
        'spawn expects a command after --, such as: wsgiproxy spawn -- python3 -m http.server __PORT__',
      )
    }
    const readyPath = values['ready-path']
    if (readyPath !== undefined && !readyPath.startsWith('/')) {
      throw usageError(`--ready-path must start with "/" (got ${JSON.stringify(readyPath)})`)
    }
    const route: RouteInput = {
      path: '/',
      type: 'spawn',
      command: positionals.length === 1 ? (positionals[0] ?? '') : positionals,
      ...keyRouteOptions(values),
      ...(values.idle === undefined ? {} : { idleTimeout: durationFlag('--idle', values.idle) }),
      ...(values['start-timeout'] === undefined
        ? {}
        : { startTimeout: durationFlag('--start-timeout', values['start-timeout']) }),
      ...(readyPath === undefined ? {} : { readyPath }),
      ...(values.name === undefined ? {} : { name: values.name }),
    }
    return serveUntilSignal(
      'spawn',
      listenOf(values.listen),
      logFormat(values['log-format']) ?? 'text',
      parseUpgradeFlags(values),
      async (resources) => (await buildRouteApp(route, resources)).app,
    )
  },

  async forward(args, io) {
    const { values } = parse('forward', args, {
      options: { ...COMMON_OPTIONS, allow: { type: 'string', multiple: true } },
    })
    if (values.help === true) return help('forward', io)
    const allow = values.allow
    if (allow !== undefined) {
      // Checked before listening, so a typo is a usage error that names the flag.
      try {
        parseAllowList(allow)
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error)
        throw usageError(`--allow: ${message.replace(/^.*?allow\.\d+: /, '')}`)
      }
    }
    return serveUntilSignal(
      'forward',
      listenOf(values.listen),
      logFormat(values['log-format']) ?? 'text',
      parseUpgradeFlags(values),
      (resources) =>
        withRequestLog(
          exactApp(resources, allow === undefined ? {} : { allow }),
          resources.logger,
          exactUpstream,
        ),
      (served, resources) => {
        // A forward proxy for http:// URLs only: a CONNECT tunnel (https://) is refused plainly.
        served.server.on('connect', (req, socket: Socket) => {
          const text = 'CONNECT is not supported: wsgiproxy forward proxies http:// URLs only\n'
          socket.on('error', () => {})
          socket.end(
            `HTTP/1.1 501 Not Implemented\r\ncontent-type: text/plain; charset=utf-8\r\n` +
              `content-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
          )
          resources.logger.request({
            method: 'CONNECT',
            path: req.url ?? '',
            status: 501,
            ms: 0,
            upstream: '-',
          })
        })
      },
    )
  },

  async echo(args, io) {
    const { values } = parse('echo', args, {
      options: {
        ...COMMON_OPTIONS,
        'key-file': { type: 'string' },
        'trust-ip': { type: 'string', multiple: true },
      },
    })
    if (values.help === true) return help('echo', io)
    const route: RouteInput = {
      path: '/',
      type: 'echo',
      ...(values['trust-ip'] === undefined ? {} : { trustIps: values['trust-ip'] }),
      ...(values['key-file'] === undefined ? {} : { keyFile: values['key-file'] }),
    }
    return serveUntilSignal(
      'echo',
      listenOf(values.listen),
      logFormat(values['log-format']) ?? 'text',
      parseUpgradeFlags(values),
      async (resources) => (await buildRouteApp(route, resources)).app,
    )
  },

  async keygen(args, io) {
    const { values } = parse('keygen', args, {
      options: {
        help: { type: 'boolean', short: 'h' },
        out: { type: 'string', short: 'o' },
        force: { type: 'boolean', short: 'f' },
        id: { type: 'string' },
      },
    })
    if (values.help === true) return help('keygen', io)
    const id = values.id ?? `k${new Date().toISOString().slice(0, 10)}`
    const secret = crypto.getRandomValues(new Uint8Array(MIN_SECRET_BYTES))
    let text: string
    try {
      text = formatKeyFile([{ id, secret }])
    } catch {
      throw usageError(
        `--id must be 1-64 characters of A-Z a-z 0-9 . _ ~ - (got ${JSON.stringify(id)})`,
      )
    }
    const out = values.out
    if (out === undefined) {
      io.stdout(text)
      return 0
    }
    if (values.force !== true && existsSync(out)) {
      throw usageError(`${out} already exists: choose another --out or add --force to replace it`)
    }
    try {
      // `wx` refuses a file created meanwhile; mode 0600 because the key must stay private.
      await writeFile(out, text, { mode: 0o600, flag: values.force === true ? 'w' : 'wx' })
      // `mode` applies only when the file is created: a replaced file is tightened too.
      if (values.force === true) await chmod(out, 0o600)
    } catch (error) {
      throw new CliError(
        `cannot write ${out}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`,
        EXIT_RUNTIME,
      )
    }
    io.stderr(`wsgiproxy: wrote key "${id}" to ${out} (mode 0600)\n`)
    return 0
  },

  async schema(args, io) {
    const { values } = parse('schema', args, { options: { help: { type: 'boolean', short: 'h' } } })
    if (values.help === true) return help('schema', io)
    io.stdout(`${JSON.stringify(configJsonSchema(), null, 2)}\n`)
    return 0
  },
}

function help(command: Command, io: CliIo): number {
  io.stdout(`${HELP[command]}\n`)
  return 0
}

function parse<T extends ParseArgsConfig['options']>(
  command: Command,
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

function listenOf(value: string | undefined): ListenAddress {
  return value === undefined ? DEFAULT_LISTEN : listenFlag('--listen', value)
}

function logFormat(value: string | undefined): LogFormat | undefined {
  if (value === undefined || value === 'text' || value === 'json') return value
  throw usageError(`--log-format must be text or json (got ${JSON.stringify(value)})`)
}

function keyRouteOptions(values: {
  'key-file'?: string | undefined
  'string-key'?: string[] | undefined
  'unicode-key'?: string[] | undefined
  'json-key'?: string[] | undefined
  forwarded?: boolean | undefined
}): {
  keyFile?: string
  stringKeys?: string[]
  unicodeKeys?: string[]
  jsonKeys?: string[]
  forwarded?: boolean
} {
  return {
    ...(values['key-file'] === undefined ? {} : { keyFile: values['key-file'] }),
    ...(values['string-key'] === undefined ? {} : { stringKeys: values['string-key'] }),
    ...(values['unicode-key'] === undefined ? {} : { unicodeKeys: values['unicode-key'] }),
    ...(values['json-key'] === undefined ? {} : { jsonKeys: values['json-key'] }),
    ...(values.forwarded === undefined ? {} : { forwarded: values.forwarded }),
  }
}

/**
 * Builds the app, listens, logs the address, and waits for SIGINT or SIGTERM; then stops
 * accepting, drains requests in flight, stops every backend and resolves. A second signal
 * stops at once (the spawner's watchdog still kills the backends).
 */
async function serveUntilSignal(
  command: string,
  listen: ListenAddress,
  format: LogFormat,
  upgrade: UpgradeSettings,
  build: (resources: Resources) => EnvironApp | UpgradableApp | Promise<EnvironApp | UpgradableApp>,
  setup?: (served: Served, resources: Resources) => void,
): Promise<number> {
  const logger = createLogger(format)
  const resources = createResources(logger)
  let served: Served
  try {
    const app = await build(resources)
    try {
      served = await serve(app, {
        port: listen.port,
        hostname: listen.hostname,
        ...(upgrade.protocols === undefined ? {} : { upgradeProtocols: upgrade.protocols }),
        ...(upgrade.idleTimeout === undefined ? {} : { upgradeIdleTimeout: upgrade.idleTimeout }),
        ...(upgrade.maxConnections === undefined
          ? {}
          : { maxUpgradeConnections: upgrade.maxConnections }),
        onError: (error) => {
          logger.error(error instanceof Error ? error.message : String(error))
        },
      })
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      const where = formatListen(listen)
      throw new CliError(
        code === 'EADDRINUSE'
          ? `cannot listen on ${where}: the address is in use (stop the other server or pick another --listen)`
          : code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND'
            ? `cannot listen on ${where}: no such local address (use 127.0.0.1, 0.0.0.0 or an address of this host)`
            : `cannot listen on ${where}: ${code ?? (error as Error).message}`,
        EXIT_RUNTIME,
      )
    }
  } catch (error) {
    await closeResources(resources)
    throw error
  }
  resources.self = served.server.address()
  setup?.(served, resources)
  logger.event('listening', `${command} listening on ${served.url}`, { url: served.url })

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    const onSignal = (name: NodeJS.Signals): void => {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
      // A second signal: stop now.
      process.once('SIGINT', exitNow)
      process.once('SIGTERM', exitNow)
      resolve(name)
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
  })
  logger.event('shutdown', `${signal}: draining requests and stopping backends`, { signal })
  await served.close()
  await closeResources(resources)
  logger.event('stopped', 'stopped')
  return 0
}

function exitNow(): never {
  process.exit(130)
}
