import { describeRuntime } from './test/runtime-suite.ts'

describeRuntime('Bun (bun run), the default transport (fetch)', 'bun')
