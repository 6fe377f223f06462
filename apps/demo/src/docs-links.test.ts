// The repository is self-contained: its Markdown names no design contract outside it, links to no
// outside address, and every relative link lands on a file (and heading) that exists; its sources
// and package manifests cite docs/design.md, not the old contract.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
// Spelled in two parts so that this file does not hold the name it looks for.
const OLD_CONTRACT = ['DESIGN', 'md'].join('.')
const SKIPPED_DIRS: ReadonlySet<string> = new Set(['node_modules', 'dist', 'coverage', '.git'])

/** Every file under `dir` (relative to the root) whose name ends with `ending`, sorted. */
function filesUnder(dir: string, ending: string): string[] {
  const found: string[] = []
  const walk = (absolute: string): void => {
    if (!existsSync(absolute)) return
    for (const entry of readdirSync(absolute, { withFileTypes: true })) {
      const path = join(absolute, entry.name)
      if (entry.isDirectory()) {
        if (!SKIPPED_DIRS.has(entry.name)) walk(path)
      } else if (entry.name.endsWith(ending)) {
        found.push(relative(ROOT, path).split(sep).join('/'))
      }
    }
  }
  walk(join(ROOT, dir))
  return found.toSorted()
}

/** The workspace's packages and apps, as `packages/core`, `apps/demo`, ... */
function workspaces(): string[] {
  return ['packages', 'apps'].flatMap((group) =>
    readdirSync(join(ROOT, group), { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => `${group}/${entry.name}`),
  )
}

const MARKDOWN = filesUnder('.', '.md')
const SOURCES = workspaces().flatMap((workspace) => filesUnder(`${workspace}/src`, '.ts'))
const MANIFESTS = [
  '.oxlintrc.json',
  'package.json',
  ...workspaces()
    .map((workspace) => `${workspace}/package.json`)
    .filter((path) => existsSync(join(ROOT, path))),
]

function read(path: string): string {
  return readFileSync(join(ROOT, path), 'utf8')
}

/** 1-based line of an offset. */
function lineOf(text: string, offset: number): number {
  let line = 1
  for (let i = 0; i < offset; i++) if (text.charCodeAt(i) === 10) line++
  return line
}

/** `path:line` for every line of `paths` that holds `needle`. */
function mentions(paths: readonly string[], needle: string): string[] {
  const found: string[] = []
  for (const path of paths) {
    read(path)
      .split('\n')
      .forEach((line, index) => {
        if (line.includes(needle)) found.push(`${path}:${index + 1}`)
      })
  }
  return found
}

// Addresses that name nothing outside the repository: loopback, the names reserved for examples
// and tests (RFC 2606, RFC 6761), private and documentation IPv4 ranges (RFC 1918, RFC 5737), and
// single-label placeholders such as `http://host/` or `http://${host}`.
const LOCAL_V4 = [
  /^127\./,
  /^10\./,
  /^172\.(1[6-9]|2\d|3[01])\./,
  /^192\.168\./,
  /^192\.0\.2\./,
  /^198\.51\.100\./,
  /^203\.0\.113\./,
  /^0\.0\.0\.0$/,
]
const RESERVED_NAME = /(^|\.)(example\.(com|net|org)|example|test|invalid|localhost)$/

function isLocalHost(host: string): boolean {
  const name = host.toLowerCase().replace(/\.$/, '')
  if (name === '[::1]' || name === '[::]') return true
  if (/^\d+\.\d+\.\d+\.\d+$/.test(name)) return LOCAL_V4.some((range) => range.test(name))
  if (RESERVED_NAME.test(name)) return true
  return !name.includes('.') && !name.startsWith('[')
}

/** The host of an `http(s)://` address as written: no user info, IPv6 kept in brackets. */
function hostOf(address: string): string {
  const authority = address.replace(/^https?:\/\//i, '').split(/[/?#]/, 1)[0] ?? ''
  const host = authority.slice(authority.lastIndexOf('@') + 1)
  if (host.startsWith('[')) return host.slice(0, host.indexOf(']') + 1)
  return host.split(':', 1)[0] ?? ''
}

const ADDRESS = /https?:\/\/[^\s<>()[\]`'"|]+/gi

/** `path:line address` for every http(s) address in a file that points outside the repository. */
function outsideAddresses(path: string): string[] {
  const text = read(path)
  const found: string[] = []
  for (const match of text.matchAll(ADDRESS)) {
    if (!isLocalHost(hostOf(match[0]))) {
      found.push(`${path}:${lineOf(text, match.index)} ${match[0]}`)
    }
  }
  return found
}

/** The text with fenced code blocks blanked out (newlines kept, so lines stay where they were). */
function withoutFences(text: string): string {
  let fence: string | undefined
  const lines = text.split('\n').map((line) => {
    const marker = /^ {0,3}(`{3,}|~{3,})/.exec(line)?.[1]
    if (fence === undefined && marker !== undefined) {
      fence = marker
      return ''
    }
    if (fence !== undefined) {
      if (marker !== undefined && marker[0] === fence[0] && marker.length >= fence.length) {
        fence = undefined
      }
      return ''
    }
    return line
  })
  return lines.join('\n')
}

/**
 * The text with fenced code blocks and inline code spans blanked out (newlines kept, so offsets
 * and lines stay where they were): links are read from what remains.
 */
