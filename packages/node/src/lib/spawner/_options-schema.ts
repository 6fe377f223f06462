// The zod schema of createSpawner's own options (the forwarding ones are core's), with messages
// that say what was expected and what was got, and the rules across options.
import { duration, fn } from '@wsgiproxy/core/adapter'
import * as z from 'zod'
import type { SpawnerInstances, SpawnerLogger, SpawnerReadiness } from './options.ts'

// The longest delay setTimeout keeps (a longer one fires at once).
const MAX_TIMER_MS = 2_147_483_647
// One port, readiness probe, process group and watchdog entry each: a bound that keeps a typo
// (`max: 1000`) from starting a thousand processes.
const MAX_INSTANCES = 64

/** How a refused value is shown in a message. */
function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return 'a function'
  if (Array.isArray(value)) return 'an array'
  return String(value)
}

/** The error option of a check whose message reads `expected <expected> (got <the value>)`. */
function got(expected: string): { error: (issue: { input?: unknown }) => string } {
  return { error: (issue) => `expected ${expected} (got ${describe(issue.input)})` }
}

/** A whole number from `min` to `max`: one message for whichever bound or type is missed. */
function wholeNumber(expected: string, min: number, max = Number.POSITIVE_INFINITY): z.ZodNumber {
  const message = got(expected)
  return z
    .number(message)
    .refine(Number.isInteger, { ...message, abort: true })
    .min(min, message)
    .max(max, message)
}

/** Whole milliseconds a timer can wait, from `min`. */
function milliseconds(min: number): z.ZodNumber {
  return wholeNumber(`whole milliseconds from ${min} to ${MAX_TIMER_MS}`, min, MAX_TIMER_MS)
}

/**
 * An optional option whose refused values read `expected <expected> (got <the value>)`, for
 * shared schemas with a message of their own for a wrong type (or none). The union with
 * `undefined` is what makes zod use this message: it answers a one-option union with the
 * option's own issues.
 */
function optional(schema: z.ZodType, expected: string): z.ZodType {
  return z.union([schema, z.undefined()], got(expected)).optional()
}

/** An object of the options in `shape`, naming any other key `<key>: unknown option`. */
function optionGroup(shape: z.ZodRawShape, expected: string): z.ZodType {
  return z.looseObject(shape, got(expected)).superRefine((value, ctx) => {
    for (const key of Object.keys(value)) {
      if (!Object.hasOwn(shape, key)) {
        ctx.addIssue({ code: 'custom', path: [key], message: 'unknown option' })
      }
    }
  })
}

const COMMAND = 'a string or a non-empty array of strings'
const flag = z.boolean(got('a boolean')).optional()
// (Not `.min(1)`: zod runs length checks on any value with a length, a function too.)
const nonEmptyString = z
  .string(got('a non-empty string'))
  .refine((value) => value !== '', got('a non-empty string'))
const PATH = 'a path starting with "/"'

const command = z.union(
  [
    z.string().refine((value) => value.trim() !== '', 'expected a command (got an empty string)'),
    z
      .array(z.string())
      .min(1, got(COMMAND))
      .refine((argv) => argv[0] !== '', got(COMMAND)),
  ],
  got(COMMAND),
)

// Any object (process.env too, which is not a plain one), its values strings or undefined.
const env = z
  .custom<Record<string, string | undefined>>(
    (value) => typeof value === 'object' && value !== null && !Array.isArray(value),
    { ...got('an object of strings'), abort: true },
  )
  .superRefine((value, ctx) => {
    for (const [key, entry] of Object.entries(value)) {
      if (entry !== undefined && typeof entry !== 'string') {
        const message = `expected a string or undefined (got ${describe(entry)})`
        ctx.addIssue({ code: 'custom', path: [key], message })
      }
    }
  })

/** The spawner's own options; the rest pass through (to `checkProxyAppOptions`). */
export const spawnerOptionsSchema: z.ZodType = z
  .looseObject(
    {
      command,
      name: nonEmptyString.optional(),
      cwd: nonEmptyString.optional(),
      env: env.optional(),
      inheritEnv: flag,
      shell: flag,
      handleSignals: flag,
      orphanGuard: flag,
      port: wholeNumber('0–65535', 0, 65535).optional(),
      allocatePort: optional(fn<() => number | Promise<number>>(), 'a function'),
      ready: optionGroup(
        {
          http: z.string(got(PATH)).startsWith('/', got(PATH)).optional(),
          stdout: z.instanceof(RegExp, got('a RegExp')).optional(),
        },
        '{ http?, stdout? }',
      ).optional(),
      startTimeout: milliseconds(1).optional(),
      killTimeout: milliseconds(1).optional(),
      drainTimeout: milliseconds(0).optional(),
      idleTimeout: optional(duration, `whole milliseconds from 1 to ${MAX_TIMER_MS} or false`),
      maxQueue: wholeNumber('a positive integer', 1).optional(),
      backoff: optionGroup(
        {
          base: milliseconds(1).optional(),
          max: milliseconds(1).optional(),
          reset: milliseconds(1).optional(),
        },
        '{ base?, max?, reset? }',
      ).optional(),
      logLines: wholeNumber('a non-negative integer', 0).optional(),
      logger: z
        .union([z.literal(false), fn<SpawnerLogger>()], got('a function or false'))
        .optional(),
      instances: optionGroup(
        {
          min: wholeNumber(`an integer from 1 to ${MAX_INSTANCES}`, 1, MAX_INSTANCES).optional(),
          max: wholeNumber(`an integer from 1 to ${MAX_INSTANCES}`, 1, MAX_INSTANCES).optional(),
          busyAt: wholeNumber('a positive integer', 1).optional(),
          idleTimeout: milliseconds(1).optional(),
        },
        '{ min?, max?, busyAt?, idleTimeout? }',
      ).optional(),
    },
    got('an options object'),
  )
  .superRefine(checkCombinations)

// Rules across options; each problem names the option to change.
function checkCombinations(options: Record<string, unknown>, ctx: z.RefinementCtx): void {
  if (options.allocatePort !== undefined && options.port !== undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['allocatePort'],
      message: 'cannot be combined with port',
    })
  }
  const ready = options.ready as SpawnerReadiness | undefined
  if (options.port === 0 && !(ready?.stdout?.source.includes('(?<port>') ?? false)) {
    const message =
      '0 (the app picks its port) needs ready.stdout with a named group "port" to read it from'
    ctx.addIssue({ code: 'custom', path: ['port'], message })
  }
  const instances = options.instances as SpawnerInstances | undefined
  if (instances === undefined) return
  const min = instances.min ?? 1
  const max = instances.max ?? min
  if (max < min) {
    const message = `expected at least instances.min, ${min} (got ${max})`
    ctx.addIssue({ code: 'custom', path: ['instances', 'max'], message })
  }
  const port = options.port
  if (typeof port === 'number' && port !== 0 && max > 1) {
    const message =
      `${port} cannot serve a pool of up to ${max} instances: each instance needs a port of its own. ` +
      'Leave port out (each instance gets a free port), use port: 0 with a ready.stdout pattern ' +
      'that reads the port each instance picks, or set instances.max to 1'
    ctx.addIssue({ code: 'custom', path: ['port'], message })
  }
}
