// `pnpm start` as a user meets it: a busy or privileged port gives one line and exit 1, and
// Ctrl-C (SIGINT to the whole foreground process group, as a terminal sends it) ends with exit 0,
// no `ELIFECYCLE` from pnpm and no backend left.
import type { ChildProcess } from 'node:child_process'
import { spawn } from 'node:child_process'
import {
  chownSync,
  cpSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
} from 'node:fs'
import { createServer } from 'node:net'
import type { AddressInfo, Server } from 'node:net'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'

const DEMO = fileURLToPath(new URL('..', import.meta.url))
const MAIN = join(DEMO, 'dist', 'main.js')
const ROOT = fileURLToPath(new URL('../../..', import.meta.url))
// The unprivileged user a root test run drops to, to meet EACCES.
const NOBODY = 65534

interface Run {
  child: ChildProcess
  /** stdout and stderr as they came. */
  output: () => string
  /** The exit code and signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

const children = new Set<ChildProcess>()
const backends = new Set<number>()
const servers = new Set<Server>()
const dirs = new Set<string>()

function tempDir(owner?: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'wsgiproxy-demo-start-'))
  if (owner !== undefined) chownSync(dir, owner, owner)
  dirs.add(dir)
  return dir
}

function start(
  command: string,
  args: string[],
  options: { cwd: string; env: Record<string, string>; uid?: number },
): Run {
  // Detached: its own process group, which the test signals as a terminal would.
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.uid === undefined ? {} : { uid: options.uid, gid: options.uid }),
  })
  children.add(child)
  let output = ''
  child.stdout?.setEncoding('utf8').on('data', (text: string) => (output += text))
  child.stderr?.setEncoding('utf8').on('data', (text: string) => (output += text))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal })),
  )
  return { child, output: () => output, exited }
}

/** Resolves with the match once the output matches; rejects if the process ends first. */
async function waitFor(run: Run, pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const match = pattern.exec(run.output())
    if (match !== null) return match
    if (run.child.exitCode !== null || run.child.signalCode !== null) {
      throw new Error(`exited before ${String(pattern)}:\n${run.output()}`)
    }
    if (Date.now() > deadline) throw new Error(`no ${String(pattern)} in:\n${run.output()}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** The backend pids the demo logged (`echo: spawned pid N on port P`). */
function spawned(output: string): number[] {
  return [...output.matchAll(/^(?:echo|py): spawned pid (\d+) on port \d+$/gm)].map((m) =>
    Number(m[1]),
  )
}

async function occupiedPort(): Promise<number> {
  const server = createServer()
  servers.add(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as AddressInfo).port
}

/** How a command ended after Ctrl-C, and the backends it had started. */
interface Stopped {
  code: number | null
  signal: NodeJS.Signals | null
  output: string
  backends: number[]
}

/**
 * Waits until the demo's command listens, starts both backends, and sends SIGINT to the
 * process group, as a terminal does on Ctrl-C.
 */
async function ctrlC(run: Run, listenTimeoutMs: number): Promise<Stopped> {
  const url = (await waitFor(run, /open (http:\/\/\S+)/, listenTimeoutMs))[1] ?? ''
  for (const path of ['echo/', 'py/']) {
    const res = await fetch(`${url}${path}`, { headers: { accept: 'application/json' } })
    expect(res.status).toBe(200)
    await res.arrayBuffer()
  }
  const pids = spawned(run.output())
  for (const pid of pids) backends.add(pid)
  expect(pids).toHaveLength(2)
  const pid = run.child.pid
  if (pid === undefined) throw new Error('the command did not start')
  process.kill(-pid, 'SIGINT')
  return { ...(await run.exited), output: run.output(), backends: pids }
}

beforeAll(() => {
  if (!existsSync(MAIN)) throw new Error('apps/demo is not built: run `pnpm build` first')
})

afterEach(async () => {
  for (const child of children) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, 'SIGKILL')
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
  await Promise.all([...servers].map((server) => new Promise((resolve) => server.close(resolve))))
  servers.clear()
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  dirs.clear()
})

describe('pnpm start on a port it cannot listen on', () => {
  it('says the port is in use and how to pick another, exit 1', async () => {
    const port = await occupiedPort()
    const run = start(process.execPath, [MAIN], {
      cwd: DEMO,
      env: { PORT: String(port), DEMO_KEY_FILE: join(tempDir(), 'demo.keys') },
    })
    expect(await run.exited).toEqual({ code: 1, signal: null })
    expect(run.output()).toMatch(
      new RegExp(
        `^demo: port ${port} is in use on 127\\.0\\.0\\.1; set PORT to another port \\(for example PORT=9000 pnpm start\\)\\n$`,
        'm',
      ),
    )
    expect(run.output()).not.toMatch(/^\s+at /m)
  }, 20_000)

  it('refuses a PORT that is not a port number, exit 1', async () => {
    const run = start(process.execPath, [MAIN], {
      cwd: DEMO,
      env: { PORT: 'eighty', DEMO_KEY_FILE: join(tempDir(), 'demo.keys') },
    })
    expect(await run.exited).toEqual({ code: 1, signal: null })
    expect(run.output()).toBe(
      'demo: PORT must be a port number 0–65535 (got "eighty"); for example PORT=9000 pnpm start\n',
    )
  }, 20_000)

  // Privileged ports are a Linux setting (net.ipv4.ip_unprivileged_port_start); where it lets
  // everyone bind port 80 there is no EACCES to meet.
  const unprivilegedStart = existsSync('/proc/sys/net/ipv4/ip_unprivileged_port_start')
    ? Number(readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8'))
    : 0
  it.skipIf(unprivilegedStart <= 80)(
    'says a port below 1024 needs root, exit 1',
    async () => {
      const root = process.getuid?.() === 0
      const run = start(process.execPath, [MAIN], {
        cwd: DEMO,
        env: { PORT: '80', DEMO_KEY_FILE: join(tempDir(root ? NOBODY : undefined), 'demo.keys') },
        ...(root ? { uid: NOBODY } : {}),
      })
      expect(await run.exited).toEqual({ code: 1, signal: null })
      expect(run.output()).toMatch(
        /^demo: port 80 on 127\.0\.0\.1 needs root privileges \(ports below 1024 do\); set PORT to another port \(for example PORT=9000 pnpm start\)\n$/m,
      )
      expect(run.output()).not.toMatch(/^\s+at /m)
    },
    20_000,
  )
})

describe('Ctrl-C on pnpm start', () => {
  it('ends `pnpm --filter @wsgiproxy/demo run start` with exit 0, quietly, backends gone', async () => {
    const run = start('pnpm', ['--filter', '@wsgiproxy/demo', 'run', 'start'], {
      cwd: ROOT,
      env: { PORT: '0', DEMO_KEY_FILE: join(tempDir(), 'demo.keys') },
    })
    // pnpm and the demo start in about 2 s on a loaded 2-core machine.
    const stopped = await ctrlC(run, 30_000)
    expect(stopped).toMatchObject({ code: 0, signal: null })
    expect(stopped.output).not.toMatch(/ELIFECYCLE|ERR_PNPM|Command failed|^\s+at /m)
    // close() waits until each backend has exited; the poll is only a margin.
    await expect.poll(() => stopped.backends.filter(alive), { timeout: 5_000 }).toEqual([])
  }, 60_000)

  // The root script builds every package first. It runs in a copy of the workspace (sources,
  // the same node_modules), so that its build does not replace the dist/ folders the other test
  // files of this run are using.
  it('ends the root `pnpm start` (build, then the demo) with exit 0, quietly, backends gone', async () => {
    const copy = copyWorkspace()
    const run = start('pnpm', ['start'], {
      cwd: copy,
      env: { PORT: '0', DEMO_KEY_FILE: join(tempDir(), 'demo.keys') },
    })
    // The build takes about 40 s on an idle 2-core machine, several times that under load.
    const stopped = await ctrlC(run, 300_000)
    expect(stopped).toMatchObject({ code: 0, signal: null })
    expect(stopped.output).not.toMatch(/ELIFECYCLE|ERR_PNPM|Command failed|^\s+at /m)
    await expect.poll(() => stopped.backends.filter(alive), { timeout: 5_000 }).toEqual([])
  }, 360_000)
})

// A copy of the workspace without dist/ and .git, sharing the installed root node_modules (each
// package's node_modules holds relative links into it and to the workspace packages).
function copyWorkspace(): string {
  const copy = join(tempDir(), 'workspace')
  const skip = new Set(['.git', 'dist', '.vite-temp', '.keys', '.vitest-report.json'])
  cpSync(ROOT, copy, {
    recursive: true,
    verbatimSymlinks: true,
    filter: (source) => !skip.has(basename(source)) && source !== join(ROOT, 'node_modules'),
  })
  symlinkSync(join(ROOT, 'node_modules'), join(copy, 'node_modules'))
  return copy
}
