import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { canonicalAddress, classifyAddress, parseAddressBlock } from '../../src/guard/address-class.ts';

/** [text, range]: every special range, none of them public. */
const SPECIAL: readonly (readonly [string, string])[] = [
  ['127.0.0.1', 'loopback'],
  ['127.255.255.254', 'loopback'],
  ['::1', 'loopback'],
  ['10.0.0.1', 'private'],
  ['10.255.255.255', 'private'],
  ['172.16.0.1', 'private'],
  ['172.31.255.255', 'private'],
  ['192.168.1.1', 'private'],
  ['169.254.169.254', 'linkLocal'], // cloud metadata (AWS, GCP, Azure)
  ['169.254.0.1', 'linkLocal'],
  ['fe80::1', 'linkLocal'],
  ['fd00:ec2::254', 'uniqueLocal'], // AWS metadata over IPv6
  ['fc00::1', 'uniqueLocal'],
  ['fdff:ffff::1', 'uniqueLocal'],
  ['100.64.0.1', 'carrierGradeNat'],
  ['100.127.255.255', 'carrierGradeNat'],
  ['224.0.0.1', 'multicast'],
  ['239.255.255.250', 'multicast'],
  ['ff02::1', 'multicast'],
  ['ff0e::1', 'multicast'],
  ['0.0.0.0', 'unspecified'],
  ['0.1.2.3', 'unspecified'],
  ['::', 'unspecified'],
  ['255.255.255.255', 'broadcast'],
  ['240.0.0.1', 'reserved'],
  ['192.0.2.1', 'reserved'],
  ['198.18.0.1', 'reserved'],
  ['2001:db8::1', 'reserved'],
  ['2002:7f00:1::', '6to4'],
  ['2001::1', 'teredo'],
  ['2001:0:4136:e378:8000:63bf:3fff:fdd2', 'teredo'],
  ['64:ff9b::7f00:1', 'rfc6052'], // NAT64 of 127.0.0.1
  ['64:ff9b::808:808', 'rfc6052'], // NAT64 of a public address: still not reached directly
];

const PUBLIC = ['8.8.8.8', '1.1.1.1', '93.184.216.34', '100.63.255.255', '100.128.0.1', '172.15.255.255', '172.32.0.1', '2606:4700:4700::1111', '2001:4860:4860::8888'];

