// Starting the benchmarked servers as child processes and reading their CPU time and peak RSS
// from /proc (Linux).
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { toCertificateEnv } from './certificate.ts'
import { serveOneOf } from './checkouts.ts'
import type { BenchCertificate } from './certificate.ts'

/** A server running in a child process. */
export interface ServerProcess {
  id: string
  pid: number
  port: number
  /** Sends SIGTERM and waits for the exit (SIGKILL after 3 s). */
  stop(): Promise<void>
}

const SERVE_ONE = fileURLToPath(new URL('../serve-one.js', import.meta.url))

/**
 * Starts `serve-one.js` for a server id in front of `upstreams` (or the upstream itself, with
 * none), with `certificate` and `env` in its environment when given, and waits for its
 * `READY <port>` line. The child's stdin is a pipe from this process, so it exits when this
 * process dies.
 */
export function startServerProcess(
  id: string,
  upstreams: readonly URL[] = [],
  certificate?: BenchCertificate,
  env: Readonly<Record<string, string>> = {},
): Promise<ServerProcess> {
  // `<id>@<checkout>`: the server as another checkout built it (`pnpm bench:compare`).
  const served = serveOneOf(id, SERVE_ONE)
  const args = [served.script, served.id, ...upstreams.map((upstream) => upstream.href)]
  const child = spawn(process.execPath, args, {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: {
      ...process.env,
      NODE_ENV: 'production',
      ...(certificate === undefined ? {} : toCertificateEnv(certificate)),
      ...env,
    },
  })
  return new Promise((resolve, reject) => {
    let output = ''
    const onExit = (code: number | null): void =>
      reject(new Error(`server "${id}" exited with ${String(code)} before it was ready`))
    child.once('exit', onExit)
    child.once('error', reject)
    child.stdout?.setEncoding('utf8')
    child.stdout?.on('data', (text: string) => {
      output += text
      const match = /READY (\d+)/.exec(output)
      if (match === null) return
      child.off('exit', onExit)
      child.stdout?.removeAllListeners('data')
      child.stdout?.resume()
      resolve({ id, pid: child.pid ?? -1, port: Number(match[1]), stop: () => stopChild(child) })
    })
  })
}

/** Sends SIGTERM to a child and waits for its exit (SIGKILL after 3 s). */
export function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), 3_000)
    child.once('exit', () => {
      clearTimeout(kill)
      resolve()
    })
    child.kill('SIGTERM')
  })
}

let clockTicks: number | undefined

/** User + system CPU time of a process in microseconds, from /proc/<pid>/stat. */
export function cpuMicros(pid: number): number {
  clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(fields[11]) + Number(fields[12])
  return (ticks * 1_000_000) / clockTicks
}

/**
 * Resets the peak RSS of a process (`VmHWM`) so the next {@link peakRssBytes} covers only what
 * follows. Returns false when the kernel does not allow it (the peak then covers the process's
 * whole life).
 */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5')
    return true
  } catch {
    return false
  }
}

/** The peak resident set size of a process in bytes (`VmHWM` in /proc/<pid>/status). */
export function peakRssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const match = /^VmHWM:\s+(\d+) kB/m.exec(status)
  return match === null ? Number.NaN : Number(match[1]) * 1024
}

/** The resident set size of a process in bytes now (`VmRSS` in /proc/<pid>/status). */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const match = /^VmRSS:\s+(\d+) kB/m.exec(status)
  return match === null ? Number.NaN : Number(match[1]) * 1024
}
