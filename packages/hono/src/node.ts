/** @module @wsgiproxy/hono/node: Hono adapters that need Node (the backend spawner). */
export type { SpawnHandler, SpawnOptions } from './lib/spawn.ts'
export { spawn } from './lib/spawn.ts'
