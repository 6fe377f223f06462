import { defineProject } from 'vitest/config'

export default defineProject({
  resolve: { conditions: ['@wsgiproxy/source'] },
  ssr: { resolve: { conditions: ['@wsgiproxy/source'] } },
  test: {
    name: 'node',
    include: ['src/**/*.test.ts'],
    // The spawner's fixtures run under plain `node` and import dist/: build it when stale.
    globalSetup: ['./src/test/global-setup.ts'],
  },
})
