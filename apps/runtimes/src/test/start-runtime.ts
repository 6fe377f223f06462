// Starts the example handler under Node, Bun or Deno as a real child process on port 0, reads the
// chosen port from what the runtime prints, and kills it by pid when closed.
import type { ChildProcess } from 'node:child_process'
import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { Running } from '@wsgiproxy/test-kit/servers'
import { register } from '@wsgiproxy/test-kit/servers'

/** The runtimes (and Node transports) the handler is tested on. */
export type RuntimeName = 'node' | 'node-fetch' | 'bun' | 'deno'

/** A started runtime process. */
export interface RunningRuntime extends Running {
  pid: number
  /** Everything the process printed so far (stdout and stderr), for failure messages. */
  output: string[]
}

const appRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const require = createRequire(join(appRoot, 'package.json'))
const handlerSource = join(appRoot, 'src', 'handler.ts')

/** Every pid started and not yet seen to exit. */
export const livePids: Set<number> = new Set()

/** The real binary inside the `bun` npm package (its postinstall replaced the placeholder). */
export function bunBinary(): string {
  return join(dirname(require.resolve('bun/package.json')), 'bin', 'bun.exe')
}

/** The real binary of the `deno` npm package (its bin.cjs is a Node wrapper that would outlive a kill). */
export function denoBinary(): string {
  const api = require(join(dirname(require.resolve('deno/package.json')), 'install_api.cjs')) as {
    runInstall(): string
  }
  return api.runInstall()
}

function command(runtime: RuntimeName): [string, string[]] {
  switch (runtime) {
    case 'node':
    case 'node-fetch':
      return [process.execPath, [join(appRoot, 'dist', 'node.js')]]
    case 'bun':
      return [bunBinary(), ['run', handlerSource]]
    case 'deno':
      return [
        denoBinary(),
        [
          'serve',
          '--allow-env',
          '--allow-net',
          '--host',
          '127.0.0.1',
          '--port',
          '0',
          handlerSource,
        ],
      ]
  }
}

/** Lines the handler prints for every forwarding failure. */
export interface ErrorEvent {
  event: 'error'
  code: string
}

/**
 * Starts `runtime` with `env` over the parent's environment, waits until it listens, and registers
 * it so the core helpers' `closeAll()` kills it.
 */
export async function startRuntime(
  runtime: RuntimeName,
  env: Record<string, string>,
  onEvent: (event: ErrorEvent) => void = () => {},
): Promise<RunningRuntime> {
  const [file, args] = command(runtime)
  const child = spawn(file, args, {
    cwd: appRoot,
    env: {
      ...process.env,
      HOST: '127.0.0.1',
      PORT: '0',
      NO_COLOR: '1',
      DENO_NO_UPDATE_CHECK: '1',
      ...(runtime === 'node-fetch' ? { TRANSPORT: 'fetch' } : {}),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const pid = child.pid
  if (pid === undefined) throw new Error(`${runtime} did not start (${file})`)
  livePids.add(pid)
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      livePids.delete(pid)
      resolve()
    }),
  )
  const output: string[] = []
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${runtime} did not listen within 15 s:\n${output.join('\n')}`)),
      15_000,
    )
    const onLine = (line: string): void => {
      output.push(line)
      if (line.startsWith('{')) {
        try {
          const event = JSON.parse(line) as ErrorEvent
          if (event.event === 'error') onEvent(event)
        } catch {
          // not one of the handler's lines
        }
        return
      }
      // Node runner and Bun: "... http://127.0.0.1:PORT", Deno: "deno serve: Listening on http://127.0.0.1:PORT/".
      const match = /https?:\/\/[^\s/]+:(\d+)/.exec(line)
      if (match?.[1] !== undefined) {
        clearTimeout(timer)
        resolve(Number(match[1]))
      }
    }
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream, crlfDelay: Infinity }).on('line', onLine)
    }
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(
        new Error(`${runtime} exited (${code ?? signal}) before listening:\n${output.join('\n')}`),
      )
    })
  }).catch(async (error: unknown) => {
    await stop(child, pid, exited)
    throw error
  })
  const handle: RunningRuntime = {
    pid,
    port,
    origin: `http://127.0.0.1:${port}`,
    output,
    close: () => stop(child, pid, exited),
  }
  register(handle)
  return handle
}

/** SIGTERM by pid, SIGKILL after 2 s. */
async function stop(child: ChildProcess, pid: number, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  try {
    process.kill(pid, 'SIGTERM')
  } catch {
    return
  }
  const timer = setTimeout(() => {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // already gone
    }
  }, 2_000)
  await exited
  clearTimeout(timer)
}
