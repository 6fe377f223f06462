import { createSpawner, serve } from '@wsgiproxy/node'

// Any language: the port is in __PORT__ and $PORT. Started by the first request, stopped after
// 10 idle minutes; on SIGINT or SIGTERM its whole process group is killed, then this process ends.
const backend = createSpawner({
  command: 'python3 -m http.server __PORT__ --bind 127.0.0.1',
  idleTimeout: 600_000,
})
const served = await serve(backend.app, { port: Number(process.env.PORT ?? 8000) })
console.log(`listening on ${served.url}`)
