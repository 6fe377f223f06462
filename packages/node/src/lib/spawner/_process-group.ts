// Process groups of spawned backends: signalling a whole group, and the host-level cleanup hooks
// (one `exit` listener and one listener per signal for every spawner of the process, so many
// spawners never trigger MaxListenersExceededWarning, and for every copy of the package).
import { spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { guardGroup, isGuarded, unguardGroup } from './_watchdog.ts'

const WINDOWS = process.platform === 'win32'

/** What sending a signal to a group did: sent, nobody there (ESRCH), or not allowed (EPERM). */
export type SignalResult = 'sent' | 'gone' | 'denied'

/**
 * Sends `signal` to the whole process group led by `pgid` (a child spawned with
 * `detached: true`, which calls setsid()). `denied` (EPERM) when no member may be signalled by
 * us: every one left changed its user id, and they are still there.
 * Never call it for a child spawned without `detached`: its group is the host's own.
 */
export function signalGroup(pgid: number, signal: NodeJS.Signals): SignalResult {
  if (WINDOWS) {
    // No process groups: taskkill /T walks the tree, /F because Windows has no SIGTERM.
    const result = spawnSync('taskkill', ['/pid', String(pgid), '/T', '/F'], {
      stdio: 'ignore',
      windowsHide: true,
    })
    return result.status === 0 ? 'sent' : 'gone'
  }
  try {
    process.kill(-pgid, signal)
    return 'sent'
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM' ? 'denied' : 'gone'
  }
}

/**
 * Whether any process is left in group `pgid`. On Linux, zombies do not count (a member whose
 * parent died waits for PID 1 to reap it, which some inits do late); elsewhere they do, and
 * callers bound how long they wait.
 */
export function groupExists(pgid: number): boolean {
  if (WINDOWS) {
    try {
      process.kill(pgid, 0)
      return true
    } catch {
      return false
    }
  }
  try {
    process.kill(-pgid, 0)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false
  }
  return process.platform === 'linux' ? (hasLiveMember(pgid) ?? true) : true
}

/**
 * Whether process `pid`, a child of ours, has already exited though its 'exit' has not been
 * seen yet (a zombie waiting for Node to reap it). Linux only (/proc); elsewhere always false.
 */
export function exitedUnseen(pid: number): boolean {
  if (process.platform !== 'linux') return false
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
    const state = stat[stat.lastIndexOf(')') + 2]
    return state === 'Z' || state === 'X'
  } catch {
    return false
  }
}

// Scans /proc for a member of the group that is not a zombie; `undefined` when /proc is unreadable.
function hasLiveMember(pgid: number): boolean | undefined {
  let entries: string[]
  try {
    entries = readdirSync('/proc')
  } catch {
    return undefined
  }
  for (const entry of entries) {
    if (entry.charCodeAt(0) < 48 || entry.charCodeAt(0) > 57) continue
    let stat: string
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'latin1')
    } catch {
      continue
    }
    // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    if (Number(fields[2]) === pgid && fields[0] !== 'Z' && fields[0] !== 'X') return true
  }
  return false
}

// --- the host's cleanup hooks ---------------------------------------------------------------
//
// One registry per process, kept on `process` under a global symbol, so that every copy of this
// package loaded into the host (two versions in node_modules, a bundled copy) shares one `exit`
// listener, one listener per signal and one set of groups. Two copies with a listener each would
// each see the other's as the host's, and a signal none of them re-raises would be swallowed.

const HOST_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const
type HostSignal = (typeof HOST_SIGNALS)[number]

/** A live group as the host-level hooks see it. */
interface HostGroup {
  /** Whether its spawner asked for the signal hooks. */
  readonly handleSignals: boolean
  /** The signal the group gets when the host exits or dies of a signal. */
  readonly exitSignal: () => NodeJS.Signals
}

interface Registry {
  /** The shape of this object; a copy that knows another one keeps a registry of its own. */
  readonly version: 1
  readonly groups: Map<number, HostGroup>
  readonly onExit: () => void
  readonly onSignal: Readonly<Record<HostSignal, () => void>>
  readonly onRemoveListener: (event: string | symbol, listener: unknown) => void
  /** Signals that lost a listener of the host in this tick (a `once` listener being called). */
  readonly removedNow: Set<string | symbol>
  exitHooked: boolean
  signalsHooked: boolean
}

// Process-wide on purpose, and not a seam between packages: two copies of @wsgiproxy/node in one
// process (two versions in node_modules) must share one registry, so that one exit and signal hook
// kills every copy's process groups. A module-local value would give each copy its own hooks,
// and the first to exit on SIGTERM would leave the other copy's backends running.
const REGISTRY_KEY = Symbol.for('wsgiproxy.processGroups')
// Marks every hook function of every copy: never counted as a listener of the host's.
const HOOK_KEY = Symbol.for('wsgiproxy.processGroups.hook')

function isHook(listener: unknown): boolean {
  return typeof listener === 'function' && HOOK_KEY in listener
}

function markHook<T extends object>(hook: T): T {
  return Object.defineProperty(hook, HOOK_KEY, { value: true })
}

