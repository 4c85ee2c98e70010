import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { ROOT } from '../helpers.ts';

const run = promisify(execFile);

describe('egress dispatcher over TLS', () => {
  it('connects to the checked address, yet sends the name as SNI and verifies the certificate against the name', async () => {
    // A child process, so that trusting the fixture certificate cannot leak into other tests.
    const { stdout } = await run(process.execPath, [join(ROOT, 'test/fixtures/tls-probe.ts')], {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: join(ROOT, 'test/fixtures/tls/api-test.crt') },
      timeout: 60_000,
    });
    const results = new Map(stdout.trim().split('\n').map((line) => {
      const parsed = JSON.parse(line) as { host: string; status?: number; body?: { servername: string | null; host: string; httpVersion?: string }; error?: string; reason?: string; message?: string };
      return [parsed.host, parsed] as const;
    }));
    // api.test resolves (in the probe) to 127.0.0.1; the certificate names api.test only.
    const named = results.get('api.test');
    assert.equal(named?.status, 200);
    assert.equal(named?.body?.servername, 'api.test');
    assert.match(named?.body?.host ?? '', /^api\.test:\d+$/);
    // Same address, another name: the certificate does not cover it, so TLS refuses, and the
    // refusal is an egress refusal (audited) that names Node's reason.
    for (const host of ['other.test', '127.0.0.1']) {
      // The bare address: no name to verify against, and the certificate has no IP entry.
      const refused = results.get(host);
      assert.equal(refused?.error, 'WARDEN_EGRESS_DENIED', host);
      assert.equal(refused?.reason, 'tls-unverified', host);
      assert.match(refused?.message ?? '', /ERR_TLS_CERT_ALTNAME_INVALID/, host);
    }
    // A server that offers HTTP/2 is spoken to in HTTP/1.1, where the header cap holds.
    assert.equal(results.get('h2-capable')?.status, 200);
    assert.equal(results.get('h2-capable')?.body?.httpVersion, '1.1');
  });
});
