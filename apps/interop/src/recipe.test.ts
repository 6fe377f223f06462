// docs/migrating-from-python.md: its recipe programs (src/recipe/*.mjs) are in the doc verbatim
// as ```js blocks (and every other block is marked a fragment), and each step runs here as real
// processes against the Python WSGIProxy 0.1 fixtures: the app sees the same request at every
// step, one side replaced at a time.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { FRONT01, MIDDLEWARE01, startPython01 } from '@wsgiproxy/test-kit/python01'
import { closeAll, send } from '@wsgiproxy/test-kit/servers'
import { CLIENT_ADDRESS, get, recipe, RECIPE_DIR, TEST_TIMEOUT } from './test/interop.ts'
import { startProgram, stopPrograms } from './test/programs.ts'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
const DOC = join(ROOT, 'docs', 'migrating-from-python.md')
const FRAGMENT = '<!-- fragment -->'

interface Block {
  line: number
  language: string
  content: string
  /** `<!-- fragment -->` is the last non-blank line before it. */
  marked: boolean
}

/** The fenced code blocks of a Markdown text. */
function blocksOf(text: string): Block[] {
  const lines = text.split('\n')
  const blocks: Block[] = []
  let lastText = ''
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? ''
    const open = /^(`{3,})\s*([^`\s]*)/.exec(line)
    if (open === null) {
      if (line.trim() !== '') lastText = line.trim()
      continue
    }
    const fence = open[1] ?? '```'
    let j = i + 1
    while (j < lines.length && (lines[j] ?? '').trim() !== fence) j++
    blocks.push({
      line: i + 1,
      language: open[2] ?? '',
      content: lines.slice(i + 1, j).join('\n'),
      marked: lastText === FRAGMENT,
    })
    lastText = ''
    i = j
  }
  return blocks
}

const programs = (): string[] =>
  readdirSync(RECIPE_DIR)
    .filter((name) => name.endsWith('.mjs'))
    .toSorted()

describe('docs/migrating-from-python.md', () => {
  it('holds every recipe program verbatim as a js block, and no other unmarked block', () => {
    const blocks = blocksOf(readFileSync(DOC, 'utf8'))
    expect(programs()).toEqual([
      'step1-backend.mjs',
      'step2-front.mjs',
      'step3-backend.mjs',
      'step3-front.mjs',
    ])
    const contents = new Map(
      programs().map((name) => [readFileSync(recipe(name), 'utf8').trimEnd(), name]),
    )
    const problems: string[] = []
    const shown = new Set<string>()
    for (const block of blocks) {
      const program = contents.get(block.content.trimEnd())
      if (program !== undefined) {
        shown.add(program)
        if (block.marked) problems.push(`line ${block.line}: ${program} is marked a fragment`)
        if (block.language !== 'js') problems.push(`line ${block.line}: ${program} is not \`\`\`js`)
      } else if (!block.marked) {
        problems.push(`line ${block.line}: neither a recipe program nor marked ${FRAGMENT}`)
      } else if (['js', 'ts'].includes(block.language) && !block.content.startsWith('//')) {
        problems.push(`line ${block.line}: a ${block.language} fragment starts with a // comment`)
      }
    }
    expect(problems).toEqual([])
    expect([...shown].toSorted()).toEqual(programs())
  })
})

// --- the recipe, run ------------------------------------------------------------------------