describe('classifyAddress', () => {
  it('names the range of every special address, and none is public', () => {
    for (const [text, range] of SPECIAL) {
      const found = classifyAddress(text);
      assert.ok(found, text);
      assert.equal(found.range, range, text);
      assert.equal(found.isPublic, false, text);
    }
  });

  it('public unicast IPv4 and IPv6 pass', () => {
    for (const text of PUBLIC) {
      assert.deepEqual(classifyAddress(text), { address: text, range: 'unicast', isPublic: true }, text);
    }
  });

  it('reads IPv4-mapped IPv6 as the IPv4 address it reaches', () => {
    for (const text of ['::ffff:127.0.0.1', '::ffff:7f00:1', '0:0:0:0:0:ffff:7f00:1', '::FFFF:127.0.0.1', '[::ffff:127.0.0.1]']) {
      assert.deepEqual(classifyAddress(text), { address: '127.0.0.1', range: 'loopback', isPublic: false }, text);
    }
    assert.deepEqual(classifyAddress('::ffff:169.254.169.254'), { address: '169.254.169.254', range: 'linkLocal', isPublic: false });
    assert.deepEqual(classifyAddress('::ffff:10.0.0.1'), { address: '10.0.0.1', range: 'private', isPublic: false });
    // Mapped public stays public: it is the same IPv4 address.
    assert.deepEqual(classifyAddress('::ffff:8.8.8.8'), { address: '8.8.8.8', range: 'unicast', isPublic: true });
  });

  it('never calls the deprecated IPv4-compatible form (::a.b.c.d) public, whatever the IPv4 address', () => {
    for (const [text, address] of [['::127.0.0.1', '::7f00:1'], ['::7f00:1', '::7f00:1'], ['::8.8.8.8', '::808:808'], ['::169.254.169.254', '::a9fe:a9fe']] as const) {
      assert.deepEqual(classifyAddress(text), { address, range: 'ipv4Compatible', isPublic: false }, text);
    }
  });

  it('reads decimal, octal, hex and short IPv4 forms as the address a URL connects to', () => {
    for (const text of ['2130706433', '0177.0.0.1', '0x7f.1', '0x7f000001', '127.1', '017700000001', '0x7F.0.0.1', '127.0.1', '127.0.0.1.']) {
      assert.deepEqual(classifyAddress(text), { address: '127.0.0.1', range: 'loopback', isPublic: false }, text);
    }
    assert.deepEqual(classifyAddress('0xa9fea9fe'), { address: '169.254.169.254', range: 'linkLocal', isPublic: false });
    assert.equal(classifyAddress('0')?.address, '0.0.0.0');
    // The URL host parser maps full-width digits and dots (IDNA): so does the classification.
    assert.equal(classifyAddress('１２７．０．０．１')?.range, 'loopback');
  });

  it('returns undefined for names and junk, without throwing', () => {
    const junk = [
      'localhost', 'example.com', 'xn--e1afmkfd.xn--p1ai', '', ' ', '[]', '[::1', '::1]', 'fe80::1%eth0', 'fe80::1%25eth0', '1.2.3.4.5', '256.0.0.1', '1.2.3.256', '08.0.0.1',
      '1.2.3.4/24', '1.2.3.4?', '1.2.3.4#x', 'user@1.2.3.4', '1.2.3.4 ', ' 1.2.3.4', '1.2.3 .4', '::1 ', 'a/b', ':::1', '1::2::3', '12345::1', 'g::1', '\u0000',
    ];
    for (const text of junk) {
      assert.equal(classifyAddress(text), undefined, JSON.stringify(text));
    }
    // '0x' is an address in WHATWG's reading (0.0.0.0), as a URL would connect to it.
    assert.equal(classifyAddress('0x')?.range, 'unspecified');
  });

  it('canonicalAddress gives the URL parser\'s reading, without brackets', () => {
    assert.equal(canonicalAddress('[::1]'), '::1');
    assert.equal(canonicalAddress('::ffff:127.0.0.1'), '::ffff:7f00:1');
    assert.equal(canonicalAddress('0x7f.1'), '127.0.0.1');
    assert.equal(canonicalAddress('api.example.com'), undefined);
  });

  it('never throws, and what it returns classifies again to itself (property)', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 50 }), fc.string({ unit: 'binary', maxLength: 50 }), fc.ipV4(), fc.ipV4Extended(), fc.ipV6()), (text) => {
        const found = classifyAddress(text);
        if (found) assert.deepEqual(classifyAddress(found.address), found);
      }),
      { numRuns: 3000 },
    );
  });

  it('every IP address, in any notation the generators know, is recognised (property)', () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV4Extended(), fc.ipV6()), (text) => {
        assert.ok(classifyAddress(text), text);
      }),
      { numRuns: 2000 },
    );
  });

  it('no address in 127/8, 10/8 or 169.254/16 is public, in any notation (property)', () => {
    const inBlock = fc.tuple(
      fc.constantFrom(127, 10, 169),
      fc.integer({ min: 0, max: 255 }),
      fc.integer({ min: 0, max: 255 }),
      fc.integer({ min: 0, max: 255 }),
    ).map(([a, b, c, d]) => (a === 169 ? [169, 254, c, d] : [a, b, c, d]) as [number, number, number, number]);
    const notations: ((octets: [number, number, number, number]) => string)[] = [
      (o) => o.join('.'),
      (o) => String(((o[0] << 24) >>> 0) + (o[1] << 16) + (o[2] << 8) + o[3]),
      (o) => `0x${o.map((x) => x.toString(16).padStart(2, '0')).join('')}`,
      (o) => o.map((x) => `0${x.toString(8)}`).join('.'),
      (o) => o.map((x) => `0x${x.toString(16)}`).join('.'),
      (o) => `${o[0]}.${(o[1] << 16) + (o[2] << 8) + o[3]}`,
      (o) => `::ffff:${o.join('.')}`,
      (o) => `::ffff:${((o[0] << 8) + o[1]).toString(16)}:${((o[2] << 8) + o[3]).toString(16)}`,
      (o) => `[0:0:0:0:0:ffff:${o.join('.')}]`,
      (o) => `::${o.join('.')}`,
    ];
    fc.assert(
      fc.property(inBlock, fc.integer({ min: 0, max: notations.length - 1 }), (octets, which) => {
        const text = notations[which]!(octets);
        const found = classifyAddress(text);
        assert.ok(found, text);
        assert.equal(found.isPublic, false, text);
        if (which !== notations.length - 1) assert.equal(found.address, octets.join('.'), text);
      }),
      { numRuns: 3000 },
    );
  });
});

