import type { ErrorHook } from '@wsgiproxy/core'
import { fn } from '@wsgiproxy/core/adapter'
import type { Context } from 'hono'
import * as z from 'zod'
import type { GetRemoteAddr } from './remote-addr.ts'

/**
 * The option fields every Hono adapter that builds an environ shares, as zod schemas; each
 * adapter puts them in its one options schema and checks it with core's `parseOptions`, so an
 * error names the adapter and the option (`invalid options: proxy.maxHeaders: ...`).
 */
export const ENVIRON_FIELDS: {
  getRemoteAddr: z.ZodOptional<z.ZodType<GetRemoteAddr>>
  maxHeaders: z.ZodOptional<z.ZodNumber>
  onError: z.ZodOptional<z.ZodType<ErrorHook>>
  trustTraceparent: z.ZodOptional<z.ZodType<readonly string[]>>
} = {
  getRemoteAddr: fn<GetRemoteAddr>().optional(),
  // The rule of core's toEnviron, checked here so that the error names the adapter.
  maxHeaders: z.number().int().min(1).optional(),
  onError: fn<ErrorHook>().optional(),
  trustTraceparent: z.array(z.string()).readonly().optional(),
}

/** The `environ` option of `mount`, `proxy` and `spawn`: extra environ keys from the context. */
export type EnvironFromContext = (c: Context) => Record<string, unknown> | undefined

/** The schema of the `environ` option (`mount`, `proxy`, `spawn`). */
export const ENVIRON_FROM_CONTEXT: z.ZodOptional<z.ZodType<EnvironFromContext>> =
  fn<EnvironFromContext>().optional()
