/** Where the backend is and where the client thinks it is, for rewriting redirects. */
export interface LocationMapping {
  /** The backend's origin (`http://127.0.0.1:8080`). */
  backendOrigin: string
  /** The href's path on the backend, encoded, no trailing `/` (`/myapp`, or `''`). */
  backendPath: string
  /** The origin the client used (`https://example.com`). */
  publicOrigin: string
  /** The encoded `SCRIPT_NAME` the client used (`/front`, or `''`). */
  publicPath: string
}

/**
 * Maps a `Location` / `Content-Location` value that points at the backend to the public URL:
 * `http://backend/myapp/x?q` becomes `https://public/front/x?q`, and a path-absolute `/myapp/x`
 * becomes `/front/x`. Relative references (`edit`, `../list`) resolve the same against both
 * URLs and stay as they are, and so does anything on another host or outside the href's path. A
 * path-absolute value already under the public path is left alone (a backend running
 * `proxyMiddleware` answers public paths), and a result that would start with `//` is made
 * absolute on the public origin so it can never name another host.
 *
 * @param value - the header value from the backend
 * @param mapping - backend and public locations
 * @returns the value to send to the client
 */
export function rewriteLocation(value: string, mapping: LocationMapping): string {
  const { backendOrigin, backendPath, publicOrigin, publicPath } = mapping
  const absolute = /^[A-Za-z][A-Za-z0-9+.-]*:/.test(value) || value.startsWith('//')
  if (!absolute && !value.startsWith('/')) return value
  const target = URL.parse(value, `${backendOrigin}/`)
  if (target === null || target.origin !== backendOrigin) return value
  const path = target.pathname
  // A backend that restores SCRIPT_NAME (proxyMiddleware) already answers public paths.
  if (
    !absolute &&
    publicPath !== '' &&
    (path === publicPath || path.startsWith(`${publicPath}/`))
  ) {
    return value
  }
  let rest: string
  if (backendPath === '') rest = path
  else if (path === backendPath) rest = ''
  else if (path.startsWith(`${backendPath}/`)) rest = path.slice(backendPath.length)
  else return value
  const mapped = `${publicPath}${rest}` || '/'
  // `//evil.example` or `/\evil.example` would name another host: anchor it to the public origin.
  const anchored = absolute || mapped.startsWith('//') || mapped.startsWith('/\\')
  return `${anchored ? publicOrigin : ''}${mapped}${target.search}${target.hash}`
}
