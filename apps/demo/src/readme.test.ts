// Every fenced code block in README.md, packages/*/README.md and apps/*/README.md is either a
// program this file runs or a block marked as a fragment.
//
// The convention:
// - A complete program is a file under src/readme/ (one folder per README: root, core, node,
//   hono, cli) whose content a README holds verbatim in a block of the matching language: `.mjs`
//   as ```js (plain ESM that Node 20 runs as it is: no TypeScript, no `await using`), `.json` as
//   ```json, `.sh` as ```sh. Each file is listed in SNIPPETS and run below as a real child process
//   (`node <file>` or `sh <file>`): from its place in apps/demo, so `@wsgiproxy/*`, `hono` and
//   `@hono/node-server` resolve from this app's dependencies and load the built dist/. A program
//   prints `listening on http://127.0.0.1:<port>`, takes PORT (the tests give 0) and its backend's
//   address from the environment, and gets real HTTP requests. Files starting with `_` are test
//   fixtures, never shown.
// - Any other block is a fragment and says so: its last non-blank line before the fence is
//   `<!-- fragment -->` (prettier keeps a blank line between the two). A js or ts fragment starts
//   with a `//` comment saying where it belongs (`// in mount.mjs above: ...`); shell fragments
//   (install commands, lists of examples) and `text` output need no comment.
// - No block contains `await using`, and every Markdown link is relative and names a file or
//   folder of this repository.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createVerifier, parseKeyFile, proxyMiddleware } from '@wsgiproxy/core'
import { buildStale } from '@wsgiproxy/test-kit/build-dist'
import {
  closeAll,
  echoEnviron,
  send,
  startFetchFront,
  startUpstream,
} from '@wsgiproxy/test-kit/servers'
import {
  childrenOf,
  cleanupSpawners,
  isAlive,
  recordPids,
  waitFor,
} from '@wsgiproxy/test-kit/spawner-helpers'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
const SNIPPET_DIR = fileURLToPath(new URL('./readme/', import.meta.url))

/** Every snippet file, with what runs it (the test names below say the same). */
const SNIPPETS: Record<string, string> = {
  'root/hono-app.mjs': 'README.md: a Hono app on @hono/node-server',
  'root/handler.mjs': 'README.md: export default { fetch }, run through root/server.mjs',
  'root/server.mjs': 'README.md: the Node server for handler.mjs',
  'root/convert.mjs': 'README.md: the environ converted by hand',
  'root/wsgiproxy.config.json': 'README.md: the config file of root/serve.sh',
  'root/serve.sh': 'README.md: `wsgiproxy serve` through sh, with wsgiproxy on the PATH',
  'core/exact-proxy.mjs': 'packages/core: an export default { fetch } module, via _serve-module',
  'node/fast-path.mjs': 'packages/node: serve + undiciTransport',
  'node/spawner.mjs': 'packages/node: createSpawner + serve',
  'hono/mount.mjs': 'packages/hono: mount',
  'hono/front.mjs': 'packages/hono: proxy, in front of hono/backend.mjs and a verifier',
  'hono/backend.mjs': 'packages/hono: wsgiProxy, behind hono/front.mjs',
  'hono/spawn.mjs': 'packages/hono: spawn from @wsgiproxy/hono/node',
  'cli/wsgiproxy.config.json': 'apps/cli: the config file example, with wsgiproxy serve',
}

const FRAGMENT = '<!-- fragment -->'
const LANGUAGE_OF: Record<string, string> = { '.mjs': 'js', '.json': 'json', '.sh': 'sh' }

/** The path of a snippet file that SNIPPETS lists. */
function snippet(name: string): string {
  if (!(name in SNIPPETS)) throw new Error(`${name} is not in SNIPPETS`)
  return join(SNIPPET_DIR, name)
}

function read(path: string): string {
  return readFileSync(path, 'utf8')
}

// --- the checker ----------------------------------------------------------------------------

interface Block {
  readme: string
  line: number
  language: string
  content: string
  marked: boolean
}

/** The READMEs the convention covers, relative to the workspace root. */
function readmes(): string[] {
  const found = ['README.md']
  for (const folder of ['packages', 'apps']) {
    for (const name of readdirSync(join(ROOT, folder)).toSorted()) {
      const path = join(folder, name, 'README.md')
      if (existsSync(join(ROOT, path))) found.push(path)
    }
  }
  return found
}

