// Vitest global setup of the runtimes project: Bun and Deno load the built packages (the
// `@wsgiproxy/source` condition is for tests only) and Node runs the built runner, so dist/ of
// core, node and this app must be current. A no-op after `pnpm run build`.
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

/** Builds core, node and this app with tsc when a dist/ is missing or older than its sources. */
export function setup(): void {
  const tsc = join(workspaceRoot, 'node_modules', 'typescript', 'bin', 'tsc')
  for (const [dir, entry] of [
    ['packages/core', 'index.js'],
    ['packages/node', 'index.js'],
    ['apps/runtimes', 'node.js'],
  ] as const) {
    const root = join(workspaceRoot, dir)
    const built = join(root, 'dist', entry)
    if (existsSync(built) && statSync(built).mtimeMs >= newestSource(join(root, 'src'))) continue
    execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], {
      stdio: 'inherit',
    })
  }
}
