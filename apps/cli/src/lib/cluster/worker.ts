// A worker process of `serve --workers`: it waits for its setup from the main process, serves
// those routes on the port the workers share (the cluster hands it connections), leases the
// backends of spawn routes from the main process, and drains when told. It exits when the main
// process goes (Node's cluster ends a worker whose channel closes).
import type { SpawnerLease } from '@wsgiproxy/node'
import type { LocalState } from '../admin/admin-server.ts'
import { answerAdmin } from '../admin/cluster-admin.ts'
import { CliError, EXIT_RUNTIME } from '../errors.ts'
import { serveUntilSignal } from '../serve-until-signal.ts'
import { buildServeApp } from '../serve-app.ts'
import { fromLeaseFailure, isOurs } from './messages.ts'
import type { ToPrimary, ToWorker, WorkerSetup } from './messages.ts'

/**
 * Runs this process as a worker of `serve --workers`.
 *
 * @returns the exit status (0 after a drain; on a failed start, the status the command would
 * have, after telling the main process why)
 */
export async function runServeWorker(): Promise<number> {
  const leases = createLeaseClient()
  let drain: ((why: 'reload' | 'stop') => void) | undefined
  const drained = new Promise<'reload' | 'stop'>((resolve) => {
    drain = resolve
  })
  // What this worker knows of itself once it serves, for the main process's admin questions.
  let adminState: LocalState | undefined
  const setup = new Promise<WorkerSetup>((resolve) => {
    process.on('message', (message: unknown) => {
      if (!isOurs(message)) return
      const ours = message as ToWorker
      if (ours.type === 'wsgiproxy:setup') resolve(ours.setup)
      else if (ours.type === 'wsgiproxy:drain') drain?.(ours.why)
      else if (ours.type === 'wsgiproxy:admin') void answerAdmin(ours, adminState, send)
      else leases.receive(ours)
    })
  })
  // Messages sent before this process listened for them are lost: ask for the setup now.
  send({ type: 'wsgiproxy:hello' })
  const { listen, format, upgrade, drainTimeout, tracing, admin, routes } = await setup
  try {
    return await serveUntilSignal({
      command: 'serve',
      listen,
      format,
      upgrade,
      drainTimeout,
      tracing,
      build: (resources) => buildServeApp(routes, resources),
      worker: {
        lease: leases.lease,
        drain: drained,
        listening: (url) => send({ type: 'wsgiproxy:listening', url }),
        draining: () => send({ type: 'wsgiproxy:draining' }),
        admin: admin
          ? (state) => {
              adminState = state
            }
          : undefined,
      },
    })
  } catch (error) {
    const exitCode = error instanceof CliError ? error.exitCode : EXIT_RUNTIME
    send({
      type: 'wsgiproxy:failed',
      message: error instanceof Error ? error.message : String(error),
      exitCode,
    })
    return exitCode
  }
}

function send(message: ToPrimary): void {
  if (process.connected) process.send?.(message)
}

/** Leases over the channel. */
interface LeaseClient {
  lease(key: string, signal: AbortSignal | undefined): Promise<SpawnerLease>
  receive(message: ToWorker): void
}

function createLeaseClient(): LeaseClient {
  let last = 0
  const pending = new Map<
    number,
    { resolve: (lease: SpawnerLease) => void; reject: (error: unknown) => void }
  >()
  return {
    lease: (key, signal) =>
      new Promise<SpawnerLease>((resolve, reject) => {
        if (signal?.aborted === true) return reject(signal.reason)
        const id = ++last
        const onAbort = (): void => {
          // The main process releases a lease it granted meanwhile.
          pending.delete(id)
          send({ type: 'wsgiproxy:lease-abort', id })
          reject(signal?.reason)
        }
        signal?.addEventListener('abort', onAbort, { once: true })
        pending.set(id, {
          resolve: (lease) => {
            signal?.removeEventListener('abort', onAbort)
            resolve(lease)
          },
          reject: (error) => {
            signal?.removeEventListener('abort', onAbort)
            reject(error)
          },
        })
        send({ type: 'wsgiproxy:lease', id, key })
      }),
    receive: (message) => {
      if (message.type !== 'wsgiproxy:leased' && message.type !== 'wsgiproxy:lease-failed') return
      const waiting = pending.get(message.id)
      if (waiting === undefined) return
      pending.delete(message.id)
      if (message.type === 'wsgiproxy:lease-failed') {
        waiting.reject(fromLeaseFailure(message.error))
        return
      }
      const { id, pid, host, port } = message
      let released = false
      waiting.resolve({
        pid,
        host,
        port,
        release: () => {
          if (released) return
          released = true
          send({ type: 'wsgiproxy:release', id })
        },
      })
    },
  }
}
