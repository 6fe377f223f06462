// Option schemas of the node:http listeners and the key-file loader: core's shared ones
// (re-exported from `@wsgiproxy/core/adapter`) and those only Node's adapters use.

import * as z from 'zod'
export {
  callback,
  flag,
  MAX_TIMER_MS,
  milliseconds,
  optionsObject,
  wholeNumber,
} from '@wsgiproxy/core/adapter'
import { compileTrust } from '@wsgiproxy/core/protocol'
import { TOKEN } from './_node-util.ts'

/**
 * A mount prefix that becomes `SCRIPT_NAME`: `""` or a path starting with `/`.
 *
 * @returns the schema
 */
export function scriptName(): z.ZodType<string> {
  return z.custom<string>(
    (value) => typeof value === 'string' && (value === '' || value.startsWith('/')),
    {
      error: (issue) =>
        `expected "" or a path starting with "/" (got ${JSON.stringify(issue.input)})`,
    },
  )
}

/**
 * Refuses an option given under both its deprecated and its new name.
 *
 * @param context - the refinement context
 * @param options - the parsed options
 * @param what - the function's name
 * @param deprecated - the old name
 * @param current - the new name
 */
export function refuseBothNames(
  context: z.core.$RefinementCtx,
  options: Record<string, unknown>,
  what: string,
  deprecated: string,
  current: string,
): void {
  if (options[deprecated] === undefined || options[current] === undefined) return
  context.addIssue({
    code: 'custom',
    path: [deprecated],
    message: `cannot be given with ${what}.${current} (${deprecated} is its deprecated name)`,
  })
}

/**
 * A list of `Upgrade` protocol names (tokens, RFC 9110 §5.6.2) such as `["websocket"]`.
 *
 * @returns the schema
 */
export function protocolNames(): z.ZodType<readonly string[]> {
  return z.custom<readonly string[]>(
    (value) => Array.isArray(value) && value.every((p) => typeof p === 'string' && TOKEN.test(p)),
    {
      error: (issue) =>
        `expected a list of protocol names such as ["websocket"] (got ${JSON.stringify(issue.input)})`,
    },
  )
}

/**
 * A trust list as `trustIps` takes it: addresses, CIDR ranges and the presets `loopback`,
 * `linklocal`, `uniquelocal`; the message names the first bad entry.
 *
 * @returns the schema
 */
export function trustList(): z.ZodType<readonly string[]> {
  return z.custom<readonly string[]>().superRefine((value, context) => {
    try {
      compileTrust(value)
    } catch (error) {
      context.addIssue({ code: 'custom', message: (error as Error).message })
    }
  })
}
