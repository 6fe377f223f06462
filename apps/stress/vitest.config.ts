import { defineProject } from 'vitest/config'

// STRESS=full (pnpm test:stress) runs every case at full scale; without it the reduced run is
// part of pnpm test. Files run one at a time: each one loads the machine on its own.
export default defineProject({
  resolve: { conditions: ['@wsgiproxy/source'] },
  ssr: { resolve: { conditions: ['@wsgiproxy/source'] } },
  test: {
    name: 'stress',
    include: ['src/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: process.env['STRESS'] === 'full' ? 600_000 : 60_000,
    hookTimeout: 60_000,
    // Some fronts run as child processes under plain `node`, importing dist/: build it when stale.
    globalSetup: ['./src/test/build-dist.ts'],
  },
})
