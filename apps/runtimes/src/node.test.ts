import { describeRuntime } from './test/runtime-suite.ts'

describeRuntime('Node (@hono/node-server), fetchTransport', 'node')
describeRuntime('Node (@hono/node-server), undiciTransport', 'node-undici')
