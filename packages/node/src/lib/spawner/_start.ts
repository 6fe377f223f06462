// Start orchestration: choose a port, spawn the process, race its readiness against its exit, the
// start deadline and close(), and turn what went wrong into a SpawnerError with the process's last
// output lines.
import { BackendProcess } from './_backend-process.ts'
import type { ProcessExit } from './_backend-process.ts'
import { PORT_PLACEHOLDER, resolveCommand } from './_command.ts'
import { untilAborted } from './_gate.ts'
import type { SpawnerLog } from './_log.ts'
import { allocatePort, isPortBusy, releasePort, reservePort } from './_ports.ts'
import { pollReady, sleep } from './_readiness.ts'
import { releaseWatchdog, retainWatchdog } from './_watchdog.ts'
import type { SpawnerSettings } from './options.ts'
import { closedError, SpawnerError } from './spawner-error.ts'
import type { SpawnerExit } from './spawner-error.ts'

// An auto port taken between our check and the backend's bind: spawn again this many times in all.
const MAX_PORT_TRIES = 3
const ADDRESS_IN_USE = /EADDRINUSE|address already in use|address in use/i
// After an exit, wait this long at most for the last output (a grandchild may hold the pipes).
const OUTPUT_GRACE = 100

type ReadyOutcome = 'ready' | 'exit' | 'timeout' | 'closed'

/** What the start orchestration tells the spawner; the process events go to it too. */
export interface StartEvents {
  /** A process was spawned (or failed to spawn): from now on it is the current backend. */
  adopt(backend: BackendProcess): void
  /** The process runs (it has a pid): count it and tell the listeners. */
  spawned(info: { pid: number; port: number; attempt: number }): void
  /** It was not ready by the start deadline: stop it (the start then fails with 504). */
  timedOut(backend: BackendProcess, pid: number): void
  line(backend: BackendProcess, stream: 'stdout' | 'stderr', text: string): void
  exit(backend: BackendProcess, exit: ProcessExit): void
  stuck(backend: BackendProcess): void
}

/** Starts the backends of one spawner and keeps track of those still alive. */
export class Starter {
  readonly #settings: SpawnerSettings
  readonly #log: SpawnerLog
  readonly #closed: AbortSignal
  readonly #events: StartEvents
  readonly #alive = new Set<BackendProcess>()
  #watchdogRetained = false

  /**
   * @param settings - the spawner's settings
   * @param log - where notices go and output lines are kept
   * @param closed - aborts when the spawner closes: every wait ends then
   * @param events - the spawner's side
   */
  constructor(
    settings: SpawnerSettings,
    log: SpawnerLog,
    closed: AbortSignal,
    events: StartEvents,
  ) {
    this.#settings = settings
    this.#log = log
    this.#closed = closed
    this.#events = events
  }

