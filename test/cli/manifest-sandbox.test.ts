import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { REJECTIONS } from '../../src/manifest/rejections.ts';
import { acmeWorkspace, tempDir, writeYaml, runCli as run } from '../helpers.ts';

const { dir, cleanup } = tempDir('warden-cli-sandbox-');
after(cleanup);
let counter = 0;

const { key: KEY, config: CONFIG } = acmeWorkspace(dir);

const MODULE_TEXT = 'export function shout({ text }) {\n  return text.toUpperCase() + "!";\n}\n// ünïcödé\n';
const sha256Of = (bytes: string | Buffer): string => createHash('sha256').update(bytes).digest('hex');

function source(transport: Record<string, unknown>): Record<string, unknown> {
  return {
    manifestVersion: 1,
    name: 'acme.code',
    version: '1.0.0',
    serial: 1,
    transport: { type: 'sandbox', ...transport },
    tools: [{ name: 'shout', description: 'Upper-case a text.', access: 'read', inputSchema: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] } }],
  };
}

/** A case folder with a module at mods/tools.js. */
function caseDir(): { root: string; module: string } {
  const root = join(dir, `case-${counter++}`);
  const module = join(root, 'mods', 'tools.js');
  mkdirSync(dirname(module), { recursive: true });
  writeFileSync(module, MODULE_TEXT);
  return { root, module };
}

function payloadOf(file: string): { transport: Record<string, unknown> } {
  const envelope = JSON.parse(readFileSync(file, 'utf8')) as { payload: string };
  return JSON.parse(Buffer.from(envelope.payload, 'base64').toString('utf8'));
}

/** Signs a source whose module sits beside it (mods/tools.js), with the default OUT. */
function signBeside(): { root: string; module: string; signed: string } {
  const { root, module } = caseDir();
  const file = writeYaml(join(root, 'code.yaml'), source({ module: 'mods/tools.js' }));
  const result = run(['manifest', 'sign', '--key', KEY, file]);
  assert.equal(result.code, 0, result.stderr);
  return { root, module, signed: join(root, 'code.signed.json') };
}

