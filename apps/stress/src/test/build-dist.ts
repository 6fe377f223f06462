// Vitest global setup of the stress project: the proxy fronts that run as child processes are
// plain `node` scripts (Node 20 cannot load TypeScript) importing the built packages, so dist/ of
// core, node and hono must be current before any test file starts. A no-op after `pnpm run build`,
// which both `pnpm test` and `pnpm test:stress` run first.
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const workspaceRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..')

function newestSource(dir: string): number {
  let newest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) {
      if (entry.name !== 'test') newest = Math.max(newest, newestSource(path))
    } else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) {
      newest = Math.max(newest, statSync(path).mtimeMs)
    }
  }
  return newest
}

/** Builds core, node and hono with tsc when their dist/ is missing or older than their sources. */
export function setup(): void {
  const tsc = join(workspaceRoot, 'node_modules', 'typescript', 'bin', 'tsc')
  for (const name of ['core', 'node', 'hono']) {
    const root = join(workspaceRoot, 'packages', name)
    const built = join(root, 'dist', 'index.js')
    if (existsSync(built) && statSync(built).mtimeMs >= newestSource(join(root, 'src'))) continue
    execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], {
      stdio: 'inherit',
    })
  }
}