function createRegistry(): Registry {
  const groups = new Map<number, HostGroup>()
  const removedNow = new Set<string | symbol>()
  // Synchronous on purpose: an `exit` listener cannot wait.
  const killAll = (): void => {
    for (const [pgid, group] of groups) signalGroup(pgid, group.exitSignal())
  }
  const registry: Registry = {
    version: 1,
    groups,
    removedNow,
    exitHooked: false,
    signalsHooked: false,
    onExit: markHook(() => killAll()),
    onSignal: {
      SIGINT: markHook(() => onSignal('SIGINT')),
      SIGTERM: markHook(() => onSignal('SIGTERM')),
      SIGHUP: markHook(() => onSignal('SIGHUP')),
    },
    // A `once` listener removes itself before it is called: if it ran before ours in the same
    // emit, it is no longer in `process.listeners()`, but it was the host's. Remember it until
    // the tick ends (every listener of one emit runs in the same tick).
    onRemoveListener: markHook((event: string | symbol, listener: unknown) => {
      if (!(HOST_SIGNALS as readonly (string | symbol)[]).includes(event) || isHook(listener)) {
        return
      }
      if (removedNow.size === 0) process.nextTick(() => removedNow.clear())
      removedNow.add(event)
    }),
  }
  const onSignal = (signal: HostSignal): void => {
    // The host handles this signal itself: it decides when to exit (it may drain first, and call
    // `close()`); the exit listener cleans up whatever is left when it does.
    if (hostListens(signal) || removedNow.has(signal)) return
    killAll()
    // Nobody else handles it, so Node's default (exit with 128 + n) is what the host expects:
    // remove ours and raise the signal again (the signal-exit pattern).
    unhookSignals(registry)
    process.kill(process.pid, signal)
  }
  return registry
}

// Whether a listener other than ours (of any copy) and signal-exit's listens for `signal`.
// signal-exit re-raises a signal only when its own listeners are all there are, and counts them
// (v4 on a global symbol, v3 on `process.__signal_exit_emitter__`): with ours gone, it exits.
function hostListens(signal: HostSignal): boolean {
  const others = process.listeners(signal).filter((listener) => !isHook(listener)).length
  return others > signalExitCount()
}

function signalExitCount(): number {
  const v4 = (globalThis as Record<symbol, unknown>)[Symbol.for('signal-exit emitter')]
  const v3 = (process as unknown as Record<string, unknown>)['__signal_exit_emitter__']
  return emitterCount(v4) + emitterCount(v3)
}

function emitterCount(emitter: unknown): number {
  const value = (emitter as { count?: unknown } | undefined)?.count
  return typeof value === 'number' && value > 0 ? value : 0
}

function sharedRegistry(): Registry {
  const holder = process as unknown as Record<symbol, Registry | undefined>
  const existing = holder[REGISTRY_KEY]
  if (existing?.version === 1) return existing
  const created = createRegistry()
  // A registry of another shape stays with the copies that know it; ours still never counts
  // their marked hooks as the host's, nor they ours.
  if (existing === undefined) {
    Object.defineProperty(process, REGISTRY_KEY, { value: created, configurable: true })
  }
  return created
}

const registry = sharedRegistry()

function hookSignals(target: Registry): void {
  if (target.signalsHooked) return
  target.signalsHooked = true
  for (const signal of HOST_SIGNALS) process.on(signal, target.onSignal[signal])
  process.on('removeListener', target.onRemoveListener)
}

function unhookSignals(target: Registry): void {
  if (!target.signalsHooked) return
  target.signalsHooked = false
  for (const signal of HOST_SIGNALS) process.off(signal, target.onSignal[signal])
  process.off('removeListener', target.onRemoveListener)
}

/**
 * Registers a live group: the host's `exit` (normal end, `process.exit`, uncaught exception) and,
 * with `handleSignals`, SIGINT/SIGTERM/SIGHUP kill it; with `orphanGuard` the watchdog kills it
 * when the host dies otherwise.
 */
export function registerGroup(
  pgid: number,
  options: { handleSignals: boolean; orphanGuard: boolean; killTimeout: number },
): void {
  const guarded = options.orphanGuard && !WINDOWS
  // Nothing in the host can wait once it exits. A group a live watchdog guards gets SIGTERM, to
  // shut down cleanly, and the watchdog sends SIGKILL after its grace once the host is gone; any
  // other group (no `orphanGuard`, or its watchdog died) has nobody to escalate: SIGKILL at once.
  const exitSignal = (): NodeJS.Signals => (guarded && isGuarded(pgid) ? 'SIGTERM' : 'SIGKILL')
  registry.groups.set(pgid, { handleSignals: options.handleSignals, exitSignal })
  if (!registry.exitHooked) {
    registry.exitHooked = true
    process.on('exit', registry.onExit)
  }
  if (options.handleSignals) hookSignals(registry)
  if (guarded) guardGroup(pgid, options.killTimeout)
}

/** The group has gone: forget it everywhere (its id may be recycled). */
export function unregisterGroup(pgid: number): void {
  if (!registry.groups.delete(pgid)) return
  unguardGroup(pgid)
  if (registry.groups.size === 0 && registry.exitHooked) {
    registry.exitHooked = false
    process.off('exit', registry.onExit)
  }
  if (![...registry.groups.values()].some((group) => group.handleSignals)) {
    unhookSignals(registry)
  }
}
