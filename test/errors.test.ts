import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ERRORS, WardenError } from '../src/errors.ts';
import { VERSION } from '../src/version.ts';
import { ROOT } from './helpers.ts';

describe('error codes', () => {
  it('every code is documented in docs/errors.md, and the README lists every CLI exit code', () => {
    const doc = readFileSync(join(ROOT, 'docs/errors.md'), 'utf8');
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    for (const [code, { exit }] of Object.entries(ERRORS)) {
      assert.ok(doc.includes(`\`${code}\``), `${code} missing from docs/errors.md`);
      assert.ok(readme.includes(`| ${exit} |`), `exit code ${exit} missing from README.md`);
    }
  });

  it('a WardenError carries its code and exit code', () => {
    const error = new WardenError('WARDEN_CONFIG_INVALID', 'x');
    assert.equal(error.code, 'WARDEN_CONFIG_INVALID');
    assert.equal(error.exitCode, 3);
  });
});

describe('version', () => {
  it('matches package.json', () => {
    assert.equal(VERSION, JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version);
  });
});
