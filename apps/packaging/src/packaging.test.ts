// The publishable packages as a user gets them: `pnpm pack` each one, check what the tarballs
// hold and what their manifests say, then install the tarballs with npm into a new project and
// run a Hono proxy, an `export default { fetch }` module and `npx wsgiproxy --help` from there,
// and type-check an import of every entry with TypeScript's node10 and nodenext resolution.
import { execFile, spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { IncomingHttpHeaders, Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { buildStale } from '@wsgiproxy/test-kit/build-dist'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'

const execFileAsync = promisify(execFile)
const workspaceRoot = fileURLToPath(new URL('../../..', import.meta.url))

type ExportsTree = string | { [condition: string]: ExportsTree }

interface Manifest {
  name: string
  version: string
  private?: boolean
  description?: string
  keywords?: string[]
  homepage?: string
  bugs?: { url?: string }
  repository?: { type?: string; url?: string; directory?: string }
  license?: string
  engines?: Record<string, string>
  main?: string
  types?: string
  typesVersions?: Record<string, Record<string, string[]>>
  bin?: Record<string, string>
  exports?: ExportsTree
  imports?: ExportsTree
  files?: string[]
  publishConfig?: Record<string, unknown>
  dependencies?: Record<string, string>
  peerDependencies?: Record<string, string>
  devDependencies?: Record<string, string>
}

interface PackageUnderTest {
  /** The folder in the workspace. */
  dir: string
  name: string
  /** The built file whose age decides whether dist/ is stale. */
  entry: string
  /** Files the package ships besides package.json, README.md, CHANGELOG.md, LICENSE and dist/. */
  extraFiles: readonly string[]
  /** The top-level entry fields of its packed manifest. */
  entryFields: Pick<Manifest, 'main' | 'types' | 'bin'>
}

const LIBRARY: Pick<PackageUnderTest, 'entry' | 'extraFiles' | 'entryFields'> = {
  entry: 'index.js',
  extraFiles: [],
  entryFields: { main: './dist/index.js', types: './dist/index.d.ts' },
}

/** The published packages, each after the ones it depends on. */
const PACKAGES: readonly PackageUnderTest[] = [
  { dir: 'packages/core', name: '@wsgiproxy/core', ...LIBRARY },
  { dir: 'packages/node', name: '@wsgiproxy/node', ...LIBRARY },
  { dir: 'packages/hono', name: '@wsgiproxy/hono', ...LIBRARY },
  {
    dir: 'apps/cli',
    name: '@wsgiproxy/cli',
    entry: 'main.js',
    // The config file's JSON Schema, an export of the CLI (`@wsgiproxy/cli/schema.json`).
    extraFiles: ['schema.json'],
    entryFields: { bin: { wsgiproxy: './dist/main.js' } },
  },
]

interface Packed {
  /** The .tgz file. */
  tarball: string
  /** Paths inside the tarball, without the leading `package/`. */
  files: string[]
  /** The manifest in the tarball. */
  manifest: Manifest
  /** The manifest in the workspace. */
  source: Manifest
  /** Where the tarball was unpacked (its `package/` folder). */
  unpacked: string
}

let scratch = ''
const packed = new Map<string, Packed>()

function packedOf(name: string): Packed {
  const found = packed.get(name)
  if (found === undefined) throw new Error(`${name} was not packed`)
  return found
}

/** The ranges of a dependency list that name a package of this workspace. */
function ours(ranges: Record<string, string> = {}): [string, string][] {
  return Object.entries(ranges).filter(([name]) => name.startsWith('@wsgiproxy/'))
}

async function readJson<T>(path: string): Promise<T> {
  return JSON.parse(await readFile(path, 'utf8')) as T
}

/** Every path in an exports/imports tree. */
function targetsOf(tree: ExportsTree | undefined): string[] {
  if (tree === undefined) return []
  if (typeof tree === 'string') return [tree]
  return Object.values(tree).flatMap(targetsOf)
}

/** An exports/imports tree without the workspace's `@wsgiproxy/source` condition. */
function withoutSourceCondition(tree: ExportsTree): ExportsTree {
  if (typeof tree === 'string') return tree
  const entries = Object.entries(tree)
    .filter(([condition]) => condition !== '@wsgiproxy/source')
    .map(([condition, inner]) => [condition, withoutSourceCondition(inner)] as const)
  const only = entries.length === 1 ? entries[0] : undefined
  return only !== undefined && only[0] === 'default' ? only[1] : Object.fromEntries(entries)
}

beforeAll(async () => {
  // The root `pnpm test` builds (from an empty dist/) before Vitest; alone, build what is stale.
  buildStale(PACKAGES.map(({ dir, entry }) => [dir, entry] as const))
  scratch = await mkdtemp(join(tmpdir(), 'wsgiproxy-packaging-'))
  for (const pkg of PACKAGES) {
    const cwd = join(workspaceRoot, pkg.dir)
    const args = ['pack', '--pack-destination', scratch, '--json']
    const { stdout } = await execFileAsync('pnpm', args, { cwd })
    const report = JSON.parse(stdout) as { filename: string; files: { path: string }[] }
    const unpackInto = join(scratch, pkg.name.replace('/', '__'))
    await mkdir(unpackInto)
    await execFileAsync('tar', ['-xzf', report.filename, '-C', unpackInto])
    const unpacked = join(unpackInto, 'package')
    packed.set(pkg.name, {
      tarball: report.filename,
      files: report.files.map((file) => file.path).toSorted(),
      manifest: await readJson<Manifest>(join(unpacked, 'package.json')),
      source: await readJson<Manifest>(join(cwd, 'package.json')),
      unpacked,
    })
  }
})

afterAll(async () => {
  if (scratch !== '') await rm(scratch, { recursive: true, force: true })
})

describe('pnpm pack', () => {
  it.each(PACKAGES)(
    'packs only package.json, README.md, CHANGELOG.md, LICENSE and dist/ of $name',
    (pkg) => {
      const { files } = packedOf(pkg.name)
      const allowed = new Set([
        'package.json',
        'README.md',
        'CHANGELOG.md',
        'LICENSE',
        ...pkg.extraFiles,
      ])
      expect(files.filter((file) => !allowed.has(file) && !file.startsWith('dist/'))).toEqual([])
      expect(files).toEqual(expect.arrayContaining([...allowed]))
      expect(files.filter((file) => file.startsWith('dist/')).length).toBeGreaterThan(0)
      // Tests, fixtures and maps pointing at the src/ that is not shipped.
      expect(
        files.filter((file) => /\.test\.|(^|\/)(src|test|fixtures?)\/|\.map$/.test(file)),
      ).toEqual([])
    },
  )

  it.each(PACKAGES)('packs no file in dist/ of $name that its src/ does not build', (pkg) => {
    const root = join(workspaceRoot, pkg.dir)
    const orphans = packedOf(pkg.name)
      .files.filter((file) => file.startsWith('dist/'))
      .filter((file) => {
        const source = file.replace(/^dist\//, 'src/').replace(/(\.d)?\.js$|\.d\.ts$/, '.ts')
        return !source.endsWith('.ts') || !existsSync(join(root, source))
      })
    // A file left from an earlier build (`pnpm build` empties dist/ first).
    expect(orphans, `run \`pnpm build\` before packing ${pkg.name}`).toEqual([])
  })

  it.each(PACKAGES)(
    'writes real versions and the registry fields into the manifest of $name',
    (pkg) => {
      const { manifest } = packedOf(pkg.name)
      expect(JSON.stringify(manifest)).not.toContain('workspace:')
      expect(manifest.private).toBeUndefined()
      expect(manifest.version).toMatch(/^0\.\d+\.\d+$/)
      expect(manifest.description).toEqual(expect.any(String))
      expect(manifest.license).toBe('MIT')
      expect(manifest.keywords?.length).toBeGreaterThan(0)
      expect(manifest.homepage).toMatch(/^https:\/\//)
      expect(manifest.bugs?.url).toMatch(/^https:\/\//)
      expect(manifest.repository).toEqual({
        type: 'git',
        url: 'git+https://github.com/wsgiproxy/wsgiproxy.git',
        directory: pkg.dir,
      })
      expect(manifest.engines?.['node']).toMatch(/^>=\d/)
      expect(manifest.publishConfig).toEqual({ access: 'public' })
      const { main, types, bin } = manifest
      expect(JSON.parse(JSON.stringify({ main, types, bin }))).toEqual(pkg.entryFields)
      // The workspace's own packages at the versions packed alongside (workspace:* and :^).
      const versionOf = (name: string): string => packedOf(name).manifest.version
      expect(ours(manifest.dependencies)).toEqual(
        ours(manifest.dependencies).map(([name]) => [name, versionOf(name)]),
      )
      expect(ours(manifest.peerDependencies)).toEqual(
        ours(manifest.peerDependencies).map(([name]) => [name, `^${versionOf(name)}`]),
      )
    },
  )

  it.each(PACKAGES)('points every entry point of $name at a file in the tarball', (pkg) => {
    const { manifest, unpacked } = packedOf(pkg.name)
    const targets = [
      ...targetsOf(manifest.exports),
      ...targetsOf(manifest.imports),
      ...Object.values(manifest.bin ?? {}),
      ...Object.values(manifest.typesVersions ?? {}).flatMap((paths) =>
        Object.values(paths).flat(),
      ),
      ...[manifest.main, manifest.types].filter((target) => target !== undefined),
    ]
    expect(targets.length).toBeGreaterThan(0)
    expect(targets.filter((target) => !existsSync(join(unpacked, target)))).toEqual([])
  })

  it.each(PACKAGES)(
    'publishes the exports and imports of $name without the source condition',
    (pkg) => {
      const { manifest, source } = packedOf(pkg.name)
      expect(JSON.stringify(manifest)).not.toContain('@wsgiproxy/source')
      expect(manifest.exports).toEqual(source.exports && withoutSourceCondition(source.exports))
      expect(manifest.imports).toEqual(source.imports && withoutSourceCondition(source.imports))
    },
  )
})

describe('the tarballs installed with npm', () => {
  let project = ''
  let upstream: Server | undefined
  let upstreamUrl = ''
  const received: { method: string; url: string; headers: IncomingHttpHeaders; body: string }[] = []
  const children = new Set<ChildProcess>()

  beforeAll(async () => {
    project = join(scratch, 'project')
    await mkdir(project)
    await writeFile(
      join(project, 'package.json'),
      `${JSON.stringify({ name: 'consumer', private: true, type: 'module' }, null, 2)}\n`,
    )
    // The versions the workspace is tested with.
    const hono = await readJson<Manifest>(join(workspaceRoot, 'packages/hono/package.json'))
    const root = await readJson<Manifest>(join(workspaceRoot, 'package.json'))
    const pinned = (manifest: Manifest, name: string): string =>
      `${name}@${manifest.devDependencies?.[name] ?? 'latest'}`
    await execFileAsync(
      'npm',
      [
        'install',
        '--no-audit',
        '--no-fund',
        '--loglevel=error',
        '--prefer-offline',
        ...PACKAGES.map((pkg) => packedOf(pkg.name).tarball),
        pinned(hono, 'hono'),
        pinned(hono, '@hono/node-server'),
        pinned(root, '@types/node'),
      ],
      { cwd: project, env: npmEnv(), maxBuffer: 16 * 1024 * 1024 },
    )

    const server = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (chunk: Buffer) => chunks.push(chunk))
      req.on('end', () => {
        received.push({
          method: req.method ?? '',
          url: req.url ?? '',
          headers: req.headers,
          body: Buffer.concat(chunks).toString(),
        })
        res.setHeader('content-type', 'text/plain')
        res.end(`upstream saw ${req.method} ${req.url}`)
      })
    })
    upstream = server
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    upstreamUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })

  afterEach(() => {
    for (const child of children) {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid, 'SIGKILL')
      }
    }
    children.clear()
    received.length = 0
  })

  afterAll(async () => {
    upstream?.closeAllConnections()
    await new Promise((resolve) => upstream?.close(resolve))
  })

  /** Runs `node <file>` in the project and resolves with its URL once it printed its port. */
  async function startProgram(file: string): Promise<string> {
    const child = spawn(process.execPath, [file], {
      cwd: project,
      env: { ...process.env, BACKEND_URL: `${upstreamUrl}/back` },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    children.add(child)
    let output = ''
    return await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${file} printed no port: ${output}`)),
        30_000,
      )
      const read = (chunk: Buffer): void => {
        output += chunk.toString()
        const port = /listening on (\d+)/.exec(output)?.[1]
        if (port === undefined) return
        clearTimeout(timer)
        resolve(`http://127.0.0.1:${port}`)
      }
      child.stdout.on('data', read)
      child.stderr.on('data', read)
      child.once('exit', (code) => {
        clearTimeout(timer)
        reject(new Error(`${file} exited with ${code}: ${output}`))
      })
    })
  }

  it('forwards a route of a Hono app with proxy from @wsgiproxy/hono on @hono/node-server', async () => {
    await writeFile(
      join(project, 'hono-app.js'),
      `import { serve } from '@hono/node-server'
import { proxy } from '@wsgiproxy/hono'
import { Hono } from 'hono'

const app = new Hono()
app.get('/', (c) => c.text('front page, served by Hono'))
app.all('/api/*', proxy({ href: process.env.BACKEND_URL }))
serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, (info) => {
  console.log(\`listening on \${info.port}\`)
})
`,
    )
    const url = await startProgram('hono-app.js')

    const front = await fetch(`${url}/`)
    expect(await front.text()).toBe('front page, served by Hono')
    const response = await fetch(`${url}/api/users/1?x=1`, { headers: { 'x-test': 'yes' } })
    expect(response.status).toBe(200)
    expect(await response.text()).toBe('upstream saw GET /back/users/1?x=1')
    expect(received).toHaveLength(1)
    expect(received[0]?.headers).toMatchObject({
      'x-test': 'yes',
      'x-forwarded-script-name': '/api',
      'x-traversal-path': '/back',
    })
  })

  it('forwards with an export default { fetch } module served by @hono/node-server', async () => {
    await writeFile(
      join(project, 'handler.js'),
      `import { createProxyApp, toFetchHandler } from '@wsgiproxy/core'

export default { fetch: toFetchHandler(createProxyApp({ href: process.env.BACKEND_URL })) }
`,
    )
    await writeFile(
      join(project, 'serve-handler.js'),
      `import { serve } from '@hono/node-server'
import handler from './handler.js'

serve({ fetch: handler.fetch, hostname: '127.0.0.1', port: 0 }, (info) => {
  console.log(\`listening on \${info.port}\`)
})
`,
    )
    const url = await startProgram('serve-handler.js')

    const response = await fetch(`${url}/some/path`, { method: 'POST', body: 'hello' })
    expect(response.status).toBe(200)
    expect(await response.text()).toBe('upstream saw POST /back/some/path')
    expect(received).toMatchObject([{ method: 'POST', url: '/back/some/path', body: 'hello' }])
  })

  it('runs npx wsgiproxy --help', async () => {
    // --no-install: never fetch a package named wsgiproxy from the registry instead.
    const { stdout } = await execFileAsync('npx', ['--no-install', 'wsgiproxy', '--help'], {
      cwd: project,
      env: npmEnv(),
    })
    expect(stdout).toMatch(/^usage: wsgiproxy <command> \[options\]/)
    expect(stdout).toContain('serve ')
    // The version comes from the installed package.json, next to dist/ in the tarball.
    const version = await execFileAsync('npx', ['--no-install', 'wsgiproxy', '--version'], {
      cwd: project,
      env: npmEnv(),
    })
    expect(version.stdout).toBe(`wsgiproxy ${packedOf('@wsgiproxy/cli').manifest.version}\n`)
  })

  it.each(['node10', 'nodenext'])(
    'type-checks an import of every entry with moduleResolution %s',
    async (resolution) => {
      const specifiers = PACKAGES.filter((pkg) => pkg.name !== '@wsgiproxy/cli').flatMap((pkg) =>
        Object.keys(packedOf(pkg.name).manifest.exports as Record<string, ExportsTree>)
          .filter((subpath) => subpath !== './package.json')
          .map((subpath) => `${pkg.name}${subpath.slice(1)}`),
      )
      const source = [
        ...specifiers.map((specifier, i) => `import * as entry${i} from '${specifier}'`),
        `import { createProxyApp, toFetchHandler } from '@wsgiproxy/core'`,
        `import { proxy } from '@wsgiproxy/hono'`,
        `import { Hono } from 'hono'`,
        '',
        `export const entries = [${specifiers.map((_, i) => `entry${i}`).join(', ')}]`,
        `const handler = { fetch: toFetchHandler(createProxyApp({ href: 'http://127.0.0.1:8081' })) }`,
        `export const response: Promise<Response> = handler.fetch(new Request('http://localhost/'))`,
        `export const app = new Hono().all('/api/*', proxy({ href: 'http://127.0.0.1:8081' }))`,
        '',
      ].join('\n')
      await writeFile(join(project, `check-${resolution}.ts`), source)
      const compilerOptions =
        resolution === 'node10'
          ? // node10 is deprecated in TypeScript 6 and still what older projects use.
            { module: 'esnext', moduleResolution: 'node10', ignoreDeprecations: '6.0' }
          : { module: 'nodenext', moduleResolution: 'nodenext' }
      await writeFile(
        join(project, `tsconfig.${resolution}.json`),
        JSON.stringify({
          compilerOptions: {
            ...compilerOptions,
            target: 'es2023',
            lib: ['es2023', 'dom'],
            types: ['node'],
            strict: true,
            noEmit: true,
            // Our declarations are checked too, as the user's compiler sees them.
            skipLibCheck: false,
          },
          files: [`check-${resolution}.ts`],
        }),
      )
      // The workspace's TypeScript, the version the packages are built with.
      const tsc = join(workspaceRoot, 'node_modules', 'typescript', 'bin', 'tsc')
      const result = await execFileAsync(
        process.execPath,
        [tsc, '-p', `tsconfig.${resolution}.json`],
        {
          cwd: project,
        },
      ).catch((error: { stdout?: string }) => ({ stdout: error.stdout ?? String(error) }))
      expect(result.stdout).toBe('')
    },
  )
})

/**
 * The environment for npm: without the `npm_*` variables pnpm sets for the scripts it runs
 * (npm warns about the ones it does not know), keeping those that say where the registry is.
 */
function npmEnv(): NodeJS.ProcessEnv {
  const keep =
    /^npm_config_(registry|cache|userconfig|proxy|https_proxy|noproxy|cafile|strict_ssl)$/i
  return Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !/^npm_/i.test(key) || keep.test(key)),
  )
}
