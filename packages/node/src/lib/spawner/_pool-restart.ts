// A pool's rolling restart: for each instance ready when it began, a new instance starts and
// becomes ready, the old one leaves routing, finishes its requests in flight (up to
// drainTimeout) and is stopped. The pool serves throughout. On a fixed port (a pool of one) the
// new process cannot bind before the old one has gone: the old one drains and stops first, and
// requests wait for the new one as they wait for any start.
import type { BackendProcess } from './_backend-process.ts'
import { closedError } from './spawner-error.ts'
import type { SpawnerScaleReason, SpawnerState } from './spawner.ts'

/** What a rolling restart does to its pool. */
export interface RestartSteps {
  /** The pool's state now. */
  state(): SpawnerState
  /** The ready instances now. */
  ready(): readonly BackendProcess[]
  /** Resolves when the starts in progress have settled; `undefined` when there are none. */
  startsSettled(): Promise<unknown> | undefined
  /** Ends a backoff, or a hold of starts, with the failure count cleared; else nothing. */
  endBackoff(): void
  /** Whether a new process needs the old one's port (a fixed `port`). */
  fixedPort: boolean
  /** Starts one instance; resolves when it is ready and in routing. */
  start(reason: SpawnerScaleReason): Promise<BackendProcess>
  /** Takes a ready instance out of routing. */
  retire(backend: BackendProcess): void
  /** Resolves once nothing is in flight to `backend`, or after drainTimeout (or at close). */
  drain(backend: BackendProcess): Promise<void>
  /** Refuses (or allows again) every start but the restart's own. */
  blockStarts(blocked: boolean): void
  /** Brings the pool back to `min`. */
  replenish(): void
}

/**
 * Restarts every ready instance, one at a time; resolves when the old processes have gone.
 * Without a ready instance it only ends a backoff.
 *
 * @throws SpawnerError when a new instance cannot start (the old one keeps serving), or
 *   `BACKEND_CLOSED` when the pool closes meanwhile
 */
export async function rollingRestart(pool: RestartSteps): Promise<void> {
  for (;;) {
    const state = pool.state()
    if (state === 'closed') throw closedError()
    if (state === 'backoff') {
      pool.endBackoff()
      return
    }
    // A start in progress (the first, a replacement, a scale-up) joins the pool before it rolls.
    const starts = pool.startsSettled()
    if (starts === undefined) break
    await starts
  }
  // A hold of starts ends as a backoff does.
  pool.endBackoff()
  const olds = [...pool.ready()]
  for (const old of olds) {
    if (pool.state() === 'closed') throw closedError()
    // It crashed or stopped for idleness meanwhile.
    if (!pool.ready().includes(old)) continue
    if (pool.fixedPort) await replaceInPlace(pool, old)
    else await replaceRolling(pool, old)
  }
  if (olds.length > 0) pool.replenish()
  await Promise.all(olds.map((old) => old.gone))
}

async function replaceRolling(pool: RestartSteps, old: BackendProcess): Promise<void> {
  await pool.start('restart')
  if (!pool.ready().includes(old)) return
  pool.retire(old)
  await pool.drain(old)
  if (pool.state() !== 'closed') void old.stop('restart')
}

async function replaceInPlace(pool: RestartSteps, old: BackendProcess): Promise<void> {
  pool.blockStarts(true)
  try {
    pool.retire(old)
    await pool.drain(old)
    if (pool.state() !== 'closed') await old.stop('restart')
  } finally {
    pool.blockStarts(false)
  }
  if (pool.state() === 'closed') throw closedError()
  await pool.start('restart')
}
