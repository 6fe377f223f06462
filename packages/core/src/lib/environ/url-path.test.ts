import * as fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { Environ } from '@wsgiproxy/core'
import { environPath, quotePath, unquotePath } from '@wsgiproxy/core/adapter'
import { makeEnviron } from '@wsgiproxy/test-kit/environ-fixture'

/** An environ with only the path keys set (and the raw path when given). */
function pathEnviron(scriptName: string, pathInfo: string, rawPath?: string): Environ {
  const environ = makeEnviron({ SCRIPT_NAME: scriptName, PATH_INFO: pathInfo })
  if (rawPath !== undefined) environ['wsgiproxy.raw_path'] = rawPath
  return environ
}

// A raw path segment as a client may send it: any text encoded, or literal escapes that decoding
// cannot tell apart from other text (`%2F` is `/`, `%25` is `%`), invalid UTF-8, empty segments.
const rawSegment = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 6 }).map(encodeURIComponent),
  fc.constantFrom('', '%2F', '%2f', '%25', '%252F', 'a%2Fb', '%FF', '%E2%82', 'x%zz'),
)
const rawSegments = fc.array(rawSegment, { minLength: 1, maxLength: 6 })
// Any decoded path in the environ's format: '' or starting with '/'.
const decodedPath = fc.oneof(
  fc.constant(''),
  fc.string({ unit: 'binary', maxLength: 12 }).map((s) => `/${s}`),
)

describe('quotePath', () => {
  it('leaves RFC 3986 pchar and "/" as they are', () => {
    const safe = "/AZaz09-._~!$&'()*+,;=:@/x"
    expect(quotePath(safe)).toBe(safe)
  })

  it.each([
    ['/a b', '/a%20b'],
    ['/100%', '/100%25'],
    ['/%2F', '/%252F'],
    ['/what?', '/what%3F'],
    ['/frag#x', '/frag%23x'],
    ['/€', '/%E2%82%AC'],
    ['/ü/日本', '/%C3%BC/%E6%97%A5%E6%9C%AC'],
    ['/"<>\\^`{|}', '/%22%3C%3E%5C%5E%60%7B%7C%7D'],
    ['', ''],
  ])('quotes %j as %j', (path, quoted) => {
    expect(quotePath(path)).toBe(quoted)
  })

  it('gives only pchar, "/" and upper-case escapes for any text (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (path) => {
        expect(quotePath(path)).toMatch(/^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-F]{2})*$/)
      }),
    )
  })
})

describe('unquotePath', () => {
  it.each([
    ['/a%20b', '/a b'],
    ['/a%2Fb', '/a/b'],
    ['/a%2fb', '/a/b'],
    ['/100%25', '/100%'],
    ['/%E2%82%AC', '/€'],
    ['/%c3%bc', '/ü'],
    ['/plain', '/plain'],
  ])('decodes %j as %j', (raw, decoded) => {
    expect(unquotePath(raw)).toBe(decoded)
  })

  it('decodes once (%252F becomes %2F)', () => {
    expect(unquotePath('/%252F')).toBe('/%2F')
  })

  it('leaves a "%" without two hex digits as it is', () => {
    expect(unquotePath('/a%zz/b%4/%')).toBe('/a%zz/b%4/%')
  })

  it('turns invalid UTF-8 escapes into U+FFFD', () => {
    expect(unquotePath('/%FF')).toBe('/\uFFFD')
    expect(unquotePath('/%E2%82/x')).toBe('/\uFFFD/x')
  })

  it('never throws (property)', () => {
    fc.assert(
      fc.property(fc.string(), (raw) => {
        expect(typeof unquotePath(raw)).toBe('string')
      }),
    )
  })

  it('reverses quotePath for any well-formed text (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (path) => {
        expect(unquotePath(quotePath(path))).toBe(path)
      }),
    )
  })
})

