// The run's TLS certificate: made once per run by the runner (the selfsigned package) and handed
// to every server process through its environment, so no key file is left behind.

/** A PEM key and certificate. */
export interface BenchCertificate {
  key: string
  cert: string
}

/** The environment variables a server process reads its certificate from. */
export const CERTIFICATE_ENV = { key: 'BENCH_TLS_KEY', cert: 'BENCH_TLS_CERT' } as const

const DAY_MS = 24 * 3600_000

/**
 * A self-signed ECDSA (P-256) certificate for `localhost`, 127.0.0.1 and ::1, valid for a day: the
 * key type a public CA issues today, and cheaper to handshake with than RSA.
 *
 * @returns the PEM key and certificate (the certificate is its own CA)
 */
export async function createBenchCertificate(): Promise<BenchCertificate> {
  // Imported here, not at the top: server processes read this module too, and must not carry the
  // certificate generator in their heap (peak RSS is measured).
  const { generate } = await import('selfsigned')
  const made = await generate([{ name: 'commonName', value: 'localhost' }], {
    notAfterDate: new Date(Date.now() + DAY_MS),
    keyType: 'ec',
    curve: 'P-256',
    extensions: [
      {
        name: 'subjectAltName',
        altNames: [
          { type: 2, value: 'localhost' },
          { type: 7, ip: '127.0.0.1' },
          { type: 7, ip: '::1' },
        ],
      },
    ],
  })
  return { key: made.private, cert: made.cert }
}

/** The environment variables that carry `certificate` to a server process. */
export function toCertificateEnv(certificate: BenchCertificate): Record<string, string> {
  return { [CERTIFICATE_ENV.key]: certificate.key, [CERTIFICATE_ENV.cert]: certificate.cert }
}

/** The certificate a server process was given, or `undefined` when it got none. */
export function fromCertificateEnv(env: NodeJS.ProcessEnv): BenchCertificate | undefined {
  const key = env[CERTIFICATE_ENV.key]
  const cert = env[CERTIFICATE_ENV.cert]
  return key === undefined || cert === undefined ? undefined : { key, cert }
}
