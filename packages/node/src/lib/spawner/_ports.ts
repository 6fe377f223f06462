// Ports for spawned backends: asked from the kernel, reserved in this process while in use.
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'

// Ports handed to a backend whose process group has not gone yet. Module-level: every spawner of
// this process shares it, so two spawners never get the same port (get-port keeps a similar lock,
// but only for a few seconds; this one lasts as long as the backend).
const reserved = new Set<number>()

// How often a port another spawner holds may come back from the kernel before we give up.
const MAX_ALLOCATION_TRIES = 20

/** Reserves `port` for a backend; false when this process already reserved it. */
export function reservePort(port: number): boolean {
  if (reserved.has(port)) return false
  reserved.add(port)
  return true
}

/** Releases a port reserved with {@link reservePort} or {@link allocatePort}. */
export function releasePort(port: number): void {
  reserved.delete(port)
}

/** Whether this process has reserved `port` for a live backend. */
export function isReserved(port: number): boolean {
  return reserved.has(port)
}

/**
 * A port the kernel picked (`listen(0)` on 127.0.0.1, read, close), reserved for the caller.
 * Kernel-assigned ports spread over the ephemeral range, so two hosts do not collide the way
 * scanners from a fixed start do (http-party/node-portfinder#150).
 */
export async function kernelPort(): Promise<number> {
  const server = createServer()
  server.unref()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/**
 * Asks `source` for ports until one is not reserved by a live backend of this process, and
 * reserves it.
 */
export async function allocatePort(source: () => number | Promise<number>): Promise<number> {
  for (let tries = 0; tries < MAX_ALLOCATION_TRIES; tries++) {
    const port = await source()
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new RangeError(
        `a port allocator must give a port from 1 to 65535 (got ${String(port)})`,
      )
    }
    if (reservePort(port)) return port
  }
  throw new RangeError(
    `no free port after ${MAX_ALLOCATION_TRIES} tries: every port given is held by another backend of this process`,
  )
}

/**
 * Whether something already listens on `port`: tries to bind it on 127.0.0.1 and on ::1 (a
 * server on a wildcard address blocks both). An address the machine lacks (no IPv6) is skipped.
 */
export async function isPortBusy(port: number): Promise<boolean> {
  for (const host of ['127.0.0.1', '::1']) {
    const busy = await new Promise<boolean>((resolve) => {
      const server = createServer()
      server.unref()
      server.once('error', (error: NodeJS.ErrnoException) => {
        // EADDRNOTAVAIL: no such address here (no IPv6); EACCES: a privileged port the backend
        // may still be allowed to bind.
        resolve(error.code === 'EADDRINUSE')
      })
      server.listen({ port, host, exclusive: true }, () => {
        server.close(() => resolve(false))
      })
    })
    if (busy) return true
  }
  return false
}
