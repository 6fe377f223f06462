// Loaded with `node --import` by every process of the tracing-off benchmark (`tracing-cost.ts`),
// after the hook in those that hide the API: prints `OTEL_API present` or `OTEL_API absent`,
// whether `@opentelemetry/api` loads from where @wsgiproxy/core imports it, so the runner knows
// that each process measures what its row says.
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'

const fromCore = createRequire(import.meta.resolve('@wsgiproxy/core'))
let found = 'absent'
try {
  // The file core's `import('@opentelemetry/api')` loads (Node's `default` condition), imported
  // through the module loader, and so through a resolve hook: the same module instance core gets.
  await import(pathToFileURL(fromCore.resolve('@opentelemetry/api')).href)
  found = 'present'
} catch {
  // not installed, or hidden by `tracing-off-hook.ts`
}
process.stdout.write(`OTEL_API ${found}\n`)
