// `pnpm start`: runs the demo until Ctrl-C.
import type { Demo } from './demo.ts'
import { startDemo } from './demo.ts'

const HOSTNAME = '127.0.0.1'

// Listen for Ctrl-C before anything else: a signal that came before the listener would end the
// process by its default action, which pnpm reports as a failed command.
let signals = 0
let forwarded: (() => void) | undefined
const forward = new Promise<void>((resolve) => {
  forwarded = resolve
})
let demo: Demo | undefined
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    signals += 1
    if (signals === 1 && demo !== undefined) void stop(demo)
    if (signals === 2) forwarded?.()
  })
}

const frontPort = portOf(process.env['PORT'])
try {
  demo = await startDemo({
    port: frontPort,
    hostname: HOSTNAME,
    ...(process.env['DEMO_KEY_FILE'] === undefined
      ? {}
      : { keyFile: process.env['DEMO_KEY_FILE'] }),
    ...(process.env['DEMO_IDLE_MS'] === undefined
      ? {}
      : { idleTimeout: idleOf(process.env['DEMO_IDLE_MS']) }),
  })
} catch (error) {
  const problem = listenProblem(error, frontPort)
  if (problem === undefined) throw error
  fail(problem)
}
if (signals > 0) await stop(demo)
console.log(`wsgiproxy demo: open ${demo.url}   (Ctrl-C stops the front and its backends)`)

async function stop(running: Demo): Promise<never> {
  await running.close()
  // Run by pnpm (which sets npm_lifecycle_event), one Ctrl-C comes twice: from the terminal to
  // the whole process group, and forwarded by pnpm to its child. Had the demo exited before pnpm
  // got to its own SIGINT, pnpm would find its child gone, end itself by SIGINT and report a
  // failed command; so wait for the forwarded one (a second at most).
  if (process.env['npm_lifecycle_event'] !== undefined) {
    await Promise.race([forward, new Promise((resolve) => setTimeout(resolve, 1_000))])
  }
  process.exit(0)
}

function fail(message: string): never {
  console.error(`demo: ${message}`)
  process.exit(1)
}

function portOf(text: string | undefined): number {
  if (text === undefined) return 8080
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) {
    fail(
      `PORT must be a port number 0–65535 (got ${JSON.stringify(text)}); for example PORT=9000 pnpm start`,
    )
  }
  return Number(text)
}

function idleOf(text: string): number {
  const ms = Number(text)
  if (!/^\d+$/.test(text) || ms < 1 || ms > 2_147_483_647) {
    fail(
      `DEMO_IDLE_MS must be whole milliseconds from 1 to 2147483647 (got ${JSON.stringify(text)}); for example DEMO_IDLE_MS=60000 pnpm start`,
    )
  }
  return ms
}

// The one line for an address the front cannot listen on; undefined for any other error.
function listenProblem(error: unknown, port: number): string | undefined {
  const { code, syscall } = error as NodeJS.ErrnoException
  if (syscall !== 'listen' || code === undefined) return undefined
  const other = `set PORT to another port (for example PORT=${port === 9000 ? 9001 : 9000} pnpm start)`
  switch (code) {
    case 'EADDRINUSE':
      return `port ${port} is in use on ${HOSTNAME}; ${other}`
    case 'EACCES':
      return port < 1024
        ? `port ${port} on ${HOSTNAME} needs root privileges (ports below 1024 do); ${other}`
        : `no permission to listen on ${HOSTNAME}:${port}; ${other}`
    default:
      return `cannot listen on ${HOSTNAME}:${port} (${code}); ${other}`
  }
}
