import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  checkAddress,
  checkRequest,
  compileEgressRule,
  EgressRefusal,
  findEgressRefusal,
  rulesForOrigin,
  type EgressPolicy,
  type RawEgressRule,
} from '../../src/guard/egress-rules.ts';

function policyOf(...rules: RawEgressRule[]): EgressPolicy {
  return {
    source: JSON.stringify({ allow: rules }),
    rules: rules.map((rule, index) => compileEgressRule(rule, `/egress/allow/${index}`)),
    connectTimeoutMs: 2_000,
    maxResponseBytes: 1024 * 1024,
    maxHeaderBytes: 16 * 1024,
    maxRedirects: 0,
  };
}

/** The refusal reason checkRequest gives, or 'allowed'. */
function verdict(policy: EgressPolicy, url: string, method = 'GET'): string {
  const refusal = checkRequest(policy, new URL(url), method);
  if (refusal) assert.ok(refusal instanceof EgressRefusal && refusal.code === 'WARDEN_EGRESS_DENIED');
  return refusal?.reason ?? 'allowed';
}

describe('compileEgressRule', () => {
  it('accepts scheme://host[:port] with a DNS name, a wildcard name or a public address', () => {
    const plain = compileEgressRule({ destination: 'https://api.example.com' }, '/egress/allow/0');
    assert.deepEqual([plain.scheme, plain.host, plain.wildcard, plain.port, plain.methods, plain.paths, plain.addresses], ['https:', 'api.example.com', false, 443, undefined, undefined, []]);
    assert.equal(plain.path, '/egress/allow/0');
    const cases: [RawEgressRule, string, string, boolean, number][] = [
      [{ destination: 'https://api.example.com/' }, 'https:', 'api.example.com', false, 443],
      [{ destination: 'http://api.example.com' }, 'http:', 'api.example.com', false, 80],
      [{ destination: 'https://api.example.com:8443' }, 'https:', 'api.example.com', false, 8443],
      [{ destination: 'https://api.example.com:1' }, 'https:', 'api.example.com', false, 1],
      [{ destination: 'https://api.example.com:65535' }, 'https:', 'api.example.com', false, 65535],
      [{ destination: 'https://API.Example.COM' }, 'https:', 'api.example.com', false, 443],
      [{ destination: 'https://api.example.com.' }, 'https:', 'api.example.com', false, 443],
      [{ destination: 'https://*.example.com' }, 'https:', 'example.com', true, 443],
      [{ destination: 'https://xn--bcher-kva.de' }, 'https:', 'xn--bcher-kva.de', false, 443],
      [{ destination: 'https://8.8.8.8' }, 'https:', '8.8.8.8', false, 443],
      [{ destination: 'https://[2001:4860:4860:0:0:0:0:8888]:8443' }, 'https:', '2001:4860:4860::8888', false, 8443],
    ];
    for (const [raw, scheme, host, wildcard, port] of cases) {
      const rule = compileEgressRule(raw, '/egress/allow/0');
      assert.deepEqual([rule.scheme, rule.host, rule.wildcard, rule.port], [scheme, host, wildcard, port], raw.destination);
    }
  });

  it('upper-cases methods and keeps path prefixes', () => {
    const rule = compileEgressRule({ destination: 'https://api.example.com', methods: ['get', 'Post'], paths: ['/v1/', '/health'] }, '/egress/allow/0');
    assert.deepEqual([...(rule.methods ?? [])], ['GET', 'POST']);
    assert.deepEqual(rule.paths, ['/v1/', '/health']);
  });

  it('refuses a destination that is not scheme://host[:port]', () => {
    const refused = [
      'ftp://api.example.com', 'ws://api.example.com', 'file:///etc/passwd', 'HTTPS://api.example.com', 'api.example.com', '//api.example.com', 'https://', 'https:///x',
      'https://api.example.com/v1', 'https://api.example.com/v1/', 'https://api.example.com?x=1', 'https://api.example.com#x', 'https://user@api.example.com', 'https://user:pass@api.example.com',
      'https://api.example.com:', 'https://api.example.com:0', 'https://api.example.com:65536', 'https://api.example.com:99999', 'https://api.example.com:-1', 'https://api.example.com:http',
      'https://*.', 'https://*', 'https://*.*.example.com', 'https://a.*.example.com', 'https://*.1.2.3.4', 'https://*.[2001:4860:4860::8888]', 'https://*.8.8.8.8',
      'https://bücher.de', 'https://bÜcher.de', 'https://例え.jp', 'https://-api.example.com', 'https://api-.example.com', 'https://api..example.com', 'https://api example.com', 'https://api.example.com ',
      'https://[::1', 'https://[not-an-address]', 'https://' + 'a'.repeat(64) + '.example.com', '',
    ];
    for (const destination of refused) {
      assert.throws(() => compileEgressRule({ destination }, '/egress/allow/0'), Error, destination);
    }
  });

  it('refuses a non-public address destination unless the rule lists that address', () => {
    for (const destination of ['http://127.0.0.1', 'http://10.0.0.1', 'http://169.254.169.254', 'http://[::1]', 'http://[fd00:ec2::254]', 'http://0.0.0.0', 'http://100.64.0.1', 'http://2130706433', 'http://[::ffff:127.0.0.1]', 'http://[::127.0.0.1]']) {
      assert.throws(() => compileEgressRule({ destination }, '/egress/allow/0'), Error, destination);
    }
    // Listed, but another address: the rule could never match.
    assert.throws(() => compileEgressRule({ destination: 'http://10.0.0.1', addresses: ['10.0.0.2'] }, '/egress/allow/0'), Error);
    assert.throws(() => compileEgressRule({ destination: 'http://127.0.0.1', addresses: ['10.0.0.0/8'] }, '/egress/allow/0'), Error);

    const accepted: [RawEgressRule, string][] = [
      [{ destination: 'http://127.0.0.1', addresses: ['127.0.0.1'] }, '127.0.0.1'],
      [{ destination: 'http://127.0.0.1:8080', addresses: ['127.0.0.0/8'] }, '127.0.0.1'],
      [{ destination: 'http://10.0.0.1', addresses: ['10.0.0.0/8'] }, '10.0.0.1'],
      [{ destination: 'http://[::1]', addresses: ['::1'] }, '::1'],
      [{ destination: 'http://[fd00:ec2::254]', addresses: ['fd00::/8'] }, 'fd00:ec2::254'],
      [{ destination: 'http://2130706433', addresses: ['127.0.0.1'] }, '127.0.0.1'],
      [{ destination: 'http://[::ffff:127.0.0.1]', addresses: ['127.0.0.1'] }, '::ffff:7f00:1'],
    ];
    for (const [raw, host] of accepted) assert.equal(compileEgressRule(raw, '/egress/allow/0').host, host, raw.destination);
  });

  it('refuses bad addresses and path prefixes without a leading /', () => {
    assert.throws(() => compileEgressRule({ destination: 'https://api.example.com', addresses: ['garbage'] }, '/egress/allow/0'), Error);
    assert.throws(() => compileEgressRule({ destination: 'https://api.example.com', addresses: ['10/8'] }, '/egress/allow/0'), Error);
    for (const prefix of ['v1/', '', 'https://api.example.com/v1', '*']) {
      assert.throws(() => compileEgressRule({ destination: 'https://api.example.com', paths: ['/ok', prefix] }, '/egress/allow/0'), Error, prefix);
    }
  });
});