describe('environPath', () => {
  it('quotes SCRIPT_NAME + PATH_INFO when there is no raw path', () => {
    expect(environPath(pathEnviron('/a b', '/c?d/€'))).toBe('/a%20b/c%3Fd/%E2%82%AC')
  })

  it('gives "" when both keys are empty', () => {
    expect(environPath(pathEnviron('', ''))).toBe('')
  })

  it('ignores an empty raw path', () => {
    expect(environPath(pathEnviron('/a', '/b c', ''))).toBe('/a/b%20c')
  })

  it('returns the raw path as received when the keys still decode to it', () => {
    expect(environPath(pathEnviron('', '/a/b/c/d', '/a/b%2Fc/d'))).toBe('/a/b%2Fc/d')
    expect(environPath(pathEnviron('', '/ü//%', '/%c3%bc//%25'))).toBe('/%c3%bc//%25')
  })

  it('restores %2F after a middleware moves a prefix from PATH_INFO to SCRIPT_NAME', () => {
    expect(environPath(pathEnviron('/a', '/b/c/d', '/a/b%2Fc/d'))).toBe('/a/b%2Fc/d')
  })

  it('keeps %2F in PATH_INFO after SCRIPT_NAME is popped', () => {
    expect(environPath(pathEnviron('', '/b/c/d', '/a/b%2Fc/d'))).toBe('/b%2Fc/d')
    expect(environPath(pathEnviron('', '//b/', '/a//b%2F'))).toBe('//b%2F')
  })

  it('keeps %2F in PATH_INFO after SCRIPT_NAME is replaced', () => {
    expect(environPath(pathEnviron('/mount point', '/b/c/d', '/a/b%2Fc/d'))).toBe(
      '/mount%20point/b%2Fc/d',
    )
  })

  it('keeps the raw SCRIPT_NAME and quotes a replaced PATH_INFO afresh', () => {
    expect(environPath(pathEnviron('/a%b', '/x/y z', '/a%25b/b%2Fc/d'))).toBe('/a%25b/x/y%20z')
    expect(environPath(pathEnviron('/a', '/b/c/d', '/a/b%2Fc/e'))).toBe('/a/b/c/d')
  })

  it('quotes both keys afresh when neither is found in the raw path', () => {
    expect(environPath(pathEnviron('/x', '/y/z', '/a/b%2Fc/d'))).toBe('/x/y/z')
  })

  it('decodes to SCRIPT_NAME + PATH_INFO for any raw path and any keys (property)', () => {
    fc.assert(
      fc.property(rawSegments, decodedPath, decodedPath, (segments, script, info) => {
        const raw = `/${segments.join('/')}`
        expect(unquotePath(environPath(pathEnviron(script, info, raw)))).toBe(script + info)
      }),
    )
  })

  it('keeps the raw rest of the path when SCRIPT_NAME changes (property)', () => {
    fc.assert(
      fc.property(rawSegments, fc.nat(), decodedPath, (segments, cut, script) => {
        const raw = `/${segments.join('/')}`
        const k = (cut % segments.length) + 1
        const rawInfo = `/${segments.slice(k).join('/')}`
        const info = k === segments.length ? '' : unquotePath(rawInfo)
        const path = environPath(pathEnviron(script, info, raw))
        expect(path.endsWith(info === '' ? '' : rawInfo)).toBe(true)
        expect(unquotePath(path)).toBe(script + info)
      }),
    )
  })
})

describe('path decoding edge cases', () => {
  it('keeps a leading U+FEFF instead of dropping it as a byte-order mark', () => {
    expect(unquotePath('/%EF%BB%BFadmin')).toBe('/\uFEFFadmin')
    expect(unquotePath(quotePath('/\uFEFFa'))).toBe('/\uFEFFa')
  })

  it('always starts a non-empty path with "/" so it cannot become part of the authority', () => {
    const environ = {
      SCRIPT_NAME: '',
      PATH_INFO: '@evil.test/x',
    } as Environ
    expect(environPath(environ)).toBe('/@evil.test/x')
  })
})
