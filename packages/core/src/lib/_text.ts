// Linear-time helpers for header values and paths. Every header value is client input, and a
// regular expression like /[\t ]+$/ retried from each position costs O(n²) on a long run of
// inner whitespace; these loops look at each character at most twice.

const SP = 0x20
const HTAB = 0x09
const SLASH = 0x2f

/**
 * A header value without its leading and trailing optional whitespace, spaces and tabs only
 * (RFC 9110 §5.6.3: `OWS = *( SP / HTAB )`); whitespace inside the value is kept. Linear time.
 *
 * @param value - a field value or one element of a list
 * @returns the value without OWS at either end (the same string when there is none)
 * @example
 * trimOws(' \t a b \t') // 'a b'
 */
export function trimOws(value: string): string {
  let start = 0
  let end = value.length
  while (start < end && isOws(value.charCodeAt(start))) start++
  while (end > start && isOws(value.charCodeAt(end - 1))) end--
  return start === 0 && end === value.length ? value : value.slice(start, end)
}

/**
 * A path without its trailing `/` characters (`/a/b//` → `/a/b`, `/` → `''`). Linear time,
 * unlike `path.replace(/\/+$/, '')`, which is quadratic on a long run of inner slashes.
 *
 * @param path - a path
 * @returns the path without trailing slashes
 */
export function trimTrailingSlashes(path: string): string {
  let end = path.length
  while (end > 0 && path.charCodeAt(end - 1) === SLASH) end--
  return end === path.length ? path : path.slice(0, end)
}

function isOws(code: number): boolean {
  return code === SP || code === HTAB
}
