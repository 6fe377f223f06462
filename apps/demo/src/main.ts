// `pnpm start`: runs the demo until Ctrl-C.
import { startDemo } from './demo.ts'

const port = process.env['PORT'] === undefined ? 8080 : Number(process.env['PORT'])
const demo = await startDemo({
  port,
  ...(process.env['DEMO_KEY_FILE'] === undefined ? {} : { keyFile: process.env['DEMO_KEY_FILE'] }),
  ...(process.env['DEMO_IDLE_MS'] === undefined
    ? {}
    : { idleTimeout: Number(process.env['DEMO_IDLE_MS']) }),
})
console.log(`wsgiproxy demo: open ${demo.url}   (Ctrl-C stops the front and its backends)`)

let stopping = false
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) return
    stopping = true
    void demo.close().then(() => process.exit(0))
  })
}
