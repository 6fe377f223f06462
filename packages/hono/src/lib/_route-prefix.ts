import { WsgiProxyError } from '@wsgiproxy/core'
import { unquotePath } from '@wsgiproxy/core/adapter'
import type { Context } from 'hono'
import { routePath } from 'hono/route'

/**
 * The part of the request path that the route Hono matched covers, percent-decoded: the route
 * (`c.req.routePath`, nested `app.route()` bases included) without its trailing `/*`, with each
 * label's path segments taken from the raw request path. `/api/*` on `/api/users/1` gives `/api`,
 * `/users/:id/*` on `/users/7/x` gives `/users/7`, `*` gives `''`.
 *
 * Segments are counted on the raw path, which Hono's router also splits without decoding `%2F`:
 * a literal, a `:param` and a mid-route `*` cover one segment, an absent optional parameter none,
 * and a `:param{regex}` as many as its matched value spans. A route that cannot be found in the
 * URL path (an app with a custom `getPath`) throws rather than give a wrong split.
 */
export function routePrefix(c: Context): string {
  const route = routePath(c)
  if (/[^/]\*$/.test(route)) {
    throw new WsgiProxyError(
      'APP_ERROR',
      `mount() needs a route whose wildcard follows "/" (got ${JSON.stringify(route)})`,
    )
  }
  const labels = splitRoute(route.replace(/\/?\*$/, ''))
  if (labels.length === 0) return ''
  const { url } = c.req.raw
  const start = url.indexOf('/', url.indexOf('://') + 3)
  const query = url.indexOf('?', start)
  const segments = url.slice(start, query === -1 ? undefined : query).split('/')
  let params: Record<string, string> | undefined
  let end = 1
  for (const label of labels) {
    if (!label.startsWith(':')) {
      // A literal that is not in the URL path: the app routes on another path (a custom getPath).
      if (label !== '*' && decode(segments[end] ?? '') !== label) throw notFound(route)
      end++
      continue
    }
    params ??= c.req.param() as Record<string, string>
    const name = label.slice(1).replace(/\{.*\}/s, '')
    const value = params[name] ?? params[name.replace(/\?$/, '')]
    if (value === undefined) continue
    end = value.includes('/') ? spanEnd(segments, end, value, route) : end + 1
  }
  return unquotePath(segments.slice(0, end).join('/'))
}

/** A route's labels: split at "/" outside `{regex}` groups, empty ones dropped. */
function splitRoute(route: string): string[] {
  const labels: string[] = []
  let depth = 0
  let label = ''
  for (const char of route) {
    if (char === '{') depth++
    else if (char === '}') depth--
    if (char === '/' && depth === 0) {
      if (label !== '') labels.push(label)
      label = ''
    } else label += char
  }
  if (label !== '') labels.push(label)
  return labels
}

/** Where the raw segments whose decoding is `value` (a regex parameter spanning "/") end. */
function spanEnd(segments: string[], from: number, value: string, route: string): number {
  for (let end = from + 1; end <= segments.length; end++) {
    const decoded = decode(segments.slice(from, end).join('/'))
    if (decoded === value) return end
    if (decoded.length > value.length) break
  }
  throw notFound(route)
}

function notFound(route: string): WsgiProxyError {
  return new WsgiProxyError(
    'APP_ERROR',
    `mount() cannot find the route ${JSON.stringify(route)} in the request path; routes on a path other than the URL's (a custom getPath) cannot be mounted`,
  )
}

function decode(raw: string): string {
  try {
    return decodeURIComponent(raw)
  } catch {
    return unquotePath(raw)
  }
}
