// Vitest global setup of the node project: fixtures run by plain `node` (Node 20 cannot load
// TypeScript) import the built packages, so dist/ of core and node must be current before any
// test file starts. A no-op after `pnpm run build`, which the root `pnpm test` runs first.
import { buildStale } from '@wsgiproxy/test-kit/build-dist'

/** Builds core and node when their dist/ is missing or older than their sources. */
export function setup(): void {
  buildStale([
    ['packages/core', 'index.js'],
    ['packages/node', 'index.js'],
  ])
}