function prose(text: string): string {
  return withoutFences(text).replace(/(`+)([\s\S]*?[^`])\1(?!`)/g, (span) =>
    span.replace(/[^\n]/g, ' '),
  )
}

/**
 * GitHub's anchor for a heading: lower-case, punctuation dropped, spaces to `-`, repeats numbered.
 * The text of a code span in a heading counts (its backticks are punctuation).
 */
function anchorsOf(path: string): Set<string> {
  const anchors = new Set<string>()
  const seen = new Map<string, number>()
  for (const [, heading] of withoutFences(read(path)).matchAll(
    /^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$/gm,
  )) {
    const base = (heading ?? '')
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-')
    const count = seen.get(base) ?? 0
    seen.set(base, count + 1)
    anchors.add(count === 0 ? base : `${base}-${count}`)
  }
  return anchors
}

// `[text](target "title")`, `![alt](target)` and `[label]: target` definitions.
const INLINE_LINK = /!?\[(?:[^\]\\]|\\.)*\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)/g
const DEFINITION = /^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)/gm
const SCHEME = /^[a-z][a-z0-9+.-]*:/i

/** `path:line target (why)` for every relative link of a file that does not resolve. */
function brokenLinks(path: string): string[] {
  const text = prose(read(path))
  const targets = [...text.matchAll(INLINE_LINK), ...text.matchAll(DEFINITION)]
  const found: string[] = []
  for (const match of targets) {
    const target = (match[1] ?? '').replace(/^<|>$/g, '')
    if (SCHEME.test(target)) continue
    const [file = '', anchor] = target.split('#', 2)
    const resolved =
      file === ''
        ? join(ROOT, path)
        : file.startsWith('/')
          ? join(ROOT, decodeURIComponent(file))
          : resolve(dirname(join(ROOT, path)), decodeURIComponent(file))
    const where = `${path}:${lineOf(text, match.index)} ${target}`
    if (!resolved.startsWith(ROOT) || !existsSync(resolved)) {
      found.push(`${where} (no such file)`)
    } else if (
      anchor !== undefined &&
      resolved.endsWith('.md') &&
      statSync(resolved).isFile() &&
      !anchorsOf(relative(ROOT, resolved)).has(decodeURIComponent(anchor).toLowerCase())
    ) {
      found.push(`${where} (no such heading)`)
    }
  }
  return found
}

describe('repository Markdown', () => {
  it('covers the root README, every doc and every package and app README', () => {
    expect(MARKDOWN).toContain('README.md')
    expect(MARKDOWN).toContain('docs/design.md')
    const readmes = workspaces()
      .map((workspace) => `${workspace}/README.md`)
      .filter((path) => existsSync(join(ROOT, path)))
    expect(MARKDOWN).toEqual(expect.arrayContaining(readmes))
    expect(MARKDOWN.some((path) => path.includes('node_modules'))).toBe(false)
  })

  it('never mentions the old design contract', () => {
    expect(mentions(MARKDOWN, OLD_CONTRACT)).toEqual([])
  })

  it('links to no address outside the repository', () => {
    expect(MARKDOWN.flatMap(outsideAddresses)).toEqual([])
  })

  it('has relative links that reach an existing file and heading', () => {
    expect(MARKDOWN.flatMap(brokenLinks)).toEqual([])
  })

  it('keeps the section numbers code comments cite in docs/design.md', () => {
    const sections = [...read('docs/design.md').matchAll(/^## (\d+)\. /gm)].map((m) => Number(m[1]))
    expect(sections.slice(0, 12)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
  })
})

describe('link checks', () => {
  it.each([
    'http://127.0.0.1:8080/',
    'http://localhost:3000',
    'http://[::1]:8080/x',
    'https://example.com/api',
    'https://public.example/front',
    'http://front.test/a',
    'http://10.0.0.5:8080/myapp',
    'http://host:port/path',
    'http://user@backend/',
  ])('accept %s (loopback, a reserved name, a private range or a placeholder)', (address) => {
    expect(isLocalHost(hostOf(address))).toBe(true)
  })

  it.each([
    'https://pypi.org/project/WSGIProxy/',
    'https://www.rfc-editor.org/rfc/rfc9110',
    'http://8.8.8.8/',
    'https://[2606:4700::1111]/',
    'https://example.com.evil.org/',
  ])('refuse %s', (address) => {
    expect(isLocalHost(hostOf(address))).toBe(false)
  })

  it('name headings as GitHub anchors them', () => {
    const anchors = anchorsOf('docs/design.md')
    expect(anchors).toContain('6-wire-protocol-version-02')
    expect(anchors).toContain('8-forwarding-rules')
    // `### \`wsgiProxy\`: verify and restore on the backend`: the code span's text is kept.
    expect(anchorsOf('packages/hono/README.md')).toContain(
      'wsgiproxy-verify-and-restore-on-the-backend',
    )
  })

  it('read links and headings outside code only', () => {
    const text = prose('a [x](y.md) `[z](w.md)`\n```\n# not a heading [q](r.md)\n```\n# Title')
    expect([...text.matchAll(INLINE_LINK)].map((m) => m[1])).toEqual(['y.md'])
    expect(text).toContain('# Title')
    expect(text).not.toContain('not a heading')
  })
})

describe('sources and manifests', () => {
  it('finds the TypeScript sources of every package and app', () => {
    expect(SOURCES).toContain('apps/demo/src/docs-links.test.ts')
    expect(SOURCES.some((path) => path.startsWith('packages/core/src/'))).toBe(true)
    expect(SOURCES.some((path) => path.includes('/dist/') || path.includes('node_modules'))).toBe(
      false,
    )
  })

  it('cite docs/design.md, never the old design contract', () => {
    expect(mentions([...SOURCES, ...MANIFESTS], OLD_CONTRACT)).toEqual([])
  })
})
