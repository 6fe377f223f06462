import { existsSync, readFileSync } from 'node:fs'
import { chmod, readFile, writeFile } from 'node:fs/promises'
import { formatKeyFile, MIN_SECRET_BYTES } from '@wsgiproxy/core'
import { help, parseCommandArgs } from './cli-args.ts'
import type { CliIo } from './cli-args.ts'
import { configJsonSchema } from './config-schema.ts'
import { CliError, EXIT_RUNTIME, usageError } from './errors.ts'
import { hashPassword, userNameProblem } from './proxy-auth.ts'

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

/**
 * Runs `wsgiproxy passwd USER`: reads a password on stdin (the first line; without echo from a
 * terminal) and prints the auth file line `USER:scrypt$N$r$p$salt$hash` for
 * `wsgiproxy forward --auth-file`.
 *
 * @param args - the arguments after the subcommand
 * @param io - where output goes
 * @param stdin - where the password comes from; default `process.stdin`
 * @returns the exit status
 */
export async function runPasswd(
  args: string[],
  io: CliIo,
  stdin: NodeJS.ReadStream = process.stdin,
): Promise<number> {
  const { values, positionals } = parseCommandArgs('passwd', args, {
    options: { help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  })
  if (values.help === true) return help('passwd', io)
  const user = positionals[0]
  if (user === undefined || positionals.length > 1) {
    throw usageError(
      `passwd expects one user name, such as: wsgiproxy passwd alice >> users (got ${positionals.length})`,
    )
  }
  const problem = userNameProblem(user)
  if (problem !== undefined) throw usageError(`passwd: ${problem}`)
  const password =
    stdin.isTTY === true
      ? await promptPassword(stdin, io, user)
      : firstLine(await readUpTo(stdin, MAX_PASSWORD_INPUT))
  if (password === '') {
    throw usageError('passwd: expected a password on the first line of stdin (got an empty line)')
  }
  io.stdout(`${user}:${await hashPassword(password)}\n`)
  return 0
}

// Enough for any password line; the rest of a large input is not read.
const MAX_PASSWORD_INPUT = 64 * 1024

function firstLine(text: string): string {
  const end = text.indexOf('\n')
  const line = end === -1 ? text : text.slice(0, end)
  return line.endsWith('\r') ? line.slice(0, -1) : line
}

// The input until a newline, its end, or `max` bytes.
async function readUpTo(stdin: NodeJS.ReadStream, max: number): Promise<string> {
  const chunks: Buffer[] = []
  let length = 0
  for await (const chunk of stdin) {
    const bytes = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk))
    chunks.push(bytes)
    length += bytes.byteLength
    if (length >= max || bytes.includes(10)) break
  }
  return Buffer.concat(chunks).toString('utf8')
}

// Reads a line from the terminal without echoing it.
function promptPassword(stdin: NodeJS.ReadStream, io: CliIo, user: string): Promise<string> {
  io.stderr(`password for ${user}: `)
  stdin.setRawMode(true)
  stdin.setEncoding('utf8')
  return new Promise((resolve, reject) => {
    let typed = ''
    const done = (error?: CliError): void => {
      stdin.off('data', onData)
      stdin.setRawMode(false)
      stdin.pause()
      io.stderr('\n')
      if (error === undefined) resolve(typed)
      else reject(error)
    }
    const onData = (text: string): void => {
      for (const char of text) {
        if (char === '\r' || char === '\n' || char === '\u0004') return done()
        if (char === '\u0003') return done(new CliError('passwd: interrupted', 130))
        if (char === '\u007f' || char === '\b') typed = [...typed].slice(0, -1).join('')
        else typed += char
      }
    }
    stdin.on('data', onData)
    stdin.resume()
  })
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

/**
 * Runs `wsgiproxy reload`: sends SIGHUP to a running `wsgiproxy serve`, named by its pid file or
 * its process id.
 *
 * @param args - the arguments after the subcommand
 * @param io - where output goes
 * @returns the exit status
 */
export async function runReload(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandArgs('reload', args, {
    options: { help: { type: 'boolean', short: 'h' }, 'pid-file': { type: 'string' } },
    allowPositionals: true,
  })
  if (values.help === true) return help('reload', io)
  const file = values['pid-file']
  if ((file === undefined) === (positionals.length === 0) || positionals.length > 1) {
    throw usageError(
      'reload expects --pid-file FILE (as given to wsgiproxy serve --pid-file) or one process id',
    )
  }
  let text: string
  if (file === undefined) {
    text = positionals[0] as string
  } else {
    try {
      text = await readFile(file, 'utf8')
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      throw usageError(
        code === 'ENOENT'
          ? `pid file ${file} does not exist: is wsgiproxy serve running with --pid-file ${file}?`
          : `cannot read pid file ${file} (${code ?? String(error)})`,
      )
    }
  }
  const pid = Number(text.trim())
  if (!/^[1-9]\d*$/.test(text.trim()) || !Number.isSafeInteger(pid)) {
    throw usageError(
      `${file === undefined ? 'the process id' : `pid file ${file}`} must hold a process id such as 4242 (got ${JSON.stringify(text.trim())})`,
    )
  }
  const problem = notServe(pid)
  if (problem !== undefined) {
    throw new CliError(
      `${problem}${file === undefined ? '' : ` (${file} may be stale)`}; nothing was signalled`,
      EXIT_RUNTIME,
    )
  }
  try {
    process.kill(pid, 'SIGHUP')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    throw new CliError(
      code === 'ESRCH'
        ? `no process ${pid}: wsgiproxy serve is not running${file === undefined ? '' : ` (${file} is stale)`}`
        : `cannot signal process ${pid} (${code ?? String(error)})`,
      EXIT_RUNTIME,
    )
  }
  io.stderr(`wsgiproxy: sent SIGHUP to ${pid}; its log says whether the new config was taken\n`)
  return 0
}

// Why `pid` is not a running `wsgiproxy serve` (a stale pid file may name a pid reused by
// another process, which SIGHUP would end); `undefined` when it is one, or /proc cannot say.
function notServe(pid: number): string | undefined {
  if (pid === 1) return 'process 1 is the init process, not wsgiproxy serve'
  let args: string[]
  try {
    args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    // No /proc (not Linux): the signal's own error says whether the process exists.
    if (code === 'ENOENT' && !existsSync('/proc/self')) return undefined
    return `no process ${pid}: wsgiproxy serve is not running`
  }
  const serve = args.includes('serve') && args.some((arg) => /wsgiproxy|main\.js$/.test(arg))
  return serve
    ? undefined
    : `process ${pid} is not wsgiproxy serve (${args.filter(Boolean).join(' ').slice(0, 80)})`
}
