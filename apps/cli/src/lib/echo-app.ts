import type { AppResponse, Environ, EnvironApp } from '@wsgiproxy/core'

const encoder = new TextEncoder()

/**
 * The sample app of the original WSGIProxy: answers with the environ it received, as an HTML
 * table, or as JSON when the request accepts `application/json`. Values that are not text (the
 * body stream, the abort signal) are shown by their kind; the body is not read.
 *
 * @returns the environ app
 */
export function createEchoApp(): EnvironApp {
  return (environ) => {
    const entries = environEntries(environ)
    const accept = typeof environ.HTTP_ACCEPT === 'string' ? environ.HTTP_ACCEPT : ''
    if (/\bapplication\/json\b/i.test(accept)) {
      return textResponse(
        'application/json',
        `${JSON.stringify(Object.fromEntries(entries), null, 2)}\n`,
      )
    }
    return textResponse('text/html; charset=utf-8', htmlPage(entries))
  }
}

function environEntries(environ: Environ): Array<[string, string]> {
  return Object.keys(environ)
    .toSorted()
    .map((key) => [key, describe(environ[key])])
}

function describe(value: unknown): string {
  if (typeof value === 'string') return value
  if (value === null || typeof value === 'number' || typeof value === 'boolean') {
    return String(value)
  }
  if (value === undefined) return ''
  if (typeof value === 'object' && Symbol.asyncIterator in value) return '<body stream>'
  if (typeof AbortSignal !== 'undefined' && value instanceof AbortSignal) return '<AbortSignal>'
  try {
    return JSON.stringify(value) ?? `<${typeof value}>`
  } catch {
    return `<${typeof value}>`
  }
}

function htmlPage(entries: ReadonlyArray<[string, string]>): string {
  const rows = entries
    .map(([key, value]) => `<tr><th>${escapeHtml(key)}</th><td>${escapeHtml(value)}</td></tr>`)
    .join('\n')
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>wsgiproxy echo</title>
<style>body{font-family:sans-serif}th{text-align:left;padding-right:1em;vertical-align:top}td{font-family:monospace;white-space:pre-wrap;word-break:break-all}</style>
</head>
<body>
<h1>wsgiproxy echo: the restored environ</h1>
<table>
${rows}
</table>
</body>
</html>
`
}

/**
 * Escapes text for HTML element content and attribute values.
 *
 * @param text - any text
 * @returns the escaped text
 */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`)
}

function textResponse(contentType: string, text: string): AppResponse {
  const bytes = encoder.encode(text)
  return {
    status: 200,
    headers: [
      ['content-type', contentType],
      ['content-length', String(bytes.byteLength)],
      ['cache-control', 'no-store'],
      ['x-content-type-options', 'nosniff'],
      ['vary', 'accept'],
    ],
    body: (async function* () {
      yield bytes
    })(),
  }
}