describe('checkRequest', () => {
  const policy = policyOf(
    { destination: 'https://api.example.com' },
    { destination: 'https://*.example.org' },
    { destination: 'http://plain.example.net:8080', methods: ['get', 'Post'], paths: ['/v1/', '/health'] },
    { destination: 'https://8.8.8.8' },
    { destination: 'https://[2001:4860:4860::8888]' },
    { destination: 'http://127.0.0.1:9000', addresses: ['127.0.0.1'] },
  );

  it('matches the host exactly, case-insensitively, with or without a trailing dot', () => {
    assert.equal(verdict(policy, 'https://api.example.com/x'), 'allowed');
    assert.equal(verdict(policy, 'https://API.Example.COM/x'), 'allowed');
    assert.equal(verdict(policy, 'https://api.example.com./x'), 'allowed');
    assert.equal(verdict(policy, 'https://api.example.com/x?query=1#fragment'), 'allowed');
    for (const url of ['https://example.com/', 'https://www.api.example.com/', 'https://api.example.com.evil.net/', 'https://apiexample.com/', 'https://api.example.co/', 'https://api.example.com..evil/']) {
      assert.equal(verdict(policy, url), 'not-allowlisted', url);
    }
  });

  it('*.domain matches sub and sub.sub, not the bare domain nor a look-alike', () => {
    assert.equal(verdict(policy, 'https://a.example.org/'), 'allowed');
    assert.equal(verdict(policy, 'https://a.b.example.org/'), 'allowed');
    assert.equal(verdict(policy, 'https://A.Example.ORG./'), 'allowed');
    for (const url of ['https://example.org/', 'https://evilexample.org/', 'https://a.evilexample.org/', 'https://example.org.evil.com/', 'https://a.example.org.evil.com/', 'https://a-example.org/']) {
      assert.equal(verdict(policy, url), 'not-allowlisted', url);
    }
  });

  it('compares the port, the scheme\'s default when none is written', () => {
    assert.equal(verdict(policy, 'https://api.example.com:443/'), 'allowed');
    assert.equal(verdict(policy, 'https://api.example.com:8443/'), 'not-allowlisted');
    assert.equal(verdict(policy, 'https://api.example.com:80/'), 'not-allowlisted');
    assert.equal(verdict(policy, 'http://plain.example.net:8080/v1/x'), 'allowed');
    assert.equal(verdict(policy, 'http://plain.example.net/v1/x'), 'not-allowlisted');
    assert.equal(verdict(policy, 'http://plain.example.net:80/v1/x'), 'not-allowlisted');
  });

  it('http and https are different destinations', () => {
    assert.equal(verdict(policy, 'http://api.example.com/'), 'not-allowlisted');
    assert.equal(verdict(policy, 'http://api.example.com:443/'), 'not-allowlisted');
    assert.equal(verdict(policy, 'https://plain.example.net:8080/v1/x'), 'not-allowlisted');
  });

  it('methods, case-insensitively, and path prefixes', () => {
    assert.equal(verdict(policy, 'http://plain.example.net:8080/v1/x', 'GET'), 'allowed');
    assert.equal(verdict(policy, 'http://plain.example.net:8080/v1/x', 'get'), 'allowed');
    assert.equal(verdict(policy, 'http://plain.example.net:8080/v1/x', 'POST'), 'allowed');
    assert.equal(verdict(policy, 'http://plain.example.net:8080/v1/x', 'post'), 'allowed');
    for (const method of ['DELETE', 'PUT', 'PATCH', 'HEAD', 'OPTIONS', 'CONNECT', 'TRACE', 'GETX', '']) {
      assert.equal(verdict(policy, 'http://plain.example.net:8080/v1/x', method), 'not-allowlisted', method);
    }
    assert.equal(verdict(policy, 'http://plain.example.net:8080/v1/'), 'allowed');
    assert.equal(verdict(policy, 'http://plain.example.net:8080/health'), 'allowed');
    for (const path of ['/', '/v1', '/v2/x', '/V1/x', '/admin/v1/x', '//v1/x', '/v1/../admin', '/v1/%2e%2e/admin', '/v1/%2E%2E/admin', '/v1\\..\\admin']) {
      assert.equal(verdict(policy, `http://plain.example.net:8080${path}`), 'not-allowlisted', path);
    }
    // Any method and path when the rule lists none.
    assert.equal(verdict(policy, 'https://api.example.com/anything/at/all', 'DELETE'), 'allowed');
  });

  it('never a URL with user information, even on an allowed destination', () => {
    for (const url of ['https://user@api.example.com/', 'https://user:pass@api.example.com/', 'https://:pass@api.example.com/', 'https://api.example.com@evil.net/', 'https://user@a.example.org/']) {
      assert.equal(verdict(policy, url), 'not-allowlisted', url);
    }
  });

  it('never a scheme other than http and https', () => {
    for (const url of ['ftp://api.example.com/', 'ws://api.example.com/', 'wss://api.example.com/', 'file:///etc/passwd', 'gopher://api.example.com/', 'data:text/plain,x', 'javascript:alert(1)', 'blob:https://api.example.com/x']) {
      assert.equal(verdict(policy, url), 'not-allowlisted', url);
    }
  });

  it('matches address destinations by address, in any notation', () => {
    assert.equal(verdict(policy, 'https://8.8.8.8/'), 'allowed');
    assert.equal(verdict(policy, 'https://134744072/'), 'allowed');
    assert.equal(verdict(policy, 'https://0x8.0x8.0x8.0x8/'), 'allowed');
    assert.equal(verdict(policy, 'https://[2001:4860:4860:0:0:0:0:8888]/'), 'allowed');
    assert.equal(verdict(policy, 'http://127.0.0.1:9000/'), 'allowed');
    assert.equal(verdict(policy, 'http://2130706433:9000/'), 'allowed');
    assert.equal(verdict(policy, 'http://0177.0.0.1:9000/'), 'allowed');
    assert.equal(verdict(policy, 'http://0x7f.1:9000/'), 'allowed');
    for (const url of ['http://127.0.0.2:9000/', 'http://0.0.0.0:9000/', 'http://[::1]:9000/', 'http://localhost:9000/', 'https://8.8.4.4/', 'http://169.254.169.254/', 'http://[fd00:ec2::254]/']) {
      assert.equal(verdict(policy, url), 'not-allowlisted', url);
    }
  });

  it('an empty policy refuses everything', () => {
    assert.equal(verdict(policyOf(), 'https://api.example.com/'), 'not-allowlisted');
  });
});

