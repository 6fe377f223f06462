// For the Vitest global setups of the projects whose fixtures run under plain `node` (Node 20
// cannot load TypeScript) and import the built packages: dist/ must be current before any test
// file starts. A no-op after `pnpm run build`, which the root `pnpm test` runs first.
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const workspaceRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')

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

/**
 * Builds each workspace package with tsc when its built entry is missing or older than its
 * sources (tests and `src/test` excluded).
 *
 * @param targets - package folders relative to the workspace root, with the entry file in dist/
 */
export function buildStale(targets: ReadonlyArray<readonly [dir: string, entry: string]>): void {
  const tsc = join(workspaceRoot, 'node_modules', 'typescript', 'bin', 'tsc')
  for (const [dir, entry] of targets) {
    const root = join(workspaceRoot, dir)
    const built = join(root, 'dist', entry)
    if (existsSync(built) && statSync(built).mtimeMs >= newestSource(join(root, 'src'))) continue
    execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], {
      stdio: 'inherit',
    })
  }
}
