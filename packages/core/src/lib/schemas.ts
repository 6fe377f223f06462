// Option schemas shared by the adapters (node's listeners, the undici transport, the key-file
// loader). They go through `parseOptions`, so every error reads
// `invalid options: <function>.<option>: expected … (got …)`.

import * as z from 'zod'

/** The longest delay `setTimeout` takes (2^31 - 1 ms); a longer one fires at once. */
export const MAX_TIMER_MS = 2_147_483_647

/**
 * An options object with exactly these fields: anything but an object is "expected an object",
 * a field not named is an `unknown option "…"`.
 *
 * @param shape - the fields
 * @returns the schema
 */
export function optionsObject<Shape extends z.ZodRawShape>(shape: Shape): z.ZodObject<Shape> {
  return z.strictObject(shape, {
    error: (issue) => {
      if (issue.code === 'unrecognized_keys') {
        const keys = issue.keys.map((key) => JSON.stringify(key)).join(', ')
        return `unknown option${issue.keys.length > 1 ? 's' : ''} ${keys}`
      }
      return issue.code === 'invalid_type' ? 'expected an object' : undefined
    },
  }) as z.ZodObject<Shape>
}

/**
 * A whole number from `min` to `max`.
 *
 * @param min - the least value
 * @param max - the greatest value
 * @param expected - what the message says is expected; default `a whole number from min to max`
 * @returns the schema
 */
export function wholeNumber(min: number, max: number, expected?: string): z.ZodType<number> {
  const text = expected ?? `a whole number from ${min} to ${max}`
  return z.custom<number>(
    (value) => Number.isInteger(value) && (value as number) >= min && (value as number) <= max,
    { error: (issue) => `expected ${text} (got ${String(issue.input)})` },
  )
}

/**
 * Whole milliseconds from `min` to the longest timer.
 *
 * @param min - the least value (`0` where zero turns the timer off)
 * @returns the schema
 */
export function milliseconds(min: number): z.ZodType<number> {
  return wholeNumber(min, MAX_TIMER_MS, `whole milliseconds from ${min} to ${MAX_TIMER_MS}`)
}

/**
 * A boolean.
 *
 * @returns the schema
 */
export function flag(): z.ZodType<boolean> {
  return z.boolean({ error: (issue) => `expected a boolean (got ${typeof issue.input})` })
}

/**
 * A function (its signature is the options interface's to state).
 *
 * @returns the schema
 */
export function callback<T>(): z.ZodType<T> {
  return z.custom<T>((value) => typeof value === 'function', {
    error: (issue) => `expected a function (got ${typeof issue.input})`,
  })
}
