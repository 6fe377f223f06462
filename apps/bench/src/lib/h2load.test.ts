import { describe, expect, it } from 'vitest'
import { parseH2loadOutput } from './h2load.ts'

// h2load 1.52 (Debian's nghttp2-client), `-c8 -m4 -D2 --npn-list=h2`, trimmed of its progress lines.
const TIMED = `starting benchmark...
spawning thread #0: 8 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for measurements.
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
TLS Protocol: TLSv1.3
Cipher: TLS_AES_256_GCM_SHA384
Server Temp Key: X25519 253 bits
Application protocol: h2
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 2.00s, 33280.00 req/s, 33.47MB/s
requests: 66560 total, 66592 started, 66560 done, 66560 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 66588 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 66.93MB (70184260) total, 195.68KB (200380) headers (space savings 95.37%), 65.03MB (68186112) data
                     min         max         mean         sd        +/- sd
time for request:      310us     25.84ms       934us       857us    96.99%
time for connect:     4.57ms     35.39ms     19.23ms     11.27ms    62.50%
time to 1st byte:    11.22ms     38.27ms     23.74ms      8.85ms    75.00%
req/s           :    4155.71     4161.55     4159.46        2.08    75.00%
`

describe('parseH2loadOutput', () => {
  it('reads requests/s, the requests done and the mean and max time for request, with no percentiles', () => {
    const result = parseH2loadOutput(TIMED)
    expect(result).toMatchObject({
      requests: 66560,
      seconds: 2,
      requestsPerSecond: 33280,
      errors: 0,
      badStatus: 0,
    })
    expect(result.meanMs).toBeCloseTo(0.934)
    expect(result.maxMs).toBeCloseTo(25.84)
    expect(result.p50Ms).toBeNaN()
    expect(result.p99Ms).toBeNaN()
  })

  it('counts failed requests with an HTTP status as bad statuses and the others as errors', () => {
    const output = TIMED.replace(
      'requests: 66560 total, 66592 started, 66560 done, 66560 succeeded, 0 failed, 0 errored, 0 timeout',
      'requests: 200 total, 200 started, 200 done, 150 succeeded, 50 failed, 20 errored, 5 timeout',
    ).replace('finished in 2.00s', 'finished in 20.00ms')
    expect(parseH2loadOutput(output)).toMatchObject({
      requests: 200,
      seconds: 0.02,
      errors: 20,
      badStatus: 30,
    })
  })

  it('refuses a run whose connections did not negotiate h2', () => {
    const output = TIMED.replace('Application protocol: h2', 'Application protocol: http/1.1')
    expect(() => parseH2loadOutput(output)).toThrow(/did not speak h2 \(ALPN gave http\/1\.1\)/)
  })

  it('says which line is missing', () => {
    expect(() => parseH2loadOutput('starting benchmark...\n')).toThrow(/no "requests:" line/)
  })
})
