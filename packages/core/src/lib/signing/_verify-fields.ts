// Steps 1-6 of `createVerifier().verify` (docs/signing.md, "How the backend decides"), in the order it runs them:
// everything decided from the signature fields and the key set, before the clock, the message or
// the MAC is consulted. Each returns what the next step needs, or a `Stop`; the order is
// observable through the reject reasons.
import type { Dictionary, InnerList, Item, Parameters } from 'structured-headers'
import { isInnerList, Token } from 'structured-headers'
import { isProtocolHeader } from '../protocol/protocol.ts'
import type { Environ, SigningKey } from '../types.ts'
import type { Keyring } from './_keyring.ts'
import { CONTENT_DIGEST, CONTENT_FIELDS, DERIVED, isSignatureField } from './_signing-common.ts'
import type { Stop } from './_verify-common.ts'
import { parseField, reject, stringValue } from './_verify-common.ts'
import {
  MAX_COVERED_COMPONENTS,
  MAX_SIGNATURE_FIELD_LENGTH,
  SIGNATURE_ALGORITHM,
  SIGNATURE_TAG,
} from './profile.ts'

const NONCE = /^[A-Za-z0-9_-]{16,64}$/
// Field names a signature may cover besides the content ones: protocol headers. No `_`, so a
// name maps to exactly one environ key.
const FIELD_NAME = /^[a-z0-9]+(?:-[a-z0-9]+)*$/
const ALLOWED_PARAMETERS = new Set(['created', 'expires', 'nonce', 'keyid', 'tag', 'alg'])

/** The raw `Signature-Input` and `Signature` values. */
export interface SignatureFields {
  inputField: string | undefined
  signatureField: string | undefined
}

/** Both fields as Structured Fields dictionaries. */
export interface ParsedFields {
  inputs: Dictionary
  signatures: Dictionary
}

/** The `wsgiproxy` member of both fields. */
export interface PickedSignature {
  label: string
  input: InnerList
  signature: Uint8Array<ArrayBuffer>
}

/** The signature parameters, checked against the profile. */
export interface CheckedParameters {
  parameters: Array<[string, string | number]>
  created: number
  expires: number
  nonce: string
  keyid: string
}

/** Step 1: reads both fields and caps their length before any parsing; `absent` when both are missing. */
export function readSignatureFields(environ: Environ): SignatureFields | Stop {
  const inputField = stringValue(environ.HTTP_SIGNATURE_INPUT)
  const signatureField = stringValue(environ.HTTP_SIGNATURE)
  for (const [name, value] of [
    ['Signature-Input', inputField],
    ['Signature', signatureField],
  ] as const) {
    if (value !== undefined && value.length > MAX_SIGNATURE_FIELD_LENGTH) {
      return reject(
        431,
        'too_large',
        `${name} is ${value.length} characters long (at most ${MAX_SIGNATURE_FIELD_LENGTH})`,
      )
    }
  }
  if (inputField === undefined && signatureField === undefined) return { status: 'absent' }
  return { inputField, signatureField }
}

/** Step 2: parses both fields strictly (RFC 9421 §7.5.3: a parse error is an invalid signature). */
export function parseSignatureFields(fields: SignatureFields): ParsedFields | Stop {
  const inputs = parseField(fields.inputField)
  if (inputs === undefined) {
    return reject(401, 'malformed', 'Signature-Input is not a valid Structured Fields dictionary')
  }
  const signatures = parseField(fields.signatureField)
  if (signatures === undefined) {
    return reject(401, 'malformed', 'Signature is not a valid Structured Fields dictionary')
  }
  return { inputs, signatures }
}

/** Step 3: picks the one member tagged "wsgiproxy"; other signatures are ignored (RFC 9421 §7.2.6). */
export function pickSignature({ inputs, signatures }: ParsedFields): PickedSignature | Stop {
  const labels = [...inputs].filter(([, member]) => isTagged(member)).map(([label]) => label)
  if (labels.length === 0) {
    if (inputs.has(SIGNATURE_TAG) || signatures.has(SIGNATURE_TAG)) {
      return reject(
        401,
        'malformed',
        `the "${SIGNATURE_TAG}" signature has no tag="${SIGNATURE_TAG}" in Signature-Input`,
      )
    }
    return { status: 'absent' }
  }
  if (labels.length > 1) {
    return reject(
      401,
      'malformed',
      `Signature-Input has ${labels.length} members with tag="${SIGNATURE_TAG}" (expected one)`,
    )
  }
  const label = labels[0] as string
  const input = inputs.get(label) as Item | InnerList
  if (!isInnerList(input)) {
    return reject(401, 'malformed', `Signature-Input member "${label}" is not an inner list`)
  }
  const signatureMember = signatures.get(label)
  if (
    signatureMember === undefined ||
    isInnerList(signatureMember) ||
    !(signatureMember[0] instanceof ArrayBuffer) ||
    signatureMember[1].size > 0
  ) {
    return reject(401, 'malformed', `Signature has no byte sequence member "${label}"`)
  }
  return { label, input, signature: new Uint8Array(signatureMember[0]) }
}

