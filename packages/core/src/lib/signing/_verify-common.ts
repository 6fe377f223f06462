// What every step of `createVerifier().verify` uses: the `Stop` a step ends verification with,
// and the field readers shared by the signature fields and the body digest.
import type { Dictionary } from 'structured-headers'
import { parseDictionary } from 'structured-headers'
import type { RejectReason, VerifyOutcome } from './verifier.ts'

/** An outcome that ends verification before the last step: `absent` or `invalid`. */
export type Stop = Exclude<VerifyOutcome, { status: 'valid' }>

/** Whether a step stopped verification rather than returning what the next step needs. */
export function isStop<T extends object>(result: T | Stop): result is Stop {
  return 'status' in result
}

/** Builds an `invalid` outcome. */
export function reject(
  httpStatus: 400 | 401 | 413 | 431 | 503,
  reason: RejectReason,
  message: string,
): Stop {
  return { status: 'invalid', httpStatus, reason, message }
}

/** A field as a dictionary: empty when absent, `undefined` when it does not parse. */
export function parseField(value: string | undefined): Dictionary | undefined {
  if (value === undefined) return new Map()
  try {
    return parseDictionary(value)
  } catch {
    return undefined
  }
}

/** The value if it is a string, else `undefined`. */
export function stringValue(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined
}
