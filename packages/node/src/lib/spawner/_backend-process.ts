// One spawned backend process: its own process group, output drained line by line, exit seen on
// 'exit' (never 'close'), stopped with SIGTERM then SIGKILL to the whole group.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import type { Readable } from 'node:stream'
import { StringDecoder } from 'node:string_decoder'
import type { UpgradableApp } from '@wsgiproxy/core'
import {
  exitedUnseen,
  groupExists,
  registerGroup,
  signalGroup,
  unregisterGroup,
} from './_process-group.ts'
import type { SignalResult } from './_process-group.ts'

/** How a backend process ended. */
export interface ProcessExit {
  /** The process id. */
  pid: number | null
  /** The exit code, or `null` when a signal ended it (or it never ran). */
  code: number | null
  /** The signal that ended it, or `null`. */
  signal: NodeJS.Signals | null
  /** When it was seen, in ms since the epoch. */
  at: number
}

/** Why a backend is being stopped. */
export type StopReason = 'idle' | 'restart' | 'timeout' | 'close'

/** What {@link BackendProcess.spawn} needs. */
export interface BackendProcessOptions {
  file: string
  args: string[]
  cwd: string | undefined
  env: NodeJS.ProcessEnv
  port: number
  killTimeout: number
  handleSignals: boolean
  orphanGuard: boolean
  /** Every output line, decoded, without its line ending. */
  onLine: (process: BackendProcess, stream: 'stdout' | 'stderr', text: string) => void
  /** Called synchronously on 'exit' (or a failed spawn). */
  onExit: (process: BackendProcess, exit: ProcessExit) => void
  /** Spawner messages (escalation to SIGKILL, a group we may not signal). */
  onNotice: (process: BackendProcess, message: string) => void
  /**
   * A stop gave up: the process did not exit within {@link KILL_GRACE} of SIGKILL. `gone` has
   * resolved; the group stays registered until it exits.
   */
  onStuck: (process: BackendProcess) => void
  /** Signals the group; tests inject a group we may not signal. Default: {@link signalGroup}. */
  signal?: (pgid: number, signal: NodeJS.Signals) => SignalResult
}

// A longer line is cut into pieces this long, so output without newlines cannot grow memory.
const MAX_LINE = 16 * 1024
// How long after SIGKILL callers wait at most for the process, or the rest of its group, to go.
// What is still there then is a zombie waiting for PID 1 to reap it (counted outside Linux), a
// member we may not signal (EPERM) or one in an uninterruptible sleep: callers stop waiting, and
// the group stays registered (exit hook, watchdog) and is checked now and then until it has gone.
const KILL_GRACE = 1_000
// The longest pause between checks of a group that outlived KILL_GRACE.
const LINGER_CHECK = 5_000
const WINDOWS = process.platform === 'win32'

interface Deferred<T> {
  promise: Promise<T>
  resolve: (value: T) => void
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((r) => {
    resolve = r
  })
  return { promise, resolve }
}

/** A backend process in its own process group. */
export class BackendProcess {
  /** The child process (`undefined` when `spawn` itself threw). */
  readonly child: ChildProcess | undefined
  /** Its pid (also its process group id), or `undefined` when spawning failed. */
  readonly pid: number | undefined
  /** The port it was told to use (or announced). */
  port: number
  /** The loopback address that answered the readiness check. */
  host: string | undefined
  /** When it was spawned. */
  readonly spawnedAt: number
  /** When it became ready. */
  readyAt: number | undefined
  /** Requests (and upgraded connections) in flight to it. */
  inFlight = 0
  /** Why it is being stopped, once a stop began. */
  stopReason: StopReason | undefined
  /** Whether it had already exited on its own when the stop began (its 'exit' not yet seen). */
  exitedBeforeStop = false
  /** How it ended, once it did. */
  exit: ProcessExit | undefined
  /** The spawn error (ENOENT, EACCES, ...) when it never ran. */
  spawnError: Error | undefined
  /** Its last output lines (unprefixed), for the start-failure checks. */
  readonly tail: string[] = []
  /** The proxy app forwarding to it, once it is ready. */
  proxy: UpgradableApp | undefined
  /** The port reserved for it in this process, released when its group has gone. */
  reservedPort: number | undefined

  readonly #options: BackendProcessOptions
  readonly #exited = deferred<ProcessExit>()
  readonly #gone = deferred<void>()
  readonly #outputEnded: Promise<void>
  readonly #drained: Array<() => void> = []
  readonly #announced = deferred<number>()
  #announcePending = true
  #stopStartedAt: number | undefined
  #killTimer: NodeJS.Timeout | undefined
  #registered = false
  #deniedReported = false

