// Process groups of spawned backends: signalling a whole group, and the host-level cleanup hooks
// (one `exit` listener and one listener per signal for every spawner of the process, so many
// spawners never trigger MaxListenersExceededWarning).
import { spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { guardGroup, unguardGroup, watchdogRunning } from './_watchdog.ts'

const WINDOWS = process.platform === 'win32'

/**
 * Sends `signal` to the whole process group led by `pgid` (a child spawned with
 * `detached: true`, which calls setsid()). False when the group has gone (ESRCH).
 * Never call it for a child spawned without `detached`: its group is the host's own.
 */
export function signalGroup(pgid: number, signal: NodeJS.Signals): boolean {
  if (WINDOWS) {
    // No process groups: taskkill /T walks the tree, /F because Windows has no SIGTERM.
    const result = spawnSync('taskkill', ['/pid', String(pgid), '/T', '/F'], {
      stdio: 'ignore',
      windowsHide: true,
    })
    return result.status === 0
  }
  try {
    process.kill(-pgid, signal)
    return true
  } catch (error) {
    // EPERM: a member we may not signal (it changed its user id); it is still there.
    return (error as NodeJS.ErrnoException).code === 'EPERM'
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

interface LiveGroup {
  handleSignals: boolean
}

const live = new Map<number, LiveGroup>()
const HOST_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const
type HostSignal = (typeof HOST_SIGNALS)[number]
let exitHooked = false
let signalsHooked = false

// Synchronous on purpose: an `exit` listener cannot wait. With a watchdog running, SIGTERM lets
// backends shut down cleanly and the watchdog sends SIGKILL after their grace once the host is
// gone; without one there is nobody left to escalate, so SIGKILL at once.
function killAll(): void {
  const signal: NodeJS.Signals = watchdogRunning() ? 'SIGTERM' : 'SIGKILL'
  for (const pgid of live.keys()) signalGroup(pgid, signal)
}

function onExit(): void {
  killAll()
}

const signalListeners = new Map<HostSignal, () => void>()
for (const signal of HOST_SIGNALS) {
  signalListeners.set(signal, () => onSignal(signal))
}

function onSignal(signal: HostSignal): void {
  const ours = signalListeners.get(signal)
  // The host handles this signal itself: it decides when to exit (it may drain first, and call
  // `close()`); the exit listener cleans up whatever is left when it does.
  if (process.listeners(signal).some((listener) => listener !== ours)) return
  killAll()
  // We were the only listener, so Node's default (exit with 128 + n) is what the host expects:
  // remove ours and raise the signal again (the signal-exit pattern).
  unhookSignals()
  process.kill(process.pid, signal)
}

function hookSignals(): void {
  if (signalsHooked) return
  signalsHooked = true
  for (const [signal, listener] of signalListeners) process.on(signal, listener)
}

function unhookSignals(): void {
  if (!signalsHooked) return
  signalsHooked = false
  for (const [signal, listener] of signalListeners) process.off(signal, listener)
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
  live.set(pgid, { handleSignals: options.handleSignals })
  if (!exitHooked) {
    exitHooked = true
    process.on('exit', onExit)
  }
  if (options.handleSignals) hookSignals()
  if (options.orphanGuard && !WINDOWS) guardGroup(pgid, options.killTimeout)
}

/** The group has gone: forget it everywhere (its id may be recycled). */
export function unregisterGroup(pgid: number): void {
  if (!live.delete(pgid)) return
  unguardGroup(pgid)
  if (live.size === 0 && exitHooked) {
    exitHooked = false
    process.off('exit', onExit)
  }
  if (![...live.values()].some((group) => group.handleSignals)) unhookSignals()
}
