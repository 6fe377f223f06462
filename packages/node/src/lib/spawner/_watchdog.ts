// The orphan watchdog: one small process per host that kills the backends' process groups when
// the host dies in a way no JavaScript cleanup survives (SIGKILL, the OOM killer, a native crash).
//
// It runs in its own session (so a terminal's Ctrl-C, sent to the foreground group, does not
// reach it) with its stdin a pipe from the host. The groups already guarded come as arguments
// (`pgid:graceMs`), so that a watchdog started while the host is being killed knows them before
// the host could write anything; then the host writes `+pgid graceMs` when a group starts and
// `-pgid` when it has gone. When the host dies, however it dies, the kernel closes the
// pipe's write end and the watchdog reads EOF: it sends SIGTERM to every registered group, SIGKILL
// to those still there after their grace, then exits. Node opens the pipe close-on-exec, so
// backends spawned later do not inherit the write end and cannot hold the EOF back. This is
// Passenger's owner pipe, in a separate process because generic backends do not watch stdin.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import type { Socket } from 'node:net'

// Plain JavaScript for `node -e`: no file to ship or find, nothing imported but the runtime.
const WATCHDOG_SCRIPT = `
'use strict'
const groups = new Map()
for (const arg of process.argv.slice(1)) {
  const [id, grace] = arg.split(':')
  const pgid = Number(id)
  if (Number.isSafeInteger(pgid) && pgid > 1) groups.set(pgid, Number(grace) || 5000)
}
for (const signal of ['SIGINT', 'SIGHUP']) process.on(signal, () => {})
const fs = require('node:fs')
// Zombies do not count: killed members whose parent is gone wait for PID 1, which may reap late.
const hasLiveMember = (pgid) => {
  if (process.platform !== 'linux') return true
  try {
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^[0-9]+$/.test(entry)) continue
      try {
        const stat = fs.readFileSync('/proc/' + entry + '/stat', 'latin1')
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
        if (Number(fields[2]) === pgid && fields[0] !== 'Z' && fields[0] !== 'X') return true
      } catch {}
    }
    return false
  } catch {
    return true
  }
}
const alive = (pgid) => {
  try { process.kill(-pgid, 0) } catch (error) { if (error.code !== 'EPERM') return false }
  return hasLiveMember(pgid)
}
const signal = (pgid, name) => { try { process.kill(-pgid, name) } catch {} }
let pending = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (data) => {
  pending += data
  let end
  while ((end = pending.indexOf('\\n')) !== -1) {
    const [id, grace] = pending.slice(1, end).split(' ')
    const pgid = Number(id)
    if (Number.isSafeInteger(pgid) && pgid > 1) {
      if (pending[0] === '+') groups.set(pgid, Number(grace) || 5000)
      else groups.delete(pgid)
    }
    pending = pending.slice(end + 1)
  }
})
let reaping = false
const reap = () => {
  if (reaping) return
  reaping = true
  const started = Date.now()
  for (const pgid of groups.keys()) signal(pgid, 'SIGTERM')
  const killed = new Set()
  const check = () => {
    const elapsed = Date.now() - started
    let waiting = 0
    for (const [pgid, grace] of groups) {
      if (killed.has(pgid) || !alive(pgid)) continue
      if (elapsed >= grace) { killed.add(pgid); signal(pgid, 'SIGKILL') } else waiting++
    }
    // SIGKILL cannot be caught: once every group left has had it, there is nothing more to do.
    if (waiting === 0) process.exit(0)
    setTimeout(check, 50)
  }
  check()
}
process.stdin.on('end', reap)
process.stdin.on('error', reap)
`

// The same watchdog for /bin/sh, for hosts whose executable is not a plain Node (see
// watchdogCommand): it checks once a second instead of every 50 ms, and counts zombies as there.
export const WATCHDOG_SH = `
trap '' INT HUP
groups=''
for arg in "$@"; do
  id=\${arg%%:*}
  grace=\${arg#*:}
  case $id in '' | *[!0-9]*) continue ;; esac
  [ "$id" -gt 1 ] || continue
  case $grace in '' | *[!0-9]*) grace=5000 ;; esac
  groups="$groups $id:$grace"
done
while IFS= read -r line; do
  id=\${line#?}
  id=\${id%% *}
  case $id in '' | *[!0-9]*) continue ;; esac
  [ "$id" -gt 1 ] || continue
  case $line in
    +*)
      grace=\${line#* }
      case $grace in '' | *[!0-9]*) grace=5000 ;; esac
      groups="$groups $id:$grace"
      ;;
    -*)
      kept=''
      for group in $groups; do [ "\${group%%:*}" = "$id" ] || kept="$kept $group"; done
      groups=$kept
      ;;
  esac
done
for group in $groups; do kill -s TERM -- "-\${group%%:*}" 2>/dev/null; done
elapsed=0
while [ -n "$groups" ]; do
  sleep 1
  elapsed=$((elapsed + 1000))
  left=''
  for group in $groups; do
    id=\${group%%:*}
    kill -s 0 -- "-$id" 2>/dev/null || continue
    if [ "$elapsed" -ge "\${group#*:}" ]; then kill -s KILL -- "-$id" 2>/dev/null; else left="$left $group"; fi
  done
  groups=$left
done
`

