// The spawner's port reservations (the in-process set that keeps two spawners from choosing the
// same kernel port at once) are released after every idle stop and every crash. The stress
// suite's soak checks the same from outside (every port can be bound again); the reservation set
// is internal, so its check lives here, beside it.
import { afterEach, describe, expect, it } from 'vitest'
import { closeAll, send } from '@wsgiproxy/test-kit/servers'
import {
  APP,
  NODE,
  cleanupSpawners,
  serveSpawner,
  spawner,
  waitFor,
} from '@wsgiproxy/test-kit/spawner-helpers'
import { isReserved } from './_ports.ts'

afterEach(async () => {
  await closeAll()
  await cleanupSpawners()
})

describe('createSpawner port reservations', () => {
  it('releases the port of every idle stop and every crash', async () => {
    const backend = spawner({
      command: [NODE, APP],
      idleTimeout: 150,
      killTimeout: 2_000,
      backoff: { base: 50, max: 100 },
    })
    const ports: number[] = []
    backend.on('spawn', ({ port }) => ports.push(port))
    const front = await serveSpawner(backend)
    for (let i = 0; i < 2; i++) {
      expect((await send(front.origin)).status).toBe(200)
      await waitFor(() => backend.status().state === 'idle', { message: 'the idle stop' })
    }
    for (let i = 0; i < 2; i++) {
      let response = await send(front.origin)
      // A start refused during the short backoff is asked again.
      while (response.status === 503) {
        await new Promise((resolve) => setTimeout(resolve, 60))
        response = await send(front.origin)
      }
      expect(response.status).toBe(200)
      expect((await send(front.origin, { path: '/crash' })).status).toBe(502)
      await waitFor(() => backend.status().state !== 'ready', { message: 'the crash' })
    }
    await backend.close()
    expect(ports).toHaveLength(4)
    expect(ports.filter((port) => isReserved(port))).toEqual([])
  })
})
