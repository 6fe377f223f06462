import { describeRuntime } from './test/runtime-suite.ts'

describeRuntime('Bun (bun run), fetchTransport', 'bun')