describe('parseAddressBlock', () => {
  it('accepts a.b.c.d/n, x::/n and single addresses', () => {
    const ten = parseAddressBlock('10.0.0.0/8');
    assert.equal(ten.text, '10.0.0.0/8');
    assert.ok(ten.contains('10.1.2.3'));
    assert.ok(!ten.contains('11.0.0.1'));
    const ula = parseAddressBlock('fd00::/8');
    assert.ok(ula.contains('fd00:ec2::254'));
    assert.ok(ula.contains('[fd12::1]'));
    assert.ok(!ula.contains('fe80::1'));
    assert.ok(!ula.contains('10.0.0.1'));
    const one = parseAddressBlock('127.0.0.1');
    assert.ok(one.contains('127.0.0.1'));
    assert.ok(!one.contains('127.0.0.2'));
    const six = parseAddressBlock('::1');
    assert.ok(six.contains('::1'));
    assert.ok(!six.contains('::2'));
    assert.ok(parseAddressBlock('169.254.169.254/32').contains('169.254.169.254'));
    assert.ok(parseAddressBlock('0.0.0.0/0').contains('8.8.8.8'));
    assert.ok(parseAddressBlock('FD00::/8').contains('fd00::1'));
  });

  it('refuses garbage and IPv4 that is not dotted decimal', () => {
    const bad = ['garbage', '', '/8', '10.0.0.0/', '10.0.0.0/33', '::/129', '10.0.0.0/-1', '10.0.0.0/8/8', '10.0.0.0/0x8', ' 10.0.0.0/8', '10.0.0.0/8 ', '1.2.3', '1.2.3.4.5/8', '[::1]', 'localhost', '10/8', '127.1/8', '0x7f.0.0.1/8', '0177.0.0.1', '2130706433', '0x7f000001/32'];
    for (const text of bad) assert.throws(() => parseAddressBlock(text), Error, JSON.stringify(text));
  });

  it('contains() reads addresses in every notation, IPv4-mapped ones as IPv4', () => {
    const loopback = parseAddressBlock('127.0.0.0/8');
    for (const address of ['127.0.0.1', '::ffff:127.0.0.1', '::ffff:7f00:1', '0:0:0:0:0:ffff:7f00:1', '[::ffff:127.0.0.1]', '2130706433', '0x7f.1', '127.1']) {
      assert.ok(loopback.contains(address), address);
    }
    // ::a.b.c.d is IPv6 to a URL, not the IPv4 address.
    assert.ok(!loopback.contains('::127.0.0.1'));
    assert.ok(!loopback.contains('::7f00:1'));
    const ten = parseAddressBlock('10.0.0.0/8');
    assert.ok(ten.contains('::ffff:10.1.2.3'));
    assert.ok(ten.contains('::ffff:a01:203'));
    for (const junk of ['localhost', '', 'junk', '10.0.0.1/8', 'fe80::1%eth0', '[10.0.0.1']) {
      assert.doesNotThrow(() => assert.equal(ten.contains(junk), false, junk));
    }
  });

  it('a block it accepts contains the address it is written as (IPv4-mapped and ::a.b.c.d blocks)', () => {
    // A block that can never match must be refused at load, like any rule that cannot mean what it says.
    const neverMatching: string[] = [];
    for (const text of ['::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:127.0.0.0/104', '::ffff:0:0/96', '::127.0.0.1']) {
      let block: ReturnType<typeof parseAddressBlock>;
      try {
        block = parseAddressBlock(text);
      } catch {
        continue;
      }
      if (!block.contains(text.split('/')[0]!)) neverMatching.push(text);
    }
    assert.deepEqual(neverMatching, [], 'accepted, yet they contain not even their own address');
  });
});
