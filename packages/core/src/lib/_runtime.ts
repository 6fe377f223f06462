/** The JavaScript runtimes whose `fetch` differs in what a proxy needs (docs/design.md §2: the one place that detects them). */
export type RuntimeKind = 'bun' | 'deno' | 'node' | 'other'

/**
 * Which runtime this is, by its global: `Bun`, then `Deno` (both also define `process`), then
 * Node's `process.versions.node`.
 */
export function runtimeKind(): RuntimeKind {
  const runtime = globalThis as {
    Bun?: unknown
    Deno?: unknown
    process?: { versions?: { node?: unknown } }
  }
  if (runtime.Bun !== undefined) return 'bun'
  if (runtime.Deno !== undefined) return 'deno'
  if (typeof runtime.process?.versions?.node === 'string') return 'node'
  return 'other'
}
