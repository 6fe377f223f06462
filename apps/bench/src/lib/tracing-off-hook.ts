// Loaded with `node --import` by the tracing-off benchmark (`tracing-cost.ts`): a resolve hook
// that makes every import of `@opentelemetry/api` fail as if the package were not installed, so
// @wsgiproxy/core's tracing finds no API. In the main thread this module registers itself; Node
// then loads it again in its hooks thread, where `resolve` runs.
import { register } from 'node:module'
import type { ResolveHook } from 'node:module'
import { isMainThread } from 'node:worker_threads'

if (isMainThread) register(import.meta.url)

// By resolved file, so a bare `@opentelemetry/api` and a file URL into the package both fail.
const API_FILES = /\/node_modules\/@opentelemetry\/api\//

/** Resolves as Node does, except that the files of `@opentelemetry/api` cannot be found. */
export const resolve: ResolveHook = async (specifier, context, nextResolve) => {
  const resolved = await nextResolve(specifier, context)
  if (API_FILES.test(resolved.url)) {
    const from = context.parentURL ?? 'the entry point'
    throw Object.assign(
      new Error(
        `Cannot find package '@opentelemetry/api' imported from ${from} (hidden by the benchmark)`,
      ),
      { code: 'ERR_MODULE_NOT_FOUND' },
    )
  }
  return resolved
}