  private constructor(options: BackendProcessOptions) {
    this.#options = options
    this.port = options.port
    this.spawnedAt = Date.now()
    let child: ChildProcess
    try {
      child = spawn(options.file, options.args, {
        cwd: options.cwd,
        env: options.env,
        // setsid(): the child leads its own process group, so `kill(-pid)` reaches everything it
        // starts (a shell's server, an `npm run` chain, workers). Not on Windows, where it means
        // a new console; the tree kill there is taskkill /T.
        detached: !WINDOWS,
        // Output is always piped and always read: an unread pipe blocks the backend once the
        // kernel buffer fills (nodejs/node#4236).
        stdio: ['ignore', 'pipe', 'pipe'],
        windowsHide: true,
      })
    } catch (error) {
      // A synchronous spawn failure (an argument Node refuses): reported like ENOENT, later.
      this.child = undefined
      this.pid = undefined
      this.#outputEnded = Promise.resolve()
      queueMicrotask(() => this.#fail(error as Error))
      return
    }
    this.child = child
    this.pid = child.pid
    this.#outputEnded = Promise.all([
      this.#drain(child.stdout, 'stdout'),
      this.#drain(child.stderr, 'stderr'),
    ]).then(() => {})
    // The state follows 'exit', never 'close': 'close' waits for every holder of the pipes, and a
    // grandchild that inherited stdout may hold them forever (tinylibs/tinyexec#138).
    child.once('exit', (code, signal) => this.#onExit(code, signal))
    child.on('error', (error) => {
      // Without a pid it never ran (ENOENT, EACCES) and no 'exit' follows.
      if (this.pid === undefined) this.#fail(error)
    })
    if (this.pid !== undefined) {
      registerGroup(this.pid, options)
      this.#registered = true
    }
  }

  /** Spawns a backend; check `pid` (undefined: it failed, and `exited` says why). */
  static spawn(options: BackendProcessOptions): BackendProcess {
    return new BackendProcess(options)
  }

  /** Resolves when the process has exited (or failed to spawn). */
  get exited(): Promise<ProcessExit> {
    return this.#exited.promise
  }

  /** Resolves when the whole process group has gone (stragglers included). */
  get gone(): Promise<void> {
    return this.#gone.promise
  }

  /** Whether the process is still running. */
  get alive(): boolean {
    const child = this.child
    return (
      this.exit === undefined &&
      child !== undefined &&
      child.exitCode === null &&
      child.signalCode === null
    )
  }

