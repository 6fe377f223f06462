import type { Environ } from '../types.ts'

// RFC 3986 §3.3: pchar = unreserved / pct-encoded / sub-delims / ":" / "@", plus "/" between segments.
const PATH_SAFE = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/]*$/
const SAFE_BYTES: boolean[] = Array.from({ length: 256 }, (_, byte) =>
  PATH_SAFE.test(String.fromCharCode(byte)),
)
const HEX = '0123456789ABCDEF'
const PERCENT_RUN = /(?:%[0-9A-Fa-f]{2})+/g
const encoder = new TextEncoder()
// ignoreBOM: a leading U+FEFF is data in a path, not a byte-order mark to drop.
const decoder = new TextDecoder('utf-8', { ignoreBOM: true })

/**
 * Percent-encodes a decoded path for a request target: UTF-8 bytes, everything outside RFC 3986
 * `pchar` and `/` escaped (`%` becomes `%25`, `?` becomes `%3F`).
 *
 * @param path - a decoded path such as `SCRIPT_NAME` or `PATH_INFO`
 * @returns the path as it goes on the wire
 */
export function quotePath(path: string): string {
  if (PATH_SAFE.test(path)) return path
  let out = ''
  for (const byte of encoder.encode(path)) {
    out += SAFE_BYTES[byte]
      ? String.fromCharCode(byte)
      : `%${HEX[byte >> 4] ?? ''}${HEX[byte & 15] ?? ''}`
  }
  return out
}

/**
 * Percent-decodes a path: `%XX` runs become bytes read as UTF-8 (invalid sequences become
 * U+FFFD); a `%` not followed by two hex digits stays as it is. Never throws.
 *
 * @param raw - a percent-encoded path
 * @returns the decoded path
 */
export function unquotePath(raw: string): string {
  if (!raw.includes('%')) return raw
  return raw.replace(PERCENT_RUN, (run) => {
    const bytes = new Uint8Array(run.length / 3)
    for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(run.slice(i * 3 + 1, i * 3 + 3), 16)
    return decoder.decode(bytes)
  })
}

/**
 * The request target path of an environ: `SCRIPT_NAME + PATH_INFO`, percent-encoded.
 *
 * Decoding loses information (`%2F` and `/` decode alike; an invalid UTF-8 escape becomes
 * U+FFFD), so the path as received is kept in `wsgiproxy.raw_path`. This function reuses the part
 * of the raw path whose decoding is exactly `SCRIPT_NAME` (a prefix cut at a `/`) and the part
 * whose decoding is exactly `PATH_INFO` (a suffix starting at a `/`), and quotes only what it
 * cannot find there. A middleware that moves a prefix between the two keys or replaces it keeps
 * `%2F` in the rest of the path; one that rewrites the path gets it quoted afresh.
 *
 * @param environ - the environ whose path to build
 * @returns the percent-encoded path, `''` when both keys are empty, else starting with `/`
 */
export function environPath(environ: Environ): string {
  const script = environ.SCRIPT_NAME
  const info = environ.PATH_INFO
  const raw = environ['wsgiproxy.raw_path']
  let path: string
  if (typeof raw !== 'string' || raw === '') path = quotePath(script) + quotePath(info)
  else if (unquotePath(raw) === script + info) path = raw
  else {
    const found = splitRaw(raw, script, info)
    path = (found.script ?? quotePath(script)) + (found.info ?? quotePath(info))
  }
  // A path that does not start with "/" would become part of the authority (`@evil.test/x`).
  return path === '' || path.startsWith('/') ? path : `/${path}`
}

function splitRaw(
  raw: string,
  script: string,
  info: string,
): { script: string | undefined; info: string | undefined } {
  const segments = raw.split('/')
  const decoded = segments.map(unquotePath)
  // Decoded prefix of k segments has length sum(len[0..k-1]) + (k - 1); one candidate k at most.
  let rawScript: string | undefined = script === '' ? '' : undefined
  let length = -1
  for (let k = 1; k <= decoded.length && rawScript === undefined; k++) {
    length += (decoded[k - 1]?.length ?? 0) + 1
    if (length === script.length) {
      if (decoded.slice(0, k).join('/') === script) rawScript = segments.slice(0, k).join('/')
      break
    }
    if (length > script.length) break
  }
  let rawInfo: string | undefined = info === '' ? '' : undefined
  length = 0
  for (let k = decoded.length - 1; k >= 1 && rawInfo === undefined; k--) {
    length += (decoded[k]?.length ?? 0) + 1
    if (length === info.length) {
      if (`/${decoded.slice(k).join('/')}` === info) rawInfo = `/${segments.slice(k).join('/')}`
      break
    }
    if (length > info.length) break
  }
  return { script: rawScript, info: rawInfo }
}
