import { defineConfig } from 'vitest/config'

// Vitest 4 ignores a bare workspace file, so this is the real config; run it with
// `vitest run --config vitest.workspace.ts` (the root `vitest.config.ts` is not used).
export default defineConfig({
  test: {
    // packages/test-kit holds the shared test helpers and has no tests of its own.
    projects: ['packages/*', '!packages/test-kit', 'apps/*'],
  },
})
