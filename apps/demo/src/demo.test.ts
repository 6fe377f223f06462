// The demo as a user runs it: `node dist/main.js` as a real process, its pages over real sockets,
// the landing page in headless Chromium, and no process left once it is stopped.
import type { ChildProcess } from 'node:child_process'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { send } from '@wsgiproxy/test-kit/servers'

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url))
const CHROMIUM = '/usr/bin/chromium'
const dir = mkdtempSync(join(tmpdir(), 'wsgiproxy-demo-'))
const keyFile = join(dir, 'keys', 'demo.keys')

let demo: ChildProcess
let url = ''
let output = ''

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Backend pids and ports the demo logged (`echo: spawned pid N on port P`). */
function spawned(name: string): Array<{ pid: number; port: number }> {
  const pattern = new RegExp(`^${name}: spawned pid (\\d+) on port (\\d+)$`, 'gm')
  return [...output.matchAll(pattern)].map((m) => ({ pid: Number(m[1]), port: Number(m[2]) }))
}

beforeAll(async () => {
  if (!existsSync(MAIN)) throw new Error('apps/demo is not built: run `pnpm build` first')
  demo = spawn(process.execPath, [MAIN], {
    env: { ...process.env, PORT: '0', DEMO_KEY_FILE: keyFile, DEMO_IDLE_MS: '60000' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  demo.stdout?.setEncoding('utf8')
  demo.stderr?.setEncoding('utf8')
  demo.stderr?.on('data', (text: string) => (output += text))
  url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the demo did not start:\n${output}`)), 15_000)
    demo.stdout?.on('data', (text: string) => {
      output += text
      const match = /open (http:\/\/\S+)/.exec(output)
      if (match?.[1] !== undefined) {
        clearTimeout(timer)
        resolve(match[1])
      }
    })
    demo.once('exit', (code) => reject(new Error(`the demo exited with ${code}:\n${output}`)))
  })
}, 20_000)

afterAll(() => {
  if (demo.exitCode === null && demo.signalCode === null) demo.kill('SIGKILL')
  for (const { pid } of [...spawned('echo'), ...spawned('py')]) {
    if (alive(pid)) process.kill(pid, 'SIGKILL')
  }
  rmSync(dir, { recursive: true, force: true })
})

describe('pnpm start (the demo)', () => {
  it('generated a signing key file readable only by its owner', () => {
    expect(statSync(keyFile).mode & 0o077).toBe(0)
    expect(output).toContain(`generated a signing key in ${keyFile}`)
  })

  it('serves the landing page, with both backends not started yet', async () => {
    const res = await send(url)
    expect(res.status).toBe(200)
    const page = res.body.toString()
    expect(page).toContain('<h1>wsgiproxy demo</h1>')
    expect(page).toMatch(/id="echo-status"><tr><th>state<\/th><td><code>idle<\/code>/)
    expect(spawned('echo')).toEqual([])
  })

  it('starts the Node backend on /echo/, which verified the signature and restored the request', async () => {
    const res = await send(url, {
      path: '/echo/some/path?q=1',
      headers: { accept: 'application/json' },
    })
    expect(res.status).toBe(200)
    const seen = JSON.parse(res.body.toString()) as {
      verified: boolean
      environ: Record<string, string>
    }
    expect(seen.verified).toBe(true)
    expect(seen.environ).toMatchObject({
      SCRIPT_NAME: '/echo',
      PATH_INFO: '/some/path',
      QUERY_STRING: 'q=1',
      REMOTE_ADDR: '127.0.0.1',
      'wsgi.url_scheme': 'http',
    })
    expect(spawned('echo')).toHaveLength(1)
    expect(output).toMatch(/echo: pid \d+ ready in \d+ ms/)
  })

  it('has a backend that refuses a request the front did not sign', async () => {
    const [backend] = spawned('echo')
    const res = await send(`http://127.0.0.1:${backend?.port}`)
    expect(res.status).toBe(401)
  })

  it('starts the Python WSGI backend on /py/, which received the forwarded headers', async () => {
    const res = await send(url, { path: '/py/', headers: { accept: 'application/json' } })
    expect(res.status).toBe(200)
    const seen = JSON.parse(res.body.toString()) as {
      environ: Record<string, string>
      forwarded: Record<string, string>
    }
    expect(seen.forwarded).toMatchObject({
      'X-Forwarded-For': '127.0.0.1',
      'X-Forwarded-Script-Name': '/py',
      'X-Forwarded-Scheme': 'http',
    })
    expect(seen.environ.PATH_INFO).toBe('/')
  })

  it('shows the landing page and the verified echo page in headless Chromium', async () => {
    expect(existsSync(CHROMIUM), 'Chromium is missing: apt-get install -y chromium').toBe(true)
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    })
    try {
      const page = await browser.newPage()
      await page.goto(url)
      expect(await page.title()).toBe('wsgiproxy demo')
      expect(await page.locator('h1').textContent()).toBe('wsgiproxy demo')
      await page.click('#echo-link')
      await page.waitForURL(`${url}echo/`)
      expect(await page.locator('#verified').textContent()).toContain('Signature verified')
      await page.goBack()
      await page.click('#py-link')
      expect(await page.locator('h1').textContent()).toContain('WSGI backend (wsgiref)')
    } finally {
      await browser.close()
    }
  }, 60_000)

  it('stops both backends when it gets SIGTERM', async () => {
    const pids = [...spawned('echo'), ...spawned('py')].map(({ pid }) => pid)
    expect(pids.length).toBeGreaterThanOrEqual(2)
    const exited = new Promise<number | null>((resolve) => demo.once('exit', resolve))
    demo.kill('SIGTERM')
    expect(await exited).toBe(0)
    await expect.poll(() => pids.filter(alive), { timeout: 3_000 }).toEqual([])
  }, 15_000)
})
