import { distance } from 'fastest-levenshtein'
import * as z from 'zod'
import { WsgiProxyError } from './errors.ts'
import type { OptionScope } from './_foreign-options.ts'
import { FOREIGN_OPTIONS } from './_foreign-options.ts'

export type { OptionScope } from './_foreign-options.ts'

/** One problem of a failed parse, as {@link explainIssues} orders and explains it. */
export type OptionProblem =
  | {
      /** A key the object at `path` does not have. */
      kind: 'unknown-key'
      /** Where the object is. */
      path: readonly PropertyKey[]
      /** The key as written. */
      key: string
      /**
       * What to do instead, for the parentheses after the key: `did you mean "href"?` for a near
       * miss, our equivalent for a well-known option of another proxy (`target`, `changeOrigin`),
       * or `undefined`.
       */
      hint: string | undefined
    }
  | {
      /** Any other issue, as zod reported it. */
      kind: 'issue'
      issue: z.core.$ZodIssue
    }

/**
 * Validates options at the boundary; throws `WsgiProxyError('INVALID_OPTIONS')` naming every
 * bad path, with the ZodError as `cause`. Unknown keys come first, one each, with a hint:
 * `invalid options: createProxyApp: unknown option "hrf" (did you mean "href"?)`; a required
 * option such a hint names is not reported missing besides. A value that is not an object at
 * all gets one line: `invalid options: serve: expected an object (got 8080)`.
 *
 * @param schema - an object schema (strict, so that unknown keys are reported)
 * @param value - the options; `undefined` is `{}`
 * @param what - the public function called, which every message names
 * @param expected - what the function takes, for a value that is not an object; default
 *   `an object`
 * @returns the options, checked
 * @throws WsgiProxyError `INVALID_OPTIONS`
 */
export function parseOptions<T extends object>(
  schema: z.ZodType,
  value: T | undefined,
  what: string,
  expected = 'an object',
): T {
  const input: unknown = value === undefined ? {} : value
  if (!isObject(input) && objectsAt(schema, input, []).length > 0) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      `invalid options: ${what}: expected ${expected} (got ${describeValue(input)})`,
      { expose: true },
    )
  }
  const result = schema.safeParse(input)
  // The schema mirrors the options interface, which stays the source of truth for types.
  if (result.success) return result.data as T
  const problems = explainIssues(schema, input, result.error.issues).map((problem) => {
    const where = problem.kind === 'unknown-key' ? problem.path : problem.issue.path
    const path = where.length > 0 ? `.${where.map(String).join('.')}` : ''
    if (problem.kind === 'issue') return `${what}${path}: ${problem.issue.message}`
    const hint = problem.hint === undefined ? '' : ` (${problem.hint})`
    return `${what}${path}: unknown option ${JSON.stringify(problem.key)}${hint}`
  })
  throw new WsgiProxyError('INVALID_OPTIONS', `invalid options: ${problems.join('; ')}`, {
    cause: result.error,
    expose: true,
  })
}

/**
 * Orders and explains the issues of a failed parse for a message: every unknown key first, one
 * problem per key with a hint (the foreign option names of http-proxy, http-proxy-middleware,
 * hono/proxy and @fastify/http-proxy get our equivalent, where the object has it; any other key
 * the closest key the object knows, by edit distance, case ignored), then the other issues in
 * zod's order, without those on a missing key that an unknown key's hint names (`hrf` for
 * `href`: one problem, not two). The keys are looked up in the schema at the issue's path,
 * through optional, default, nullable, pipe and lazy wrappers, arrays, records and unions (of a
 * discriminated union, the option the value chooses).
 *
 * @param schema - the schema that was parsed
 * @param value - the value that was parsed
 * @param issues - the issues of the ZodError
 * @param scope - `code` for options given in JavaScript, `config` for a JSON config file (hints
 *   that name functions are left out); default `code`
 * @returns the problems, unknown keys first
 */