/** The fenced code blocks of a Markdown file (CommonMark fences, indented ones included). */
function blocksOf(readme: string): Block[] {
  const lines = read(join(ROOT, readme)).split('\n')
  const blocks: Block[] = []
  let lastText = ''
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? ''
    const open = /^( *)(`{3,}|~{3,})\s*([^`\s]*)/.exec(line)
    if (open === null) {
      if (line.trim() !== '') lastText = line.trim()
      continue
    }
    const indent = open[1]?.length ?? 0
    const fence = open[2] ?? '```'
    const body: string[] = []
    let j = i + 1
    for (; j < lines.length; j++) {
      const text = lines[j] ?? ''
      const trimmed = text.trim()
      if (trimmed.startsWith(fence) && trimmed.replaceAll(fence[0] ?? '`', '') === '') break
      body.push(text.slice(Math.min(indent, text.length - text.trimStart().length)))
    }
    blocks.push({
      readme,
      line: i + 1,
      language: open[3] ?? '',
      content: body.join('\n'),
      marked: lastText === FRAGMENT,
    })
    lastText = ''
    i = j
  }
  return blocks
}

/** Every file under src/readme/, relative to it (fixtures starting with `_` left out). */
function snippetFiles(dir = SNIPPET_DIR): string[] {
  const found: string[] = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name.startsWith('_')) continue
    const path = join(dir, entry.name)
    if (entry.isDirectory()) found.push(...snippetFiles(path))
    else found.push(relative(SNIPPET_DIR, path))
  }
  return found.toSorted()
}

function extensionOf(file: string): string {
  return /\.[^./]+$/.exec(file)?.[0] ?? ''
}

/** What is wrong with one block, or `undefined`. */
function problemOf(block: Block, files: ReadonlyMap<string, string>): string | undefined {
  const where = `${block.readme}:${block.line}`
  if (block.content.includes('await using')) {
    return `${where}: \`await using\` is a syntax error on Node 20; close the resource explicitly`
  }
  const source = [...files].find(([, content]) => content === block.content.trimEnd())?.[0]
  if (block.marked) {
    if (source !== undefined) {
      return `${where}: the block is ${source}, which the suite runs: drop its ${FRAGMENT} marker`
    }
    const first = block.content.trimStart()
    if (['js', 'ts', 'mjs'].includes(block.language) && !first.startsWith('//')) {
      return `${where}: a ${block.language} fragment starts with a // comment saying where it belongs`
    }
    return undefined
  }
  if (source === undefined) {
    return (
      `${where}: a \`\`\`${block.language} block that is neither the content of a file in ` +
      `apps/demo/src/readme/ (which readme.test.ts runs) nor marked ${FRAGMENT} on the line before it`
    )
  }
  const expected = LANGUAGE_OF[extensionOf(source)]
  if (block.language !== expected) {
    return `${where}: ${source} is shown as \`\`\`${block.language}, expected \`\`\`${expected}`
  }
  return undefined
}

