import { resolve } from 'node:path'
import { allowEntryProblem } from '@wsgiproxy/core/adapter'
import { createSelfCheck, resolveHost } from '@wsgiproxy/node'
import { buildRouteApp, exactUpstream } from './apps.ts'
import type { Resources } from './apps.ts'
import {
  COMMON_OPTIONS,
  compatOf,
  help,
  KEY_OPTIONS,
  keyRouteOptions,
  listenOf,
  logFormat,
  parseCommandArgs,
  REPLAY_OPTIONS,
  replayStoreOf,
  requireCommandSeparator,
  SERVE_OPTIONS,
} from './cli-args.ts'
import type { CliIo } from './cli-args.ts'
import type { RouteInput, UpstreamInput } from './config-schema.ts'
import { loadConfig } from './config.ts'
import { createConnectListener } from './connect-tunnel.ts'
import { createDestinationGuard } from './destination-guard.ts'
import type { DestinationGuard } from './destination-guard.ts'
import { durationFlag } from './duration.ts'
import { usageError } from './errors.ts'
import { createForwardApp } from './forward-app.ts'
import { withRequestLog } from './log.ts'
import { loadAuthFile } from './proxy-auth.ts'
import { runPrimary } from './cluster/primary.ts'
import { buildServeApp } from './serve-app.ts'
import { restartOnlyChanges, servePlan } from './serve-plan.ts'
import type { ServePlan } from './serve-plan.ts'
import { serveUntilSignal } from './serve-until-signal.ts'
import { parseUpgradeFlags } from './upgrade-settings.ts'
import { POOL_OPTIONS, poolRouteOptions } from './pool-route.ts'
import { adminAddress } from './admin/admin-server.ts'
import { mountRoute } from './admin/metrics.ts'

// The serving subcommands: each checks its flags, then serves until SIGINT or SIGTERM.

// On shutdown, how long open CONNECT tunnels may go on (serve's close timeout for requests).
const TUNNEL_GRACE_MS = 10_000

/**
 * Runs `wsgiproxy serve`: serves the routes of a config file until SIGINT or SIGTERM.
 *
 * @param args - the arguments after the subcommand
 * @param io - where output goes
 * @returns the exit status
 */
export async function runServe(args: string[], io: CliIo): Promise<number> {
  const { values } = parseCommandArgs('serve', args, {
    options: { ...COMMON_OPTIONS, ...SERVE_OPTIONS },
  })
  if (values.help === true) return help('serve', io)
  const file = values.config ?? 'wsgiproxy.config.json'
  const load = async (): Promise<ServePlan> => servePlan(values, await loadConfig(file), file)
  const plan = await load()
  const pidFile = values['pid-file'] === undefined ? undefined : resolve(values['pid-file'])
  if (plan.workers !== undefined) return runPrimary(plan, load, pidFile)
  return serveUntilSignal({
    command: 'serve',
    listen: plan.listen,
    format: plan.format,
    upgrade: plan.upgrade,
    drainTimeout: plan.drainTimeout,
    admin: plan.admin,
    tracing: plan.tracing,
    ...(pidFile === undefined ? {} : { pidFile }),
    build: (resources) => buildServeApp(plan.routes, resources),
    reload: async (logger) => {
      const next = await load()
      const kept = restartOnlyChanges(plan, next)
      if (kept.length > 0) {
        logger.event(
          'warning',
          `reload: ${kept.join(', ')} changed in ${file}: that takes a restart; the running values stay`,
          { settings: kept },
        )
      }
      return (resources) => buildServeApp(next.routes, resources)
    },
  })
}

/**
 * Runs `wsgiproxy proxy <href...>`: forwards every request to one server, or to a pool of
 * them, until a signal.
 *
 * @param args - the arguments after the subcommand
 * @param io - where output goes
 * @returns the exit status
 */
export async function runProxy(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs('proxy', args, {
    options: { ...COMMON_OPTIONS, ...KEY_OPTIONS, ...POOL_OPTIONS, ...UPSTREAM_OPTIONS },
    allowPositionals: true,
  })
  if (values.help === true) return help('proxy', io)
  if (positionals.length === 0) {
    throw usageError(
      'proxy expects an href such as http://127.0.0.1:9000, or several for a pool (see wsgiproxy proxy --help)',
    )
  }
  for (const href of positionals) {
    if (!/^https?:\/\/[^/]/i.test(href) || URL.parse(href) === null) {
      throw usageError(
        `proxy: the href must be an http:// or https:// URL such as http://127.0.0.1:9000 (got ${JSON.stringify(href)})`,
      )
    }
  }
  const href = positionals.length === 1 ? (positionals[0] as string) : positionals
  const route: RouteInput = {
    path: '/',
    type: 'proxy',
    href,
    ...keyRouteOptions(values),
    ...poolRouteOptions(values),
    ...upstreamRouteOptions(values),
  }
  const listen = listenOf(values)
  return serveUntilSignal({
    command: 'proxy',
    listen,
    admin: adminAddress('--admin', values.admin, listen.address),
    format: logFormat(values['log-format']) ?? 'text',
    upgrade: parseUpgradeFlags(values),
    build: async (resources) => (await buildRouteApp(route, resources)).app,
  })
}

