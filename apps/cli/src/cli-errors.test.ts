// Usage and listen errors as a user meets them: one line that says what is wrong and what to type
// instead, the exit status, and no stack trace.
import { spawn } from 'node:child_process'
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { existsSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import type { AddressInfo, Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { listenProblem } from './lib/listen.ts'
import { BIN, cleanup, runCli, startCli } from './test/run-cli.ts'
import type { CliResult } from './test/run-cli.ts'

// The unprivileged user a root test run drops to, to meet EACCES.
const NOBODY = 65534
const SERVING = ['serve', 'proxy', 'spawn', 'forward', 'echo'] as const

let dir: string
const servers = new Set<Server>()
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wsgiproxy-cli-errors-'))
})
afterEach(async () => {
  await cleanup()
  await Promise.all([...servers].map((server) => new Promise((resolve) => server.close(resolve))))
  servers.clear()
  await rm(dir, { recursive: true, force: true })
})

/** A port a real server holds on 127.0.0.1. */
async function occupiedPort(): Promise<number> {
  const server = createServer()
  servers.add(server)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as AddressInfo).port
}

/** The arguments that make `command` serve with `listen`, given the files in `dir`. */
function serving(command: (typeof SERVING)[number], listen: string[]): string[] {
  switch (command) {
    case 'serve':
      return ['serve', '--config', join(dir, 'echo.json'), ...listen]
    case 'proxy':
      return ['proxy', 'http://127.0.0.1:9', ...listen]
    case 'spawn':
      return ['spawn', ...listen, '--', process.execPath, 'backend.js']
    default:
      return [command, ...listen]
  }
}

/** Runs the command to its end as another user (when the tests run as root). */
function runAs(uid: number | undefined, args: string[]): Promise<CliResult> {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(uid === undefined ? {} : { uid, gid: uid }),
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  return new Promise((resolve, reject) => {
    child.once('error', reject)
    child.once('close', (code) => resolve({ code, stdout, stderr }))
  })
}

