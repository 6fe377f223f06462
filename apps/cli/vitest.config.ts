import { defineProject } from 'vitest/config'

export default defineProject({
  resolve: { conditions: ['@wsgiproxy/source'] },
  ssr: { resolve: { conditions: ['@wsgiproxy/source'] } },
  test: { name: 'cli', include: ['src/**/*.test.ts'], testTimeout: 30_000, hookTimeout: 30_000 },
})
