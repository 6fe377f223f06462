import { afterEach, describe, expect, it } from 'vitest'
import { attemptSmuggle, SMUGGLED_PATH, startRecorder } from '@wsgiproxy/test-kit/smuggling'
import type { Recorder } from '@wsgiproxy/test-kit/smuggling'
import { cleanup, startCli } from './test/run-cli.ts'

const recorders: Recorder[] = []
afterEach(async () => {
  await cleanup()
  for (const recorder of recorders.splice(0)) await recorder.close()
})

/** A recording upstream and `wsgiproxy proxy` in front of it. */
async function proxyToRecorder(): Promise<{ upstream: Recorder; port: number }> {
  const upstream = await startRecorder()
  recorders.push(upstream)
  const cli = await startCli([
    'proxy',
    `http://127.0.0.1:${upstream.port}`,
    '--listen',
    '127.0.0.1:0',
  ])
  return { upstream, port: Number(new URL(cli.url).port) }
}

describe('wsgiproxy proxy and Upgrade requests', () => {
  it('never lets a second request reach the upstream after a non-101 answer', async () => {
    const { upstream, port } = await proxyToRecorder()
    const result = await attemptSmuggle(port)
    expect(result.received).toMatch(/^HTTP\/1\.1 200 /)
    expect(result.received.toLowerCase()).toContain('connection: close')
    expect(result.closedByFront).toBe(true)
    // The front's connection upstream is its own and closed after the answer: once every
    // connection the upstream accepted has closed, nothing more can reach it.
    await upstream.settled()
    expect(upstream.urls).toEqual(['/public/x'])
    expect(upstream.urls).not.toContain(SMUGGLED_PATH)
  }, 30_000)

  it('serves an h2c Upgrade as an ordinary request and does not reuse the connection', async () => {
    const { upstream, port } = await proxyToRecorder()
    const result = await attemptSmuggle(port, {
      upgrade: 'h2c',
      connection: 'Upgrade, HTTP2-Settings',
    })
    expect(result.received).toMatch(/^HTTP\/1\.1 200 /)
    expect(result.closedByFront).toBe(true)
    // The ordinary request went over the shared pool, whose idle connection closes after its
    // keep-alive timeout (about 4 s); the connection the client used was closed at once.
    await upstream.settled()
    expect(upstream.urls).toEqual(['/public/x'])
  }, 30_000)
})