describe('wsgiproxy spawn without --', () => {
  it('hints at the form with -- and the line to type when the command has options', async () => {
    const result = await runCli(['spawn', 'python3', '-m', 'http.server', '__PORT__'])
    expect(result.code).toBe(1)
    expect(result.stderr).toBe(
      'wsgiproxy: spawn: "-m" after the command would be read as an option of wsgiproxy; ' +
        'put the command after -- (wsgiproxy spawn [options] -- <command...>): ' +
        'wsgiproxy spawn -- python3 -m http.server __PORT__\n',
    )
  })

  it('keeps the options before the command as its own, and quotes what the shell needs', async () => {
    const result = await runCli(['spawn', '--idle', '5s', 'sh', '-c', "echo 'hi' $PORT"])
    expect(result.code).toBe(1)
    expect(result.stderr).toBe(
      'wsgiproxy: spawn: "-c" after the command would be read as an option of wsgiproxy; ' +
        'put the command after -- (wsgiproxy spawn [options] -- <command...>): ' +
        `wsgiproxy spawn --idle 5s -- sh -c 'echo '\\''hi'\\'' $PORT'\n`,
    )
  })

  it('does not take an option of the command that wsgiproxy also has (--name, -h) as its own', async () => {
    // --listen first: were --name taken as ours, the command would serve instead of failing.
    const name = await runCli(['spawn', '--listen', '127.0.0.1:0', 'app', '--name', 'web'])
    expect(name.code).toBe(1)
    expect(name.stderr).toBe(
      'wsgiproxy: spawn: "--name" after the command would be read as an option of wsgiproxy; ' +
        'put the command after -- (wsgiproxy spawn [options] -- <command...>): ' +
        'wsgiproxy spawn --listen 127.0.0.1:0 -- app --name web\n',
    )
    const help = await runCli(['spawn', 'python3', '-h'])
    expect(help.code).toBe(1)
    expect(help.stdout).toBe('')
    expect(help.stderr).toMatch(/^wsgiproxy: spawn: "-h" after the command would be read as/)
  })

  it('still serves a command without options given without --', async () => {
    const cli = await startCli(['spawn', '--listen', '127.0.0.1:0', process.execPath, 'app.js'])
    expect(cli.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
  })

  it('refuses an empty --name with exit 1', async () => {
    const result = await runCli(['spawn', '--name', '', '--', 'true'])
    expect(result.code).toBe(1)
    expect(result.stderr).toBe(
      'wsgiproxy: --name must not be empty: it names the backend in log lines (got "")\n',
    )
  })
})

describe('wsgiproxy on an address it cannot listen on', () => {
  beforeEach(async () => {
    await writeFile(
      join(dir, 'echo.json'),
      JSON.stringify({ routes: [{ path: '/', type: 'echo' }] }),
    )
  })

  it('says the port is in use and to pass --listen, for every serving command, exit 2', async () => {
    const port = await occupiedPort()
    for (const command of SERVING) {
      const result = await runAs(undefined, serving(command, ['--listen', `127.0.0.1:${port}`]))
      expect({ command, code: result.code, stderr: result.stderr }).toEqual({
        command,
        code: 2,
        stderr: `wsgiproxy: port ${port} is in use on 127.0.0.1; pass --listen host:port (for example --listen 127.0.0.1:9000)\n`,
      })
    }
  })

  it('says to change "listen" in the config file when the port came from there, exit 2', async () => {
    const port = await occupiedPort()
    await writeFile(
      join(dir, 'wsgiproxy.config.json'),
      JSON.stringify({ listen: `127.0.0.1:${port}`, routes: [{ path: '/', type: 'echo' }] }),
    )
    const result = await runCli(['serve'], dir)
    expect(result.code).toBe(2)
    expect(result.stderr).toBe(
      `wsgiproxy: port ${port} is in use on 127.0.0.1; change "listen" in wsgiproxy.config.json or pass --listen host:port (for example 127.0.0.1:9000)\n`,
    )
  })

  it('says an address is not one of this host, exit 2', async () => {
    // 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never an address of a real host.
    const result = await runCli(['echo', '--listen', '192.0.2.1:0'])
    expect(result.code).toBe(2)
    expect(result.stderr).toBe(
      'wsgiproxy: 192.0.2.1 is not an address of this host; pass --listen host:port (for example --listen 127.0.0.1:0, or 0.0.0.0:0 for every address)\n',
    )
  })

  // Privileged ports are a Linux setting (net.ipv4.ip_unprivileged_port_start); where it lets
  // everyone bind port 80 there is no EACCES to meet.
  const unprivilegedStart = existsSync('/proc/sys/net/ipv4/ip_unprivileged_port_start')
    ? Number(readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8'))
    : 0
  it.skipIf(unprivilegedStart <= 80)('says a port below 1024 needs root, exit 2', async () => {
    const root = process.getuid?.() === 0
    // Its working directory, for the user the command runs as.
    await chmod(dir, 0o755)
    const result = await runAs(root ? NOBODY : undefined, ['echo', '--listen', '127.0.0.1:80'])
    expect(result.code).toBe(2)
    expect(result.stderr).toBe(
      'wsgiproxy: port 80 on 127.0.0.1 needs root privileges (ports below 1024 do); pass --listen host:port (for example --listen 127.0.0.1:8080)\n',
    )
  })
})

describe('listenProblem', () => {
  const address = { hostname: '127.0.0.1', port: 8080 }

  it('names the config file to set "listen" in when the address was the default', () => {
    expect(
      listenProblem(
        { code: 'EADDRINUSE' },
        { address, source: { from: 'default', file: 'wsgiproxy.config.json' } },
      ),
    ).toBe(
      'port 8080 is in use on 127.0.0.1; pass --listen host:port (for example --listen 127.0.0.1:9000) or set "listen" in wsgiproxy.config.json',
    )
  })

  it('says a host name does not resolve, and falls back to the code for anything else', () => {
    const flag = { from: 'flag' } as const
    expect(
      listenProblem(
        { code: 'ENOTFOUND' },
        { address: { hostname: 'nohost', port: 80 }, source: flag },
      ),
    ).toBe(
      'cannot resolve the host name "nohost"; pass --listen host:port (for example --listen 127.0.0.1:80, or 0.0.0.0:80 for every address)',
    )
    expect(listenProblem({ code: 'EMFILE' }, { address, source: flag })).toBe(
      'cannot listen on 127.0.0.1:8080: EMFILE',
    )
  })
})

describe('wsgiproxy keygen', () => {
  it('says the folder of --out does not exist, exit 2', async () => {
    const out = join(dir, 'missing', 'keys')
    const result = await runCli(['keygen', '--out', out])
    expect(result.code).toBe(2)
    expect(result.stderr).toBe(
      `wsgiproxy: cannot write ${out}: its folder does not exist (ENOENT); create the folder or choose another --out\n`,
    )
  })
})
