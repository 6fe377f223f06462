// Node's own HTTP/1.1 parser (llhttp, through the `HTTPParser` of `node:_http_common`, the module
// node:http parses with), for the byte-copying front: loaded on first use, its shape checked, so a
// runtime without it gets a clear error instead of a crash on the first request.
import { METHODS } from 'node:http'
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
  kOnMessageBegin: number
  kOnHeaders: number
  kOnHeadersComplete: number
  kOnBody: number
  kOnMessageComplete: number
}

/** What `kOnHeadersComplete` returns to pause the parser right after a head (llhttp's HPE_PAUSED). */
export const PAUSE = 21
/** What `kOnHeadersComplete` returns for a response without a body (a HEAD's). */
export const SKIP_BODY = 1

let loaded: Llhttp | undefined

/** The parser class, and the request method names by the numbers llhttp gives them. */
export interface Llhttp {
  HTTPParser: ParserClass
  /** `methods[n]` is the method llhttp numbers `n`; `undefined` for one it does not take. */
  methods: readonly (string | undefined)[]
}

/**
 * Node's HTTP/1.1 parser and its method names by number.
 *
 * @returns the parser class and the method table
 * @throws WsgiProxyError `INVALID_OPTIONS` on a runtime without `node:_http_common`'s parser
 */
export function llhttp(): Llhttp {
  if (loaded !== undefined) return loaded
  let module: { HTTPParser?: unknown } | undefined
  try {
    module = createRequire(import.meta.url)('_http_common') as typeof module
  } catch {
    module = undefined
  }
  const parser = module?.HTTPParser
  const slots = [
    'REQUEST',
    'RESPONSE',
    'kOnMessageBegin',
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
  const methods = shaped ? methodNumbers(parser as ParserClass) : []
  if (!shaped || methods[1] !== 'GET') {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      "invalid options: serve.byteCopy needs Node's HTTP parser (node:_http_common's HTTPParser), " +
        'which this runtime does not have; leave byteCopy off here',
      { expose: true },
    )
  }
  loaded = { HTTPParser: parser as ParserClass, methods }
  return loaded
}

// The number llhttp gives each method node:http knows, learnt from the parser itself: the list
// `_http_common` exports is not indexed by those numbers past the first ones (QUERY, say).
function methodNumbers(HTTPParser: ParserClass): Array<string | undefined> {
  const table: Array<string | undefined> = []
  const parser = new HTTPParser()
  let number = -1
  parser[HTTPParser.kOnHeadersComplete] = (
    _major: number,
    _minor: number,
    _headers: unknown,
    method: number,
  ): number => {
    number = method
    return 0
  }
  for (const name of METHODS) {
    parser.initialize(HTTPParser.REQUEST, {}, 1024, 0)
    number = -1
    const target = name === 'CONNECT' ? 'h:1' : '/'
    const parsed = parser.execute(Buffer.from(`${name} ${target} HTTP/1.1\r\nHost: h\r\n\r\n`))
    if (typeof parsed === 'number' && number >= 0) table[number] = name
  }
  parser.close()
  return table
}
