// Self-signed certificates made in the test (the selfsigned package), for TLS fronts and
// upstreams on 127.0.0.1.
import { generate } from 'selfsigned'

/** A PEM key and certificate. */
export interface TestCertificate {
  key: string
  cert: string
}

/**
 * A self-signed ECDSA (P-256) certificate for these DNS names (and 127.0.0.1 and ::1), valid for a day.
 *
 * @param names - DNS names; the first is the common name
 * @returns the PEM key and certificate (the certificate is its own CA)
 */
export async function selfSignedCertificate(
  names: readonly string[] = ['localhost'],
): Promise<TestCertificate> {
  const altNames = [
    ...names.map((value) => ({ type: 2 as const, value })),
    { type: 7 as const, ip: '127.0.0.1' },
    { type: 7 as const, ip: '::1' },
  ]
  const made = await generate([{ name: 'commonName', value: names[0] ?? 'localhost' }], {
    notAfterDate: new Date(Date.now() + 24 * 3600_000),
    keyType: 'ec',
    curve: 'P-256',
    extensions: [{ name: 'subjectAltName', altNames }],
  })
  return { key: made.private, cert: made.cert }
}