describe('rulesForOrigin', () => {
  it('returns the rules whose scheme, host and port match, wildcards included', () => {
    const policy = policyOf({ destination: 'https://api.example.com' }, { destination: 'https://*.example.com' }, { destination: 'https://api.example.com:8443' });
    assert.deepEqual(rulesForOrigin(policy, 'https:', 'api.example.com', 443).map((rule) => rule.path), ['/egress/allow/0', '/egress/allow/1']);
    assert.deepEqual(rulesForOrigin(policy, 'https:', 'api.example.com', 8443).map((rule) => rule.path), ['/egress/allow/2']);
    assert.deepEqual(rulesForOrigin(policy, 'http:', 'api.example.com', 443), []);
    assert.deepEqual(rulesForOrigin(policy, 'https:', 'example.com', 443), []);
  });
});

describe('checkAddress', () => {
  const policy = policyOf(
    { destination: 'http://api.test:8080', addresses: ['127.0.0.1', 'fd00::/8'] },
    { destination: 'http://bare.test:8080' },
  );
  const listed = rulesForOrigin(policy, 'http:', 'api.test', 8080);
  const bare = rulesForOrigin(policy, 'http:', 'bare.test', 8080);

  it('passes public unicast addresses, with or without rules', () => {
    for (const address of ['8.8.8.8', '2606:4700:4700::1111', '::ffff:8.8.8.8']) {
      assert.equal(checkAddress(listed, 'http://api.test:8080', address), undefined, address);
      assert.equal(checkAddress(bare, 'http://bare.test:8080', address), undefined, address);
      assert.equal(checkAddress([], 'http://x.test:8080', address), undefined, address);
    }
  });

  it('passes a non-public address only inside a block of a rule for the origin', () => {
    for (const address of ['127.0.0.1', '::ffff:127.0.0.1', '::ffff:7f00:1', 'fd00::1', 'fd00:ec2::254']) {
      assert.equal(checkAddress(listed, 'http://api.test:8080', address), undefined, address);
      const refusal = checkAddress(bare, 'http://bare.test:8080', address);
      assert.equal(refusal?.reason, 'private-address', address);
      assert.equal(refusal?.origin, 'http://bare.test:8080');
    }
    const cases: [string, string, string][] = [
      ['127.0.0.2', '127.0.0.2', 'loopback'],
      ['::1', '::1', 'loopback'],
      ['10.0.0.1', '10.0.0.1', 'private'],
      ['::ffff:10.0.0.1', '10.0.0.1', 'private'],
      ['169.254.169.254', '169.254.169.254', 'linkLocal'],
      ['fe80::1', 'fe80::1', 'linkLocal'],
      ['100.64.0.1', '100.64.0.1', 'carrierGradeNat'],
      ['0.0.0.0', '0.0.0.0', 'unspecified'],
      ['::', '::', 'unspecified'],
      ['224.0.0.1', '224.0.0.1', 'multicast'],
      ['::127.0.0.1', '::7f00:1', 'ipv4Compatible'],
      ['64:ff9b::7f00:1', '64:ff9b::7f00:1', 'rfc6052'],
    ];
    for (const [input, address, range] of cases) {
      const refusal = checkAddress(listed, 'http://api.test:8080', input);
      assert.ok(refusal instanceof EgressRefusal, input);
      assert.deepEqual([refusal.reason, refusal.address, refusal.range], ['private-address', address, range], input);
    }
  });

  it('a text that is not an address is unresolvable, never passed', () => {
    for (const text of ['', 'localhost', 'api.test', 'fe80::1%eth0', '1.2.3.4.5', 'not an address']) {
      assert.equal(checkAddress(listed, 'http://api.test:8080', text)?.reason, 'unresolvable', text);
      assert.equal(checkAddress([], 'http://api.test:8080', text)?.reason, 'unresolvable', text);
    }
  });
});

