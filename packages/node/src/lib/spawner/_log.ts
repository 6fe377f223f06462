// A spawner's output: the last lines of its processes (for status() and start errors), the
// logger every line goes to, and the spawner's own notices.
import type { SpawnerLogEntry, SpawnerLogger } from './options.ts'

/** What a {@link SpawnerLog} needs. */
export interface SpawnerLogOptions {
  /** The spawner's name, in every prefix. */
  name: string
  /** Output lines kept. */
  size: number
  /** Where every line goes, or `undefined` for nowhere. */
  logger: SpawnerLogger | undefined
  /** Each line of backend output (not the notices), after the logger. */
  onOutput: (entry: SpawnerLogEntry) => void
}

/** The recent output of a spawner's processes and where its lines go. */
export class SpawnerLog {
  readonly #name: string
  readonly #size: number
  readonly #logger: SpawnerLogger | undefined
  readonly #onOutput: (entry: SpawnerLogEntry) => void
  // The last output lines of every process of this spawner, with the pid that wrote each.
  readonly #recent: Array<{ pid: number | null; line: string }> = []

  constructor(options: SpawnerLogOptions) {
    this.#name = options.name
    this.#size = options.size
    this.#logger = options.logger
    this.#onOutput = options.onOutput
  }

  /** Keeps a line of backend output and passes it to the logger and to `onOutput`. */
  output(pid: number | null, stream: 'stdout' | 'stderr', text: string): void {
    const line = `[${this.#name} ${pid}] ${text}`
    this.#recent.push({ pid, line })
    if (this.#recent.length > this.#size) this.#recent.shift()
    this.#write({ name: this.#name, pid, stream, text, line })
  }

  /**
   * Logs a message of the spawner itself (not kept). With `always`, it reaches the host's stderr
   * even with `logger: false`: for failures of the host's own code, which must not be lost.
   */
  notice(pid: number | null, text: string, always = false): void {
    const line = pid === null ? `[${this.#name}] ${text}` : `[${this.#name} ${pid}] ${text}`
    if (always && this.#logger === undefined) console.error(line)
    this.#write({ name: this.#name, pid, stream: 'spawner', text, line })
  }

  /** The kept lines of every process, oldest first. */
  lines(): string[] {
    return this.#recent.map((entry) => entry.line)
  }

  /** The kept lines of one process: a start error tells what it said, not an earlier one. */
  linesOf(pid: number | null): string[] {
    return this.#recent.filter((entry) => entry.pid === pid).map((entry) => entry.line)
  }

  #write(entry: SpawnerLogEntry): void {
    try {
      this.#logger?.(entry)
    } catch {
      // A failing logger must not stop the draining of the backend's output.
    }
    if (entry.stream !== 'spawner') this.#onOutput(entry)
  }
}