const dir = mkdtempSync(join(tmpdir(), 'wsgiproxy-recipe-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** A key file with one fresh key, as `wsgiproxy keygen` writes it (mode 0600). */
function keyFile(): string {
  const path = join(dir, `keys-${randomBytes(4).toString('hex')}`)
  writeFileSync(path, `k1 base64:${randomBytes(32).toString('base64')}\n`, { mode: 0o600 })
  return path
}

// The request of every step, and what the app sees of it at every step: the client's address
// and host, the front's mount point and the user the front's authentication set.
const REQUEST = { path: '/front/article/1?a=b', headers: { host: 'public.example' } }
const SEEN = {
  user: 'alice',
  client: CLIENT_ADDRESS,
  url: 'http://public.example/front/article/1',
  query: 'a=b',
}

/** What the Python dump app shows, in the shape of the recipe app's answer. */
function seenByPython(environ: Record<string, unknown>): Record<string, unknown> {
  const text = (key: string): string => String(environ[key])
  return {
    user: environ['REMOTE_USER'] ?? null,
    client: environ['REMOTE_ADDR'],
    url: `${text('wsgi.url_scheme')}://${text('HTTP_HOST')}${text('SCRIPT_NAME')}${text('PATH_INFO')}`,
    query: environ['QUERY_STRING'],
  }
}

describe('the migration recipe, one side at a time', () => {
  afterEach(async () => {
    await stopPrograms()
    await closeAll()
  })

  it(
    'step 1: the Python front in front of step1-backend.mjs gives the app the request the client made',
    async () => {
      const backend = await startProgram(recipe('step1-backend.mjs'), { TRUST_IPS: '127.0.0.1' })
      // The Python front as it was, but with an href without a path (Node refuses its
      // `GET myapp/...`), and passing every response header on, as the original did.
      const front = await startPython01(FRONT01, [
        '--href',
        backend.origin,
        '--script-name',
        '/front',
        '--string-key',
        'REMOTE_USER=alice',
        '--pass-hop-by-hop',
      ])
      const answer = await get(front.origin, REQUEST.path, REQUEST.headers)
      expect({ status: answer.status, text: answer.text }).toMatchObject({ status: 200 })
      expect(answer.environ).toEqual(SEEN)
    },
    TEST_TIMEOUT,
  )

  it(
    'step 2: step2-front.mjs in front of the Python middleware gives the Python app the same request',
    async () => {
      const backend = await startPython01(MIDDLEWARE01)
      const front = await startProgram(recipe('step2-front.mjs'), { BACKEND_URL: backend.origin })
      const answer = await get(front.origin, REQUEST.path, REQUEST.headers)
      expect({ status: answer.status, text: answer.text }).toMatchObject({ status: 200 })
      expect(seenByPython(answer.environ ?? {})).toEqual(SEEN)
    },
    TEST_TIMEOUT,
  )

  it(
    'step 3: step3-front.mjs signs, step3-backend.mjs verifies, and the app sees the same request',
    async () => {
      const keys = keyFile()
      const backend = await startProgram(recipe('step3-backend.mjs'), {
        KEY_FILE: keys,
        TRUST_IPS: '127.0.0.1',
      })
      const front = await startProgram(recipe('step3-front.mjs'), {
        KEY_FILE: keys,
        BACKEND_URL: backend.origin,
      })
      const answer = await get(front.origin, REQUEST.path, REQUEST.headers)
      expect({ status: answer.status, text: answer.text }).toMatchObject({ status: 200 })
      expect(answer.environ).toEqual(SEEN)
    },
    TEST_TIMEOUT,
  )

  it(
    'step 3: step3-backend.mjs refuses the Python front, and any request without a signature (401)',
    async () => {
      const backend = await startProgram(recipe('step3-backend.mjs'), {
        KEY_FILE: keyFile(),
        TRUST_IPS: '127.0.0.1',
      })
      // A 0.1 front left behind, from the trusted address: 0.1 never had a working signature.
      const front = await startPython01(FRONT01, [
        '--href',
        backend.origin,
        '--string-key',
        'REMOTE_USER=alice',
        '--pass-hop-by-hop',
      ])
      const old = await get(front.origin, '/article/1')
      expect(old.status).toBe(401)
      // Anyone else who reaches the backend's port: forged headers, no signature.
      const unsigned = await send(backend.origin, {
        path: '/article/1',
        headers: { 'x-forwarded-for': '203.0.113.9', 'x-wsgiproxy-str-0': 'REMOTE_USER mallory' },
      })
      expect(unsigned.status).toBe(401)
    },
    TEST_TIMEOUT,
  )
})
