// Vitest global setup of the runtimes project: Bun and Deno load the built packages (the
// `@wsgiproxy/source` condition is for tests only) and Node runs the built runner, so dist/ of
// core, node and this app must be current. A no-op after `pnpm run build`.
import { buildStale } from '@wsgiproxy/test-kit/build-dist'

/** Builds core, node and this app when a dist/ is missing or older than its sources. */
export function setup(): void {
  buildStale([
    ['packages/core', 'index.js'],
    ['packages/node', 'index.js'],
    ['apps/runtimes', 'node.js'],
  ])
}
