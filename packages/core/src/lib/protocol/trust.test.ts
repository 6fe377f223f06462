import * as fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { WsgiProxyError } from '../errors.ts'
import { TRUST_PRESETS, clientAddress, compileTrust } from './trust.ts'

/** The error `compileTrust(entries)` throws; fails the test when it throws anything else. */
function compileError(entries: unknown): WsgiProxyError {
  let thrown: unknown
  try {
    compileTrust(entries as readonly string[])
  } catch (error) {
    thrown = error
  }
  if (thrown instanceof WsgiProxyError) return thrown
  throw new Error(
    `expected a WsgiProxyError from ${JSON.stringify(entries)}, got ${String(thrown)}`,
  )
}

// Every string a header or a socket could hand over, plus address-like text and near misses.
const anyAddress = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 60 }),
  fc.ipV4(),
  fc.ipV4Extended(),
  fc.ipV6(),
  fc.ipV4().map((ip) => `::ffff:${ip}`),
  fc.tuple(fc.ipV6(), fc.string({ maxLength: 8 })).map(([ip, zone]) => `${ip}%${zone}`),
  fc.tuple(fc.ipV4(), fc.nat(99_999)).map(([ip, port]) => `${ip}:${port}`),
  fc.tuple(fc.ipV6(), fc.nat(99_999)).map(([ip, port]) => `[${ip}]:${port}`),
)

describe('TRUST_PRESETS', () => {
  it('holds the proxy-addr ranges', () => {
    expect(TRUST_PRESETS).toEqual({
      loopback: ['127.0.0.0/8', '::1/128'],
      linklocal: ['169.254.0.0/16', 'fe80::/10'],
      uniquelocal: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'],
    })
  })

  it('is frozen, lists included', () => {
    expect(Object.isFrozen(TRUST_PRESETS)).toBe(true)
    for (const ranges of Object.values(TRUST_PRESETS)) expect(Object.isFrozen(ranges)).toBe(true)
  })
})

