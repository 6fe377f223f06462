import { existsSync } from 'node:fs'
import { chmod, writeFile } from 'node:fs/promises'
import { formatKeyFile, MIN_SECRET_BYTES } from '@wsgiproxy/core'
import { help, parseCommandArgs } from './cli-args.ts'
import type { CliIo } from './cli-args.ts'
import { configJsonSchema } from './config-schema.ts'
import { CliError, EXIT_RUNTIME, usageError } from './errors.ts'

// The subcommands that write their output and exit.

/**
 * Runs `wsgiproxy keygen`: prints a key file line or writes it with mode 0600.
 *
 * @param args - the arguments after the subcommand
 * @param io - where output goes
 * @returns the exit status
 */
export async function runKeygen(args: string[], io: CliIo): Promise<number> {
  const { values } = parseCommandArgs('keygen', args, {
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
    throw new CliError(`cannot write ${out}: ${writeProblem(error)}`, EXIT_RUNTIME, {
      cause: error,
    })
  }
  io.stderr(`wsgiproxy: wrote key "${id}" to ${out} (mode 0600)\n`)
  return 0
}

/**
 * Runs `wsgiproxy schema`: prints the JSON Schema of the config file.
 *
 * @param args - the arguments after the subcommand
 * @param io - where output goes
 * @returns the exit status
 */
export async function runSchema(args: string[], io: CliIo): Promise<number> {
  const { values } = parseCommandArgs('schema', args, {
    options: { help: { type: 'boolean', short: 'h' } },
  })
  if (values.help === true) return help('schema', io)
  io.stdout(`${JSON.stringify(configJsonSchema(), null, 2)}\n`)
  return 0
}

// Why a file could not be written, and what to do.
function writeProblem(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code
  switch (code) {
    case 'ENOENT':
      return 'its folder does not exist (ENOENT); create the folder or choose another --out'
    case 'ENOTDIR':
      return 'a part of the path is not a folder (ENOTDIR); choose another --out'
    case 'EACCES':
    case 'EPERM':
      return `permission denied (${code}); choose another --out`
    default:
      return code ?? String(error)
  }
}
