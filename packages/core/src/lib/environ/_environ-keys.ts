import type { Environ } from '../types.ts'

/**
 * Adds header lines to an environ as `HTTP_*`, `CONTENT_TYPE` and `CONTENT_LENGTH` keys, repeats
 * joined with `, `.
 *
 * @param environ - the environ to add to
 * @param lines - header lines, names in any case
 * @returns how many lines there were (the skipped ones included)
 */
export function foldHeaders(environ: Environ, lines: Iterable<readonly [string, string]>): number {
  let count = 0
  for (const [rawName, value] of lines) {
    count++
    const name = rawName.toLowerCase()
    // Names with "_" would collide with "-" names once mapped; nginx and Apache drop them too.
    if (name.includes('_')) continue
    const key = environKey(name)
    const previous = environ[key]
    environ[key] = typeof previous === 'string' ? `${previous}, ${value}` : value
  }
  return count
}

/**
 * The header name of an `HTTP_*` environ key.
 *
 * @param key - an `HTTP_*` key
 * @returns the name, lower-case, `_` as `-`
 */
export function headerName(key: string): string {
  return key.slice(5).toLowerCase().replaceAll('_', '-')
}

function environKey(name: string): string {
  if (name === 'content-type') return 'CONTENT_TYPE'
  if (name === 'content-length') return 'CONTENT_LENGTH'
  return `HTTP_${name.toUpperCase().replaceAll('-', '_')}`
}
