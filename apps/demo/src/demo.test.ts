import { afterEach, describe, expect, it } from 'vitest'
import type { Demo } from './demo.ts'
import { startDemo } from './demo.ts'

describe('startDemo', () => {
  let demo: Demo | undefined
  afterEach(async () => {
    await demo?.close()
    demo = undefined
  })

  it('forwards a request through the front proxy to the example backend', async () => {
    demo = await startDemo({ port: 0 })
    const res = await fetch(`${demo.frontUrl}hello/w%C3%B6rld?name=x`, {
      method: 'POST',
      headers: { 'x-demo': '1' },
      body: 'payload',
    })
    expect(res.status).toBe(200)
    const seen = (await res.json()) as {
      method: string
      url: string
      headers: Record<string, string>
      body: string
    }
    expect(seen.method).toBe('POST')
    expect(seen.url).toBe('/hello/w%C3%B6rld?name=x')
    expect(seen.headers['x-demo']).toBe('1')
    expect(seen.headers['host']).toBe(new URL(demo.backendUrl).host)
    expect(seen.body).toBe('payload')
  })
})
