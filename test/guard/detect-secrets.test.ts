import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DETECTED, DETECTION_RULES, findSecrets, maskSecrets } from '../../src/guard/detect-secrets.ts';
import { ROOT } from '../helpers.ts';

// Made-up values in the formats the rules recognise; none is a real credential.
const SAMPLES: Record<string, string> = {
  aws: 'aws_secret_access_key=Xq2ZP7kM9vLw3RtY8bNc4HdF6gJe1SaU0iOpQwEr',
  github: 'ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8',
  slack: 'xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx',
  privatekey: `-----BEGIN OPENSSH PRIVATE KEY-----\n${'b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n'.repeat(3)}-----END OPENSSH PRIVATE KEY-----`,
  basicauth: 'https://user:hunter2pass@db.example.com',
  npm: 'npm_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8',
  database: 'postgres://admin:s3cretPassw0rd@10.0.0.1:5432/app',
};

describe('secret detection (secretlint recommended rules)', () => {
  it('runs the scanner rules only, never the comment filter', () => {
    assert.ok(DETECTION_RULES.length >= 20);
    assert.ok(DETECTION_RULES.includes('aws') && DETECTION_RULES.includes('privatekey'));
    assert.ok(!DETECTION_RULES.includes('filter-comments'));
  });

  for (const [name, secret] of Object.entries(SAMPLES)) {
    it(`masks a ${name} secret, whatever surrounds it`, async () => {
      const counts = { detected: 0 };
      const out = await maskSecrets(`result: ${secret} (done)`, counts);
      assert.ok(out.includes(DETECTED), out);
      assert.equal(counts.detected, 1);
      assert.ok(!out.includes(secret));
    });
  }

  it('masks all of a secret, not only the range its rule reports (the AWS secret key rule reports the key name), wherever it occurs', async () => {
    const key = 'Xq2ZP7kM9vLw3RtY8bNc4HdF6gJe1SaU0iOpQwEr';
    const out = await maskSecrets(`config: aws_secret_access_key=${key}\nlater: ${key}`, { detected: 0 });
    for (let at = 0; at + 8 <= key.length; at++) assert.ok(!out.includes(key.slice(at, at + 8)), out);
    assert.match(out, /^config: \[redacted: secret\]/);
  });

  it('a file name a rule reports is not masked elsewhere', async () => {
    const text = `${SAMPLES['github']} is in settings.json; settings.json has more`;
    const out = await maskSecrets(text, { detected: 0 });
    assert.ok(out.includes('settings.json has more'), out);
  });

  it('a secretlint-disable comment in the output does not silence detection', async () => {
    const out = await maskSecrets(`// secretlint-disable\n${SAMPLES['github']}\n// secretlint-enable`, { detected: 0 });
    assert.ok(!out.includes(SAMPLES['github']!));
  });

  it('finds nothing in ordinary text: the project docs, sources and lockfile', async () => {
    const files = ['README.md', 'docs/config.md', 'docs/manifests.md', 'src/backends/mcp.ts', 'src/guard/sanitize-output.ts', 'package-lock.json'];
    for (const file of files) assert.deepEqual(await findSecrets(readFileSync(join(ROOT, file), 'utf8')), [], file);
  });

  it('never throws, and masking is idempotent (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 200 }), fc.constantFrom('', ...Object.values(SAMPLES)), async (text, secret) => {
        const once = await maskSecrets(`${text}${secret}`, { detected: 0 });
        assert.equal(await maskSecrets(once, { detected: 0 }), once);
      }),
      { numRuns: 200 },
    );
  });
});
