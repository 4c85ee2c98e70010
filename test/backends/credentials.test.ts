import assert from 'node:assert/strict';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { resolveCredentials } from '../../src/backends/credentials.ts';
import type { CredentialSource } from '../../src/config/types.ts';
import { WardenError } from '../../src/errors.ts';
import type { ManifestCredential } from '../../src/manifest/types.ts';
import { tempDir } from '../helpers.ts';

const { dir, cleanup } = tempDir();
after(cleanup);
const API_KEY: ManifestCredential = { name: 'API_KEY', env: 'API_KEY', prefix: '' };
const sources = (source: CredentialSource) => new Map([['API_KEY', source]]);

function missing(fn: () => unknown, secret?: string): string {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof WardenError);
    assert.equal(error.code, 'WARDEN_CREDENTIAL_MISSING');
    if (secret) assert.ok(!error.message.includes(secret));
    return error.message;
  }
  assert.fail('expected WARDEN_CREDENTIAL_MISSING');
}

describe('resolveCredentials', () => {
  it('reads an environment variable of the broker', () => {
    const [resolved] = resolveCredentials('s', [API_KEY], sources({ env: 'WARDEN_KEY' }), { WARDEN_KEY: 'value-1' });
    assert.equal(resolved?.value, 'value-1');
  });

  it('reads a file, dropping one trailing newline', () => {
    const file = join(dir, 'key');
    writeFileSync(file, 'value-2\n');
    assert.equal(resolveCredentials('s', [API_KEY], sources({ file }))[0]?.value, 'value-2');
  });

  it('names what is missing and where it looked, never a value', () => {
    assert.match(missing(() => resolveCredentials('s', [API_KEY], undefined)), /no source/);
    assert.match(missing(() => resolveCredentials('s', [API_KEY], sources({ env: 'UNSET_VAR' }), {})), /UNSET_VAR is not set/);
    assert.match(missing(() => resolveCredentials('s', [API_KEY], sources({ env: 'EMPTY' }), { EMPTY: '' })), /EMPTY is not set/);
    assert.match(missing(() => resolveCredentials('s', [API_KEY], sources({ file: join(dir, 'nope') }))), /ENOENT/);
    const empty = join(dir, 'empty');
    writeFileSync(empty, '\n');
    assert.match(missing(() => resolveCredentials('s', [API_KEY], sources({ file: empty }))), /empty/);
    const big = join(dir, 'big');
    writeFileSync(big, 'x'.repeat(70_000));
    assert.match(missing(() => resolveCredentials('s', [API_KEY], sources({ file: big }))), /larger/);
    assert.match(missing(() => resolveCredentials('s', [API_KEY], sources({ env: 'V' }), { V: 'line1\r\nInjected: header' }), 'line1'), /control characters/);
    if (process.getuid?.() !== 0) {
      const unreadable = join(dir, 'unreadable');
      writeFileSync(unreadable, 'secret-unreadable');
      chmodSync(unreadable, 0o000);
      assert.match(missing(() => resolveCredentials('s', [API_KEY], sources({ file: unreadable }))), /EACCES/);
    }
  });
});
