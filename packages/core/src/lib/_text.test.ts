import { describe, expect, it } from 'vitest'
import { trimOws, trimTrailingSlashes } from './_text.ts'

describe('trimOws', () => {
  it.each([
    ['', ''],
    [' ', ''],
    ['\t', ''],
    [' \t \t', ''],
    ['a', 'a'],
    [' a', 'a'],
    ['a ', 'a'],
    ['\ta\t', 'a'],
    [' \t a b \t ', 'a b'],
    ['a \t b', 'a \t b'],
    ['  a  b  ', 'a  b'],
  ])('trims %j to %j', (value, expected) => {
    expect(trimOws(value)).toBe(expected)
  })

  it('keeps whitespace other than SP and HTAB (RFC 9110 §5.6.3)', () => {
    expect(trimOws('\n a \r')).toBe('\n a \r')
    expect(trimOws('\u00a0a\u00a0')).toBe('\u00a0a\u00a0')
    expect(trimOws('\va\f')).toBe('\va\f')
  })

  it('returns the same string when there is nothing to trim', () => {
    const value = 'a b'
    expect(trimOws(value)).toBe(value)
  })

  it('keeps a long run of inner whitespace', () => {
    const value = `a${' \t'.repeat(1000)}a`
    expect(trimOws(` ${value}\t`)).toBe(value)
  })
})

describe('trimTrailingSlashes', () => {
  it.each([
    ['', ''],
    ['/', ''],
    ['///', ''],
    ['/a', '/a'],
    ['/a/', '/a'],
    ['/a//b//', '/a//b'],
    ['a', 'a'],
  ])('trims %j to %j', (path, expected) => {
    expect(trimTrailingSlashes(path)).toBe(expected)
  })
})