/** Step 4: checks the parameter policy: only known parameters, each of the right type and form. */
export function checkParameters(params: Parameters): CheckedParameters | Stop {
  const parameters: Array<[string, string | number]> = []
  for (const [name, value] of params) {
    if (!ALLOWED_PARAMETERS.has(name)) {
      return reject(401, 'malformed', `the signature parameter "${name}" is not allowed`)
    }
    if (typeof value !== 'string' && typeof value !== 'number') {
      return reject(401, 'malformed', `the signature parameter "${name}" has the wrong type`)
    }
    parameters.push([name, value])
  }
  const created = params.get('created')
  const expires = params.get('expires')
  const nonce = params.get('nonce')
  const keyid = params.get('keyid')
  const alg = params.get('alg')
  if (!isTimestamp(created)) {
    return reject(401, 'malformed', '"created" must be a non-negative integer')
  }
  if (!isTimestamp(expires)) {
    return reject(401, 'malformed', '"expires" must be a non-negative integer')
  }
  if (typeof nonce !== 'string' || !NONCE.test(nonce)) {
    return reject(401, 'malformed', '"nonce" must be 16-64 characters of [A-Za-z0-9_-]')
  }
  if (params.get('tag') !== SIGNATURE_TAG) {
    return reject(401, 'malformed', `"tag" must be the string "${SIGNATURE_TAG}"`)
  }
  if (alg !== undefined && alg !== SIGNATURE_ALGORITHM) {
    return reject(401, 'malformed', `"alg" must be "${SIGNATURE_ALGORITHM}" when present`)
  }
  if (typeof keyid !== 'string') return reject(401, 'malformed', '"keyid" must be a string')
  return { parameters, created, expires, nonce, keyid }
}

/** Step 5: finds the key `keyid` names in the current key set. */
export function findKey(keys: Keyring, keyid: string): { key: SigningKey } | Stop {
  const { byId, invalid } = keys.current()
  const key = byId.get(keyid)
  if (key === undefined) {
    return reject(
      401,
      'unknown_key',
      invalid === undefined
        ? `unknown keyid ${JSON.stringify(keyid)}`
        : `the key set is invalid: ${invalid}`,
    )
  }
  return { key }
}

/** Step 6: checks the component policy: few, plain, distinct, allowed, every derived one included. */
export function checkComponents(
  items: readonly Item[],
): { components: string[]; covered: Set<string> } | Stop {
  if (items.length > MAX_COVERED_COMPONENTS) {
    return reject(
      401,
      'coverage',
      `the signature covers ${items.length} components (at most ${MAX_COVERED_COMPONENTS})`,
    )
  }
  const components: string[] = []
  const covered = new Set<string>()
  for (const [name, itemParams] of items) {
    if (typeof name !== 'string' || itemParams.size > 0) {
      return reject(
        401,
        'coverage',
        'every covered component must be a plain string without parameters',
      )
    }
    if (components.includes(name)) {
      return reject(401, 'coverage', `the component "${name}" is covered twice`)
    }
    if (!DERIVED.includes(name)) {
      if (!isCoverableField(name)) {
        return reject(401, 'coverage', `the component "${name}" is not allowed`)
      }
      covered.add(name)
    }
    components.push(name)
  }
  for (const name of DERIVED) {
    if (!components.includes(name)) {
      return reject(401, 'coverage', `the signature does not cover "${name}"`)
    }
  }
  return { components, covered }
}

/** Step 6, with body digests on: `content-digest` and the content headers present must be covered. */
export function checkDigestCoverage(
  covered: ReadonlySet<string>,
  environ: Environ,
): Stop | undefined {
  if (!covered.has(CONTENT_DIGEST)) {
    return reject(
      401,
      'coverage',
      'a body digest is required but the signature does not cover content-digest',
    )
  }
  // RFC 9530 §6.3: a digest protects the bytes, not how they are read; with digests on, the
  // content headers present must be signed too.
  for (const [name, value] of [
    ['content-type', environ.CONTENT_TYPE],
    ['content-encoding', environ.HTTP_CONTENT_ENCODING],
  ] as const) {
    if (value !== undefined && !covered.has(name)) {
      return reject(401, 'coverage', `the signature does not cover the ${name} the request has`)
    }
  }
  return undefined
}

/** Whether a `Signature-Input` member has `tag="wsgiproxy"` (as a string or a token). */
function isTagged(member: Item | InnerList): boolean {
  const tag = member[1].get('tag')
  return tag === SIGNATURE_TAG || (tag instanceof Token && tag.toString() === SIGNATURE_TAG)
}

/** Whether a signature may cover this field: a content field, the digest or a protocol header. */
function isCoverableField(name: string): boolean {
  if (!FIELD_NAME.test(name)) return false
  if (name === CONTENT_DIGEST || (CONTENT_FIELDS as readonly string[]).includes(name)) return true
  return isProtocolHeader(name) && !isSignatureField(name)
}

/** Whether a parameter is a non-negative safe integer. */
function isTimestamp(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}
