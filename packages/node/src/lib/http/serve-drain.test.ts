// `served.drain()`: the server stops accepting, but a keep-alive connection is never closed under
// a client that may be sending on it; the next response says `Connection: close` instead.
import { Agent, get } from 'node:http'
import type { IncomingMessage } from 'node:http'
import { connect } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import type { Environ } from '@wsgiproxy/core'
import { serve } from './serve.ts'
import type { Served } from './serve.ts'

const started = new Set<Served>()

afterEach(async () => {
  await Promise.all([...started].map((served) => served.close()))
  started.clear()
})

const hello = (environ: Environ) => ({
  status: 200,
  headers: [['content-type', 'text/plain']] as Array<[string, string]>,
  body: (async function* () {
    yield new TextEncoder().encode(`hello ${environ.PATH_INFO}`)
  })(),
})

/** A GET on `agent`: the response, its body and the client port of its connection. */
function getOn(
  agent: Agent,
  url: string,
): Promise<IncomingMessage & { text: string; localPort: number | undefined }> {
  return new Promise((resolve, reject) => {
    get(url, { agent }, (response) => {
      const localPort = response.socket.localPort
      let text = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => {
        text += chunk
      })
      response.on('end', () => resolve(Object.assign(response, { text, localPort })))
    }).on('error', reject)
  })
}

describe('served.drain()', () => {
  it('keeps an idle keep-alive connection open; its next response closes it', async () => {
    const served = await serve(hello, { port: 0 })
    started.add(served)
    const agent = new Agent({ keepAlive: true, maxSockets: 1 })
    const first = await getOn(agent, `${served.url}/one`)
    expect(first.headers.connection).toBe('keep-alive')
    let drained = false
    const draining = served.drain().then(() => {
      drained = true
    })
    // New connections are refused...
    await expect(
      new Promise((resolve, reject) => {
        const probe = connect(served.port, '127.0.0.1', () => resolve('connected'))
        probe.on('error', reject)
      }),
    ).rejects.toMatchObject({ code: 'ECONNREFUSED' })
    // ...but the idle connection was not closed: the next request on it is answered, and told
    // that the connection closes.
    const second = await getOn(agent, `${served.url}/two`)
    expect(second.localPort).toBe(first.localPort)
    expect(second.text).toBe('hello /two')
    expect(second.headers.connection).toBe('close')
    await draining
    expect(drained).toBe(true)
    agent.destroy()
  })

  it('ends once the last connection has closed, with close() giving the same promise', async () => {
    const served = await serve(hello, { port: 0 })
    started.add(served)
    const agent = new Agent({ keepAlive: true })
    await getOn(agent, `${served.url}/`)
    const draining = served.drain()
    expect(served.close()).toBe(draining)
    // close() after drain() keeps draining's way; the client closes its idle connection.
    agent.destroy()
    await draining
  })
})
