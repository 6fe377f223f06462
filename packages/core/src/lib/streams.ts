import { WsgiProxyError } from './errors.ts'

/** What a {@link DirectBody} tells the one who handed it over as a stream, as it happens. */
export interface BodyWatch {
  /** A chunk came from the source. */
  chunk(): void
  /** The source was paused (the reader is behind: not a stall) or resumed. */
  paused(paused: boolean): void
  /**
   * The body ended: `undefined` when complete, else the source's error. Returns the error the
   * stream fails with (the error mapped), ignored when complete.
   */
  end(error: unknown): unknown
  /** The reader cancelled the stream (the client went away). */
  cancelled(): void
}

/**
 * A response body that can also be handed over as a web ReadableStream without a hop per chunk
 * through an async iterator (the fetch path's direct route: `undiciTransport()`'s bodies, and
 * the forwarding step's wrapper around them). Read one way or the other, once.
 */
export interface DirectBody extends AsyncIterable<Uint8Array> {
  /**
   * The body as a ReadableStream whose chunks are queued as they come (up to a high-water mark,
   * the source paused beyond it), with `watch` told of each step.
   */
  readableStream(watch?: BodyWatch): ReadableStream<Uint8Array>
  /**
   * The whole body as one chunk when all of it has already come (a small response read in one
   * go, say) and nothing has read it yet, else `undefined` and the body is unchanged: a Fetch
   * `Response` over bytes is written with its head in one go.
   */
  takeIfComplete?(): Uint8Array | undefined
}

/**
 * Whether a body is a {@link DirectBody}.
 *
 * @param body - a response body
 * @returns `true` when it has `readableStream()`
 */
export function isDirectBody(body: AsyncIterable<Uint8Array>): body is DirectBody {
  return typeof (body as Partial<DirectBody>).readableStream === 'function'
}

/**
 * A web ReadableStream over an async iterable, pulled on demand (backpressure) and cancelled by
 * calling the iterator's `return()`. A ReadableStream is passed through as it is, and a
 * {@link DirectBody} gives its own.
 */
export function toReadableStream(body: AsyncIterable<Uint8Array>): ReadableStream<Uint8Array> {
  if (body instanceof ReadableStream) return body as ReadableStream<Uint8Array>
  if (isDirectBody(body)) return body.readableStream()
  let iterator: AsyncIterator<Uint8Array> | undefined
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        iterator ??= body[Symbol.asyncIterator]()
        const result = await iterator.next()
        if (result.done) controller.close()
        else controller.enqueue(result.value)
      },
      cancel(reason) {
        // Not awaited: an async-generator source settles a pending read before `return()`.
        iterator ??= body[Symbol.asyncIterator]()
        void Promise.resolve(iterator.return?.(reason)).catch(() => {})
      },
    },
    { highWaterMark: 0 },
  )
}

/** An async iterable of the given chunks. */
export function bytesBody(...chunks: Uint8Array[]): AsyncIterable<Uint8Array> {
  return {
    async *[Symbol.asyncIterator]() {
      yield* chunks
    },
  }
}

/** Stops an unread body so its source is released (a no-op for `null`). */
export async function discardBody(body: AsyncIterable<Uint8Array> | null): Promise<void> {
  if (body === null) return
  try {
    if (body instanceof ReadableStream) await body.cancel()
    else await body[Symbol.asyncIterator]().return?.()
  } catch {
    // the body failed while being discarded: nothing left to release
  }
}

/**
 * Wraps a body to call `done` once when it has been read to the end (`undefined`), failed (the
 * error) or been abandoned by its reader (`return()`: a `CLIENT_ABORTED` error). `return()` is
 * passed on at once, not awaited: a source with a read pending settles that read first.
 *
 * @param body - the body
 * @param done - called once with how it ended
 * @returns the wrapped body
 */
export function onBodyEnd(
  body: AsyncIterable<Uint8Array>,
  done: (error: unknown) => void,
): AsyncIterable<Uint8Array> {
  let finished = false
  const finish = (error: unknown): void => {
    if (finished) return
    finished = true
    done(error)
  }
  return {
    [Symbol.asyncIterator]: () => {
      const iterator = body[Symbol.asyncIterator]()
      return {
        async next(): Promise<IteratorResult<Uint8Array>> {
          try {
            const result = await iterator.next()
            if (result.done === true) finish(undefined)
            return result
          } catch (error) {
            finish(error)
            throw error
          }
        },
        async return(): Promise<IteratorResult<Uint8Array>> {
          finish(new WsgiProxyError('CLIENT_ABORTED', 'the reader stopped reading'))
          void Promise.resolve(iterator.return?.()).catch(() => {})
          return { done: true, value: undefined }
        },
      }
    },
  }
}
