import { defineProject } from 'vitest/config'

export default defineProject({
  resolve: { conditions: ['@wsgiproxy/source'] },
  ssr: { resolve: { conditions: ['@wsgiproxy/source'] } },
  test: {
    name: 'packaging',
    include: ['src/**/*.test.ts'],
    testTimeout: 120_000,
    // Packing four packages and an npm install into a new project: about 10 s with a warm npm
    // cache, minutes on a slow network.
    hookTimeout: 600_000,
  },
})
