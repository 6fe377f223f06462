// Small helpers shared by the request and upgrade listeners.

/** Raw header lines (`IncomingMessage.rawHeaders`, flat) as name/value pairs, repeats kept. */
export function headerLines(raw: string[]): Array<[string, string]> {
  const lines: Array<[string, string]> = []
  for (let i = 0; i + 1 < raw.length; i += 2) lines.push([raw[i] ?? '', raw[i + 1] ?? ''])
  return lines
}

/** Releases a body that will not be read (calls its iterator's `return()`, not awaited). */
export function release(body: AsyncIterable<Uint8Array> | null): void {
  if (body === null) return
  try {
    Promise.resolve(body[Symbol.asyncIterator]().return?.()).catch(noop)
  } catch {
    // the body failed while being released: nothing left to release
  }
}

/** Does nothing: an error listener for errors handled elsewhere. */
export function noop(): void {}

// RFC 9110 §5.6.2: a token.
export const TOKEN: RegExp = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
