// The two parts of undici the transport uses, each loaded from its own file. undici's index loads
// every part it has (fetch, WebSocket, caches, mocks, proxies): about 9 MB more of a process at
// rest for nothing this project calls. undici is pinned to one exact version in package.json, so
// these paths are fixed; the types still come from undici's index.
import { createRequire } from 'node:module'
import type { Agent as UndiciAgent, buildConnector as UndiciBuildConnector } from 'undici'

const require = createRequire(import.meta.url)

/** undici's `Agent`, the same class `import { Agent } from 'undici'` gives. */
export const Agent = require('undici/lib/dispatcher/agent.js') as typeof UndiciAgent
/** An `Agent` instance. */
export type Agent = UndiciAgent

/** undici's `buildConnector`, the same function `import { buildConnector } from 'undici'` gives. */
export const buildConnector = require('undici/lib/core/connect.js') as typeof UndiciBuildConnector