describe('README code blocks', () => {
  const files = new Map(
    snippetFiles().map((file) => [file, read(join(SNIPPET_DIR, file)).trimEnd()]),
  )
  const blocks = readmes().flatMap(blocksOf)

  it('finds the blocks of every README', () => {
    expect(readmes()).toEqual(expect.arrayContaining(['README.md', 'packages/core/README.md']))
    expect(blocks.filter((block) => block.readme === 'README.md').length).toBeGreaterThan(4)
  })

  it('are each a snippet file the suite runs, or marked as a fragment', () => {
    const problems = blocks.map((block) => problemOf(block, files)).filter(Boolean)
    expect(problems).toEqual([])
  })

  it('use every snippet file, and this file runs each one', () => {
    expect(snippetFiles()).toEqual(Object.keys(SNIPPETS).toSorted())
    const shown = new Set(blocks.map((block) => block.content.trimEnd()))
    const unused = [...files].filter(([, content]) => !shown.has(content)).map(([file]) => file)
    expect(unused).toEqual([])
  })

  it('link only to files of this repository', () => {
    const problems: string[] = []
    for (const readme of readmes()) {
      // Code spans and blocks hold no links.
      const text = read(join(ROOT, readme))
        .replace(/^( *)(`{3,}|~{3,})[\s\S]*?^\1\2/gm, '')
        .replace(/`[^`\n]*`/g, '')
      for (const match of text.matchAll(/\]\(([^)\s]*)\)/g)) {
        const target = match[1] ?? ''
        if (target.startsWith('#')) continue
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) {
          problems.push(`${readme}: ${target} points outside the repository`)
          continue
        }
        const path = join(ROOT, dirname(readme), target.replace(/#.*$/, ''))
        if (!existsSync(path)) problems.push(`${readme}: ${target} does not exist`)
      }
    }
    expect(problems).toEqual([])
  })
})

// --- running the programs -------------------------------------------------------------------

interface Program {
  child: ChildProcess
  /** `http://127.0.0.1:<port>`, from the line it printed. */
  url: string
  /** Everything it printed so far, stdout and stderr. */
  output(): string
  /** Resolves when it has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

const started = new Set<ChildProcess>()
const dir = mkdtempSync(join(tmpdir(), 'wsgiproxy-readme-'))
const START_TIMEOUT = 30_000

beforeAll(() => {
  // The programs load the built packages (Node 20 runs no TypeScript); a no-op after `pnpm build`.
  buildStale([
    ['packages/core', 'index.js'],
    ['packages/node', 'index.js'],
    ['packages/hono', 'index.js'],
    ['apps/cli', 'main.js'],
  ])
}, 180_000)

afterEach(async () => {
  for (const child of started) {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) continue
    recordPids(child.pid, ...childrenOf(child.pid))
    child.kill('SIGKILL')
  }
  started.clear()
  await cleanupSpawners()
  await closeAll()
})

afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** Starts a program and resolves once it prints the address it listens on. */
async function start(
  command: readonly string[],
  { env = {}, cwd = SNIPPET_DIR }: { env?: Record<string, string>; cwd?: string } = {},
): Promise<Program> {
  const [file = '', ...args] = command
  const child = spawn(file, args, {
    cwd,
    env: { ...process.env, PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  started.add(child)
  recordPids(child.pid)
  let log = ''
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }))
  })
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${command.join(' ')}: no listening line:\n${log}`)),
      START_TIMEOUT,
    )
    const onData = (text: string): void => {
      log += text
      const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(log)
      if (match?.[1] !== undefined) {
        clearTimeout(timer)
        resolve(match[1])
      }
    }
    child.stdout?.setEncoding('utf8').on('data', onData)
    child.stderr?.setEncoding('utf8').on('data', onData)
    void exited.then(({ code, signal }) => {
      clearTimeout(timer)
      reject(new Error(`${command.join(' ')} exited (${code ?? signal}):\n${log}`))
    })
  })
  return { child, url, output: () => log, exited }
}

/** Sends a signal and resolves with how the program ended. */
async function stop(program: Program, signal: NodeJS.Signals = 'SIGTERM') {
  program.child.kill(signal)
  return program.exited
}

/** Waits until none of these processes is alive (zombies count as gone). */
async function gone(pids: readonly number[]): Promise<void> {
  await waitFor(() => pids.every((pid) => !isAlive(pid)), {
    timeout: 20_000,
    message: `processes ${pids.join(', ')} to end`,
  })
}

/** An upstream that answers with the URL and headers it received, as JSON. */
async function echoUpstream(): Promise<string> {
  const upstream = await startUpstream((req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ url: req.url, headers: req.headers }))
  })
  return upstream.origin
}

interface Seen {
  url: string
  headers: Record<string, string | undefined>
}

async function json<T>(url: string, path: string, headers: Record<string, string> = {}) {
  const res = await send(url, { path, headers })
  // The body in the diff when the status is wrong.
  expect({ status: res.status, body: res.body.toString() }).toMatchObject({ status: 200 })
  return JSON.parse(res.body.toString()) as T
}

/** A key file with one fresh key, as `wsgiproxy keygen` writes it (mode 0600). */
function keyFile(): string {
  const path = join(dir, `keys-${randomBytes(4).toString('hex')}`)
  writeFileSync(path, `k1 base64:${randomBytes(32).toString('base64')}\n`, { mode: 0o600 })
  return path
}

/** The `wsgiproxy` bin of @wsgiproxy/cli, as its package.json names it. */
function cliBin(): string {
  const cli = join(ROOT, 'apps', 'cli')
  const { bin } = JSON.parse(read(join(cli, 'package.json'))) as { bin: Record<string, string> }
  const file = bin['wsgiproxy']
  if (file === undefined) throw new Error('apps/cli/package.json has no bin "wsgiproxy"')
  return join(cli, file)
}

const node = (name: string, ...args: string[]): string[] => [
  process.execPath,
  snippet(name),
  ...args,
]

describe('README.md programs', () => {
  it('root/hono-app.mjs serves its page and forwards /api/* with /api as the script name', async () => {
    const backend = await echoUpstream()
    const app = await start(node('root/hono-app.mjs'), { env: { BACKEND_URL: backend } })
    const page = await send(app.url, { path: '/' })
    expect(page.body.toString()).toBe('front page, served by Hono')
    const seen = await json<Seen>(app.url, '/api/users/1?x=1')
    expect(seen.url).toBe('/users/1?x=1')
    expect(seen.headers['x-forwarded-script-name']).toBe('/api')
  }, 60_000)

  it('root/server.mjs serves root/handler.mjs on Node, forwarding every request', async () => {
    const backend = await echoUpstream()
    const app = await start(node('root/server.mjs'), { env: { BACKEND_URL: backend } })
    const seen = await json<Seen>(app.url, '/a/b?c=d', { host: 'front.test' })
    expect(seen.url).toBe('/a/b?c=d')
    expect(seen.headers['x-forwarded-server']).toBe('front.test')
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1')
  }, 60_000)

  it('root/convert.mjs prints the values its comments name', async () => {
    const file = snippet('root/convert.mjs')
    const expected = [...read(file).matchAll(/console\.log\(.*\) \/\/ '([^']*)'/g)].map((m) => m[1])
    expect(expected).toHaveLength(3)
    const child = spawn(process.execPath, [file], { stdio: ['ignore', 'pipe', 'inherit'] })
    started.add(child)
    let stdout = ''
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text))
    const code = await new Promise((resolve) => child.once('exit', resolve))
    expect(code).toBe(0)
    expect(stdout.trimEnd().split('\n')).toEqual(expected)
  }, 60_000)

  it('root/serve.sh runs wsgiproxy serve with root/wsgiproxy.config.json: /echo, /files, exit 0', async () => {
    // As after `npm install --global @wsgiproxy/cli`: a `wsgiproxy` on the PATH that runs the
    // package's bin. The config as shown, but on a free port.
    const work = mkdtempSync(join(dir, 'serve-'))
    const pathDir = mkdtempSync(join(work, 'path-'))
    writeFileSync(
      join(pathDir, 'wsgiproxy'),
      `#!/bin/sh\nexec "${process.execPath}" "${cliBin()}" "$@"\n`,
    )
    chmodSync(join(pathDir, 'wsgiproxy'), 0o755)
    const config = JSON.parse(read(snippet('root/wsgiproxy.config.json'))) as { listen: string }
    config.listen = '127.0.0.1:0'
    writeFileSync(join(work, 'wsgiproxy.config.json'), JSON.stringify(config))

    const sh = await start(['sh', snippet('root/serve.sh')], {
      cwd: work,
      env: { PATH: `${pathDir}:${process.env['PATH'] ?? ''}` },
    })
    const echo = await json<Record<string, unknown>>(sh.url, '/echo/x', {
      accept: 'application/json',
    })
    expect(echo['SCRIPT_NAME']).toBe('/echo')
    expect(echo['PATH_INFO']).toBe('/x')
    const files = await send(sh.url, { path: '/files/' })
    expect(files.status).toBe(200)
    expect(files.body.toString()).toContain('Directory listing')
    const python = Number(/\[python3\] spawned pid (\d+)/.exec(sh.output())?.[1])
    expect(python).toBeGreaterThan(1)
    recordPids(python)
    // sh waits for wsgiproxy (dash does not exec the last command): signal the command itself.
    const [command] = childrenOf(sh.child.pid ?? 0)
    expect(command).toBeDefined()
    process.kill(command ?? 0, 'SIGTERM')
    expect(await sh.exited).toEqual({ code: 0, signal: null })
    await gone([python])
  }, 90_000)
})

