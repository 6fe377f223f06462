// The demo's HTML: escaping, the shared style sheet and a table of key/value rows.

/** Escapes text for HTML element content and double-quoted attributes. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

/** A two-column table of names and values, both escaped. */
export function table(rows: Iterable<readonly [string, string]>): string {
  let out = '<table>'
  for (const [name, value] of rows) {
    out += `<tr><th>${escapeHtml(name)}</th><td><code>${escapeHtml(value)}</code></td></tr>`
  }
  return `${out}</table>`
}

/** The style sheet the front serves at `/style.css` for every page, backends' included. */
export const STYLE = `body{font:16px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1d232a}
h1{font-size:1.6rem}h2{font-size:1.15rem;margin-top:1.6rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{border:1px solid #d6dbe0;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f6f8;white-space:nowrap}code{word-break:break-all}.ok{color:#17692f;font-weight:600}
.card{border:1px solid #d6dbe0;border-radius:.5rem;padding:.8rem 1rem;margin:1rem 0}
`
