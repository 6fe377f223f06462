// The environ app of a pool: a single spawner's (_requests.ts), except that a request an instance
// failed before answering may be sent once more, to another instance. Every instance's proxy app
// gets `Attempts.hook` as its error hook. While an attempt is in progress that hook records the
// failure instead of answering it (the proxy app then returns a plain problem response, which is
// dropped); the app decides afterwards whether to send again or to answer with the user's hook.
// So the user's `onError` sees each request's final failure once, never an attempt that was sent
// again. Failures after the response headers (a body cut short) go straight to the user's hook.
import type {
  AppResponse,
  Environ,
  ErrorHook,
  UpgradableApp,
  WsgiProxyError,
} from '@wsgiproxy/core'
import { clientCancellation, mayTryElsewhere, TrackedBody } from '@wsgiproxy/core/adapter'
import type { BackendProcess } from './_backend-process.ts'
import { handleUpgrade, trackBody } from './_requests.ts'
import type { Admission } from './_requests.ts'

/** The pool's side of its app. */
export interface PoolAdmission extends Admission {
  /**
   * Another ready instance than `failed`, counted in flight, for sending a failed request again;
   * `undefined` when there is none (the request then gets its failure).
   */
  another(failed: BackendProcess, error: WsgiProxyError): BackendProcess | undefined
  /** The attempts in progress; `attempts.hook` is every instance's error hook. */
  readonly attempts: Attempts
}

/**
 * Whether a request an instance failed may be sent to another one: not when the client has gone;
 * else core's rule for every pool (`mayTryElsewhere`: never connected and the body not read, or a
 * bodiless `GET`, `HEAD` or `OPTIONS` reset before any response header).
 *
 * @param environ - the request as the client sent it
 * @param error - the failure of the attempt
 * @param body - the attempt's request body (which knows whether it was read), or `null`
 * @returns `true` to send the request to another ready instance
 */
export function mayRetryElsewhere(
  environ: Environ,
  error: WsgiProxyError,
  body: TrackedBody | null,
): boolean {
  if (environ['wsgiproxy.signal']?.aborted === true) return false
  if (clientCancellation(environ)?.aborted === true) return false
  return mayTryElsewhere(error, environ.REQUEST_METHOD, body)
}

/** One sending of a request to one instance. */
export class Attempt {
  /** The request as the client sent it (what the user's hook gets). */
  readonly original: Environ
  /**
   * What the instance's proxy app gets: the original, or, for a request with a body, a copy whose
   * `wsgi.input` tells whether it was read. (The copy also hides the body's `destroy()`, which the
   * transport calls on a failed request: the body must stay whole for another attempt.)
   */
  readonly environ: Environ
  /** The failure the instance's proxy app reported before it answered. */
  error: WsgiProxyError | undefined
  #recording = true
  /** The request body as this attempt sends it (it knows whether it was read), or `null`. */
  readonly input: TrackedBody | null = null

  constructor(original: Environ) {
    this.original = original
    const input = original['wsgi.input']
    if (input === null) {
      this.environ = original
    } else {
      this.input = new TrackedBody(input)
      this.environ = { ...original, 'wsgi.input': this.input }
    }
  }

  /** Whether a failure now is recorded (the proxy app has not answered yet). */
  get recording(): boolean {
    return this.#recording
  }

  /** The proxy app answered: later failures (of the body) go to the user's hook. */
  end(): WsgiProxyError | undefined {
    this.#recording = false
    return this.error
  }
}

/** The attempts of a pool's requests, and the error hook every instance's proxy app gets. */
export class Attempts {
  /** The error hook of the instances' proxy apps. */
  readonly hook: ErrorHook<Environ>
  readonly #open = new WeakMap<Environ, Attempt>()

  /** @param final - the user's `onError` (or the default one), for failures that are final */
  constructor(final: ErrorHook<Environ>) {
    this.hook = (error, environ) => {
      const attempt = this.#open.get(environ)
      if (attempt === undefined || !attempt.recording) {
        return final(error, attempt?.original ?? environ)
      }
      attempt.error ??= error
      return undefined
    }
  }

  /** Begins an attempt of `environ`: failures are recorded until `end()`. */
  begin(environ: Environ): Attempt {
    const attempt = new Attempt(environ)
    this.#open.set(attempt.environ, attempt)
    return attempt
  }
}

/**
 * The app that forwards to the instances `admission` gives, sending a failed request once more
 * where {@link mayRetryElsewhere} allows; its `prepareUpgrade` too.
 *
 * @param admission - the pool's side
 * @returns the environ app
 */
export function createPoolApp(admission: PoolAdmission): UpgradableApp {
  return Object.assign((environ: Environ) => handle(admission, environ), {
    prepareUpgrade: (environ: Environ) => handleUpgrade(admission, environ),
  })
}

async function handle(admission: PoolAdmission, environ: Environ): Promise<AppResponse> {
  let backend: BackendProcess
  try {
    backend = await admission.acquire(environ['wsgiproxy.signal'])
  } catch (error) {
    return admission.respond(error, environ)
  }
  for (let sent = 1; ; sent++) {
    const attempt = admission.attempts.begin(environ)
    let response: AppResponse
    try {
      response = await (backend.proxy as UpgradableApp)(attempt.environ)
    } catch (error) {
      attempt.end()
      admission.release(backend)
      return admission.respond(error, environ)
    }
    const failed = attempt.end()
    if (failed === undefined) {
      const used = backend
      if (response.body === null) {
        admission.release(used)
        return response
      }
      // In flight until the body has been read, cancelled or failed: idle stops wait for it.
      return { ...response, body: trackBody(response.body, () => admission.release(used)) }
    }
    // The proxy app's own answer to the failure is a problem response held in memory: dropped.
    admission.release(backend)
    const next =
      sent === 1 && mayRetryElsewhere(environ, failed, attempt.input)
        ? admission.another(backend, failed)
        : undefined
    if (next === undefined) return admission.respond(failed, environ)
    backend = next
  }
}
