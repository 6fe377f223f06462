// The app of a server whose config can be replaced while it serves (a reload): each request goes
// to the newest config's app and stays counted with that config until its response body (or
// upgraded connection) ends; a replaced config's resources (pools, key file watchers, spawners no
// newer route took over) are closed once its last request has ended, or after the drain time.
import { problemResponse } from '@wsgiproxy/core'
import type {
  AppResponse,
  Environ,
  EnvironApp,
  UpgradableApp,
  UpgradeTarget,
} from '@wsgiproxy/core'
import { isAppResponse, onBodyEnd } from '@wsgiproxy/core/adapter'
import { closeResources } from './apps.ts'
import type { Resources } from './apps.ts'

/** One config's app and what it owns. */
export interface Generation {
  readonly app: EnvironApp | UpgradableApp
  readonly resources: Resources
}

interface Serving extends Generation {
  inFlight: number
  // Called when inFlight drops to 0 once the generation has been replaced.
  onIdle: (() => void) | undefined
}

/** The current config's app, replaceable; see {@link createGenerations}. */
export interface Generations {
  /** The app to serve: forwards to the current generation. */
  readonly app: UpgradableApp
  /** The current generation's resources. */
  readonly current: Resources
  /** The current generation's number: 1 at start, one more per replacement. */
  readonly number: number
  /**
   * Sends new requests to `next`; resolves once the replaced generation's requests have ended
   * (or `drainTimeout` passed) and its resources are closed (the shared transport stays open).
   */
  replace(next: Generation, drainTimeout: number): Promise<void>
  /** Waits for the replacements in progress. */
  settled(): Promise<void>
}

/**
 * An app whose generation can be replaced while it serves.
 *
 * @param first - the app and resources of the config read at start
 * @returns the replaceable app
 */
export function createGenerations(first: Generation): Generations {
  let current: Serving = { ...first, inFlight: 0, onIdle: undefined }
  let number = 1
  const replacing = new Set<Promise<void>>()
  const take = (): { generation: Serving; done: () => void } => {
    const generation = current
    generation.inFlight++
    let ended = false
    const done = (): void => {
      if (ended) return
      ended = true
      if (--generation.inFlight === 0) generation.onIdle?.()
    }
    return { generation, done }
  }
  const app = async (environ: Environ): Promise<AppResponse> => {
    const { generation, done } = take()
    let response: AppResponse
    try {
      response = await generation.app(environ)
    } catch (error) {
      done()
      throw error
    }
    if (response.body === null) {
      done()
      return response
    }
    return { ...response, body: onBodyEnd(response.body, done) }
  }
  app.prepareUpgrade = async (environ: Environ): Promise<UpgradeTarget | AppResponse> => {
    const { generation, done } = take()
    const target = generation.app
    if (!('prepareUpgrade' in target)) {
      done()
      return problemResponse(501, 'this route does not forward Upgrade requests')
    }
    let prepared: UpgradeTarget | AppResponse
    try {
      prepared = await target.prepareUpgrade(environ)
    } catch (error) {
      done()
      throw error
    }
    // An upgraded connection belongs to its generation until the client connection closes.
    const signal = environ['wsgiproxy.signal']
    if (isAppResponse(prepared) || signal === undefined || signal.aborted) done()
    else signal.addEventListener('abort', done, { once: true })
    return prepared
  }
  const replace = (next: Generation, drainTimeout: number): Promise<void> => {
    const old = current
    current = { ...next, inFlight: 0, onIdle: undefined }
    number++
    const drained = new Promise<void>((resolve) => {
      if (old.inFlight === 0) return resolve()
      const timer = setTimeout(resolve, drainTimeout)
      old.onIdle = () => {
        clearTimeout(timer)
        resolve()
      }
    })
    const run = drained.then(() => closeResources(old.resources, { transport: false }))
    replacing.add(run)
    void run.finally(() => replacing.delete(run))
    return run
  }
  return {
    app,
    get current() {
      return current.resources
    },
    get number() {
      return number
    },
    replace,
    settled: async () => {
      await Promise.allSettled(replacing)
    },
  }
}
