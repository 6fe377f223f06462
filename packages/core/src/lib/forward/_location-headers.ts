import type { LocationMapping } from './_location.ts'
import { rewriteLocation } from './_location.ts'
import type { AppResponse } from '../types.ts'

/**
 * A response with its `Location` and `Content-Location` lines rewritten (see `rewriteLocation`).
 *
 * @param response - the backend's response
 * @param mapping - backend and public locations
 * @returns the same response when nothing changed, else a copy with the new header lines
 */
export function rewriteLocations(response: AppResponse, mapping: LocationMapping): AppResponse {
  let changed = false
  const headers = response.headers.map((line): [string, string] => {
    const name = line[0].toLowerCase()
    if (name !== 'location' && name !== 'content-location') return line
    const value = rewriteLocation(line[1], mapping)
    if (value === line[1]) return line
    changed = true
    return [line[0], value]
  })
  return changed ? { ...response, headers } : response
}
