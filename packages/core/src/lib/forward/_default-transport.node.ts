// Node's default transport (the `node` condition of `#default-transport`): undici, which adds no
// header the client did not send (Node's fetch adds `user-agent`, `accept-language`,
// `sec-fetch-mode`, `accept-encoding`), sends `Host` as given and streams uploads. One pool for the
// process, loaded on the first request so that importing core does not load undici; its idle
// sockets are unreferenced, so it never keeps a process alive.
import { subscribeToCancellation } from './cancellation.ts'
import type { AppResponse, OutboundRequest, Transport } from '../types.ts'

let shared: Transport | undefined
let loading: Promise<Transport> | undefined

async function load(): Promise<Transport> {
  const { undiciTransport } = await import('../node/undici-transport.ts')
  shared = undiciTransport()
  return shared
}

const send = subscribeToCancellation((outbound: OutboundRequest): Promise<AppResponse> =>
  shared !== undefined
    ? shared(outbound)
    : (loading ??= load()).then((transport) => transport(outbound)),
)

/**
 * The transport a forwarding app uses when none is given.
 *
 * @returns the process's shared undici transport (a keep-alive pool per upstream origin)
 */
export function defaultTransport(): Transport {
  return send
}