describe('packages/core/README.md program', () => {
  it('core/exact-proxy.mjs forwards to the backend with the Host the client sent, adding no header', async () => {
    const backend = new URL(await echoUpstream())
    const app = await start(
      [process.execPath, join(SNIPPET_DIR, '_serve-module.mjs'), snippet('core/exact-proxy.mjs')],
      { env: { BACKEND_HOST: backend.hostname, BACKEND_PORT: backend.port } },
    )
    const seen = await json<Seen>(app.url, '/x?y=1', { host: 'www.example.test:8080' })
    expect(seen.url).toBe('/x?y=1')
    expect(seen.headers['host']).toBe('www.example.test:8080')
    // On Node the default transport is undici: no user-agent or sec-fetch-mode from fetch.
    expect(seen.headers['user-agent']).toBeUndefined()
    expect(seen.headers['sec-fetch-mode']).toBeUndefined()
  }, 60_000)
})

describe('packages/node/README.md programs', () => {
  it('node/fast-path.mjs forwards with the protocol headers and exits 0 on SIGTERM', async () => {
    const backend = await echoUpstream()
    const app = await start(node('node/fast-path.mjs'), { env: { BACKEND_URL: backend } })
    const seen = await json<Seen>(app.url, '/a?b=c')
    expect(seen.url).toBe('/a?b=c')
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(await stop(app)).toEqual({ code: 0, signal: null })
  }, 60_000)

  it('node/spawner.mjs starts the Python server on the first request and leaves no process on SIGTERM', async () => {
    const app = await start(node('node/spawner.mjs'))
    const res = await send(app.url, { path: '/' })
    expect(res.status).toBe(200)
    expect(res.body.toString()).toContain('Directory listing')
    const children = childrenOf(app.child.pid ?? 0)
    recordPids(...children)
    expect(children.length).toBeGreaterThan(0)
    expect(await stop(app)).toEqual({ code: null, signal: 'SIGTERM' })
    await gone(children)
  }, 90_000)
})