export function explainIssues(
  schema: z.ZodType,
  value: unknown,
  issues: readonly z.core.$ZodIssue[],
  scope: OptionScope = 'code',
): OptionProblem[] {
  const unknown: OptionProblem[] = []
  const explained = new Set<string>()
  for (const issue of issues) {
    if (issue.code !== 'unrecognized_keys') continue
    const objects = objectsAt(schema, value, issue.path)
    for (const key of issue.keys) {
      const hint = keyHint(key, objects, scope)
      unknown.push({ kind: 'unknown-key', path: issue.path, key, hint: hint?.text })
      if (hint?.replaces !== undefined) explained.add(pathKey([...issue.path, hint.replaces]))
    }
  }
  const others: OptionProblem[] = issues
    .filter(
      (issue) =>
        issue.code !== 'unrecognized_keys' &&
        !(explained.has(pathKey(issue.path)) && valueAt(value, issue.path) === undefined),
    )
    .map((issue) => ({ kind: 'issue', issue }))
  return [...unknown, ...others]
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

// --- hints ------------------------------------------------------------------------------------

interface KeyHint {
  text: string
  /** The key of the same object the hint names, whose absence it explains. */
  replaces?: string
}

function keyHint(
  key: string,
  objects: readonly ObjectDef[],
  scope: OptionScope,
): KeyHint | undefined {
  if (objects.length === 0) return undefined
  const knows = (path: string): boolean => knowsPath(objects, path.split('.'))
  const foreign = FOREIGN_OPTIONS.find(
    (entry) =>
      entry.names.includes(key) &&
      (entry.scope === undefined || entry.scope === scope) &&
      (entry.use === undefined || knows(entry.use)) &&
      (entry.needs ?? []).every(knows),
  )
  if (foreign !== undefined) {
    const use = foreign.use
    return use === undefined || use.includes('.')
      ? { text: foreign.text }
      : { text: foreign.text, replaces: use }
  }
  const near = closestKey(key, [...new Set(objects.flatMap((def) => Object.keys(def.shape)))])
  return near === undefined
    ? undefined
    : { text: `did you mean ${JSON.stringify(near)}?`, replaces: near }
}

/**
 * The known key nearest to `key`, case ignored: at most a third of its length in edits (at
 * least 2, and fewer than its length, so that a short key is not matched to anything short).
 */
function closestKey(key: string, known: readonly string[]): string | undefined {
  const lower = key.toLowerCase()
  const limit = Math.min(Math.max(2, Math.floor(key.length / 3)), key.length - 1)
  let best: string | undefined
  let bestDistance = Number.POSITIVE_INFINITY
  for (const name of known) {
    const d = distance(lower, name.toLowerCase())
    if (d < bestDistance) {
      best = name
      bestDistance = d
    }
  }
  return bestDistance <= limit ? best : undefined
}

// --- walking a schema -------------------------------------------------------------------------

/** The parts of zod's schema definitions (`schema.def`, zod 4) the walk reads. */
interface Def {
  type: string
  shape?: Readonly<Record<string, z.ZodType>>
  catchall?: z.ZodType
  innerType?: z.ZodType
  in?: z.ZodType
  getter?: () => z.ZodType
  options?: readonly z.ZodType[]
  discriminator?: string
  element?: z.ZodType
  items?: readonly z.ZodType[]
  rest?: z.ZodType | null
  valueType?: z.ZodType
  /** A literal's values. */
  values?: readonly unknown[]
  left?: z.ZodType
  right?: z.ZodType
}

interface ObjectDef extends Def {
  shape: Readonly<Record<string, z.ZodType>>
}

const WRAPPERS: ReadonlySet<string> = new Set([
  'optional',
  'nullable',
  'default',
  'prefault',
  'nonoptional',
  'catch',
  'readonly',
  'success',
])
// Deeper than any options object; stops a lazy schema that refers to itself.
const MAX_DEPTH = 32

function defOf(schema: z.ZodType): Def {
  return schema.def as unknown as Def
}

/** The definitions a value meets in `schema`, wrappers removed and unions opened. */
function unwrap(schema: z.ZodType, value: unknown, depth = 0): Def[] {
  if (depth > MAX_DEPTH) return []
  const def = defOf(schema)
  if (WRAPPERS.has(def.type) && def.innerType !== undefined) {
    return unwrap(def.innerType, value, depth + 1)
  }
  if (def.type === 'pipe' && def.in !== undefined) return unwrap(def.in, value, depth + 1)
  if (def.type === 'lazy' && def.getter !== undefined) return unwrap(def.getter(), value, depth + 1)
  if (def.type === 'intersection' && def.left !== undefined && def.right !== undefined) {
    return [...unwrap(def.left, value, depth + 1), ...unwrap(def.right, value, depth + 1)]
  }
  if (def.type === 'union' && def.options !== undefined) {
    return chosenOptions(def, value, depth).flatMap((option) => unwrap(option, value, depth + 1))
  }
  return [def]
}

/** A discriminated union's option the value names, else every option. */
function chosenOptions(union: Def, value: unknown, depth: number): readonly z.ZodType[] {
  const options = union.options ?? []
  const disc = union.discriminator
  if (disc === undefined || !isObject(value) || !(disc in value)) return options
  const tag = (value as Record<string, unknown>)[disc]
  const chosen = options.filter((option) =>
    unwrap(option, value, depth + 1)
      .filter(isObjectDef)
      .some((def) => {
        const field = def.shape[disc]
        return (
          field !== undefined && unwrap(field, tag, depth + 1).some((d) => d.values?.includes(tag))
        )
      }),
  )
  return chosen.length > 0 ? chosen : options
}

/** The object schemas at `path` (as zod reports issue paths), guided by the value there. */
function objectsAt(
  schema: z.ZodType,
  value: unknown,
  path: readonly PropertyKey[],
  depth = 0,
): ObjectDef[] {
  const defs = unwrap(schema, value, depth)
  const [head, ...rest] = path
  if (head === undefined) return defs.filter(isObjectDef)
  if (depth > MAX_DEPTH) return []
  const child = isObject(value) ? (value as Record<PropertyKey, unknown>)[head] : undefined
  return defs.flatMap((def) => {
    const next = childSchema(def, head)
    return next === undefined ? [] : objectsAt(next, child, rest, depth + 1)
  })
}

function childSchema(def: Def, key: PropertyKey): z.ZodType | undefined {
  switch (def.type) {
    case 'object':
      return (typeof key === 'string' ? def.shape?.[key] : undefined) ?? def.catchall
    case 'array':
      return def.element
    case 'tuple':
      return (typeof key === 'number' ? def.items?.[key] : undefined) ?? def.rest ?? undefined
    case 'record':
      return def.valueType
    default:
      return undefined
  }
}

/**
 * Whether a dotted path of keys (`timeouts.upstreamHeaders`) exists from these objects; below a
 * field that takes any value (`z.unknown()`, checked elsewhere) every path counts as existing.
 */
function knowsPath(objects: readonly ObjectDef[], keys: readonly string[]): boolean {
  const [head, ...rest] = keys
  if (head === undefined) return true
  return objects.some((def) => {
    const field = def.shape[head]
    if (field === undefined) return false
    if (rest.length === 0) return true
    const inner = unwrap(field, undefined)
    if (inner.some((d) => d.type === 'unknown' || d.type === 'any')) return true
    return knowsPath(inner.filter(isObjectDef), rest)
  })
}

function isObjectDef(def: Def): def is ObjectDef {
  return def.type === 'object' && def.shape !== undefined
}

// --- values -----------------------------------------------------------------------------------

function isObject(value: unknown): value is object {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function valueAt(value: unknown, path: readonly PropertyKey[]): unknown {
  let current = value
  for (const key of path) {
    if (typeof current !== 'object' || current === null) return undefined
    current = (current as Record<PropertyKey, unknown>)[key]
  }
  return current
}

function pathKey(path: readonly PropertyKey[]): string {
  return JSON.stringify(path.map(String))
}

/** A value for a message, never a string's content (it may be a URL with credentials). */
function describeValue(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  switch (typeof value) {
    case 'number':
    case 'boolean':
      return String(value)
    case 'bigint':
      return `${value}n`
    case 'string':
      return 'a string'
    case 'function':
      return 'a function'
    case 'symbol':
      return 'a symbol'
    default:
      return typeof value
  }
}
