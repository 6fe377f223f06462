// The servers of the pool workloads, in front of three upstreams: this project's node listener
// with a pool (both balancing strategies), the same listener with one of the three (so the cost of
// the pool layer is a ratio within one run), and the round robin an http-proxy user writes today.
import { Agent as HttpAgent, createServer } from 'node:http'
import { listen, onHttpProxyError, startNodeListener } from './servers.ts'
import type { ServerInfo } from './servers.ts'

/** The servers of the pool workloads, in table order. */
export const POOL_SERVERS: readonly ServerInfo[] = [
  {
    id: 'pool-wsgiproxy-node',
    label: 'wsgiproxy node listener, pool of 3 (least-outstanding)',
    pool: true,
    start: (upstreams) => startNodeListener({ href: upstreams }),
  },
  {
    id: 'pool-wsgiproxy-node-rr',
    label: 'wsgiproxy node listener, pool of 3 (round-robin)',
    pool: true,
    start: (upstreams) => startNodeListener({ href: upstreams, balance: 'round-robin' }),
  },
  {
    id: 'pool-wsgiproxy-node-single',
    label: 'wsgiproxy node listener, 1 of the 3 upstreams (no pool)',
    pool: true,
    start: ([first]) => startNodeListener({ href: first }),
  },
  {
    id: 'pool-http-proxy-rr',
    label: 'http-proxy 1.18.1, hand-written round robin over 3',
    pool: true,
    start: async (upstreams) => {
      const { default: httpProxy } = await import('http-proxy')
      const proxy = httpProxy.createProxyServer({
        agent: new HttpAgent({ keepAlive: true }),
        xfwd: true,
      })
      proxy.on('error', onHttpProxyError)
      const origins = upstreams.map((upstream) => upstream.origin)
      let next = 0
      return listen(
        createServer((req, res) => {
          const target = origins[next] as string
          next = (next + 1) % origins.length
          proxy.web(req, res, { target })
        }),
      )
    },
  },
]