  /** The processes whose group has not gone yet. */
  get alive(): BackendProcess[] {
    return [...this.#alive]
  }

  /**
   * Starts a backend and resolves when it is ready; spawns again on another auto port when the
   * port was taken before the backend could bind it.
   *
   * @param deadline - when the start times out (ms since the epoch)
   * @returns the ready backend, its `host` set
   * @throws SpawnerError for every way a start fails
   */
  async start(deadline: number): Promise<BackendProcess> {
    for (let attempt = 1; ; attempt++) {
      const port = await this.#choosePortBy(deadline)
      const backend = this.#spawn(port)
      if (backend.pid === undefined) {
        await backend.exited
        throw this.exitError(backend, 'start')
      }
      this.#events.spawned({ pid: backend.pid, port, attempt })
      const outcome = await this.#waitReady(backend, deadline)
      if (outcome === 'ready') return backend
      if (outcome === 'closed') throw closedError()
      if (outcome === 'timeout') {
        this.#events.timedOut(backend, backend.pid)
        throw new SpawnerError('BACKEND_START_TIMEOUT', this.#timeoutMessage(backend), {
          recentLogs: this.#log.linesOf(backend.pid),
        })
      }
      // It exited: read what it said last before deciding why.
      await backend.outputSettled(OUTPUT_GRACE)
      const autoPort = this.#settings.port === undefined
      if (
        autoPort &&
        attempt < MAX_PORT_TRIES &&
        backend.tail.some((l) => ADDRESS_IN_USE.test(l))
      ) {
        this.#log.notice(
          backend.pid,
          `port ${port} was taken before the backend could bind it; trying another port`,
        )
        continue
      }
      throw this.exitError(backend, 'start')
    }
  }

  /**
   * Reads a line of the current backend for the `ready.stdout` pattern; a named group `port`
   * moves the backend (and its reservation) to the port it announced.
   */
  readLine(backend: BackendProcess, text: string): void {
    const pattern = this.#settings.readyStdout
    if (pattern === undefined || !backend.announcePending) return
    const match = pattern.exec(text)
    if (match === null) return
    const announced = match.groups?.port
    if (announced !== undefined) {
      const port = Number(announced)
      if (Number.isInteger(port) && port > 0 && port < 65536 && port !== backend.port) {
        if (backend.reservedPort !== undefined) releasePort(backend.reservedPort)
        backend.reservedPort = reservePort(port) ? port : undefined
        backend.port = port
      }
    }
    backend.announce(backend.port)
  }

  /** The error of a process that could not be spawned or exited, with its last output lines. */
  exitError(backend: BackendProcess, when: 'start' | 'ready'): SpawnerError {
    const exit: SpawnerExit = backend.exit ?? {
      pid: null,
      code: null,
      signal: null,
      at: Date.now(),
    }
    const recentLogs = this.#log.linesOf(backend.pid ?? null)
    const spawnError = backend.spawnError as NodeJS.ErrnoException | undefined
    if (spawnError !== undefined) {
      const hint = spawnError.code === 'ENOENT' ? ' (command or working directory not found)' : ''
      return new SpawnerError(
        'BACKEND_SPAWN_FAILED',
        `cannot spawn the backend: ${spawnError.message}${hint}`,
        { cause: spawnError, recentLogs, exit },
      )
    }
    const how =
      exit.signal !== null ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`
    const phase = when === 'start' ? 'before it was ready' : 'while serving'
    return new SpawnerError('BACKEND_EXITED', `process ${backend.pid} ${how} ${phase}`, {
      recentLogs,
      exit,
    })
  }

  /** Lets the watchdog go once the backends have (close()). */
  releaseWatchdog(): void {
    if (!this.#watchdogRetained) return
    this.#watchdogRetained = false
    releaseWatchdog()
  }

  // --- ports ----------------------------------------------------------------------------------

  // A custom allocator may never settle, and a fixed port waits for the previous backend: the
  // choice is bounded by the start deadline and by close(). A port given too late is released.
  #choosePortBy(deadline: number): Promise<number> {
    const choice = this.#choosePort()
    return new Promise((resolve, reject) => {
      const closed = this.#closed
      let settled = false
      const settle = (): boolean => {
        if (settled) return false
        settled = true
        clearTimeout(timer)
        closed.removeEventListener('abort', onClose)
        return true
      }
      const onClose = (): void => {
        if (settle()) reject(closedError())
      }
      const timer = setTimeout(
        () => {
          if (settle()) reject(this.#portTimeoutError())
        },
        Math.max(0, deadline - Date.now()),
      )
      timer.unref()
      if (closed.aborted) onClose()
      else closed.addEventListener('abort', onClose, { once: true })
      choice.then(
        (port) => {
          if (settle()) resolve(port)
          else if (port !== 0) releasePort(port)
        },
        (error: unknown) => {
          if (settle()) reject(error)
        },
      )
    })
  }

  #portTimeoutError(): SpawnerError {
    const { port, startTimeout } = this.#settings
    const within = `within ${startTimeout} ms`
    const message =
      port === undefined
        ? `allocatePort did not give a port ${within}`
        : `port ${port} was not free ${within}: the previous backend on it has not gone`
    return new SpawnerError('BACKEND_START_TIMEOUT', message)
  }

  #choosePort(): Promise<number> {
    const fixed = this.#settings.port
    if (fixed === 0) return Promise.resolve(0)
    if (fixed === undefined) return this.#allocatePort()
    return this.#claimFixedPort(fixed)
  }

  async #allocatePort(): Promise<number> {
    for (let tries = 1; ; tries++) {
      let port: number
      try {
        port = await allocatePort(this.#settings.allocatePort)
      } catch (error) {
        throw new SpawnerError(
          'BACKEND_SPAWN_FAILED',
          `cannot allocate a port: ${error instanceof Error ? error.message : String(error)}`,
          { cause: error },
        )
      }
      // Something else listens there (a custom allocator's pick, or a race with another
      // process): the readiness probe would reach it instead of our backend.
      if (!(await isPortBusy(port))) return port
      releasePort(port)
      this.#log.notice(null, `port ${port} is already in use; asking for another one`)
      if (tries >= MAX_PORT_TRIES) {
        throw new SpawnerError(
          'BACKEND_PORT_IN_USE',
          `no free port after ${tries} tries: every port given was already in use`,
        )
      }
    }
  }

  async #claimFixedPort(fixed: number): Promise<number> {
    // The previous backend on this port must be gone first (bounded: zombies count as present).
    const previous = [...this.#alive].map((backend) => backend.gone)
    if (previous.length > 0) {
      await Promise.race([Promise.all(previous), sleep(this.#settings.killTimeout + 2_000)])
    }
    const inUse = (): SpawnerError =>
      new SpawnerError(
        'BACKEND_PORT_IN_USE',
        `port ${fixed} is already in use; not starting a backend that could not bind it (is an old backend still running?)`,
      )
    if (!reservePort(fixed)) throw inUse()
    if (await isPortBusy(fixed)) {
      releasePort(fixed)
      throw inUse()
    }
    return fixed
  }

  // --- the process ----------------------------------------------------------------------------

  #spawn(port: number): BackendProcess {
    const settings = this.#settings
    if (settings.orphanGuard && !this.#watchdogRetained) {
      // Before the first spawn, so the watchdog is there before any group needs it.
      this.#watchdogRetained = true
      retainWatchdog()
    }
    const { file, args } = resolveCommand(settings.command, port, settings.shell)
    const env: NodeJS.ProcessEnv = settings.inheritEnv ? { ...process.env } : {}
    // CPython block-buffers a piped stdout: lines (and readiness patterns) would arrive late.
    env.PYTHONUNBUFFERED ??= '1'
    for (const [key, value] of Object.entries(settings.env)) {
      if (value === undefined) delete env[key]
      else env[key] = value
    }
    env.PORT = String(port)
    const events = this.#events
    const backend = BackendProcess.spawn({
      file,
      args,
      cwd: settings.cwd,
      env,
      port,
      killTimeout: settings.killTimeout,
      handleSignals: settings.handleSignals,
      orphanGuard: settings.orphanGuard,
      onLine: (process, stream, text) => events.line(process, stream, text),
      onExit: (process, exit) => events.exit(process, exit),
      onNotice: (process, message) => this.#log.notice(process.pid ?? null, message),
      onStuck: (process) => events.stuck(process),
    })
    if (port !== 0) backend.reservedPort = port
    events.adopt(backend)
    this.#alive.add(backend)
    void backend.gone.then(() => {
      this.#alive.delete(backend)
      if (backend.reservedPort !== undefined) releasePort(backend.reservedPort)
    })
    return backend
  }

  #waitReady(backend: BackendProcess, deadline: number): Promise<ReadyOutcome> {
    return new Promise((resolve) => {
      const controller = new AbortController()
      const closed = this.#closed
      let settled = false
      const finish = (outcome: ReadyOutcome): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        closed.removeEventListener('abort', onClose)
        controller.abort()
        resolve(outcome)
      }
      const onClose = (): void => finish('closed')
      const timer = setTimeout(() => finish('timeout'), Math.max(0, deadline - Date.now()))
      timer.unref()
      if (closed.aborted) finish('closed')
      else closed.addEventListener('abort', onClose, { once: true })
      void backend.exited.then(() => finish('exit'))
      void this.#probe(backend, controller.signal).then((host) => {
        // A probe that succeeded while our process was dying hit something else.
        if (host === undefined || !backend.alive) return
        backend.host = host
        finish('ready')
      })
    })
  }

  async #probe(backend: BackendProcess, signal: AbortSignal): Promise<string | undefined> {
    if (this.#settings.readyStdout !== undefined) {
      const announced = await untilAborted(backend.announced, signal).catch(() => undefined)
      if (announced === undefined) return undefined
    }
    return pollReady(backend.port, this.#settings.readyHttp, signal)
  }

  #timeoutMessage(backend: BackendProcess): string {
    const { pid, port } = backend
    const { readyStdout, readyHttp, startTimeout } = this.#settings
    const within = `within ${startTimeout} ms`
    if (readyStdout !== undefined && backend.announcePending) {
      return `process ${pid} is running but printed no line matching ${String(readyStdout)} ${within}`
    }
    if (readyHttp !== undefined) {
      return `process ${pid} is running but GET ${readyHttp} on port ${port} did not answer below 500 ${within}`
    }
    return (
      `process ${pid} is running but nothing accepted connections on 127.0.0.1:${port} or [::1]:${port} ${within}; ` +
      `does the command use ${PORT_PLACEHOLDER} or $PORT, and bind to 127.0.0.1?`
    )
  }
}
