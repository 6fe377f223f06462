import { problemResponse } from '@wsgiproxy/core'
import type {
  AppResponse,
  Environ,
  EnvironApp,
  UpgradableApp,
  UpgradeTarget,
} from '@wsgiproxy/core'

/** An app mounted under a path prefix. */
export interface Mount {
  /** The prefix (`/api`; `/` or `''` for everything); it becomes `SCRIPT_NAME`. */
  prefix: string
  /** The app, possibly with `prepareUpgrade` for WebSockets. */
  app: EnvironApp | UpgradableApp
}

/**
 * Normalizes a route prefix: no trailing `/`, and `/` becomes `''`.
 *
 * @param prefix - the prefix as configured
 * @returns the prefix as `SCRIPT_NAME`
 */
export function normalizePrefix(prefix: string): string {
  return prefix.replace(/\/+$/, '')
}

/**
 * Dispatches each request to the mount with the longest prefix matching `PATH_INFO` at a `/`
 * boundary, moving the prefix from `PATH_INFO` to `SCRIPT_NAME`; no match is a 404.
 * Upgrade requests go to the mount's `prepareUpgrade` when it has one, else get 501.
 *
 * @param mounts - the mounted apps
 * @param fallback - answers requests no mount matches; default a 404 problem response
 * @returns the routing app
 */
export function createRouter(
  mounts: readonly Mount[],
  fallback: EnvironApp = notFound,
): UpgradableApp {
  const sorted = mounts
    .map((mount) => ({ ...mount, prefix: normalizePrefix(mount.prefix) }))
    .toSorted((a, b) => b.prefix.length - a.prefix.length)

  function route(
    environ: Environ,
  ): { app: EnvironApp | UpgradableApp; environ: Environ } | undefined {
    const path = environ.PATH_INFO
    for (const mount of sorted) {
      const { prefix } = mount
      if (prefix === '' || path === prefix || path.startsWith(`${prefix}/`)) {
        return {
          app: mount.app,
          environ: {
            ...environ,
            SCRIPT_NAME: environ.SCRIPT_NAME + prefix,
            PATH_INFO: path.slice(prefix.length),
          },
        }
      }
    }
    return undefined
  }

  const app = (environ: Environ): AppResponse | Promise<AppResponse> => {
    const found = route(environ)
    if (found === undefined) return fallback(environ)
    return found.app(found.environ)
  }
  app.prepareUpgrade = async (environ: Environ): Promise<UpgradeTarget | AppResponse> => {
    const found = route(environ)
    if (found === undefined) return notFound()
    if (!('prepareUpgrade' in found.app)) {
      return problemResponse(501, 'this route does not forward Upgrade requests')
    }
    return found.app.prepareUpgrade(found.environ)
  }
  return app
}

/**
 * The answer to a path no route matches.
 *
 * @returns a 404 problem response
 */
export function notFound(): AppResponse {
  return problemResponse(404, 'no route matches this path')
}
