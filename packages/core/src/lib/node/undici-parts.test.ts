// The transport loads undici's Agent and connector from their own files, not undici's index,
// which would load fetch, WebSocket, caches and mocks too (about 9 MB of a process at rest).
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Agent as IndexAgent, buildConnector as indexBuildConnector } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { closeAll, startUpstream } from '@wsgiproxy/test-kit/servers'
import { Agent, buildConnector } from './_undici-parts.ts'

afterEach(closeAll)

describe("undici's parts", () => {
  it('are the very class and function undici exports', () => {
    expect(Agent).toBe(IndexAgent)
    expect(buildConnector).toBe(indexBuildConnector)
  })

  it("forward a request in a plain node process without loading undici's index", async () => {
    const upstream = await startUpstream((_req, res) => res.end('through'))
    const core = fileURLToPath(new URL('../../..', import.meta.url))
    const program = `
      import { createRequire } from 'node:module'
      import { createProxyApp, toFetchHandler } from '@wsgiproxy/core'
      import { undiciTransport } from '@wsgiproxy/core/undici'
      const handler = toFetchHandler(
        createProxyApp({ href: process.argv[1], transport: undiciTransport() }),
      )
      const res = await handler(new Request('http://front.test/'))
      const loaded = Object.keys(createRequire(import.meta.url).cache)
      console.log(JSON.stringify({
        body: await res.text(),
        index: loaded.some((file) => /[\\\\/]undici[\\\\/]index\\.js$/.test(file)),
        agent: loaded.some((file) => /[\\\\/]undici[\\\\/]lib[\\\\/]dispatcher[\\\\/]agent\\.js$/.test(file)),
      }))
      process.exit(0)
    `
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--input-type=module', '-e', program, `http://127.0.0.1:${upstream.port}`],
      { cwd: core },
    )
    expect(JSON.parse(stdout)).toEqual({ body: 'through', index: false, agent: true })
    // A node process that starts and imports the built package: 0.9–1.8 s measured here with a
    // busy loop and another test suite on the two cores; 20 s leaves room for a slower machine.
  }, 20_000)
})
