#!/usr/bin/env node
// The `wsgiproxy` command inside this workspace; the published package runs dist/main.js directly
// (publishConfig.bin). pnpm links a workspace bin at install time and skips one whose file does
// not exist yet (`Failed to create bin ... ENOENT`, then `Command "wsgiproxy" not found`), so the
// bin is this committed file: it builds core, node and the CLI with tsc when a dist/ is missing or
// older than its sources (the rule of test-kit's buildStale), then runs dist/main.js.
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const workspaceRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')

/** Package folders in build order, with the built entry that must exist. */
const TARGETS = [
  ['packages/core', 'index.js'],
  ['packages/node', 'index.js'],
  ['apps/cli', 'main.js'],
]

function newestSource(dir) {
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

const stale = TARGETS.filter(([dir, entry]) => {
  const built = join(workspaceRoot, dir, 'dist', entry)
  return (
    !existsSync(built) || statSync(built).mtimeMs < newestSource(join(workspaceRoot, dir, 'src'))
  )
})
if (stale.length > 0) {
  const names = stale.map(([dir]) => dir).join(', ')
  process.stderr.write(`wsgiproxy: building ${names} (dist/ missing or older than src/)\n`)
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
  try {
    for (const [dir] of stale) {
      // tsc reports on stdout: send it to stderr so `wsgiproxy schema > schema.json` stays clean.
      execFileSync(process.execPath, [tsc, '-p', join(workspaceRoot, dir, 'tsconfig.build.json')], {
        stdio: ['ignore', 2, 2],
      })
    }
  } catch {
    process.stderr.write(
      'wsgiproxy: the build failed (errors above); fix them, or run `pnpm build`\n',
    )
    process.exit(1)
  }
}

await import('../dist/main.js')
