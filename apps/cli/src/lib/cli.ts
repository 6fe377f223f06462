import cluster from 'node:cluster'
import { readFileSync } from 'node:fs'

import { HELP } from './cli-help.ts'
import type { HelpTopic } from './cli-help.ts'
import type { CliIo } from './cli-args.ts'
import { CliError, EXIT_RUNTIME, usageError } from './errors.ts'
import { runEcho, runForward, runProxy, runServe, runSpawn } from './serving-commands.ts'
import { runKeygen, runPasswd, runReload, runSchema } from './utility-commands.ts'
import { runStatus } from './admin/status-command.ts'
import { WORKER_ENV } from './cluster/messages.ts'
import { runServeWorker } from './cluster/worker.ts'

const DEFAULT_IO: CliIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
}

type Command = Exclude<HelpTopic, 'main'>

/** The package's version, read from its package.json (`../../` from both src/lib and dist/lib). */
function packageVersion(): string {
  const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8')
  return (JSON.parse(text) as { version: string }).version
}

const COMMANDS: Record<Command, (args: string[], io: CliIo) => Promise<number>> = {
  serve: runServe,
  proxy: runProxy,
  spawn: runSpawn,
  forward: runForward,
  echo: runEcho,
  keygen: runKeygen,
  passwd: runPasswd,
  reload: runReload,
  status: runStatus,
  schema: runSchema,
}

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
  // A worker of `serve --workers` takes its setup from the main process, not from arguments.
  if (cluster.isWorker && process.env[WORKER_ENV] === '1') return runServeWorker()
  try {
    if (first === undefined || first === '-h' || first === '--help' || first === 'help') {
      io.stdout(`${HELP.main}\n`)
      return first === undefined ? 1 : 0
    }
    if (first === '--version' || first === '-v') {
      io.stdout(`wsgiproxy ${packageVersion()}\n`)
      return 0
    }
    if (!Object.hasOwn(HELP, first) || first === 'main') {
      throw usageError(
        `unknown command ${JSON.stringify(first)}: expected serve, proxy, spawn, forward, echo, reload, status, keygen, passwd or schema (see wsgiproxy --help)`,
      )
    }
    return await COMMANDS[first as Command](rest, io)
  } catch (error) {
    if (error instanceof CliError) {
      io.stderr(`wsgiproxy: ${error.message}\n`)
      return error.exitCode
    }
    io.stderr(`wsgiproxy: ${error instanceof Error ? error.message : String(error)}\n`)
    return EXIT_RUNTIME
  }
}