/**
 * How to run the watchdog. `process.execPath -e` runs Node only when the host is a plain Node:
 * in a single-executable application it starts the application again, and in Electron another
 * copy of the app. Those hosts get the /bin/sh watchdog.
 *
 * @param versions - the host's `process.versions`
 * @param groups - the groups to guard from the start, as `pgid:graceMs`
 * @returns the file and arguments to spawn
 */
export function watchdogCommand(
  versions: NodeJS.ProcessVersions = process.versions,
  groups: readonly string[] = [],
): [file: string, args: string[]] {
  if (versions.electron === undefined && !isSea()) {
    return [process.execPath, ['-e', WATCHDOG_SCRIPT, ...groups]]
  }
  // `sh -c script name args...`: the first word after the script is `$0`.
  return ['/bin/sh', ['-c', WATCHDOG_SH, 'wsgiproxy-watchdog', ...groups]]
}

function isSea(): boolean {
  try {
    // Not on Bun, Deno or Node before 20.16 (getBuiltinModule), nor before 20.12 (node:sea).
    const sea = process.getBuiltinModule?.('node:sea') as { isSea?: () => boolean } | undefined
    return sea?.isSea?.() === true
  } catch {
    return false
  }
}

interface Watchdog {
  child: ChildProcess
  stdin: Socket
}

let current: Watchdog | undefined
// Groups to guard (pgid -> grace in ms), re-sent to a watchdog started after one died.
const guarded = new Map<number, number>()
let retained = 0
// A watchdog that died (killed by someone, the OOM killer) is replaced, at most once a second.
const RESTART_INTERVAL = 1_000
let lastStart = 0
let restartTimer: NodeJS.Timeout | undefined

function startWatchdog(): Watchdog | undefined {
  lastStart = Date.now()
  let child: ChildProcess
  try {
    const [file, args] = watchdogCommand(
      process.versions,
      [...guarded].map(([pgid, grace]) => `${pgid}:${grace}`),
    )
    child = spawn(file, args, {
      // setsid(): its own session and group, out of reach of the terminal's signals.
      detached: true,
      stdio: ['pipe', 'ignore', 'ignore'],
      // Nothing from the host (NODE_OPTIONS preloads, loaders) is needed to run 40 lines; the
      // shell watchdog needs a PATH for sleep.
      env: file === process.execPath ? {} : { PATH: '/usr/bin:/bin' },
    })
  } catch {
    return undefined
  }
  const stdin = child.stdin as Socket | null
  if (stdin === null || child.pid === undefined) {
    child.on('error', () => {})
    return undefined
  }
  const watchdog: Watchdog = { child, stdin }
  // Spawned (it has a pid): no other 'error' can come from a child we never signal or message.
  child.on('error', () => {})
  child.once('exit', () => onGone(watchdog))
  // A host whose watchdog is gone must not crash writing to it.
  stdin.on('error', () => onGone(watchdog))
  // Neither the process nor the idle pipe may keep the host alive.
  child.unref()
  stdin.unref()
  return watchdog
}

// The watchdog died while it was the current one: start another for the groups it guarded.
function onGone(watchdog: Watchdog): void {
  if (current !== watchdog) return
  current = undefined
  if (restartTimer !== undefined || guarded.size === 0) return
  restartTimer = setTimeout(
    () => {
      restartTimer = undefined
      if (current === undefined && guarded.size > 0) ensureWatchdog()
    },
    Math.max(0, lastStart + RESTART_INTERVAL - Date.now()),
  )
  restartTimer.unref()
}

function ensureWatchdog(): Watchdog | undefined {
  current ??= startWatchdog()
  return current
}

function stopIfUnused(): void {
  if (retained > 0 || guarded.size > 0 || current === undefined) return
  // EOF with no group registered: the watchdog exits at once.
  current.stdin.end()
  current = undefined
}

/** Keeps the watchdog running (or starts it) until {@link releaseWatchdog}. */
export function retainWatchdog(): void {
  retained++
  ensureWatchdog()
}

/** Undoes one {@link retainWatchdog}; the watchdog ends once nothing needs it. */
export function releaseWatchdog(): void {
  retained = Math.max(0, retained - 1)
  stopIfUnused()
}

/** Asks the watchdog to kill group `pgid` if the host dies (SIGKILL after `graceMs`). */
export function guardGroup(pgid: number, graceMs: number): boolean {
  guarded.set(pgid, graceMs)
  const watchdog = ensureWatchdog()
  watchdog?.stdin.write(`+${pgid} ${graceMs}\n`)
  return watchdog !== undefined
}

/** The group has gone: the watchdog forgets it (so a recycled id is never signalled). */
export function unguardGroup(pgid: number): void {
  if (!guarded.delete(pgid)) return
  current?.stdin.write(`-${pgid}\n`)
  stopIfUnused()
}

/**
 * Whether a running watchdog guards group `pgid`, checked synchronously (the exit hook then
 * leaves the SIGKILL escalation to it). A watchdog that died counts as gone at once, before the
 * host has seen its 'exit'.
 */
export function isGuarded(pgid: number): boolean {
  if (!guarded.has(pgid) || current === undefined || current.stdin.destroyed) return false
  const { child } = current
  return child.exitCode === null && child.signalCode === null && isRunning(child.pid)
}

// Whether `pid` runs (a zombie does not: it has exited and waits for us to reap it).
function isRunning(pid: number | undefined): boolean {
  if (pid === undefined) return false
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  if (process.platform !== 'linux') return true
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}
