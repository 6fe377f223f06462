// Node's own HTTP/1.1 parser (llhttp, through the `HTTPParser` of `node:_http_common`, the module
// node:http parses with), for the byte-copying front: loaded on first use, its shape checked, so a
// runtime without it gets a clear error instead of a crash on the first request.
import { createRequire } from 'node:module'
import { WsgiProxyError } from '@wsgiproxy/core'

/** One llhttp parser, as `node:_http_common` exposes it. */
export interface Parser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void
  execute(data: Buffer): number | ParseError
  finish(): ParseError | undefined
  resume(): void
  close(): void
  [slot: number]: unknown
}

/** A parse error: llhttp's code (`HPE_…`) and where it stopped. */
export interface ParseError extends Error {
  code: string
  bytesParsed: number
}

/** The parser class and its callback slots. */
export interface ParserClass {
  new (): Parser
  REQUEST: number
  RESPONSE: number
  kOnHeaders: number
  kOnHeadersComplete: number
  kOnBody: number
  kOnMessageComplete: number
}

/** What `kOnHeadersComplete` returns to pause the parser right after a head (llhttp's HPE_PAUSED). */
export const PAUSE = 21
/** What `kOnHeadersComplete` returns for a response without a body (a HEAD's). */
export const SKIP_BODY = 1

let loaded: { HTTPParser: ParserClass; methods: readonly string[] } | undefined

/**
 * Node's HTTP/1.1 parser and its method names by number.
 *
 * @returns the parser class and the method table
 * @throws WsgiProxyError `INVALID_OPTIONS` on a runtime without `node:_http_common`'s parser
 */
export function llhttp(): { HTTPParser: ParserClass; methods: readonly string[] } {
  if (loaded !== undefined) return loaded
  let module: { HTTPParser?: unknown; methods?: unknown } | undefined
  try {
    module = createRequire(import.meta.url)('_http_common') as typeof module
  } catch {
    module = undefined
  }
  const parser = module?.HTTPParser
  const methods = module?.methods
  const slots = [
    'REQUEST',
    'RESPONSE',
    'kOnHeaders',
    'kOnHeadersComplete',
    'kOnBody',
    'kOnMessageComplete',
  ] as const
  const candidate = parser as { [slot: string]: unknown; prototype?: Partial<Parser> } | undefined
  const shaped =
    typeof parser === 'function' &&
    slots.every((slot) => typeof candidate?.[slot] === 'number') &&
    typeof candidate?.prototype?.resume === 'function'
  if (!shaped || !Array.isArray(methods)) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      "invalid options: serve.byteCopy needs Node's HTTP parser (node:_http_common's HTTPParser), " +
        'which this runtime does not have; leave byteCopy off here',
      { expose: true },
    )
  }
  loaded = { HTTPParser: parser as ParserClass, methods: methods as string[] }
  return loaded
}
