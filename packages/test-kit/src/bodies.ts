// Test helpers: streamed bodies of text chunks, reading a body back as text, letting callbacks run.

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** A body of text chunks that records whether its consumer released it (called `return()`). */
export function trackedBody(...chunks: string[]): {
  body: AsyncIterable<Uint8Array>
  released: () => boolean
} {
  let released = false
  const body: AsyncIterable<Uint8Array> = {
    [Symbol.asyncIterator]() {
      let index = 0
      return {
        async next(): Promise<IteratorResult<Uint8Array>> {
          const chunk = chunks[index++]
          return chunk === undefined
            ? { done: true, value: undefined }
            : { done: false, value: encoder.encode(chunk) }
        },
        async return(): Promise<IteratorResult<Uint8Array>> {
          released = true
          return { done: true, value: undefined }
        },
      }
    },
  }
  return { body, released: () => released }
}

/** Every chunk of a body as text. */
export async function readText(body: AsyncIterable<Uint8Array> | null): Promise<string> {
  if (body === null) return ''
  let text = ''
  for await (const chunk of body) text += decoder.decode(chunk, { stream: true })
  return text + decoder.decode()
}

/** Lets pending promise callbacks and timers run. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0))
}