describe('packages/hono/README.md programs', () => {
  it('hono/mount.mjs splits the path at the route into SCRIPT_NAME and PATH_INFO', async () => {
    const app = await start(node('hono/mount.mjs'))
    const text = async (path: string) => (await send(app.url, { path })).body.toString()
    expect(await text('/api/users/1')).toBe('/api | /users/1')
    expect(await text('/api')).toBe('/api | ')
    expect(await text('/v1/legacy/x')).toBe('/v1/legacy | /x')
  }, 60_000)

  it('hono/front.mjs forwards to hono/backend.mjs, which restores the request the client made', async () => {
    const backend = await start(node('hono/backend.mjs'))
    const front = await start(node('hono/front.mjs'), {
      env: { BACKEND_URL: backend.url, KEY_FILE: keyFile() },
    })
    type Restored = { client: string; scriptName: string; url: string }
    expect(await json<Restored>(front.url, '/front/article/1')).toEqual({
      client: '127.0.0.1',
      scriptName: '/front',
      url: `${front.url}/front/article/1`,
    })
    expect(await json<Restored>(front.url, '/admin/users')).toEqual({
      client: '127.0.0.1',
      scriptName: '/admin',
      url: `${front.url}/admin/users`,
    })
  }, 60_000)

  it('hono/front.mjs signs /admin/* with the key file, as a backend requiring signatures checks', async () => {
    const file = keyFile()
    const verifier = createVerifier({ keys: parseKeyFile(read(file)) })
    const backend = await startFetchFront(
      proxyMiddleware(echoEnviron, { verifier, requireSignature: true }),
    )
    const front = await start(node('hono/front.mjs'), {
      env: { BACKEND_URL: backend.origin, KEY_FILE: file },
    })
    const admin = await json<Record<string, unknown>>(front.url, '/admin/users')
    expect(admin['SCRIPT_NAME']).toBe('/admin')
    expect(admin['PATH_INFO']).toBe('/users')
    // proxy's `environ` option put it in the environ, stringKeys sent it, the signature covers it.
    expect(admin['REMOTE_USER']).toBe('admin')
    expect((await send(front.url, { path: '/front/article/1' })).status).toBe(401)
  }, 60_000)

  it('hono/spawn.mjs starts the Python server under /files and leaves no process on SIGTERM', async () => {
    const app = await start(node('hono/spawn.mjs'))
    const res = await send(app.url, { path: '/files/' })
    expect(res.status).toBe(200)
    expect(res.body.toString()).toContain('Directory listing')
    const children = childrenOf(app.child.pid ?? 0)
    recordPids(...children)
    expect(children.length).toBeGreaterThan(0)
    expect(await stop(app)).toEqual({ code: null, signal: 'SIGTERM' })
    await gone(children)
  }, 90_000)
})

describe('apps/cli/README.md config file', () => {
  it('cli/wsgiproxy.config.json is accepted by wsgiproxy serve, which answers on /echo', async () => {
    const work = mkdtempSync(join(dir, 'cli-'))
    const config = join(work, 'wsgiproxy.config.json')
    writeFileSync(config, read(snippet('cli/wsgiproxy.config.json')))
    writeFileSync(join(work, 'keys'), read(keyFile()), { mode: 0o600 })
    const cli = await start(
      [process.execPath, cliBin(), 'serve', '--config', config, '--listen', '127.0.0.1:0'],
      { cwd: work },
    )
    const echo = await json<Record<string, unknown>>(cli.url, '/echo/x', {
      accept: 'application/json',
    })
    expect(echo['SCRIPT_NAME']).toBe('/echo')
    expect(await stop(cli)).toEqual({ code: 0, signal: null })
  }, 60_000)
})