  /** Resolves when the output streams ended, or after `ms` (a grandchild may keep them open). */
  outputSettled(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms)
      timer.unref()
      void this.#outputEnded.then(() => {
        clearTimeout(timer)
        resolve()
      })
    })
  }

  /** Resolves with the port the backend announced in its output (stdout readiness). */
  get announced(): Promise<number> {
    return this.#announced.promise
  }

  /** Whether no announcement was seen yet. */
  get announcePending(): boolean {
    return this.#announcePending
  }

  /** Records the announcement of a readiness line. */
  announce(port: number): void {
    if (!this.#announcePending) return
    this.#announcePending = false
    this.#announced.resolve(port)
  }

  /** Resolves once nothing is in flight. */
  drained(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve()
    return new Promise((resolve) => this.#drained.push(resolve))
  }

  /** Ends one request (or upgraded connection) in flight. */
  release(): void {
    this.inFlight = Math.max(0, this.inFlight - 1)
    if (this.inFlight === 0) for (const resolve of this.#drained.splice(0)) resolve()
  }

  /**
   * Stops the whole group: SIGTERM now, SIGKILL after `killTimeout`. Resolves when the group has
   * gone. Calling it again returns the same promise.
   */
  stop(reason: StopReason): Promise<void> {
    if (this.#stopStartedAt !== undefined || this.exit !== undefined || this.pid === undefined) {
      this.stopReason ??= reason
      return this.gone
    }
    this.stopReason = reason
    this.#stopStartedAt = Date.now()
    // A request can fail on the connection reset of a dying backend before Node has reaped it:
    // then this stop did not end it, and the exit is a crash.
    this.exitedBeforeStop = exitedUnseen(this.pid)
    this.#signal('SIGTERM')
    this.#killTimer = setTimeout(() => {
      if (this.exit !== undefined) return
      this.#options.onNotice(
        this,
        `did not stop within ${this.#options.killTimeout} ms of SIGTERM: sending SIGKILL to its process group`,
      )
      this.#signal('SIGKILL')
      this.#killTimer = setTimeout(() => this.#giveUp(), KILL_GRACE)
      this.#killTimer.unref()
    }, this.#options.killTimeout)
    this.#killTimer.unref()
    return this.gone
  }

  // Signals the whole group; a group we may not signal is reported once.
  #signal(signal: NodeJS.Signals): SignalResult {
    const pgid = this.pid
    if (pgid === undefined) return 'gone'
    const result = (this.#options.signal ?? signalGroup)(pgid, signal)
    if (result === 'denied' && !this.#deniedReported) {
      this.#deniedReported = true
      this.#options.onNotice(
        this,
        `cannot send ${signal} to its process group: permission denied (EPERM: its members run as another user)`,
      )
    }
    return result
  }

  // SIGKILL did not end the process: stop waiting for it, without forgetting it.
  #giveUp(): void {
    if (this.exit !== undefined) return
    this.#options.onNotice(
      this,
      `did not exit within ${KILL_GRACE} ms of SIGKILL: no longer waiting for it (the exit hook and the watchdog still know its group)`,
    )
    // Nor may it keep the host alive.
    this.child?.unref()
    for (const stream of [this.child?.stdout, this.child?.stderr]) {
      ;(stream as { unref?: () => void } | null | undefined)?.unref?.()
    }
    this.#gone.resolve()
    this.#options.onStuck(this)
  }

  #fail(error: Error): void {
    if (this.exit !== undefined) return
    this.spawnError = error
    this.exit = { pid: null, code: null, signal: null, at: Date.now() }
    this.#exited.resolve(this.exit)
    this.#options.onExit(this, this.exit)
    this.#finish()
  }

  #onExit(code: number | null, signal: NodeJS.Signals | null): void {
    this.exit = { pid: this.pid ?? null, code, signal, at: Date.now() }
    this.#exited.resolve(this.exit)
    try {
      this.#options.onExit(this, this.exit)
    } finally {
      // Whatever happened above, the rest of the group is killed and waited for.
      this.#reapGroup()
    }
  }

  // The leader has exited; members may remain (a grandchild that ignored the shell's death, a
  // worker). Signal the group again and wait until it is empty, escalating to SIGKILL.
  #reapGroup(): void {
    const pgid = this.pid
    if (pgid === undefined || WINDOWS || !groupExists(pgid)) {
      this.#finish()
      return
    }
    this.#signal('SIGTERM')
    const killAt = (this.#stopStartedAt ?? Date.now()) + this.#options.killTimeout
    let killedAt: number | undefined
    let delay = 10
    const check = (): void => {
      if (!groupExists(pgid)) {
        this.#finish()
        return
      }
      const now = Date.now()
      if (killedAt === undefined && now >= killAt) {
        killedAt = now
        this.#signal('SIGKILL')
      }
      const lingering = killedAt !== undefined && now - killedAt >= KILL_GRACE
      // Callers stop waiting; the group stays registered until a check finds it gone.
      if (lingering) this.#gone.resolve()
      delay = Math.min(delay * 2, lingering ? LINGER_CHECK : 100)
      setTimeout(check, delay).unref()
    }
    setTimeout(check, delay).unref()
  }

  #finish(): void {
    clearTimeout(this.#killTimer)
    if (this.#registered && this.pid !== undefined) {
      this.#registered = false
      unregisterGroup(this.pid)
    }
    this.#gone.resolve()
  }

  #drain(stream: Readable | null, name: 'stdout' | 'stderr'): Promise<void> {
    if (stream === null) return Promise.resolve()
    const decoder = new StringDecoder('utf8')
    let pending = ''
    const emit = (text: string): void => {
      const line = text.endsWith('\r') ? text.slice(0, -1) : text
      this.tail.push(line)
      if (this.tail.length > 50) this.tail.shift()
      this.#options.onLine(this, name, line)
    }
    const push = (text: string): void => {
      pending += text
      let end: number
      while ((end = pending.indexOf('\n')) !== -1) {
        emit(pending.slice(0, end))
        pending = pending.slice(end + 1)
      }
      while (pending.length > MAX_LINE) {
        emit(pending.slice(0, MAX_LINE))
        pending = pending.slice(MAX_LINE)
      }
    }
    return new Promise((resolve) => {
      stream.on('data', (chunk: Buffer) => push(decoder.write(chunk)))
      let ended = false
      const end = (): void => {
        if (ended) return
        ended = true
        push(decoder.end())
        if (pending !== '') emit(pending)
        pending = ''
        resolve()
      }
      stream.once('end', end)
      stream.once('error', end)
      // A destroyed stream (the pipe closed abnormally) ends without 'end'.
      stream.once('close', end)
    })
  }
}
