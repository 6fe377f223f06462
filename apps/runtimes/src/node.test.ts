import { describeRuntime } from './test/runtime-suite.ts'

describeRuntime('Node (@hono/node-server), the default transport (undici)', 'node')
describeRuntime('Node (@hono/node-server), fetchTransport', 'node-fetch')
