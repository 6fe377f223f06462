import { defineProject } from 'vitest/config'

export default defineProject({
  resolve: { conditions: ['@wsgiproxy/source'] },
  ssr: { resolve: { conditions: ['@wsgiproxy/source'] } },
  test: {
    name: 'interop',
    include: ['src/**/*.test.ts'],
    // The recipe programs run under plain `node` and import the built packages: build them when
    // stale (a no-op after `pnpm run build`).
    globalSetup: ['./src/test/build-dist.ts'],
  },
})
