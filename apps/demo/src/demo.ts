import { createServer } from 'node:http'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { serve } from '@hono/node-server'
import { exactProxy, toFetchHandler } from '@wsgiproxy/core'

/** Options of {@link startDemo}. */
export interface DemoOptions {
  /** Port of the front proxy. Default 8000; 0 picks a free one. */
  port?: number
  /** Address of the front proxy. Default `127.0.0.1`. */
  hostname?: string
}

/** The running demo. */
export interface Demo {
  /** The URL to open. */
  frontUrl: string
  /** The example backend the front forwards to. */
  backendUrl: string
  /** Stops both servers. */
  close(): Promise<void>
}

/**
 * Starts an example backend on a free port and a front proxy that forwards every request to it
 * with the exact proxy: the backend answers with the request it received, as JSON.
 *
 * @param options - where the front listens
 * @returns the running demo
 */
export async function startDemo(options: DemoOptions = {}): Promise<Demo> {
  const backend = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const seen = {
        method: req.method,
        url: req.url,
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      }
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' })
      res.end(`${JSON.stringify(seen, null, 2)}\n`)
    })
  })
  await listen(backend, 0, '127.0.0.1')
  const backendPort = (backend.address() as AddressInfo).port

  const proxy = exactProxy()
  const fetch = toFetchHandler((environ) =>
    proxy({
      ...environ,
      SERVER_NAME: '127.0.0.1',
      SERVER_PORT: String(backendPort),
      // The runtime fetch transport sends the URL's host; say so instead of hiding it.
      HTTP_HOST: `127.0.0.1:${backendPort}`,
    }),
  )
  const hostname = options.hostname ?? '127.0.0.1'
  const front = await new Promise<Server>((resolve) => {
    const server = serve({ fetch, port: options.port ?? 8000, hostname }, () =>
      resolve(server as Server),
    )
  })
  const frontPort = (front.address() as AddressInfo).port
  const host = hostname.includes(':') ? `[${hostname}]` : hostname
  return {
    frontUrl: `http://${host}:${frontPort}/`,
    backendUrl: `http://127.0.0.1:${backendPort}/`,
    close: async () => {
      front.closeAllConnections()
      backend.closeAllConnections()
      await Promise.all([close(front), close(backend)])
    },
  }
}

function listen(server: Server, port: number, hostname: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, hostname, () => resolve())
  })
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()))
}