describe('findEgressRefusal', () => {
  const refusal = new EgressRefusal('private-address', 'http://a.test:80', 'refused', { address: '10.0.0.1', range: 'private' });

  it('finds the refusal itself and through nested causes', () => {
    assert.equal(findEgressRefusal(refusal), refusal);
    assert.equal(findEgressRefusal(new TypeError('fetch failed', { cause: refusal })), refusal);
    assert.equal(findEgressRefusal(new Error('a', { cause: new Error('b', { cause: new TypeError('c', { cause: refusal }) }) })), refusal);
    assert.equal(findEgressRefusal(new AggregateError([], 'x', { cause: refusal })), refusal);
    const found = findEgressRefusal(new Error('outer', { cause: refusal }));
    assert.deepEqual([found?.code, found?.reason, found?.origin, found?.address, found?.range], ['WARDEN_EGRESS_DENIED', 'private-address', 'http://a.test:80', '10.0.0.1', 'private']);
  });

  it('returns undefined when there is none, for non-errors, and for a cause cycle', () => {
    assert.equal(findEgressRefusal(undefined), undefined);
    assert.equal(findEgressRefusal(null), undefined);
    assert.equal(findEgressRefusal('private-address'), undefined);
    assert.equal(findEgressRefusal({ reason: 'private-address', code: 'WARDEN_EGRESS_DENIED' }), undefined);
    assert.equal(findEgressRefusal({ cause: refusal }), undefined);
    assert.equal(findEgressRefusal(new Error('a', { cause: new Error('b') })), undefined);
    const looped = new Error('a');
    (looped as Error & { cause?: unknown }).cause = looped;
    assert.equal(findEgressRefusal(looped), undefined);
    let deep: Error = new Error('bottom');
    for (let i = 0; i < 1000; i++) deep = new Error(`level ${i}`, { cause: deep });
    assert.equal(findEgressRefusal(deep), undefined);
  });
});
