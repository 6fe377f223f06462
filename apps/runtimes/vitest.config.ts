import { defineProject } from 'vitest/config'

export default defineProject({
  resolve: { conditions: ['@wsgiproxy/source'] },
  ssr: { resolve: { conditions: ['@wsgiproxy/source'] } },
  test: {
    name: 'runtimes',
    include: ['src/**/*.test.ts'],
    // The runtimes load the built packages (and Node the built runner): build them when stale.
    globalSetup: ['./src/test/build-dist.ts'],
  },
})
