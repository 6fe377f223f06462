import * as z from 'zod'
import { WsgiProxyError } from './errors.ts'

/**
 * Validates options at the boundary; throws `WsgiProxyError('INVALID_OPTIONS')` naming every
 * bad path, with the ZodError as `cause`.
 */
export function parseOptions<T extends object>(
  schema: z.ZodType,
  value: T | undefined,
  what: string,
): T {
  const result = schema.safeParse(value === undefined ? {} : value)
  // The schema mirrors the options interface, which stays the source of truth for types.
  if (result.success) return result.data as T
  const problems = result.error.issues.map((issue) => {
    const path = issue.path.length > 0 ? `.${issue.path.join('.')}` : ''
    return `${what}${path}: ${issue.message}`
  })
  throw new WsgiProxyError('INVALID_OPTIONS', `invalid options: ${problems.join('; ')}`, {
    cause: result.error,
    expose: true,
  })
}

/** A schema for a function-valued option. */
export function fn<T>(): z.ZodType<T> {
  return z.custom<T>((value) => typeof value === 'function', { message: 'expected a function' })
}

/** A duration in milliseconds, or `false` to turn the timer off. */
export const duration: z.ZodType<number | false> = z.union([
  z.literal(false),
  z
    .number({ error: 'expected a duration in milliseconds or false' })
    .int('expected whole milliseconds')
    .min(1, 'expected at least 1 ms (use false to turn it off)')
    .max(2_147_483_647, 'expected at most 2147483647 ms (use false to turn it off)'),
])
