import { describe, expect, it } from 'vitest'
import { parseCheckouts, serveOneOf, serversOfCheckouts, useCheckouts } from './checkouts.ts'

describe('checkouts', () => {
  it('reads NAME=DIRECTORY pairs and refuses anything else', () => {
    expect(parseCheckouts('A=/tmp/a,B=/tmp/b')).toEqual([
      { name: 'A', root: '/tmp/a' },
      { name: 'B', root: '/tmp/b' },
    ])
    expect(() => parseCheckouts('A')).toThrow('--checkouts: expected NAME=DIRECTORY pairs')
    expect(() => parseCheckouts('A@x=/tmp/a')).toThrow('expected NAME=DIRECTORY pairs')
    expect(() => parseCheckouts('A=')).toThrow('expected NAME=DIRECTORY pairs')
    expect(() => parseCheckouts('A=/a,A=/b')).toThrow('--checkouts: A is named twice')
    expect(() => parseCheckouts('')).toThrow('expected at least one')
  })

  it('names each server once per checkout, keeping what it measures', () => {
    const servers = [{ id: 'wsgiproxy-node', label: 'node listener', front: 'https' as const }]
    const checkouts = parseCheckouts('A=/a,B=/b')
    expect(serversOfCheckouts(servers, checkouts)).toEqual([
      { id: 'wsgiproxy-node@A', label: 'node listener @ A', front: 'https' },
      { id: 'wsgiproxy-node@B', label: 'node listener @ B', front: 'https' },
    ])
  })

  it("starts a checkout's server with that checkout's serve-one.js and the plain id", () => {
    useCheckouts(parseCheckouts('A=/tmp/a'))
    expect(serveOneOf('wsgiproxy-node', '/own/serve-one.js')).toEqual({
      script: '/own/serve-one.js',
      id: 'wsgiproxy-node',
    })
    expect(serveOneOf('wsgiproxy-node@A', '/own/serve-one.js')).toEqual({
      script: '/tmp/a/apps/bench/dist/serve-one.js',
      id: 'wsgiproxy-node',
    })
    expect(() => serveOneOf('wsgiproxy-node@B', '/own/serve-one.js')).toThrow(
      'server "wsgiproxy-node@B": no checkout named B',
    )
  })
})
