import { defineProject } from 'vitest/config'

export default defineProject({
  resolve: { conditions: ['@wsgiproxy/source'] },
  ssr: { resolve: { conditions: ['@wsgiproxy/source'] } },
  test: { name: 'bench', include: ['src/**/*.test.ts'] },
})
