// Vitest global setup of the stress project: the proxy fronts that run as child processes are
// plain `node` scripts (Node 20 cannot load TypeScript) importing the built packages, so dist/ of
// core, node and hono must be current before any test file starts. A no-op after `pnpm run build`,
// which both `pnpm test` and `pnpm test:stress` run first.
import { buildStale } from '@wsgiproxy/test-kit/build-dist'

/** Builds core, node and hono when a dist/ is missing or older than its sources. */
export function setup(): void {
  buildStale([
    ['packages/core', 'index.js'],
    ['packages/node', 'index.js'],
    ['packages/hono', 'index.js'],
  ])
}
