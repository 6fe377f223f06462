// Test support (not built): the recipe programs (src/recipe/*.mjs) as real `node` processes, each
// resolved once it prints its listening line and SIGKILLed by pid in `stopPrograms()`.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'

/** A running program. */
export interface Program {
  /** `http://127.0.0.1:<port>`, from the line it printed. */
  origin: string
  pid: number
  /** Everything it printed so far, stdout and stderr. */
  output(): string
}

const running = new Set<ChildProcess>()

/**
 * How long a program may take to print its listening line: Node starts and loads the built
 * packages in about 0.3 s here; 15 s leaves room for a loaded machine, and a program that exits
 * first fails at once.
 */
export const PROGRAM_START_TIMEOUT = 15_000

/**
 * Runs `node <file>` with `PORT=0` and `env`, and resolves once it prints
 * `listening on http://127.0.0.1:<port>`.
 *
 * @param file - the program
 * @param env - environment variables besides the test runner's own
 * @returns the running program, stopped by {@link stopPrograms}
 */
export async function startProgram(
  file: string,
  env: Record<string, string> = {},
): Promise<Program> {
  const child = spawn(process.execPath, [file], {
    env: { ...process.env, PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  running.add(child)
  let log = ''
  const origin = await new Promise<string>((resolve, reject) => {
    const fail = (why: string): void => {
      clearTimeout(timer)
      reject(new Error(`node ${file} ${why}:\n${log}`))
    }
    const timer = setTimeout(
      () => fail(`printed no listening line within ${PROGRAM_START_TIMEOUT} ms`),
      PROGRAM_START_TIMEOUT,
    )
    const onData = (text: string): void => {
      log += text
      const match = /^listening on (http:\/\/127\.0\.0\.1:\d+)$/m.exec(log)
      if (match?.[1] === undefined) return
      clearTimeout(timer)
      resolve(match[1])
    }
    child.stdout?.setEncoding('utf8').on('data', onData)
    child.stderr?.setEncoding('utf8').on('data', onData)
    child.once('error', (error) => fail(`could not start (${error.message})`))
    child.once('exit', (code, signal) => fail(`exited (${signal ?? code})`))
  })
  return { origin, pid: child.pid ?? -1, output: () => log }
}

/** SIGKILLs every program still running (by its pid, while Node has not reaped it) and waits. */
export async function stopPrograms(): Promise<void> {
  const all = [...running]
  running.clear()
  await Promise.all(
    all.map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGKILL')
      await exited
    }),
  )
}