describe('compileTrust', () => {
  it.each([
    // Single addresses.
    [['203.0.113.5'], '203.0.113.5', true],
    [['203.0.113.5'], '203.0.113.6', false],
    [['2001:db8::1'], '2001:db8::1', true],
    [['2001:db8::1'], '2001:db8::2', false],
    // IPv4 CIDR boundaries.
    [['10.0.0.0/8'], '10.0.0.0', true],
    [['10.0.0.0/8'], '10.255.255.255', true],
    [['10.0.0.0/8'], '11.0.0.0', false],
    [['10.0.0.0/8'], '9.255.255.255', false],
    [['172.16.0.0/12'], '172.16.0.0', true],
    [['172.16.0.0/12'], '172.31.255.255', true],
    [['172.16.0.0/12'], '172.32.0.0', false],
    [['172.16.0.0/12'], '172.15.255.255', false],
    [['192.168.0.0/16'], '192.168.255.255', true],
    [['192.168.0.0/16'], '192.169.0.0', false],
    [['203.0.113.7/32'], '203.0.113.7', true],
    [['203.0.113.7/32'], '203.0.113.8', false],
    [['10.1.2.3/8'], '10.200.0.1', true],
    [['0.0.0.0/0'], '198.51.100.1', true],
    [['0.0.0.0/0'], '2001:db8::1', false],
    // IPv6 CIDR boundaries and spellings.
    [['2001:db8::/32'], '2001:db8:ffff:ffff:ffff:ffff:ffff:ffff', true],
    [['2001:db8::/32'], '2001:db9::', false],
    [['2001:db8::/32'], '2001:DB8::1', true],
    [['2001:db8::/32'], '2001:0db8:0000:0000:0000:0000:0000:0001', true],
    [['2001:DB8::/32'], '2001:db8::1', true],
    [['::/0'], '2001:db8::1', true],
    // IPv4-mapped IPv6 and IPv4 are one address.
    [['10.0.0.0/8'], '::ffff:10.1.2.3', true],
    [['10.0.0.0/8'], '::FFFF:10.1.2.3', true],
    [['10.0.0.0/8'], '::ffff:a01:203', true],
    [['10.0.0.0/8'], '::ffff:11.1.2.3', false],
    [['::ffff:10.0.0.0/104'], '10.1.2.3', true],
    [['::ffff:10.0.0.0/104'], '11.1.2.3', false],
    [['::ffff:10.0.0.0/104'], '::ffff:10.1.2.3', true],
    [['::ffff:a00:0/104'], '10.1.2.3', true],
    [['::ffff:127.0.0.1'], '127.0.0.1', true],
    [['127.0.0.1'], '::ffff:127.0.0.1', true],
    [['::ffff:0:0/96'], '198.51.100.1', true],
    [['::ffff:0:0/96'], '2001:db8::1', false],
    [['::/0'], '198.51.100.1', true],
    // Zone ids are ignored.
    [['fe80::/10'], 'fe80::1%eth0', true],
    [['fe80::1%eth0'], 'fe80::1%eth1', true],
    [['fe80::1%eth0'], 'fe80::1', true],
    [['fe80::%eth0/64'], 'fe80::2%eth0', true],
    // Presets.
    [['loopback'], '127.0.0.1', true],
    [['loopback'], '127.255.255.255', true],
    [['loopback'], '128.0.0.1', false],
    [['loopback'], '::1', true],
    [['loopback'], '0:0:0:0:0:0:0:1', true],
    [['loopback'], '::2', false],
    [['loopback'], '::ffff:127.0.0.1', true],
    [['linklocal'], '169.254.0.1', true],
    [['linklocal'], '169.255.0.1', false],
    [['linklocal'], 'fe80::abcd', true],
    [['linklocal'], 'febf:ffff::1', true],
    [['linklocal'], 'fec0::1', false],
    [['uniquelocal'], '10.20.30.40', true],
    [['uniquelocal'], '172.20.0.1', true],
    [['uniquelocal'], '172.32.0.1', false],
    [['uniquelocal'], '192.168.1.1', true],
    [['uniquelocal'], 'fc00::1', true],
    [['uniquelocal'], 'fdff:ffff::1', true],
    [['uniquelocal'], 'fe00::1', false],
    [['uniquelocal'], '8.8.8.8', false],
    [['uniquelocal'], '::ffff:192.168.0.1', true],
    // Several entries.
    [['loopback', '203.0.113.0/24'], '203.0.113.200', true],
    [['loopback', '203.0.113.0/24'], '::1', true],
    [['loopback', '203.0.113.0/24'], '203.0.114.1', false],
  ])('with %j says %j is trusted: %j', (entries, address, expected) => {
    expect(compileTrust(entries)(address)).toBe(expected)
  })

  it.each([
    '',
    ' ',
    'unknown',
    'x.y.z.w',
    '1.2.3.4.5',
    '256.0.0.1',
    '127.1',
    '2130706433',
    '0177.0.0.1',
    '0x7f.0.0.1',
    '::ffff:0x7f.0.0.1',
    '::ffff:0177.0.0.1',
    '1.2.3.4:80',
    '[::1]',
    '[::1]:443',
    ' 1.2.3.4',
    '1.2.3.4 ',
    '1.2.3.4/32',
    '1:2:3:4:5:6:7:8:9',
    'fe80::1%',
    '::1::',
    `${'1'.repeat(200)}::1`,
  ])('never trusts %j, which is not an address', (address) => {
    expect(compileTrust(['0.0.0.0/0', '::/0'])(address)).toBe(false)
  })

  it.each(['127.0.0.1', '::1', '10.0.0.1', '::ffff:127.0.0.1', 'fe80::1%eth0'])(
    'trusts nothing with an empty list (%j)',
    (address) => {
      expect(compileTrust([])(address)).toBe(false)
    },
  )

  it.each([
    ['10.0.0.0/33', /"10\.0\.0\.0\/33" must have a prefix length 0–32 for IPv4 \(got "33"\)/],
    ['::/129', /"::\/129" must have a prefix length 0–128 for IPv6 \(got "129"\)/],
    ['::ffff:10.0.0.0/129', /"::ffff:10\.0\.0\.0\/129" must have a prefix length 0–128/],
    ['10.0.0.0/', /"10\.0\.0\.0\/" must have a prefix length 0–32 for IPv4 \(got ""\)/],
    ['10.0.0.0/-1', /"10\.0\.0\.0\/-1" must have a prefix length/],
    ['10.0.0.0/8.0', /"10\.0\.0\.0\/8\.0" must have a prefix length/],
    ['10.0.0.0/0008', /"10\.0\.0\.0\/0008" must have a prefix length/],
    ['10.0.0.0/8/8', /"10\.0\.0\.0\/8\/8" must be an IP address, a CIDR range or one of/],
    ['lookback', /"lookback" must be an IP address, a CIDR range or one of the presets/],
    ['LOOPBACK', /"LOOPBACK" must be an IP address/],
    ['__proto__', /"__proto__" must be an IP address/],
    ['constructor', /"constructor" must be an IP address/],
    ['', /"" must be an IP address/],
    [' 10.0.0.0/8', /" 10\.0\.0\.0\/8" must be an IP address/],
    ['1.2.3.4.5', /"1\.2\.3\.4\.5" must be an IP address/],
    ['127.1', /"127\.1" must be an IP address/],
    ['0177.0.0.1/8', /"0177\.0\.0\.1\/8" must be an IP address/],
    ['300.0.0.0/8', /"300\.0\.0\.0\/8" must be an IP address/],
    ['/8', /"\/8" must be an IP address/],
  ])('refuses the entry %j naming it', (entry, message) => {
    const error = compileError(['loopback', entry])
    expect(error.code).toBe('INVALID_OPTIONS')
    expect(error.expose).toBe(true)
    expect(error.message).toMatch(message)
  })

  it('lists the presets when it refuses an unknown name', () => {
    expect(compileError(['private']).message).toContain('loopback, linklocal, uniquelocal')
  })

  it.each([
    [[1], 'trust entry 0 must be a string (got number)'],
    [['loopback', null], 'trust entry 1 must be a string (got null)'],
    [['loopback', undefined], 'trust entry 1 must be a string (got undefined)'],
    [[['10.0.0.0/8']], 'trust entry 0 must be a string (got array)'],
  ])('refuses the non-string entry in %j', (entries, message) => {
    const error = compileError(entries)
    expect(error.code).toBe('INVALID_OPTIONS')
    expect(error.message).toBe(message)
  })

  it.each([
    ['loopback', 'trust list must be an array of strings (got string)'],
    [undefined, 'trust list must be an array of strings (got undefined)'],
  ])('refuses %j as a list', (entries, message) => {
    expect(compileError(entries).message).toBe(message)
  })

  it('never throws and answers a boolean for any string (property)', () => {
    const predicates = [
      compileTrust([]),
      compileTrust(['loopback', 'linklocal', 'uniquelocal']),
      compileTrust(['0.0.0.0/0', '::/0', '::ffff:10.0.0.0/104']),
    ]
    fc.assert(
      fc.property(anyAddress, (address) => {
        for (const isTrusted of predicates) expect(typeof isTrusted(address)).toBe('boolean')
      }),
      { numRuns: 2000 },
    )
  })

  it('answers false for non-string input at runtime', () => {
    const isTrusted = compileTrust(['0.0.0.0/0', '::/0']) as (address: unknown) => boolean
    for (const value of [undefined, null, 2130706433, {}, ['127.0.0.1']]) {
      expect(isTrusted(value)).toBe(false)
    }
  })

  it('matches an IPv4 address and its IPv4-mapped form alike (property)', () => {
    const isTrusted = compileTrust(['uniquelocal', '203.0.113.0/24', '::ffff:198.51.100.0/120'])
    fc.assert(
      fc.property(fc.ipV4(), (ip) => {
        expect(isTrusted(`::ffff:${ip}`)).toBe(isTrusted(ip))
      }),
    )
  })

  it('trusts exactly the addresses whose first octet is 10 with 10.0.0.0/8 (property)', () => {
    const isTrusted = compileTrust(['10.0.0.0/8'])
    fc.assert(
      fc.property(fc.ipV4(), (ip) => {
        expect(isTrusted(ip)).toBe(ip.startsWith('10.'))
      }),
    )
  })
})