/**
 * Runs `wsgiproxy spawn -- <command...>`: starts the backend on the first request and
 * forwards to it until a signal.
 *
 * @param args - the arguments after the subcommand
 * @param io - where output goes
 * @returns the exit status
 */
export async function runSpawn(args: string[], io: CliIo): Promise<number> {
  const options = {
    ...COMMON_OPTIONS,
    ...KEY_OPTIONS,
    idle: { type: 'string' },
    'start-timeout': { type: 'string' },
    'ready-path': { type: 'string' },
    name: { type: 'string' },
    instances: { type: 'string' },
  } as const
  requireCommandSeparator('spawn', args, options)
  const { values, positionals } = parseCommandArgs('spawn', args, {
    options,
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
  if (values.name === '') {
    throw usageError('--name must not be empty: it names the backend in log lines (got "")')
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
    ...(values.instances === undefined ? {} : { instances: instancesFlag(values.instances) }),
  }
  const listen = listenOf(values)
  return serveUntilSignal({
    command: 'spawn',
    listen,
    admin: adminAddress('--admin', values.admin, listen.address),
    format: logFormat(values['log-format']) ?? 'text',
    upgrade: parseUpgradeFlags(values),
    build: async (resources) => (await buildRouteApp(route, resources)).app,
  })
}

/**
 * Runs `wsgiproxy forward`: a forward proxy for http:// URLs and CONNECT tunnels until a signal.
 *
 * @param args - the arguments after the subcommand
 * @param io - where output goes
 * @returns the exit status
 */
export async function runForward(args: string[], io: CliIo): Promise<number> {
  const { values } = parseCommandArgs('forward', args, {
    // --compat and --x-forwarded are parsed only to be refused with the reason.
    options: {
      ...COMMON_OPTIONS,
      allow: { type: 'string', multiple: true },
      deny: { type: 'string', multiple: true },
      'connect-port': { type: 'string', multiple: true },
      'auth-file': { type: 'string' },
      compat: KEY_OPTIONS.compat,
      'x-forwarded': KEY_OPTIONS['x-forwarded'],
    },
  })
  if (values.help === true) return help('forward', io)
  if (values.compat !== undefined) {
    throw usageError(
      'forward: --compat does not apply: forward is the exact proxy and sends no protocol headers (use wsgiproxy proxy --compat wsgiproxy-0.1 <href> for a WSGIProxy 0.1 backend)',
    )
  }
  if (values['x-forwarded'] !== undefined) {
    throw usageError(
      'forward: --x-forwarded does not apply: forward is the exact proxy and sends no protocol headers (use wsgiproxy proxy --x-forwarded <href>)',
    )
  }
  // Checked before listening, so a typo is a usage error that names the flag.
  const allow = entriesFlag('--allow', values.allow)
  const deny = entriesFlag('--deny', values.deny) ?? []
  const ports = connectPortsFlag(values['connect-port'])
  const listen = listenOf(values)
  const format = logFormat(values['log-format']) ?? 'text'
  const upgrade = parseUpgradeFlags(values)
  const authFile = values['auth-file']
  const auth = authFile === undefined ? undefined : await loadAuthFile(authFile)
  // One guard for plain requests and tunnels; it reads the server's address once it listens.
  let guard: DestinationGuard | undefined
  const guardOf = (resources: Resources): DestinationGuard =>
    (guard ??= createDestinationGuard({
      ...(allow === undefined ? {} : { allow }),
      deny,
      resolve: resolveHost,
      isSelf: createSelfCheck(() => resources.self),
    }))
  return serveUntilSignal({
    command: 'forward',
    listen,
    admin: adminAddress('--admin', values.admin, listen.address),
    format,
    upgrade,
    build: (resources) =>
      mountRoute(
        resources,
        { kind: 'forward', path: '/' },
        withRequestLog(
          createForwardApp(resources, { guard: guardOf(resources), auth }),
          resources.logger,
          exactUpstream,
        ),
      ),
    setup: (served, resources) => {
      // The upgrade settings bound the tunnels: forward forwards no Upgrade requests itself.
      const tunnels = createConnectListener({
        guard: guardOf(resources),
        ports,
        auth,
        logger: resources.logger,
        ...(upgrade.idleTimeout === undefined ? {} : { idleTimeout: upgrade.idleTimeout }),
        ...(upgrade.maxConnections === undefined ? {} : { maxTunnels: upgrade.maxConnections }),
      })
      served.server.on('connect', tunnels.listener)
      return () => tunnels.close(TUNNEL_GRACE_MS)
    },
  })
}

/**
 * Runs `wsgiproxy echo`: answers with the restored environ until a signal.
 *
 * @param args - the arguments after the subcommand
 * @param io - where output goes
 * @returns the exit status
 */
export async function runEcho(args: string[], io: CliIo): Promise<number> {
  const { values } = parseCommandArgs('echo', args, {
    options: {
      ...COMMON_OPTIONS,
      'key-file': { type: 'string' },
      'trust-ip': { type: 'string', multiple: true },
      compat: KEY_OPTIONS.compat,
      ...REPLAY_OPTIONS,
    },
  })
  if (values.help === true) return help('echo', io)
  const compat = compatOf(values.compat)
  const route: RouteInput = {
    path: '/',
    type: 'echo',
    ...(values['trust-ip'] === undefined ? {} : { trustIps: values['trust-ip'] }),
    ...(values['key-file'] === undefined ? {} : { keyFile: values['key-file'] }),
    ...replayStoreOf(values),
    ...(compat === undefined ? {} : { compat }),
  }
  const listen = listenOf(values)
  return serveUntilSignal({
    command: 'echo',
    listen,
    admin: adminAddress('--admin', values.admin, listen.address),
    format: logFormat(values['log-format']) ?? 'text',
    upgrade: parseUpgradeFlags(values),
    build: async (resources) => (await buildRouteApp(route, resources)).app,
  })
}

// The flags of `wsgiproxy proxy` for how to reach the upstream.
const UPSTREAM_OPTIONS = {
  'upstream-http2': { type: 'boolean' },
  'upstream-ca': { type: 'string', multiple: true },
  'upstream-cert': { type: 'string' },
  'upstream-key': { type: 'string' },
} as const

// The route's `upstream` from those flags (files relative to the working directory).
function upstreamRouteOptions(values: {
  'upstream-http2'?: boolean | undefined
  'upstream-ca'?: string[] | undefined
  'upstream-cert'?: string | undefined
  'upstream-key'?: string | undefined
}): { upstream?: UpstreamInput } {
  const ca = values['upstream-ca']
  const cert = values['upstream-cert']
  const key = values['upstream-key']
  if ((cert === undefined) !== (key === undefined)) {
    throw usageError(
      `${cert === undefined ? '--upstream-key needs --upstream-cert' : '--upstream-cert needs --upstream-key'} (the client certificate and its private key, PEM files)`,
    )
  }
  const upstream: UpstreamInput = {
    ...(values['upstream-http2'] === true ? { http2: true } : {}),
    ...(ca === undefined ? {} : { ca: ca.map((file) => resolve(file)) }),
    ...(cert === undefined ? {} : { cert: resolve(cert) }),
    ...(key === undefined ? {} : { key: resolve(key) }),
  }
  return Object.keys(upstream).length === 0 ? {} : { upstream }
}

// Allow or deny entries of a flag, each checked.
function entriesFlag(flag: string, entries: string[] | undefined): string[] | undefined {
  for (const entry of entries ?? []) {
    const problem = allowEntryProblem(entry)
    if (problem !== undefined) throw usageError(`${flag}: ${problem}`)
  }
  return entries
}

// `--connect-port N` (repeatable): the ports CONNECT tunnels may go to, default 443.
function connectPortsFlag(values: string[] | undefined): number[] {
  if (values === undefined) return [443]
  return values.map((value) => {
    if (!/^[1-9][0-9]{0,4}$/.test(value) || Number(value) > 65535) {
      throw usageError(
        `--connect-port must be a port from 1 to 65535 such as 443 (got ${JSON.stringify(value)})`,
      )
    }
    return Number(value)
  })
}

// `--instances N` (N processes) or `--instances MIN-MAX` (a pool that grows under load).
function instancesFlag(value: string): { min: number; max: number } {
  const match = /^([1-9]\d?)(?:-([1-9]\d?))?$/.exec(value)
  const min = Number(match?.[1])
  const max = match?.[2] === undefined ? min : Number(match[2])
  if (match === null || max < min || max > 64) {
    throw usageError(
      `--instances must be a count N or a range MIN-MAX from 1 to 64, such as 2 or 2-8 (got ${JSON.stringify(value)})`,
    )
  }
  return { min, max }
}
