// Vitest global setup of the interop project: the recipe programs (src/recipe/*.mjs) run under
// plain `node`, which loads the built packages, so dist/ of core and node must be current.
import { buildStale } from '@wsgiproxy/test-kit/build-dist'

/** Builds core and node when a dist/ is missing or older than its sources. */
export function setup(): void {
  buildStale([
    ['packages/core', 'index.js'],
    ['packages/node', 'index.js'],
  ])
}
