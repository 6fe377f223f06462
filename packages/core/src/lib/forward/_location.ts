/** Where the backend is and where the client thinks it is, for rewriting redirects. */
export interface LocationMapping {
  /** The backend's origin, as the href names it (`http://127.0.0.1:8080`). */
  backendOrigin: string
  /** The href's path on the backend, encoded, no trailing `/` (`/myapp`, or `''`). */
  backendPath: string
  /** The encoded `SCRIPT_NAME` the client used (`/front`, or `''`). */
  publicPath: string
}

/**
 * Maps a `Location` / `Content-Location` value that names the backend to a path-absolute
 * reference on the public side, never naming a host: `http://backend/myapp/x?q` and `/myapp/x?q`
 * become `/front/x?q`. The public origin is deliberately not used: it would come from the
 * client's `Host`, and a relative `Location` resolves against the URL the client asked for
 * ([RFC 9110 §10.2.2](https://www.rfc-editor.org/rfc/rfc9110#section-10.2.2)).
 *
 * - An absolute URL on the backend (the href's host, or a loopback or unspecified address, on the
 *   href's port, either scheme) outside the href's path keeps its path and loses its origin
 *   (`http://backend/admin` → `/admin`), so the backend's address never reaches the client.
 * - Relative references (`edit`, `../list`, `?page=2`) resolve the same against both URLs and
 *   stay as they are, and so do URLs on other hosts and path-absolute values outside the href's
 *   path. A path-absolute value already under the public path is left alone (a backend running
 *   `proxyMiddleware` answers public paths).
 * - A result whose path starts with `//` or `/\` is written `/./…`, so it can never name another
 *   host.
 *
 * @param value - the header value from the backend
 * @param mapping - backend and public locations
 * @returns the value to send to the client
 */
export function rewriteLocation(value: string, mapping: LocationMapping): string {
  const { backendOrigin, backendPath, publicPath } = mapping
  const cleaned = asBrowserReads(value)
  const absolute = /^[A-Za-z][A-Za-z0-9+.-]*:/.test(cleaned) || /^[/\\]{2}/.test(cleaned)
  if (!absolute && !/^[/\\]/.test(cleaned)) return value
  const backend = new URL(backendOrigin)
  const target = URL.parse(cleaned, `${backend.origin}/`)
  if (target === null) return value
  if (absolute && !isBackend(target, backend)) return value
  const path = target.pathname
  // A backend that restores SCRIPT_NAME (proxyMiddleware) already answers public paths.
  if (!absolute && publicPath !== '' && isUnder(path, publicPath)) return value
  let mapped: string
  if (backendPath === '' || isUnder(path, backendPath)) {
    mapped = `${publicPath}${path.slice(backendPath.length)}` || '/'
  } else if (absolute) {
    // The backend's own URL outside the mount: keep the path, never the internal origin.
    mapped = path
  } else {
    return value
  }
  // `//evil.example` (or `/\evil.example`, as browsers read it) would name another host;
  // `/.//evil.example` is the same path on this one (RFC 3986 §5.2.4 removes the `.`).
  const anchored = /^\/[/\\]/.test(mapped) ? `/.${mapped}` : mapped
  return `${anchored}${target.search}${target.hash}`
}

// WHATWG URL parsing: tabs and newlines removed, C0 controls and spaces trimmed. Loops, not
// /[\0- ]+$/, which is quadratic on a long run of inner spaces.
function asBrowserReads(value: string): string {
  const text = value.replace(/[\t\n\r]/g, '')
  let start = 0
  let end = text.length
  while (start < end && text.charCodeAt(start) <= 0x20) start++
  while (end > start && text.charCodeAt(end - 1) <= 0x20) end--
  return text.slice(start, end)
}

function isUnder(path: string, prefix: string): boolean {
  return path === prefix || path.startsWith(`${prefix}/`)
}

// The backend's own socket as the backend itself may name it: its host from the href, or a
// loopback or unspecified address, on the href's port; the scheme does not matter.
function isBackend(target: URL, backend: URL): boolean {
  if (target.protocol !== 'http:' && target.protocol !== 'https:') return false
  if (effectivePort(target) !== effectivePort(backend)) return false
  const host = target.hostname.replace(/\.$/, '').toLowerCase()
  return host === backend.hostname.replace(/\.$/, '').toLowerCase() || isLoopback(host)
}

function effectivePort(url: URL): string {
  return url.port !== '' ? url.port : url.protocol === 'https:' ? '443' : '80'
}

// RFC 6761 §6.3 (localhost), RFC 1122 §3.2.1.3 (127/8, 0.0.0.0), RFC 4291 §2.5.2–2.5.3 (::, ::1),
// IPv4-mapped loopback; hosts as the URL parser serializes them.
function isLoopback(host: string): boolean {
  return (
    host === 'localhost' ||
    host.endsWith('.localhost') ||
    /^127\.\d+\.\d+\.\d+$/.test(host) ||
    host === '0.0.0.0' ||
    host === '[::1]' ||
    host === '[::]' ||
    /^\[::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}\]$/.test(host)
  )
}
