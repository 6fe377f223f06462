// The root README's usage snippets: each is an exact copy of a file in src/readme/ (the first test
// checks that the README still holds them verbatim), and each file is run here.
import { spawn } from 'node:child_process'
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { closeAll, send, startUpstream } from '@wsgiproxy/test-kit/servers'

const README = fileURLToPath(new URL('../../../README.md', import.meta.url))
const SNIPPETS = fileURLToPath(new URL('./readme/', import.meta.url))
const CLI = fileURLToPath(new URL('../../cli/dist/main.js', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'wsgiproxy-readme-'))

afterEach(closeAll)
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** An upstream that answers with what it received, and sets BACKEND_URL to it. */
async function backend(): Promise<void> {
  const upstream = await startUpstream((req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ url: req.url, headers: req.headers }))
  })
  process.env['BACKEND_URL'] = `http://127.0.0.1:${upstream.port}`
}

describe('README snippets', () => {
  it.each(['hono-app.ts', 'fetch-handler.ts', 'convert.ts', 'wsgiproxy.config.json'])(
    'holds %s verbatim',
    (file) => {
      const snippet = readFileSync(join(SNIPPETS, file), 'utf8').trim()
      expect(readFileSync(README, 'utf8')).toContain(`\n${snippet}\n\`\`\``)
    },
  )

  it('Hono app: serves its own page and forwards /api/* with the prefix as the script name', async () => {
    await backend()
    const { default: app } = await import('./readme/hono-app.ts')
    expect(await (await app.request('/')).text()).toBe('front page, served by Hono')
    const res = await app.request('/api/users/1?x=1')
    const seen = (await res.json()) as { url: string; headers: Record<string, string> }
    expect(seen.url).toBe('/users/1?x=1')
    expect(seen.headers['x-forwarded-script-name']).toBe('/api')
  })

  it('export default { fetch }: forwards every request to the backend', async () => {
    await backend()
    const { default: handler } = await import('./readme/fetch-handler.ts')
    const res = await handler.fetch(new Request('http://front.test/a/b?c=d'))
    const seen = (await res.json()) as { url: string; headers: Record<string, string> }
    expect(seen.url).toBe('/a/b?c=d')
    expect(seen.headers['x-forwarded-server']).toBe('front.test')
  })

  it('convert: gives the values the comments name', async () => {
    const source = readFileSync(join(SNIPPETS, 'convert.ts'), 'utf8')
    const { toEnviron, toRequest } = await import('@wsgiproxy/core')
    const environ = toEnviron(new Request('https://example.com/api/a%2Fb?x=1'), {
      scriptName: '/api',
    })
    expect(source).toContain("console.log(environ.SCRIPT_NAME) // '/api'")
    expect(environ.SCRIPT_NAME).toBe('/api')
    expect(source).toContain("console.log(environ.PATH_INFO) // '/a/b'")
    expect(environ.PATH_INFO).toBe('/a/b')
    expect(toRequest(environ).url).toBe('https://example.com/api/a%2Fb?x=1')
    await import('./readme/convert.ts')
  })

  it('config file: wsgiproxy serve answers on /echo and starts the /files backend', async () => {
    const config = join(dir, 'wsgiproxy.config.json')
    copyFileSync(join(SNIPPETS, 'wsgiproxy.config.json'), config)
    const cli = spawn(
      process.execPath,
      [CLI, 'serve', '--config', config, '--listen', '127.0.0.1:0'],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    )
    let log = ''
    cli.stderr?.setEncoding('utf8')
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no listening line:\n${log}`)), 10_000)
        cli.stderr?.on('data', (text: string) => {
          log += text
          const match = /listening on (http:\/\/\S+)/.exec(log)
          if (match?.[1] !== undefined) {
            clearTimeout(timer)
            resolve(match[1])
          }
        })
        cli.once('exit', (code) => reject(new Error(`wsgiproxy exited with ${code}:\n${log}`)))
      })
      const echo = await send(url, { path: '/echo/x', headers: { accept: 'application/json' } })
      expect(echo.status).toBe(200)
      expect(echo.body.toString()).toMatch(/"SCRIPT_NAME":\s*"\/echo"/)
      const files = await send(url, { path: '/files/' })
      expect(files.status).toBe(200)
      expect(files.body.toString()).toContain('Directory listing')
      const exited = new Promise<number | null>((resolve) => cli.once('exit', resolve))
      cli.kill('SIGTERM')
      expect(await exited).toBe(0)
    } finally {
      if (cli.exitCode === null && cli.signalCode === null) cli.kill('SIGKILL')
    }
  }, 30_000)
})
