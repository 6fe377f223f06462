import type { UpgradableApp } from '@wsgiproxy/core'
import { buildRouteApp } from './apps.ts'
import type { Resources } from './apps.ts'
import type { RouteInput } from './config-schema.ts'
import { measureRequests } from './admin/metrics.ts'
import { withRequestLog } from './log.ts'
import { createRouter, notFound } from './router.ts'

/**
 * The app of `wsgiproxy serve`: every route mounted at its path, 404 (logged) elsewhere.
 *
 * @param routes - the config's routes
 * @param resources - where spawners, pools and watchers are added
 * @returns the router
 * @throws CliError (exit 1) for an unreadable key file or bad options
 */
export async function buildServeApp(
  routes: readonly RouteInput[],
  resources: Resources,
): Promise<UpgradableApp> {
  const mounts = []
  for (const route of routes) {
    mounts.push({ prefix: route.path, ...(await buildRouteApp(route, resources)) })
  }
  const fallback = withRequestLog(notFound, resources.logger, () => '-')
  // Requests no route matched count as route "-" (every route's label starts with "/").
  const { metrics } = resources
  return createRouter(
    mounts,
    metrics === undefined ? fallback : measureRequests(fallback, '-', metrics),
  )
}
