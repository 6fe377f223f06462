import { describeRuntime } from './test/runtime-suite.ts'

describeRuntime('Deno (deno serve), the default transport (fetch)', 'deno')