describe('clientAddress', () => {
  it.each([
    // [peer, X-Forwarded-For, trust list, client address]
    // One trusted proxy.
    ['127.0.0.1', '203.0.113.9', ['loopback'], '203.0.113.9'],
    ['10.0.0.1', '203.0.113.9', ['10.0.0.0/8'], '203.0.113.9'],
    // An untrusted peer: the header is ignored, whatever it claims.
    ['198.51.100.7', '203.0.113.9', ['loopback'], '198.51.100.7'],
    ['198.51.100.7', '127.0.0.1', ['loopback'], '198.51.100.7'],
    ['198.51.100.7', '127.0.0.1, 10.0.0.1', ['loopback', 'uniquelocal'], '198.51.100.7'],
    ['198.51.100.7', '203.0.113.9', [], '198.51.100.7'],
    ['127.0.0.1', '203.0.113.9', [], '127.0.0.1'],
    // Chains of three: only trusted hops are believed, the left-most entry only when all are.
    ['10.0.0.1', '1.1.1.1, 2.2.2.2, 3.3.3.3', ['10.0.0.0/8'], '3.3.3.3'],
    ['10.0.0.1', '1.1.1.1, 2.2.2.2, 10.0.0.2', ['10.0.0.0/8'], '2.2.2.2'],
    ['10.0.0.1', '6.6.6.6, 203.0.113.9, 10.0.0.2', ['10.0.0.0/8'], '203.0.113.9'],
    ['10.0.0.1', '1.1.1.1, 10.0.0.3, 10.0.0.2', ['10.0.0.0/8'], '1.1.1.1'],
    ['10.0.0.1', '10.0.0.4, 10.0.0.3, 10.0.0.2', ['10.0.0.0/8'], '10.0.0.4'],
    ['127.0.0.1', '10.0.0.9, 203.0.113.9, 10.0.0.2', ['loopback', '10.0.0.0/8'], '203.0.113.9'],
    // No header.
    ['127.0.0.1', undefined, ['loopback'], '127.0.0.1'],
    ['127.0.0.1', '', ['loopback'], '127.0.0.1'],
    // IPv6 peers and entries, written back as RFC 5952 text.
    ['::1', '2001:db8::5', ['loopback'], '2001:db8::5'],
    ['fd00::1', '2001:db8::1, fd00::2', ['uniquelocal'], '2001:db8::1'],
    ['fd00::1', '2001:db8::1, fd00::2', ['fd00::1'], 'fd00::2'],
    ['::1', '2001:DB8:0:0:0:0:0:1', ['loopback'], '2001:db8::1'],
    ['::1', '2001:0db8::0001', ['loopback'], '2001:db8::1'],
    ['2001:db8::99', '203.0.113.9', ['loopback'], '2001:db8::99'],
    ['0:0:0:0:0:0:0:1', '203.0.113.9', ['loopback'], '203.0.113.9'],
    // IPv4-mapped peers and entries.
    ['::ffff:127.0.0.1', '203.0.113.9', ['loopback'], '203.0.113.9'],
    ['::ffff:10.0.0.1', '203.0.113.9', ['10.0.0.0/8'], '203.0.113.9'],
    ['10.0.0.1', '203.0.113.9', ['::ffff:10.0.0.0/104'], '203.0.113.9'],
    ['::ffff:203.0.113.1', '198.51.100.7', ['loopback'], '::ffff:203.0.113.1'],
    ['127.0.0.1', '::ffff:203.0.113.9', ['loopback'], '203.0.113.9'],
    ['127.0.0.1', '203.0.113.9, ::ffff:10.0.0.2', ['loopback', '10.0.0.0/8'], '203.0.113.9'],
    // CIDR boundaries on a hop.
    ['127.0.0.1', '203.0.113.9, 10.255.255.255', ['loopback', '10.0.0.0/8'], '203.0.113.9'],
    ['127.0.0.1', '203.0.113.9, 11.0.0.0', ['loopback', '10.0.0.0/8'], '11.0.0.0'],
    ['127.0.0.1', '203.0.113.9, 172.31.255.255', ['loopback', '172.16.0.0/12'], '203.0.113.9'],
    ['127.0.0.1', '203.0.113.9, 172.32.0.0', ['loopback', '172.16.0.0/12'], '172.32.0.0'],
    // Presets on a hop.
    ['127.0.0.1', '203.0.113.9, 169.254.1.1', ['loopback', 'linklocal'], '203.0.113.9'],
    ['127.0.0.1', '203.0.113.9, 192.168.9.9', ['loopback', 'uniquelocal'], '203.0.113.9'],
    ['127.0.0.1', '203.0.113.9, 192.168.9.9', ['loopback', 'linklocal'], '192.168.9.9'],
    ['fe80::1%eth0', '203.0.113.9', ['linklocal'], '203.0.113.9'],
    ['fe80::1%eth0', '203.0.113.9', ['loopback'], 'fe80::1%eth0'],
    // Garbage stops the walk at the last valid address.
    ['127.0.0.1', 'unknown', ['loopback'], '127.0.0.1'],
    ['127.0.0.1', '203.0.113.9, unknown', ['loopback'], '127.0.0.1'],
    ['127.0.0.1', 'unknown, 127.0.0.2', ['loopback'], '127.0.0.2'],
    ['127.0.0.1', '203.0.113.9, , 127.0.0.2', ['loopback'], '127.0.0.2'],
    ['127.0.0.1', '203.0.113.9,', ['loopback'], '127.0.0.1'],
    ['127.0.0.1', ',', ['loopback'], '127.0.0.1'],
    ['127.0.0.1', ' ', ['loopback'], '127.0.0.1'],
    ['127.0.0.1', 'x.y.z.w', ['loopback'], '127.0.0.1'],
    ['127.0.0.1', '1.2.3.4.5', ['loopback'], '127.0.0.1'],
    ['127.0.0.1', '203.0.113.9, 0177.0.0.1', ['loopback'], '127.0.0.1'],
    ['127.0.0.1', '203.0.113.9, 127.1', ['loopback'], '127.0.0.1'],
    ['127.0.0.1', '"203.0.113.9"', ['loopback'], '127.0.0.1'],
    ['127.0.0.1', 'for=203.0.113.9', ['loopback'], '127.0.0.1'],
    ['127.0.0.1', '1.2.3.4.5, 203.0.113.9', ['loopback'], '203.0.113.9'],
    ['198.51.100.7', 'unknown', ['loopback'], '198.51.100.7'],
    // Ports and brackets.
    ['127.0.0.1', '203.0.113.9:5678', ['loopback'], '203.0.113.9'],
    ['127.0.0.1', '203.0.113.9, 127.0.0.2:8080', ['loopback'], '203.0.113.9'],
    ['127.0.0.1', '[2001:db8::1]:443', ['loopback'], '2001:db8::1'],
    ['127.0.0.1', '[2001:db8::1]', ['loopback'], '2001:db8::1'],
    ['127.0.0.1', '203.0.113.9, [::1]:8080', ['loopback'], '203.0.113.9'],
    ['127.0.0.1', '2001:db8::1:443', ['loopback'], '2001:db8::1:443'],
    ['127.0.0.1', '[203.0.113.9]', ['loopback'], '127.0.0.1'],
    ['127.0.0.1', '[203.0.113.9]:80', ['loopback'], '127.0.0.1'],
    ['127.0.0.1', '203.0.113.9:99999', ['loopback'], '127.0.0.1'],
    ['127.0.0.1', '203.0.113.9:', ['loopback'], '127.0.0.1'],
    ['127.0.0.1', '[2001:db8::1', ['loopback'], '127.0.0.1'],
    ['127.0.0.1', '[2001:db8::1]x', ['loopback'], '127.0.0.1'],
    // Whitespace.
    ['127.0.0.1', '  203.0.113.9  ,\t10.0.0.2 ', ['loopback', '10.0.0.0/8'], '203.0.113.9'],
    ['127.0.0.1', '203.0.113.9,10.0.0.2', ['loopback', '10.0.0.0/8'], '203.0.113.9'],
    ['127.0.0.1', '\t[2001:db8::1]:443 ', ['loopback'], '2001:db8::1'],
    // A peer that is not an address is never trusted.
    ['', '203.0.113.9', ['0.0.0.0/0', '::/0'], ''],
    ['unix:/run/app.sock', '203.0.113.9', ['0.0.0.0/0', '::/0'], 'unix:/run/app.sock'],
  ])('from peer %j and X-Forwarded-For %j trusting %j gives %j', (peer, xff, trust, expected) => {
    expect(clientAddress(peer, xff, compileTrust(trust))).toBe(expected)
  })

  it('asks about each hop from the peer leftwards and stops at the first untrusted one', () => {
    const asked: string[] = []
    const isTrusted = (address: string): boolean => {
      asked.push(address)
      return address !== '203.0.113.9'
    }
    const result = clientAddress('10.0.0.1', '6.6.6.6, 203.0.113.9, ::ffff:10.0.0.2', isTrusted)
    expect(result).toBe('203.0.113.9')
    expect(asked).toEqual(['10.0.0.1', '10.0.0.2', '203.0.113.9'])
  })

  it('never asks about the left-most entry, whose reporter decides alone', () => {
    const asked: string[] = []
    const result = clientAddress('10.0.0.1', '6.6.6.6, 10.0.0.2', (address) => {
      asked.push(address)
      return true
    })
    expect(result).toBe('6.6.6.6')
    expect(asked).toEqual(['10.0.0.1', '10.0.0.2'])
  })

  it('does not read the header when the peer is untrusted', () => {
    const asked: string[] = []
    const result = clientAddress('198.51.100.7', 'unknown, 127.0.0.1', (address) => {
      asked.push(address)
      return false
    })
    expect(result).toBe('198.51.100.7')
    expect(asked).toEqual(['198.51.100.7'])
  })

  it('gives the peer or an address from the header, never throwing (property)', () => {
    const isTrusted = compileTrust(['loopback', 'uniquelocal'])
    const isAddress = compileTrust(['0.0.0.0/0', '::/0'])
    const header = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 80 }),
      fc
        .array(anyAddress, { maxLength: 5 })
        .chain((hops) => fc.constantFrom(', ', ',', ' ,\t').map((sep) => hops.join(sep))),
    )
    fc.assert(
      fc.property(anyAddress, fc.option(header, { nil: undefined }), (peer, xff) => {
        const result = clientAddress(peer, xff, isTrusted)
        expect(result === peer || isAddress(result)).toBe(true)
      }),
      { numRuns: 2000 },
    )
  })

  it('takes the left-most entry when every hop is trusted (property)', () => {
    const isTrusted = compileTrust(['10.0.0.0/8'])
    const inside = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => `10.${o.join('.')}`)
    fc.assert(
      fc.property(fc.ipV4(), fc.array(inside, { maxLength: 6 }), inside, (client, hops, peer) => {
        expect(clientAddress(peer, [client, ...hops].join(', '), isTrusted)).toBe(client)
      }),
    )
  })
})
