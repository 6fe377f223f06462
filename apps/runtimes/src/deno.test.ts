import { describeRuntime } from './test/runtime-suite.ts'

describeRuntime('Deno (deno serve), fetchTransport', 'deno')
