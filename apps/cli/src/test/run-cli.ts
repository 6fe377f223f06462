import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createServer } from 'node:http'
import type { IncomingMessage, Server } from 'node:http'
import type { AddressInfo, Server as NetServer, Socket } from 'node:net'
import { connect, createServer as createNetServer } from 'node:net'
import { fileURLToPath } from 'node:url'

/** The built command: tests run `dist/`, as users do. */
export const BIN: string = fileURLToPath(new URL('../../dist/main.js', import.meta.url))

const children = new Set<ChildProcess>()
const servers = new Set<Server>()
const relays = new Map<NetServer, Set<Socket>>()
const backends = new Set<number>()

/**
 * Remembers a backend pid (a process group leader) the command spawned, to kill it in
 * {@link cleanup} should the command have left it behind.
 */
export function trackBackend(pid: number): void {
  backends.add(pid)
}

/** A running `wsgiproxy` process. */
export interface CliProcess {
  child: ChildProcess
  pid: number
  /** The URL it listens on (from its `listening on` line). */
  url: string
  /** Everything written to stderr so far. */
  stderr(): string
  /** Resolves when a stderr line matches. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>
  /** Resolves with the exit code once the process ended. */
  exited: Promise<number | null>
}

/** The result of a command that runs to its end. */
export interface CliResult {
  code: number | null
  stdout: string
  stderr: string
}

/**
 * Runs the command to its end.
 *
 * @param args - the arguments
 * @param cwd - the working directory
 * @param input - written to its stdin (a pipe, then closed); without it stdin is closed
 * @returns exit code and output
 */
export function runCli(args: string[], cwd?: string, input?: string): Promise<CliResult> {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd,
    stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  })
  children.add(child)
  child.stdin?.end(input)
  let stdout = ''
  let stderr = ''
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  return new Promise((resolve, reject) => {
    child.once('error', reject)
    child.once('close', (code) => {
      children.delete(child)
      resolve({ code, stdout, stderr })
    })
  })
}

/**
 * Starts a serving subcommand and waits until it listens.
 *
 * @param args - the arguments (give `--listen 127.0.0.1:0`)
 * @param cwd - the working directory
 * @param env - environment variables over this process's
 * @returns the process
 */
export async function startCli(
  args: string[],
  cwd?: string,
  env?: Record<string, string>,
): Promise<CliProcess> {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(env === undefined ? {} : { env: { ...process.env, ...env } }),
  })
  children.add(child)
  let stderr = ''
  let ended = false
  const waiters = new Set<() => void>()
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk
    for (const waiter of waiters) waiter()
  })
  child.stdout?.resume()
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      children.delete(child)
      ended = true
      for (const waiter of waiters) waiter()
      resolve(code)
    })
  })
  const waitFor = (pattern: RegExp, timeoutMs = 15_000): Promise<RegExpMatchArray> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const match = pattern.exec(stderr)
        if (match !== null) {
          done()
          resolve(match)
        } else if (ended) {
          done()
          reject(new Error(`wsgiproxy exited before ${String(pattern)}; stderr:\n${stderr}`))
        }
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`timed out waiting for ${String(pattern)}; stderr:\n${stderr}`))
      }, timeoutMs)
      const done = (): void => {
        clearTimeout(timer)
        waiters.delete(check)
      }
      waiters.add(check)
      check()
    })
  const match = await waitFor(/listening on (https?:\/\/[\w.:[\]-]+)/)
  return {
    child,
    pid: child.pid ?? 0,
    url: match[1] ?? '',
    stderr: () => stderr,
    waitFor,
    exited,
  }
}

/**
 * Starts a plain upstream on 127.0.0.1 that answers with what it received as JSON.
 *
 * @returns its URL
 */
export async function startUpstream(): Promise<string> {
  const server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      res.setHeader('content-type', 'application/json')
      res.end(
        JSON.stringify({
          method: req.method,
          url: req.url,
          headers: req.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      )
    })
  })
  servers.add(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

/**
 * Starts an upstream on 127.0.0.1 that counts the requests it receives and answers `text`.
 *
 * @param text - what every response says
 * @returns its port and the count so far
 */
export async function startCountingUpstream(
  text = 'internal',
): Promise<{ port: number; hits: () => number }> {
  let hits = 0
  const server = createServer((req, res) => {
    hits++
    req.resume()
    res.end(text)
  })
  servers.add(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { port: (server.address() as AddressInfo).port, hits: () => hits }
}

/**
 * Starts a TCP relay on 127.0.0.1 that pipes every connection to 127.0.0.1:`target` (a port
 * forward, which no Host check can see through).
 *
 * @param target - the port to relay to
 * @returns the relay's port
 */
export async function startRelay(target: number): Promise<number> {
  const sockets = new Set<Socket>()
  const server = createNetServer((socket) => {
    const upstream = connect(target, '127.0.0.1')
    for (const s of [socket, upstream]) {
      sockets.add(s)
      s.on('error', () => {})
      s.on('close', () => {
        sockets.delete(s)
        socket.destroy()
        upstream.destroy()
      })
    }
    socket.pipe(upstream).pipe(socket)
  })
  relays.set(server, sockets)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as AddressInfo).port
}

/** Whether a process with this pid exists. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Waits until a condition holds. */
export async function until(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for a condition')
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

/** Kills every process and closes every server the tests started (by pid, SIGKILL). */
export async function cleanup(): Promise<void> {
  for (const child of children) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
  }
  children.clear()
  for (const pid of backends) {
    for (const target of [-pid, pid]) {
      try {
        process.kill(target, 'SIGKILL')
      } catch {
        // already gone
      }
    }
  }
  backends.clear()
  await Promise.all(
    [...servers].map(
      (server) =>
        new Promise<void>((resolve) => {
          server.closeAllConnections()
          server.close(() => resolve())
        }),
    ),
  )
  servers.clear()
  await Promise.all(
    [...relays].map(
      ([server, sockets]) =>
        new Promise<void>((resolve) => {
          for (const socket of sockets) socket.destroy()
          server.close(() => resolve())
        }),
    ),
  )
  relays.clear()
}
