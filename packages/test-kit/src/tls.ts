// Certificates made in the test (the selfsigned package), for TLS fronts and upstreams on
// 127.0.0.1: self-signed ones, and a private CA with the server and client certificates it signs.
import { generate } from 'selfsigned'

/** A PEM key and certificate. */
export interface TestCertificate {
  key: string
  cert: string
}

/** What {@link createServerCertificate} and {@link createClientCertificate} may change. */
export interface IssueOptions {
  /** The first day of validity. Default: now. */
  notBefore?: Date
  /** The last day of validity. Default: a day from now. */
  notAfter?: Date
}

/** What {@link createServerCertificate} may change, besides the validity. */
export interface ServerCertificateOptions extends IssueOptions {
  /** IP addresses the certificate names besides its DNS names. Default: none. */
  ips?: readonly string[]
}

const DAY_MS = 24 * 3600_000

// Every key here is ECDSA P-256, signed with SHA-256 (selfsigned signs with the issuer's key using
// the new key's type, so a CA and what it issues must share it).
const KEY = { keyType: 'ec', curve: 'P-256', algorithm: 'sha256' } as const

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
    notAfterDate: new Date(Date.now() + DAY_MS),
    keyType: 'ec',
    curve: 'P-256',
    extensions: [{ name: 'subjectAltName', altNames }],
  })
  return { key: made.private, cert: made.cert }
}

/**
 * A private certificate authority (a self-signed CA certificate that may sign others, no
 * intermediates), valid for a day: hand its `cert` to whoever should trust what it issues.
 *
 * @param commonName - the CA's name
 * @returns the CA's PEM key and certificate
 */
export async function createCertificateAuthority(
  commonName = 'wsgiproxy test CA',
): Promise<TestCertificate> {
  const made = await generate([{ name: 'commonName', value: commonName }], {
    ...KEY,
    notAfterDate: new Date(Date.now() + DAY_MS),
    extensions: [
      { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
      {
        name: 'keyUsage',
        keyCertSign: true,
        cRLSign: true,
        digitalSignature: true,
        critical: true,
      },
    ],
  })
  return { key: made.private, cert: made.cert }
}

/**
 * A TLS server certificate signed by `ca`, for these DNS names and `options.ips` only (no
 * loopback address unless named).
 *
 * @param ca - the issuing CA (from {@link createCertificateAuthority})
 * @param names - DNS names; the first is the common name
 * @param options - IP addresses and validity
 * @returns the PEM key and certificate
 */
export async function createServerCertificate(
  ca: TestCertificate,
  names: readonly string[],
  options: ServerCertificateOptions = {},
): Promise<TestCertificate> {
  const altNames = [
    ...names.map((value) => ({ type: 2 as const, value })),
    ...(options.ips ?? []).map((ip) => ({ type: 7 as const, ip })),
  ]
  return issue(ca, names[0] ?? options.ips?.[0] ?? 'localhost', options, [
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames },
  ])
}

/**
 * A TLS client certificate (for mutual TLS) signed by `ca`.
 *
 * @param ca - the issuing CA (from {@link createCertificateAuthority})
 * @param commonName - the client's name
 * @param options - validity
 * @returns the PEM key and certificate
 */
export async function createClientCertificate(
  ca: TestCertificate,
  commonName = 'wsgiproxy test client',
  options: IssueOptions = {},
): Promise<TestCertificate> {
  return issue(ca, commonName, options, [{ name: 'extKeyUsage', clientAuth: true }])
}

type Extensions = NonNullable<NonNullable<Parameters<typeof generate>[1]>['extensions']>

async function issue(
  ca: TestCertificate,
  commonName: string,
  options: IssueOptions,
  extensions: Extensions,
): Promise<TestCertificate> {
  const notBefore = options.notBefore ?? new Date()
  const made = await generate([{ name: 'commonName', value: commonName }], {
    ...KEY,
    ca,
    notBeforeDate: notBefore,
    notAfterDate: options.notAfter ?? new Date(notBefore.getTime() + DAY_MS),
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      ...extensions,
    ],
  })
  return { key: made.private, cert: made.cert }
}
