// `pnpm start`: runs the demo until Ctrl-C.
import { startDemo } from './demo.ts'

const port = process.env['PORT'] === undefined ? 8000 : Number(process.env['PORT'])
const demo = await startDemo({ port })
console.log(`wsgiproxy demo: front proxy on ${demo.frontUrl} -> example backend ${demo.backendUrl}`)
console.log(`try: curl -i ${demo.frontUrl}hello?name=world   (Ctrl-C stops)`)

let stopping = false
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) return
    stopping = true
    void demo.close().then(() => process.exit(0))
  })
}
