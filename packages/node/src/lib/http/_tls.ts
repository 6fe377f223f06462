// TLS on the front: the certificates of `serve({ tls })`, checked before use, one more per server
// name (SNI), and replaced while serving (`served.setTls`) for new connections only.
import type { SecureContext, SecureVersion } from 'node:tls'
import { createSecureContext } from 'node:tls'
import * as z from 'zod'
import { WsgiProxyError } from '@wsgiproxy/core'

/** A PEM private key and certificate chain. */
export interface TlsCertificate {
  /** The private key, PEM. */
  key: string | Buffer
  /** The certificate, PEM, with its intermediates after it. */
  cert: string | Buffer
}

/** The TLS settings of `serve`. */
export interface ServeTls extends TlsCertificate {
  /**
   * More certificates by the server name the client asks for (SNI): an exact host name
   * (`api.example.com`) or every name one label under a domain (`*.example.com`). A client that
   * names none of them, or no name at all, gets `key` / `cert`. Default: none.
   */
  sni?: Readonly<Record<string, TlsCertificate>>
  /**
   * The oldest TLS version accepted. Default `'TLSv1.2'` (TLS 1.0 and 1.1 are deprecated:
   * [RFC 8996](https://www.rfc-editor.org/rfc/rfc8996)); ciphers are Node's defaults.
   */
  minVersion?: 'TLSv1.2' | 'TLSv1.3'
}

const pem = z.union([z.string(), z.instanceof(Buffer)], {
  error: 'expected PEM text (a string or a Buffer)',
})
const certificate = z.strictObject({ key: pem, cert: pem })
// A host name, or `*.` and a domain (RFC 6125 §6.4.3: the wildcard is a whole left-most label).
const SERVER_NAME =
  /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i

/** The schema of {@link ServeTls}. */
export const SERVE_TLS: z.ZodType<ServeTls> = z.strictObject({
  key: pem,
  cert: pem,
  sni: z
    .record(z.string(), certificate)
    .superRefine((sni, context) => {
      for (const name of Object.keys(sni)) {
        if (SERVER_NAME.test(name)) continue
        context.addIssue({
          code: 'custom',
          path: [name],
          message: `expected a host name or *.domain (got ${JSON.stringify(name)})`,
        })
      }
    })
    .optional(),
  minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).optional(),
}) as z.ZodType<ServeTls>

/** The secure contexts of a TLS front: the default one and one per server name. */
export class TlsContexts {
  #byName = new Map<string, SecureContext>()
  #minVersion: 'TLSv1.2' | 'TLSv1.3' = 'TLSv1.2'
  #default: TlsCertificate

  /**
   * @param tls - the checked settings
   * @param what - the option's name for messages (`serve.tls`)
   */
  constructor(tls: ServeTls, what: string) {
    this.#default = { key: tls.key, cert: tls.cert }
    this.replace(tls, what)
  }

  /** The default certificate and the TLS version floor, for `https.createServer`. */
  get serverOptions(): { key: string | Buffer; cert: string | Buffer; minVersion: SecureVersion } {
    return { ...this.#default, minVersion: this.#minVersion }
  }

  /**
   * Builds every context of `tls` first, then swaps them in: a certificate that does not parse,
   * or a key that does not match its certificate, leaves the old ones in place.
   *
   * @throws WsgiProxyError `INVALID_OPTIONS` naming the certificate and Node's reason
   */
  replace(tls: ServeTls, what: string): void {
    const minVersion = tls.minVersion ?? 'TLSv1.2'
    build({ key: tls.key, cert: tls.cert }, minVersion, what)
    const byName = new Map<string, SecureContext>()
    for (const [name, pair] of Object.entries(tls.sni ?? {})) {
      byName.set(
        name.toLowerCase(),
        build(pair, minVersion, `${what}.sni[${JSON.stringify(name)}]`),
      )
    }
    this.#byName = byName
    this.#minVersion = minVersion
    this.#default = { key: tls.key, cert: tls.cert }
  }

  /**
   * The context for a server name the client sent: an exact entry, else the `*.` entry one label
   * up, else `undefined` (the default certificate).
   */
  lookup(serverName: string): SecureContext | undefined {
    const name = serverName.toLowerCase().replace(/\.$/, '')
    const exact = this.#byName.get(name)
    if (exact !== undefined) return exact
    const dot = name.indexOf('.')
    return dot < 0 ? undefined : this.#byName.get(`*${name.slice(dot)}`)
  }
}

function build(pair: TlsCertificate, minVersion: SecureVersion, what: string): SecureContext {
  try {
    return createSecureContext({ key: pair.key, cert: pair.cert, minVersion })
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error)
    throw new WsgiProxyError(
      'INVALID_OPTIONS',
      `invalid options: ${what}: the key and certificate cannot be used (${reason})`,
      { cause: error, expose: true },
    )
  }
}
