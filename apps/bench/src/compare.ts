// `pnpm bench:compare A B`: two commits of this project side by side in one benchmark run, for
// A/B decisions. Each commit is checked out in a worktree of its own (kept under the system's
// temporary directory, by commit, for the next comparison), installed from the lockfile and
// built; then this checkout's runner measures each chosen server as A builds it and as B builds
// it, rounds interleaved, and prints B / A.
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { fileURLToPath } from 'node:url'
import { compareRows, renderCompareMarkdown } from './lib/compare-report.ts'
import type { RoundRates } from './lib/compare-report.ts'
import type { Cell, Summaries, Workload } from './lib/report.ts'

const USAGE = `usage: pnpm bench:compare A B [options]

  A, B                 git revisions of this repository (a commit, branch or tag), or . for the
                       working tree as it is now (built by pnpm bench:compare)
  --servers a,b        servers to measure as each builds them (default wsgiproxy-node,wsgiproxy-fetch)
  --workloads a,b      workloads (default get-1k-32,get-1k-128,echo-64k,download)
  --reps N, --duration S, --warmup S, --download-mib N, --load wrk|autocannon, --quick
                       as pnpm bench
  --out FILE           where to write the run's JSON

Each revision other than . is checked out once in ${join(tmpdir(), 'wsgiproxy-bench-compare')}/<commit>,
installed from its lockfile and built there; later comparisons reuse it.
`

const ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)))
const MAIN = fileURLToPath(new URL('./main.js', import.meta.url))
const WORKTREES = join(tmpdir(), 'wsgiproxy-bench-compare')

function fail(message: string): never {
  console.error(`bench:compare: ${message}\n\n${USAGE}`)
  process.exit(1)
}

const argv = process.argv.slice(2)
const { values, positionals } = parseArgs({
  args: argv[0] === '--' ? argv.slice(1) : argv,
  allowPositionals: true,
  options: {
    servers: { type: 'string', default: 'wsgiproxy-node,wsgiproxy-fetch' },
    workloads: { type: 'string', default: 'get-1k-32,get-1k-128,echo-64k,download' },
    reps: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    'download-mib': { type: 'string' },
    load: { type: 'string' },
    quick: { type: 'boolean', default: false },
    out: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
})
if (values.help) {
  console.log(USAGE)
  process.exit(0)
}
if (positionals.length !== 2) fail(`expected two revisions, A and B (got ${positionals.length})`)
const [revA, revB] = positionals as [string, string]

const git = (args: readonly string[], cwd = ROOT): string =>
  execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim()

function run(command: string, args: readonly string[], cwd: string): void {
  console.error(`bench:compare: ${command} ${args.join(' ')} (in ${cwd})`)
  execFileSync(command, args, { cwd, stdio: ['ignore', 'inherit', 'inherit'] })
}

/** A revision checked out and built: its root and how the tables name it. */
function prepare(rev: string): { root: string; label: string } {
  if (rev === '.') {
    const head = git(['rev-parse', '--short', 'HEAD'])
    const dirty = git(['status', '--porcelain']) !== ''
    if (!existsSync(join(ROOT, 'apps', 'bench', 'dist', 'serve-one.js'))) {
      fail('the working tree is not built: run pnpm bench:compare from the repository root')
    }
    return { root: ROOT, label: `working tree (${head}${dirty ? ' + changes' : ''})` }
  }
  let sha: string
  try {
    sha = git(['rev-parse', '--verify', '--quiet', `${rev}^{commit}`])
  } catch {
    fail(`${rev} is not a commit of this repository`)
  }
  const root = join(WORKTREES, sha.slice(0, 12))
  if (!existsSync(join(root, 'package.json'))) {
    mkdirSync(WORKTREES, { recursive: true })
    // A stale registration (its directory removed with the temporary files) would refuse the add.
    git(['worktree', 'prune'])
    run('git', ['worktree', 'add', '--detach', root, sha], ROOT)
  }
  if (!existsSync(join(root, 'apps', 'bench', 'dist', 'serve-one.js'))) {
    run('pnpm', ['install', '--frozen-lockfile', '--prefer-offline'], root)
    run('pnpm', ['--filter', '@wsgiproxy/bench...', 'run', 'build'], root)
  }
  return { root, label: `${rev} (${sha.slice(0, 7)})` }
}

const a = prepare(revA)
const b = prepare(revB)
if (a.root === b.root) fail(`${revA} and ${revB} are the same commit`)

const servers = values.servers.split(',').filter((id) => id !== '')
const workloadIds = values.workloads.split(',').filter((id) => id !== '')
const out = resolve(
  values.out ??
    join(
      ROOT,
      'apps',
      'bench',
      'results',
      `compare-${new Date().toISOString().replaceAll(':', '-').replace(/\..*/, '')}.json`,
    ),
)
const passed = (['reps', 'duration', 'warmup', 'download-mib', 'load'] as const).flatMap((name) =>
  values[name] === undefined ? [] : [`--${name}`, values[name] as string],
)
const args = [
  MAIN,
  '--checkouts',
  `A=${a.root},B=${b.root}`,
  '--servers',
  [...servers.map((id) => `${id}@A`), ...servers.map((id) => `${id}@B`)].join(','),
  '--workloads',
  workloadIds.join(','),
  '--out',
  out,
  ...(values.quick ? ['--quick'] : []),
  ...passed,
]
const code = await new Promise<number | null>((done) => {
  const child = spawn(process.execPath, args, { stdio: 'inherit' })
  child.once('exit', done)
})
if (code !== 0) process.exit(code ?? 1)

const result = JSON.parse(readFileSync(out, 'utf8')) as {
  cells: Cell[]
  summaries: Summaries
  workloads: Workload[]
}
const rounds: RoundRates = {}
for (const cell of result.cells) {
  rounds[cell.server] ??= {}
  ;(rounds[cell.server] as Record<string, number[]>)[cell.workload] = cell.samples.map(
    (s) => s.rate,
  )
}
const rows = compareRows(result.summaries, rounds, servers, workloadIds, ['A', 'B'])
process.stdout.write(
  `\nA = ${a.label}, B = ${b.label}\n` + renderCompareMarkdown(rows, ['A', 'B'], result.workloads),
)
