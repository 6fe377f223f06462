// What the signer and the verifier share: the component lists, option schemas and body helpers of
// the wsgiproxy profile (docs/signing.md, "What is signed"). Internal: nothing here is re-exported.
import * as z from 'zod'
import type { KeySource } from './profile.ts'
import { DERIVED_COMPONENTS } from './signature.ts'

// RFC 9421 §2.2: the derived components every wsgiproxy signature covers, in this order.
export const DERIVED: readonly string[] = DERIVED_COMPONENTS
// RFC 9530 §6.3: content fields signed alongside the digest.
export const CONTENT_FIELDS = ['content-type', 'content-encoding'] as const
// RFC 9530 §2: the field that carries the body digest.
export const CONTENT_DIGEST = 'content-digest'
export const DEFAULT_MAX_AGE = 60_000
const DEFAULT_MAX_BODY_BYTES = 1024 * 1024

/** The `keys` option: an array of keys or a function returning one. */
export const keySourceSchema: z.ZodType<KeySource> = z.custom<KeySource>(
  (value) => Array.isArray(value) || typeof value === 'function',
  'expected an array of keys or a function returning one',
)

/** The `bodyDigest` option: on, off, or on with a byte cap. */
export const bodyDigestSchema: z.ZodType<boolean | { maxBytes?: number | undefined }> = z.union([
  z.boolean(),
  z.strictObject({
    maxBytes: z
      .number()
      .int()
      .min(0)
      .max(2 ** 31 - 1)
      .optional(),
  }),
])

/** The `maxAge` option, in whole milliseconds. */
export const maxAgeSchema: z.ZodType<number> = z
  .number()
  .int('expected whole milliseconds')
  .min(1000)
  .max(900_000)

/** The body cap of a `bodyDigest` option, or `undefined` when digests are off. */
export function digestCap(option: boolean | { maxBytes?: number } | undefined): number | undefined {
  if (option === undefined || option === false) return undefined
  if (option === true) return DEFAULT_MAX_BODY_BYTES
  return option.maxBytes ?? DEFAULT_MAX_BODY_BYTES
}

/** Whether a lower-case field name is one of the two signature fields. */
export function isSignatureField(lowerName: string): boolean {
  return lowerName === 'signature' || lowerName === 'signature-input'
}

/** Reads a body into one array; `undefined` when it has more than `maxBytes` bytes (the rest is cancelled). */
export async function readBody(
  body: AsyncIterable<Uint8Array> | null,
  maxBytes: number,
): Promise<Uint8Array<ArrayBuffer> | undefined> {
  const chunks: Uint8Array[] = []
  let total = 0
  if (body !== null) {
    // Leaving the loop early calls the iterator's return(), which cancels a stream.
    for await (const chunk of body) {
      total += chunk.byteLength
      if (total > maxBytes) return undefined
      chunks.push(chunk)
    }
  }
  const bytes = new Uint8Array(total)
  let offset = 0
  for (const chunk of chunks) {
    bytes.set(chunk, offset)
    offset += chunk.byteLength
  }
  return bytes
}

/** A body of the given bytes, as one chunk (none when empty). */
export function bytesIterable(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  return {
    async *[Symbol.asyncIterator]() {
      if (bytes.byteLength > 0) yield bytes
    },
  }
}

/** The SHA digest of some bytes. */
export async function sha(
  bytes: Uint8Array<ArrayBuffer>,
  algorithm: 'SHA-256' | 'SHA-512',
): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest(algorithm, bytes))
}

/** The message of an error, or the thrown value as a string. */
export function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
