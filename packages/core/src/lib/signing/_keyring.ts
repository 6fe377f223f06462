// The key list behind a signer or verifier: validated once per list object, re-read per request
// from a function source, with the imported WebCrypto keys cached by key object identity.
import { WsgiProxyError } from '../errors.ts'
import type { SigningKey } from '../types.ts'
import { describe } from './_signing-common.ts'
import type { KeySource } from './profile.ts'
import { importHmacKey } from './signature.ts'

const KEY_ID = /^[\x21-\x7E]{1,256}$/
const MIN_SECRET_BYTES = 32

/** Validated keys, re-read per request from a function source, and their imported CryptoKeys. */
export interface Keyring {
  current(): {
    list: readonly SigningKey[]
    byId: ReadonlyMap<string, SigningKey>
    invalid?: string
  }
  cryptoKey(key: SigningKey): Promise<CryptoKey>
}

/**
 * Validates the keys of `source` now and returns the keyring `what` reads them from per request.
 * A signer throws when a later key list is invalid; a verifier gets it back as `invalid`.
 */
export function createKeyring(
  source: KeySource,
  allowWeak: boolean,
  what: 'createSigner' | 'createVerifier',
): Keyring {
  const validated = new WeakMap<readonly SigningKey[], ReadonlyMap<string, SigningKey>>()
  const cryptoKeys = new WeakMap<SigningKey, Promise<CryptoKey>>()
  let warned = false
  const warn = (message: string): void => {
    if (warned) return
    warned = true
    console.warn(`wsgiproxy ${what}: ${message}`)
  }
  const read = (): readonly SigningKey[] => (typeof source === 'function' ? source() : source)
  const index = (list: readonly SigningKey[]): ReadonlyMap<string, SigningKey> => {
    let byId = validated.get(list)
    if (byId === undefined) {
      byId = validateKeys(list, allowWeak, warn)
      validated.set(list, byId)
    }
    return byId
  }
  try {
    index(read())
  } catch (error) {
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      `invalid options: ${what}.keys: ${describe(error)}`,
      {
        cause: error,
        expose: true,
      },
    )
  }
  return {
    current() {
      try {
        const list = read()
        return { list, byId: index(list) }
      } catch (error) {
        if (what === 'createSigner') {
          throw new WsgiProxyError(
            'INVALID_OPTIONS',
            `the signing keys are invalid: ${describe(error)}`,
            {
              cause: error,
            },
          )
        }
        return { list: [], byId: new Map(), invalid: describe(error) }
      }
    },
    cryptoKey(key) {
      let imported = cryptoKeys.get(key)
      if (imported === undefined) {
        imported = importHmacKey(key.secret)
        cryptoKeys.set(key, imported)
        // A failed import is not cached, so a later request can try again.
        imported.catch(() => cryptoKeys.delete(key))
      }
      return imported
    },
  }
}

/** Checks a key list and indexes it by id; throws a plain Error saying what is wrong. */
function validateKeys(
  list: unknown,
  allowWeak: boolean,
  warn: (message: string) => void,
): ReadonlyMap<string, SigningKey> {
  if (!Array.isArray(list)) throw new Error('expected an array of keys')
  if (list.length === 0) throw new Error('expected at least one key (got an empty list)')
  const byId = new Map<string, SigningKey>()
  for (const [i, key] of (list as unknown[]).entries()) {
    if (typeof key !== 'object' || key === null) throw new Error(`key ${i} is not an object`)
    const { id, secret } = key as Partial<SigningKey>
    if (typeof id !== 'string' || !KEY_ID.test(id)) {
      throw new Error(`key ${i} must have an id of 1-256 printable ASCII characters without spaces`)
    }
    if (!(secret instanceof Uint8Array) || secret.length === 0) {
      throw new Error(`key ${JSON.stringify(id)} must have a non-empty Uint8Array secret`)
    }
    if (byId.has(id)) throw new Error(`the key id ${JSON.stringify(id)} is used twice`)
    if (secret.length < MIN_SECRET_BYTES) {
      if (!allowWeak) {
        throw new Error(
          `key ${JSON.stringify(id)} has ${secret.length} secret bytes (at least ${MIN_SECRET_BYTES}; allowWeakSecret accepts it)`,
        )
      }
      warn(
        `key ${JSON.stringify(id)} has only ${secret.length} secret bytes; use at least ${MIN_SECRET_BYTES} random bytes`,
      )
    }
    byId.set(id, key as SigningKey)
  }
  return byId
}
