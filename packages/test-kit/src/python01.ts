// Test support (not built): the WSGIProxy 0.1 reference pair (fixtures/wsgiproxy01/, see its
// README) as real `python3` processes on 127.0.0.1 port 0, killed by pid in `closeAll()`.
import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { register } from './servers.ts'
import type { Running } from './servers.ts'

const here = dirname(fileURLToPath(import.meta.url))
/** The folder of the WSGIProxy 0.1 reference pair. */
export const WSGIPROXY01_DIR: string = join(here, '..', 'fixtures', 'wsgiproxy01')
/** The 0.1 front (Paste WSGIProxy's `WSGIProxyApp`): give it `--href`. */
export const FRONT01: string = join(WSGIPROXY01_DIR, 'front01.py')
/** The 0.1 receiver (`WSGIProxyMiddleware` around an environ dump answered as JSON). */
export const MIDDLEWARE01: string = join(WSGIPROXY01_DIR, 'middleware01.py')

/** A running fixture of the pair. */
export interface Python01 extends Running {
  /** The process id (killed by it in `closeAll()`). */
  pid: number
  /** Everything it wrote to stderr so far (tracebacks of its 500s, `--verbose` logs). */
  stderr(): string
}

/**
 * Starts `python3 <script> --listen-port 0 ...args` and resolves once it printed its
 * `listening on http://127.0.0.1:<port>` line; registered so `closeAll()` SIGKILLs it by pid.
 *
 * @param script - {@link FRONT01}, {@link MIDDLEWARE01} or another script printing that line
 * @param args - its other arguments
 * @param timeoutMs - how long it may take to listen
 * @returns the running process
 */
export async function startPython01(
  script: string,
  args: readonly string[] = [],
  timeoutMs = 10_000,
): Promise<Python01> {
  // Asserts on: wsgiref's hop-by-hop check, which the pair's tests rely on, is an `assert`.
  const { PYTHONOPTIMIZE: _optimize, ...env } = process.env
  const child = spawn('python3', [script, '--listen-port', '0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...env, PYTHONDONTWRITEBYTECODE: '1' },
  })
  const pid = child.pid ?? -1
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  // Only while Node has not reaped it, so the pid still names this process.
  const kill = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return
    process.kill(pid, 'SIGKILL')
    await exited
  }
  let origin: string
  try {
    origin = await new Promise<string>((resolve, reject) => {
      let stdout = ''
      const fail = (why: string): void => {
        clearTimeout(timer)
        reject(new Error(`python3 ${script} ${why}; stderr:\n${stderr}`))
      }
      const timer = setTimeout(
        () => fail(`printed no listening line within ${timeoutMs} ms`),
        timeoutMs,
      )
      child.once('error', (error) => fail(`could not start (${error.message})`))
      child.once('exit', (code, signal) => fail(`exited (${signal ?? code}) before listening`))
      child.stdout.setEncoding('utf8').on('data', (text: string) => {
        stdout += text
        const match = /^listening on (http:\/\/\S+)$/m.exec(stdout)
        if (match === null) return
        clearTimeout(timer)
        resolve(match[1] ?? '')
      })
    })
  } catch (error) {
    await kill()
    throw error
  }
  const running = register({ port: Number(new URL(origin).port), origin, close: kill })
  return Object.assign(running, { pid, stderr: () => stderr })
}