describe('manifest sign: a code tool manifest', () => {
  test('fills sha256 in from the module, prints it, and the broker accepts the result', () => {
    const { module, signed } = signBeside();
    const expected = sha256Of(readFileSync(module));
    assert.equal(payloadOf(signed).transport['sha256'], expected);
    assert.equal(payloadOf(signed).transport['module'], 'mods/tools.js', 'the path is signed as written');
    const again = run(['manifest', 'sign', '--key', KEY, '--out', join(dirname(signed), 'again.signed.json'), join(dirname(signed), 'code.yaml')]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, new RegExp(`module sha256: ${expected}`));
    const verdict = run(['manifest', 'verify', '--config', CONFIG, signed]);
    assert.equal(verdict.code, 0, verdict.stdout + verdict.stderr);
    assert.match(verdict.stdout, /^accepted: acme.code serial 1/);
  });

  test('with --out in another folder, the relative module path is resolved against OUT\'s folder', () => {
    const { root } = caseDir();
    // Source in <root>/src/deep; OUT in <root>/out; module ../mods/tools.js exists only from out/.
    const file = writeYaml(join(root, 'src', 'deep', 'code.yaml'), source({ module: '../mods/tools.js' }));
    const out = join(root, 'out', 'code.signed.json');
    mkdirSync(dirname(out), { recursive: true });
    const result = run(['manifest', 'sign', '--key', KEY, '--out', out, file]);
    assert.equal(result.code, 0, result.stderr);
    const expected = sha256Of(MODULE_TEXT);
    assert.match(result.stdout, new RegExp(`module sha256: ${expected}`));
    assert.equal(payloadOf(out).transport['sha256'], expected);
    assert.equal(existsSync(join(root, 'src', 'deep', 'code.signed.json')), false, 'nothing written beside the source');
    const verdict = run(['manifest', 'verify', '--config', CONFIG, out]);
    assert.equal(verdict.code, 0, verdict.stdout + verdict.stderr);

    // The same source with the default OUT (beside the source) finds no module there.
    const beside = run(['manifest', 'sign', '--key', KEY, file]);
    assert.equal(beside.code, 4, beside.stdout + beside.stderr);
    assert.match(beside.stderr, /WARDEN_MANIFEST_INVALID/);
  });

  test('the printed "module:" path is the file whose digest was pinned (OUT\'s folder)', () => {
    const { root, module } = caseDir();
    const file = writeYaml(join(root, 'src', 'deep', 'code.yaml'), source({ module: '../mods/tools.js' }));
    const out = join(root, 'out', 'code.signed.json');
    mkdirSync(dirname(out), { recursive: true });
    const result = run(['manifest', 'sign', '--key', KEY, '--out', out, file]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`\\n  module: ${module.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\n`));
  });

  test('keeps a sha256 that matches; refuses one that does not, and a module it cannot read (nothing written)', () => {
    const { root, module } = caseDir();
    const actual = sha256Of(readFileSync(module));
    const good = writeYaml(join(root, 'good.yaml'), source({ module: 'mods/tools.js', sha256: actual }));
    assert.equal(run(['manifest', 'sign', '--key', KEY, good]).code, 0);
    assert.equal(payloadOf(join(root, 'good.signed.json')).transport['sha256'], actual);

    const cases: [string, Record<string, unknown>][] = [
      ['mismatch', { module: 'mods/tools.js', sha256: sha256Of('another file') }],
      ['uppercase', { module: 'mods/tools.js', sha256: actual.toUpperCase() }],
      ['missing', { module: 'mods/absent.js' }],
      ['directory', { module: 'mods' }],
      ['device', { module: '/dev/zero' }],
    ];
    for (const [label, transport] of cases) {
      const file = writeYaml(join(root, `bad-${label}.yaml`), source(transport));
      const result = run(['manifest', 'sign', '--key', KEY, file]);
      assert.equal(result.code, 4, `${label}: ${result.stdout}${result.stderr}`);
      assert.match(result.stderr, /WARDEN_MANIFEST_INVALID/, label);
      assert.equal(existsSync(join(root, `bad-${label}.signed.json`)), false, `${label}: nothing written`);
    }
  });

  test('refuses a code tool that is not read-only, and credentials', () => {
    const { root } = caseDir();
    const write = source({ module: 'mods/tools.js' });
    (write['tools'] as Record<string, unknown>[])[0]!['access'] = 'write';
    const withCredentials = { ...source({ module: 'mods/tools.js' }), credentials: [{ name: 'TOKEN' }] };
    for (const [label, data] of [['write', write], ['credentials', withCredentials]] as const) {
      const file = writeYaml(join(root, `${label}.yaml`), data);
      const result = run(['manifest', 'sign', '--key', KEY, file]);
      assert.equal(result.code, 4, `${label}: ${result.stderr}`);
      assert.equal(existsSync(join(root, `${label}.signed.json`)), false);
    }
  });
});

describe('manifest verify: a code tool manifest', () => {
  test('a module changed after signing exits 43 (module-modified)', () => {
    const { module, signed } = signBeside();
    writeFileSync(module, `${MODULE_TEXT}globalThis.leak = 1;\n`);
    const result = run(['manifest', 'verify', '--config', CONFIG, signed]);
    assert.equal(result.code, REJECTIONS['module-modified'].exit);
    assert.equal(result.code, 43);
    assert.match(result.stdout, /^refused \[module-modified\]/);
    // Restoring the exact bytes makes it acceptable again.
    writeFileSync(module, MODULE_TEXT);
    assert.equal(run(['manifest', 'verify', '--config', CONFIG, signed]).code, 0);
  });

  test('a missing, directory or non-UTF-8 module exits 42 (module-unreadable)', () => {
    const missing = signBeside();
    rmSync(missing.module);
    const gone = run(['manifest', 'verify', '--config', CONFIG, missing.signed]);
    assert.equal(gone.code, REJECTIONS['module-unreadable'].exit);
    assert.equal(gone.code, 42);
    assert.match(gone.stdout, /^refused \[module-unreadable\]/);

    const directory = signBeside();
    rmSync(directory.module);
    mkdirSync(directory.module);
    assert.equal(run(['manifest', 'verify', '--config', CONFIG, directory.signed]).code, 42);

    const binary = signBeside();
    writeFileSync(binary.module, Buffer.from([0x65, 0x78, 0xff, 0x0a]));
    assert.equal(run(['manifest', 'verify', '--config', CONFIG, binary.signed]).code, 42);
  });
});

describe('manifest --help', () => {
  test('lists module-unreadable and module-modified with their exit codes', () => {
    const result = run(['manifest', '--help']);
    assert.equal(result.code, 0);
    assert.match(result.stdout, /\b42\s+module-unreadable\b/);
    assert.match(result.stdout, /\b43\s+module-modified\b/);
  });
});
