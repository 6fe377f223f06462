// Test support (not built): the Node fast path as an exact proxy to one upstream.
import type { ExactProxyOptions } from '@wsgiproxy/core'
import { exactProxy } from '@wsgiproxy/core'
import type { Running } from './servers.ts'
import { register } from './servers.ts'
import { serve, undiciTransport } from '@wsgiproxy/node'

/**
 * Serves `exactProxy` over `undiciTransport()` on 127.0.0.1 port 0, sending every request to the
 * upstream on `port`; registered so core's `closeAll()` closes the server and the transport.
 */
export async function startNodeExactProxy(
  port: number,
  options: ExactProxyOptions = {},
): Promise<Running> {
  const transport = undiciTransport()
  const proxy = exactProxy({ allow: ['127.0.0.1'], ...options, transport })
  const served = await serve((environ) =>
    proxy({
      ...environ,
      SERVER_NAME: '127.0.0.1',
      SERVER_PORT: String(port),
      HTTP_HOST: `127.0.0.1:${port}`,
    }),
  )
  return register({
    port: served.port,
    origin: `http://127.0.0.1:${served.port}`,
    close: async () => {
      await served.close()
      await transport.close()
    },
  })
}
