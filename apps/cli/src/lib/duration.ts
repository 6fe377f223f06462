import { usageError } from './errors.ts'

// docs/design.md §9: the CLI and the config file accept 500ms, 30s, 5m; a bare number is milliseconds.
const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m)?$/
const UNIT_MS = { ms: 1, s: 1000, m: 60_000 } as const
const MAX_TIMER_MS = 2_147_483_647

/** What a duration in the config file looks like, for its error messages. */
export const DURATION_HINT =
  'expected a duration such as 500ms, 30s, 5m or a number of milliseconds'

/**
 * Parses a duration: a number of milliseconds (`1500`), or a number with a unit `ms`, `s` or
 * `m` (`500ms`, `30s`, `5m`, `1.5s`).
 *
 * @param text - the duration as written
 * @returns whole milliseconds, or `undefined` when it is not a valid duration
 */
export function parseDuration(text: string | number): number | undefined {
  if (typeof text === 'number') {
    return Number.isInteger(text) && text >= 0 && text <= MAX_TIMER_MS ? text : undefined
  }
  const match = DURATION.exec(text.trim())
  if (match === null) return undefined
  const unit = (match[2] ?? 'ms') as keyof typeof UNIT_MS
  const ms = Math.round(Number(match[1]) * UNIT_MS[unit])
  return ms <= MAX_TIMER_MS ? ms : undefined
}

/**
 * Parses a duration given on the command line.
 *
 * @param flag - the flag, for the message (`--idle`)
 * @param text - its value
 * @returns whole milliseconds
 * @throws CliError (exit 1) naming the flag and the accepted forms
 */
export function durationFlag(flag: string, text: string): number {
  const ms = parseDuration(text)
  if (ms === undefined) {
    throw usageError(
      `${flag} must be a duration such as 500ms, 30s, 5m or a number of milliseconds (got ${JSON.stringify(text)})`,
    )
  }
  return ms
}

/**
 * Milliseconds of a duration the config schema accepted.
 *
 * @param value - a number of ms or a string with a unit
 * @returns whole milliseconds
 * @throws CliError (exit 1) with {@link DURATION_HINT} when it is not a duration
 */
export function toMs(value: string | number): number {
  const ms = parseDuration(value)
  if (ms === undefined) throw usageError(`${DURATION_HINT} (got ${JSON.stringify(value)})`)
  return ms
}
