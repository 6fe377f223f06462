// When `/readyz` says 200: the config is loaded (there is a report at all), the public listener
// listens, and every route has something to send a request to.
import type { Readiness, RouteReport } from './status.ts'

// Spawner states in which a request gets no backend: backoff refuses starts until its time is
// up; closed refuses for ever. A spawner with no process that can start one is ready.
const UNREADY_SPAWNER_STATES: ReadonlySet<string> = new Set(['backoff', 'closed'])

/**
 * Why a route cannot serve now, if it cannot: a pool with no healthy target, a spawner in backoff
 * or closed. A proxy route without a pool, echo, exact and forward routes are always ready, as is
 * a spawn route without a spawner (a worker's: the main process judges its spawner).
 *
 * @param route - the route's report
 * @returns the reason, or `undefined` when it is ready
 */
export function routeProblem(route: RouteReport): string | undefined {
  if (route.targets !== undefined && !route.targets.some((target) => target.state === 'healthy')) {
    const states = route.targets.map((target) => `${target.href} ${target.state}`).join(', ')
    return `no healthy target (${states})`
  }
  const spawner = route.spawner
  if (spawner !== undefined && UNREADY_SPAWNER_STATES.has(spawner.state)) {
    return `spawner ${spawner.name} is in ${spawner.state}${spawner.lastError === null ? '' : `: ${spawner.lastError}`}`
  }
  return undefined
}

/**
 * The readiness of one process's routes.
 *
 * @param listening - whether its public listener takes connections
 * @param routes - its routes
 * @param worker - a worker's pid, to name it in the reasons
 * @returns whether it is ready, and what is not
 */
export function readinessOf(
  listening: boolean,
  routes: readonly RouteReport[],
  worker?: number,
): Readiness {
  const reasons = listening
    ? []
    : [`${worker === undefined ? 'the' : `worker ${worker}'s`} public listener does not listen`]
  const unready: Readiness['routes'] = []
  for (const route of routes) {
    const reason = routeProblem(route)
    if (reason === undefined) continue
    unready.push({
      path: route.path,
      kind: route.kind,
      reason,
      ...(worker === undefined ? {} : { worker }),
    })
  }
  return { ready: reasons.length === 0 && unready.length === 0, reasons, routes: unready }
}

/**
 * Several readinesses in one: ready when every one is.
 *
 * @param parts - the readiness of each process (and of the main process's spawners)
 * @param reasons - more reasons not to be ready
 * @returns the combined readiness
 */
export function combineReadiness(parts: readonly Readiness[], reasons: string[] = []): Readiness {
  const all = [...reasons, ...parts.flatMap((part) => part.reasons)]
  const routes = parts.flatMap((part) => part.routes)
  return { ready: all.length === 0 && routes.length === 0, reasons: all, routes }
}
