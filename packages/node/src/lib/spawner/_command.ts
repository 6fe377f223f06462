// Turning a spawner's command into what `child_process.spawn` runs.
import { basename } from 'node:path'

/** What to spawn: the file, its arguments, and whether a shell runs the command. */
export interface ResolvedCommand {
  file: string
  args: string[]
  shell: boolean
}

/** The placeholder replaced by the backend's port in the command. */
export const PORT_PLACEHOLDER = '__PORT__'

// Characters that mean shell syntax: quoting, expansion, globbing, redirection, pipelines, lists,
// comments (POSIX.1-2017 XCU §2.2 and §2.13). A string without them splits on whitespace alone.
const SHELL_SYNTAX = /[|&;<>()$`\\"'*?[\]{}~#!\n\r]/
// A leading `NAME=value` word is an assignment only a shell understands.
const LEADING_ASSIGNMENT = /^\s*[A-Za-z_][A-Za-z0-9_]*=/
// A simple command the shell can `exec`: no list, pipeline or background job, and not a builtin
// or keyword that `exec` cannot replace the shell with.
const COMPOUND = /[;&|\n\r]/
const NOT_EXECUTABLE =
  /^\s*(?:exec|cd|export|unset|set|alias|eval|source|\.|trap|ulimit|umask|readonly|local|wait|if|for|while|until|case|\(|\{)(?:\s|$)/

/**
 * Resolves a command: an argv array runs as given; a string is split on whitespace and run
 * without a shell unless it uses shell syntax (or `shell` is true). A shell gets `exec` in front
 * of a simple command, so the server replaces the shell instead of running as its child (signals
 * then reach the server itself; the group kill catches everything either way). `__PORT__` is
 * replaced by the port in every form.
 */
export function resolveCommand(
  command: string | readonly string[],
  port: number,
  shell: boolean | undefined,
): ResolvedCommand {
  const value = String(port)
  if (typeof command !== 'string') {
    const argv = command.map((arg) => arg.replaceAll(PORT_PLACEHOLDER, value))
    if (shell === true) return shellCommand(argv.map(quoteForShell).join(' '))
    const [file = '', ...args] = argv
    return { file, args, shell: false }
  }
  const text = command.replaceAll(PORT_PLACEHOLDER, value).trim()
  const needsShell = shell ?? (SHELL_SYNTAX.test(text) || LEADING_ASSIGNMENT.test(text))
  if (needsShell) return shellCommand(text)
  const [file = '', ...args] = text.split(/\s+/)
  return { file, args, shell: false }
}

function shellCommand(text: string): ResolvedCommand {
  if (process.platform === 'win32') {
    // cmd.exe has no exec; the tree kill (taskkill /T) covers what it starts.
    return { file: process.env.ComSpec ?? 'cmd.exe', args: ['/d', '/s', '/c', text], shell: true }
  }
  const simple =
    !COMPOUND.test(text) && !NOT_EXECUTABLE.test(text) && !LEADING_ASSIGNMENT.test(text)
  return { file: '/bin/sh', args: ['-c', simple ? `exec ${text}` : text], shell: true }
}

function quoteForShell(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`
}

/** A short name for log prefixes: the program's base name (`python3`, `node`, `sh`). */
export function commandName(command: string | readonly string[]): string {
  const first = typeof command === 'string' ? (command.trim().split(/\s+/)[0] ?? '') : command[0]
  const name = basename(first ?? '')
  return name === '' ? 'backend' : name
}
