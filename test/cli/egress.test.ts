import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { checkEgress } from '../../src/cli/egress.ts';
import { loadConfig } from '../../src/config/load.ts';
import { CLI, tempDir, writeConfig } from '../helpers.ts';

// Only loopback: every name looked up for real is localhost (from /etc/hosts); other names
// are never resolved (no --resolve) or resolved by an injected resolver.

const { dir, cleanup } = tempDir('warden-egress-');
after(cleanup);

function run(args: string[]) {
  const result = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

const CONFIG = writeConfig(join(dir, 'warden.yaml'), {
  version: 1,
  servers: {},
  agents: {},
  egress: {
    allow: [
      { destination: 'http://127.0.0.1:7071', addresses: ['127.0.0.1'], methods: ['GET', 'POST'], paths: ['/api/'] }, // 0
      { destination: 'http://localhost:7072' }, // 1: a name, no addresses: loopback is refused at connect time
      { destination: 'http://localhost:7073', addresses: ['127.0.0.0/8', '::1'] }, // 2
      { destination: 'https://api.example.com', methods: ['GET'] }, // 3: never resolved here
      { destination: 'http://127.0.0.1:7074', addresses: ['127.0.0.1'], methods: ['POST'] }, // 4: same origin as 5
      { destination: 'http://127.0.0.1:7074', addresses: ['127.0.0.1'], paths: ['/hooks/'] }, // 5
    ],
    connectTimeoutMs: 5000,
    maxResponseBytes: 2048,
    maxHeaderBytes: 8192,
    maxRedirects: 0,
  },
});
const NO_EGRESS = writeConfig(join(dir, 'no-egress.yaml'), { version: 1, servers: {}, agents: {} });

type Check = Record<string, any>;

function check(url: string, extra: string[] = [], config = CONFIG): { code: number | null; facts: Check } {
  const result = run(['egress', 'check', '--config', config, url, '--json', ...extra]);
  assert.ok(result.code === 0 || result.code === 1, `${url}: exit ${result.code}: ${result.stderr}`);
  return { code: result.code, facts: JSON.parse(result.stdout) as Check };
}

describe('egress check: command line', () => {
  it('--help explains the checks, --resolve and the exit codes; mcp-warden --help lists egress', () => {
    const help = run(['egress', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: mcp-warden egress check --config FILE URL \[--method METHOD\] \[--resolve\] \[--json\]$/m);
    assert.match(help.stdout, /not-allowlisted/);
    assert.match(help.stdout, /private-address/);
    assert.match(help.stdout, /unresolvable/);
    assert.match(help.stdout, /--method METHOD +the request's method \(default GET\): any a rule may name,\n +GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\n/);
    assert.match(help.stdout, /^Exit 0 when the broker would send the request/m);
    assert.match(help.stdout, /1 when it would\nrefuse it; 2 for a usage error/);
    const main = run(['--help']);
    assert.match(main.stdout, /^ {2}egress +check whether the broker would send a request/m);
    assert.match(main.stdout, /^ {2}1 +any other failure; egress check: the broker would refuse the request;\n +audit verify: the trail is not intact$/m);
  });

  it('usage errors exit 2 with WARDEN_USAGE', () => {
    const url = 'http://127.0.0.1:7071/api/';
    const cases: string[][] = [
      ['egress'],
      ['egress', 'frob', '--config', CONFIG, url],
      ['egress', 'check', '--config', CONFIG], // no URL
      ['egress', 'check', url], // no --config
      ['egress', 'check', '--config', CONFIG, 'not a url'],
      ['egress', 'check', '--config', CONFIG, '127.0.0.1:7071/api'], // no scheme
      ['egress', 'check', '--config', CONFIG, '/api/tickets'],
      ['egress', 'check', '--config', CONFIG, 'http://[::1/'],
      ['egress', 'check', '--config', CONFIG, url, '--method', 'FETCH'],
      ['egress', 'check', '--config', CONFIG, url, '--method', 'CONNECT'],
      ['egress', 'check', '--config', CONFIG, url, '--method', ''],
      ['egress', 'check', '--config', CONFIG, url, '--method'], // option without its value
      ['egress', 'check', '--config', CONFIG, url, 'http://127.0.0.1:7071/other'],
      ['egress', 'check', '--config', CONFIG, url, '--no-such-option'],
    ];
    for (const args of cases) {
      const result = run(args);
      assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr, /WARDEN_USAGE/, args.join(' '));
      assert.equal(result.stdout, '', args.join(' '));
    }
  });

  it('config problems exit with their codes: a missing file 3, an invalid egress rule 3', () => {
    const missing = run(['egress', 'check', '--config', join(dir, 'missing.yaml'), 'http://127.0.0.1:7071/api/']);
    assert.equal(missing.code, 3);
    assert.match(missing.stderr, /WARDEN_CONFIG_UNREADABLE/);
    const bad = writeConfig(join(dir, 'bad.yaml'), { version: 1, servers: {}, agents: {}, egress: { allow: [{ destination: 'http://10.0.0.1' }] } });
    const invalid = run(['egress', 'check', '--config', bad, 'http://10.0.0.1/']);
    assert.equal(invalid.code, 3);
    assert.match(invalid.stderr, /WARDEN_CONFIG_INVALID: .*\/egress\/allow\/0/);
  });
});

describe('egress check: the request', () => {
  it('allowed: the rule as its config path and destination, the address of an IP host, the limits; exit 0', () => {
    const text = run(['egress', 'check', '--config', CONFIG, 'http://127.0.0.1:7071/api/tickets?status=open']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^GET http:\/\/127\.0\.0\.1:7071\/api\/tickets\?status=open$/m);
    assert.match(text.stdout, /^verdict: allow$/m);
    assert.match(text.stdout, /^ {2}allowed by \/egress\/allow\/0: destination http:\/\/127\.0\.0\.1:7071, methods \[GET, POST\], paths \[\/api\/\], addresses \[127\.0\.0\.1\]$/m);
    assert.match(text.stdout, /^ {2}127\.0\.0\.1 +loopback +allowed: listed under addresses of \/egress\/allow\/0$/m);
    assert.match(text.stdout, /within 5000 ms/);
    assert.match(text.stdout, /body at most 2048 bytes .*headers at most 8192 bytes/);
    assert.match(text.stdout, /redirects: none followed/);

    const { code, facts } = check('http://127.0.0.1:7071/api/tickets', ['--method', 'post']);
    assert.equal(code, 0);
    assert.equal(facts['verdict'], 'allow');
    assert.equal(facts['method'], 'POST', 'the method is read case-insensitively');
    assert.equal(facts['reason'], null);
    assert.deepEqual(facts['rule'], { path: '/egress/allow/0', destination: 'http://127.0.0.1:7071', methods: ['GET', 'POST'], paths: ['/api/'], addresses: ['127.0.0.1'] });
    assert.deepEqual(facts['refusals'], []);
    assert.deepEqual(facts['limits'], { connectTimeoutMs: 5000, maxResponseBytes: 2048, maxHeaderBytes: 8192, maxRedirects: 0 });
  });

  it('--json: one object with the answer first, then the facts', () => {
    const { facts } = check('http://127.0.0.1:7071/api/x');
    assert.deepEqual(Object.keys(facts), ['config', 'input', 'url', 'method', 'origin', 'verdict', 'reason', 'message', 'rule', 'unmatched', 'rulesForOrigin', 'refusals', 'addresses', 'limits']);
    assert.equal(facts['config'], join(dir, 'warden.yaml'));
    assert.equal(facts['origin'], 'http://127.0.0.1:7071');
    assert.deepEqual(facts['rulesForOrigin'], [{ path: '/egress/allow/0', destination: 'http://127.0.0.1:7071', methods: ['GET', 'POST'], paths: ['/api/'], addresses: ['127.0.0.1'], allows: true, misses: [] }]);
    assert.deepEqual(facts['addresses'], {
      checked: true,
      from: 'ip-literal',
      host: '127.0.0.1',
      note: null,
      lookup: null,
      entries: [{ address: '127.0.0.1', range: 'loopback', public: false, allowed: true, listedBy: ['/egress/allow/0'], refusal: null }],
    });
  });

  it('two rules for one origin: either may allow; the one that does is named', () => {
    const post = check('http://127.0.0.1:7074/anything', ['--method', 'POST']).facts;
    assert.equal(post['verdict'], 'allow');
    assert.equal(post['rule'].path, '/egress/allow/4');
    const hook = check('http://127.0.0.1:7074/hooks/a', ['--method', 'PUT']).facts;
    assert.equal(hook['rule'].path, '/egress/allow/5');
    const neither = check('http://127.0.0.1:7074/other', ['--method', 'PUT']);
    assert.equal(neither.code, 1);
    assert.deepEqual(neither.facts['rulesForOrigin'].map((rule: Check) => [rule['path'], rule['misses']]), [['/egress/allow/4', ['method']], ['/egress/allow/5', ['path']]]);
  });

  it('denied, no rule for the origin (host, port or scheme differ): not-allowlisted, exit 1', () => {
    for (const url of ['http://127.0.0.2:7071/api/', 'http://127.0.0.1:7000/api/', 'https://127.0.0.1:7071/api/', 'https://other.example.com/', 'https://api.example.com.evil.test/']) {
      const { code, facts } = check(url);
      assert.equal(code, 1, url);
      assert.equal(facts['verdict'], 'deny', url);
      assert.equal(facts['reason'], 'not-allowlisted', url);
      assert.equal(facts['unmatched'], 'origin', url);
      assert.deepEqual(facts['rulesForOrigin'], [], url);
      assert.equal(facts['rule'], null, url);
    }
    const text = run(['egress', 'check', '--config', CONFIG, 'https://other.example.com/']);
    assert.equal(text.code, 1);
    assert.match(text.stdout, /^verdict: deny \[not-allowlisted\]$/m);
    assert.match(text.stdout, /no rule of \/egress\/allow is for https:\/\/other\.example\.com: /);
  });

  it('denied, a rule for the origin but not this method or path: what each rule misses', () => {
    const method = check('http://127.0.0.1:7071/api/x', ['--method', 'DELETE']);
    assert.equal(method.code, 1);
    assert.equal(method.facts['reason'], 'not-allowlisted');
    assert.equal(method.facts['unmatched'], 'method-or-path');
    assert.deepEqual(method.facts['rulesForOrigin'][0].misses, ['method']);
    assert.deepEqual(check('http://127.0.0.1:7071/other').facts['rulesForOrigin'][0].misses, ['path']);
    assert.deepEqual(check('http://127.0.0.1:7071/other', ['--method', 'PUT']).facts['rulesForOrigin'][0].misses, ['method', 'path']);
    // Prefixes are compared as sent: /api without its slash is not under /api/.
    assert.deepEqual(check('http://127.0.0.1:7071/api').facts['rulesForOrigin'][0].misses, ['path']);
    const text = run(['egress', 'check', '--config', CONFIG, 'http://127.0.0.1:7071/api/x', '--method', 'DELETE']);
    assert.match(text.stdout, /^ {2}why: no egress rule allows DELETE \/api\/x on http:\/\/127\.0\.0\.1:7071$/m);
    assert.match(text.stdout, /^ {4}\/egress\/allow\/0: .*; it misses the method$/m);
  });

  it('a URL that is not http(s) is a deny (not-allowlisted), never a crash; nothing is resolved', () => {
    for (const url of ['ftp://127.0.0.1/api/', 'file:///etc/passwd', 'javascript:alert(1)', 'mailto:ops@example.com', 'ws://127.0.0.1:7071/api/']) {
      const { code, facts } = check(url);
      assert.equal(code, 1, url);
      assert.equal(facts['reason'], 'not-allowlisted', url);
      assert.equal(facts['unmatched'], 'scheme', url);
      assert.equal(facts['addresses'].checked, false, url);
      assert.match(facts['message'], /is never allowed/, url);
    }
  });

  it('a URL with a user name or password is refused, and the password is not printed', () => {
    const { code, facts } = check('http://ops:hunter2@127.0.0.1:7071/api/');
    assert.equal(code, 1);
    assert.equal(facts['unmatched'], 'user-info');
    const text = run(['egress', 'check', '--config', CONFIG, 'http://ops:hunter2@127.0.0.1:7071/api/']);
    assert.equal(text.code, 1);
    for (const output of [JSON.stringify(facts), text.stdout, text.stderr]) assert.ok(!output.includes('hunter2'), output);
  });

  it('a config without an egress section refuses everything, with the default limits', () => {
    for (const url of ['http://127.0.0.1:7071/api/', 'https://api.example.com/']) {
      const { code, facts } = check(url, [], NO_EGRESS);
      assert.equal(code, 1, url);
      assert.equal(facts['reason'], 'not-allowlisted', url);
      assert.equal(facts['unmatched'], 'origin', url);
    }
    assert.deepEqual(check('http://127.0.0.1:7071/', [], NO_EGRESS).facts['limits'], { connectTimeoutMs: 10_000, maxResponseBytes: 1024 * 1024, maxHeaderBytes: 16 * 1024, maxRedirects: 3 });
  });
});

describe('egress check: addresses', () => {
  it('an IP-address host is checked without --resolve: a private one is denied private-address', () => {
    for (const [url, range] of [['http://10.1.2.3/', 'private'], ['http://169.254.169.254/latest/meta-data/', 'linkLocal'], ['http://[::1]:7071/api/', 'loopback'], ['http://127.0.0.1:7075/', 'loopback']] as const) {
      const { code, facts } = check(url);
      assert.equal(code, 1, url);
      assert.equal(facts['verdict'], 'deny', url);
      assert.equal(facts['addresses'].from, 'ip-literal', url);
      assert.equal(facts['addresses'].entries[0].range, range, url);
      assert.equal(facts['addresses'].entries[0].allowed, false, url);
      assert.ok(facts['refusals'].some((refusal: Check) => refusal['check'] === 'address' && refusal['reason'] === 'private-address'), url);
    }
    const text = run(['egress', 'check', '--config', CONFIG, 'http://10.1.2.3/']);
    assert.match(text.stdout, /^ {2}10\.1\.2\.3 +private +refused \[private-address\]/m);
  });

  it('other notations of an address are read as the URL parser reads them: http://2130706433:7071/ is 127.0.0.1', () => {
    for (const url of ['http://2130706433:7071/api/x', 'http://0x7f.1:7071/api/x', 'http://017700000001:7071/api/x', 'http://127.1:7071/api/x']) {
      const { code, facts } = check(url);
      assert.equal(code, 0, url);
      assert.equal(facts['url'], 'http://127.0.0.1:7071/api/x', url);
      assert.equal(facts['input'], url);
      assert.equal(facts['rule'].path, '/egress/allow/0', url);
      assert.equal(facts['addresses'].entries[0].address, '127.0.0.1', url);
    }
    const text = run(['egress', 'check', '--config', CONFIG, 'http://2130706433:7071/api/x']);
    assert.match(text.stdout, /^GET http:\/\/127\.0\.0\.1:7071\/api\/x \(written http:\/\/2130706433:7071\/api\/x\)$/m);
    // Loopback spelled as an IPv4-mapped IPv6 address is still loopback, and another origin.
    const mapped = check('http://[::ffff:7f00:1]:7071/api/x').facts;
    assert.equal(mapped['unmatched'], 'origin');
    assert.equal(mapped['addresses'].entries[0].address, '127.0.0.1');
    assert.equal(mapped['addresses'].entries[0].range, 'loopback');
  });

  it('a host name without --resolve: allowed as far as the rules go, and says its addresses were not checked', () => {
    const { code, facts } = check('https://api.example.com/v1/items');
    assert.equal(code, 0);
    assert.equal(facts['addresses'].checked, false);
    assert.match(facts['addresses'].note, /api\.example\.com is a name: the broker resolves it when it connects/);
    assert.match(facts['message'], /checked when the broker connects/);
    const text = run(['egress', 'check', '--config', CONFIG, 'http://localhost:7072/']);
    assert.equal(text.code, 0);
    assert.match(text.stdout, /^addresses: not checked: localhost is a name/m);
  });

  it('--resolve localhost: loopback is denied private-address unless the rule lists it', () => {
    const refused = check('http://localhost:7072/', ['--resolve']);
    assert.equal(refused.code, 1);
    assert.equal(refused.facts['reason'], 'private-address');
    assert.equal(refused.facts['rule'].path, '/egress/allow/1', 'the request itself is allowed');
    assert.equal(refused.facts['addresses'].from, 'resolver');
    assert.ok(refused.facts['addresses'].entries.length > 0);
    for (const entry of refused.facts['addresses'].entries) {
      assert.equal(entry.range, 'loopback');
      assert.equal(entry.allowed, false);
      assert.equal(entry.refusal.reason, 'private-address');
    }
    const text = run(['egress', 'check', '--config', CONFIG, 'http://localhost:7072/', '--resolve']);
    assert.equal(text.code, 1);
    assert.match(text.stdout, /^verdict: deny \[private-address\]$/m);
    assert.match(text.stdout, /^addresses of localhost \(system resolver, now/m);

    const allowed = check('http://LOCALHOST.:7073/', ['--resolve']);
    assert.equal(allowed.code, 0, JSON.stringify(allowed.facts));
    assert.equal(allowed.facts['addresses'].host, 'localhost');
    for (const entry of allowed.facts['addresses'].entries) assert.deepEqual(entry.listedBy, ['/egress/allow/2']);
  });
});

describe('egress check: lookups (injected resolver, no DNS)', () => {
  const policy = loadConfig(CONFIG).egress;
  const url = new URL('https://api.example.com/v1/items');

  it('a name that does not resolve, resolves to nothing or to too many addresses is unresolvable', async () => {
    const notFound = await checkEgress(policy, url, 'GET', async () => {
      throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
    });
    assert.equal(notFound.verdict, 'deny');
    assert.equal(notFound.reason, 'unresolvable');
    assert.match(notFound.message, /api\.example\.com does not resolve \(ENOTFOUND\)/);
    assert.equal((await checkEgress(policy, url, 'GET', async () => [])).reason, 'unresolvable');
    const many = Array.from({ length: 65 }, (_, i) => `93.184.216.${i}`);
    assert.equal((await checkEgress(policy, url, 'GET', async () => many)).reason, 'unresolvable');
    assert.equal((await checkEgress(policy, url, 'GET', async () => many.slice(0, 64))).verdict, 'allow');
  });

  it('public addresses pass; one private address among public ones denies the whole answer', async () => {
    const resolved: string[] = [];
    const mixed = await checkEgress(policy, url, 'GET', async (host) => {
      resolved.push(host);
      return ['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946', '10.0.0.7'];
    });
    assert.deepEqual(resolved, ['api.example.com']);
    assert.equal(mixed.verdict, 'deny');
    assert.equal(mixed.reason, 'private-address');
    assert.deepEqual(mixed.addresses.entries.map((entry) => [entry.address, entry.public, entry.allowed]), [
      ['93.184.216.34', true, true],
      ['2606:2800:220:1:248:1893:25c8:1946', true, true],
      ['10.0.0.7', false, false],
    ]);
    // A resolver answer in IPv4-mapped form is judged as the IPv4 address it reaches.
    const mapped = await checkEgress(policy, url, 'GET', async () => ['::ffff:169.254.169.254']);
    assert.equal(mapped.reason, 'private-address');
    assert.equal(mapped.addresses.entries[0]?.address, '169.254.169.254');
  });

  it('the request check comes first: a refused request is reported as not-allowlisted even when an address also fails', async () => {
    const result = await checkEgress(policy, url, 'DELETE', async () => ['10.0.0.7']);
    assert.equal(result.reason, 'not-allowlisted');
    assert.deepEqual(result.refusals.map((refusal) => refusal.reason), ['not-allowlisted', 'private-address']);
  });
});
