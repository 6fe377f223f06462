// How big a stress run is: `STRESS=full` (pnpm test:stress) for the numbers docs/reliability.md
// reports, else a reduced run that keeps pnpm test under its time budget.

/** True for the full run. */
export const FULL: boolean = process.env['STRESS'] === 'full'

/**
 * The full-run value, or the reduced one.
 *
 * @param full - the value the issue asks for
 * @param reduced - what the reduced run (inside pnpm test) uses
 * @returns one of them
 */
export function scale<T>(full: T, reduced: T): T {
  return FULL ? full : reduced
}
