import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { formatEnvelope } from '../../src/manifest/envelope.ts';
import { buildManifest, loadSignedManifest } from '../../src/manifest/load.ts';
import { MAX_MODULE_BYTES, readModuleFile } from '../../src/manifest/module-file.ts';
import { REJECTIONS } from '../../src/manifest/rejections.ts';
import { addSignature, signManifestSource } from '../../src/manifest/sign.ts';
import { compileTrust } from '../../src/manifest/trust.ts';
import { NOTES_SERVER, NOTES_TOOLS, stdioManifest, TEST_PUBLISHER, TEST_TRUST, tempDir, expectRejection, expectWardenError as expectCode } from '../helpers.ts';

const { dir, cleanup } = tempDir('warden-sandbox-manifest-');
after(cleanup);
let counter = 0;

const trust = compileTrust(TEST_TRUST, join(dir, 'warden.yaml'));
/** The two fields the signer fills in, so a source can be checked as the broker checks a payload. */
const DATES = { issuedAt: '2026-01-01T00:00:00Z', expiresAt: '2099-01-01T00:00:00Z' };

/** A module with non-ASCII text, so "the text read is the text run" is a real check. */
const MODULE_TEXT = [
  '// Code tools: résumé ✓ 🧪',
  'export function word_count({ text }) {',
  '  return { words: text.split(/\\s+/).filter(Boolean).length };',
  '}',
  '',
].join('\n');

const sha256Of = (bytes: string | Buffer): string => createHash('sha256').update(bytes).digest('hex');

/** A fresh module file (its own name, so one test's changes never touch another's). */
function writeModule(text: string | Buffer = MODULE_TEXT, folder = 'modules'): string {
  const file = join(dir, folder, `m-${counter++}.js`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text);
  return file;
}

const TOOL = {
  name: 'word_count',
  description: 'Count the words of a text.',
  access: 'read',
  inputSchema: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] },
};

function sandboxSource(transport: Record<string, unknown>, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { manifestVersion: 1, name: 'test.code', version: '1.0.0', serial: 1, transport: { type: 'sandbox', ...transport }, tools: [TOOL], ...overrides };
}

/** Signs a source as `manifest sign --out FILE` does: a module path is relative to FILE's folder. */
function writeSigned(file: string, source: Record<string, unknown>): string {
  mkdirSync(dirname(file), { recursive: true });
  const { envelope } = signManifestSource(source, file, TEST_PUBLISHER, { now: Date.now(), validDays: 30, moduleBase: dirname(file) });
  writeFileSync(file, formatEnvelope(envelope));
  return file;
}

/** Checks a document as the broker checks a verified payload (the module is read). */
function build(source: Record<string, unknown>, options: { read?: boolean; file?: string } = {}) {
  return buildManifest({ ...DATES, ...source }, options.file ?? join(dir, `doc-${counter++}.json`), { resolveCommand: options.read ?? true, searchPath: dirname(process.execPath) });
}

/** A signed manifest of a fresh module, with the module's path; the caller then breaks the module. */
function signedWithModule(): { file: string; module: string } {
  const module = writeModule();
  const file = writeSigned(join(dir, 'signed', `s-${counter++}.json`), sandboxSource({ module }));
  return { file, module };
}

const hasMkfifo = spawnSync('mkfifo', ['--version'], { stdio: 'ignore' }).error === undefined;

describe('loadSignedManifest: a code tool manifest', () => {
  it('loads when the module matches; moduleSource is the file text, the path absolute', () => {
    const module = writeModule();
    const file = writeSigned(join(dir, 'signed/ok.json'), sandboxSource({ module }));
    const manifest = loadSignedManifest(file, trust);
    assert.equal(manifest.transport.type, 'sandbox');
    assert.equal(manifest.moduleSource, readFileSync(module, 'utf8'));
    assert.equal(manifest.moduleSource, MODULE_TEXT);
    if (manifest.transport.type === 'sandbox') {
      assert.equal(manifest.transport.module, module);
      assert.equal(manifest.transport.sha256, sha256Of(MODULE_TEXT));
    }
    assert.deepEqual(manifest.tools.map((tool) => tool.name), ['word_count']);
    assert.deepEqual(manifest.credentials, []);
  });

  it('a relative module path is resolved against the signed file\'s folder', () => {
    const module = writeModule(MODULE_TEXT, 'rel/code');
    // signed/<n>/x.json -> ../../rel/code/<name>
    const file = writeSigned(join(dir, 'signed', `nested-${counter++}`, 'x.json'), sandboxSource({ module: `../../rel/code/${module.split('/').pop()}` }));
    const manifest = loadSignedManifest(file, trust);
    assert.equal(manifest.transport.type === 'sandbox' && manifest.transport.module, module);
    assert.equal(manifest.moduleSource, MODULE_TEXT);

    // A module beside the signed file, by a bare name.
    const beside = join(dir, 'beside');
    mkdirSync(beside, { recursive: true });
    writeFileSync(join(beside, 'tools.js'), 'export const a = () => 1;\n');
    const besideFile = writeSigned(join(beside, 'code.signed.json'), sandboxSource({ module: 'tools.js' }));
    const loaded = loadSignedManifest(besideFile, trust);
    assert.equal(loaded.transport.type === 'sandbox' && loaded.transport.module, join(beside, 'tools.js'));
    assert.equal(loaded.moduleSource, 'export const a = () => 1;\n');
  });

  it('what runs is the text read at load: changing the file later does not change moduleSource', () => {
    const { file, module } = signedWithModule();
    const manifest = loadSignedManifest(file, trust);
    writeFileSync(module, 'export function word_count() { return "evil"; }\n');
    assert.equal(manifest.moduleSource, MODULE_TEXT);
    assert.throws(() => {
      (manifest as { moduleSource?: string }).moduleSource = 'x';
    }, TypeError, 'the manifest is frozen');
  });

  it('refuses a module changed after signing: module-modified', () => {
    const cases: [string, (module: string) => void][] = [
      ['a byte appended', (module) => writeFileSync(module, `${MODULE_TEXT} `)],
      ['replaced', (module) => writeFileSync(module, 'export function word_count() { return { words: 0 }; }\n')],
      ['emptied', (module) => writeFileSync(module, '')],
      ['the same text with a BOM', (module) => writeFileSync(module, `\uFEFF${MODULE_TEXT}`)],
      ['CRLF line ends', (module) => writeFileSync(module, MODULE_TEXT.replaceAll('\n', '\r\n'))],
    ];
    for (const [label, change] of cases) {
      const { file, module } = signedWithModule();
      change(module);
      const rejection = expectRejection(() => loadSignedManifest(file, trust), 'module-modified');
      assert.ok(rejection.message.includes(module), `${label}: the message names the module`);
      assert.equal(rejection.detail['module'], module, label);
    }
  });

  it('refuses a module that is missing, a directory or a device: module-unreadable', () => {
    const missing = signedWithModule();
    rmSync(missing.module);
    expectRejection(() => loadSignedManifest(missing.file, trust), 'module-unreadable', /ENOENT/);

    const directory = signedWithModule();
    rmSync(directory.module);
    mkdirSync(directory.module);
    expectRejection(() => loadSignedManifest(directory.file, trust), 'module-unreadable', /not a regular file/);

    // Absolute device paths in a document checked as a payload (signing would refuse them).
    // A character device (an endless one: reading it would never stop without the type check).
    expectRejection(() => build(sandboxSource({ module: '/dev/zero', sha256: sha256Of('') })), 'module-unreadable', /not a regular file/);
  });

  it('refuses a module that is a FIFO without hanging: module-unreadable', { skip: hasMkfifo ? false : 'mkfifo is not available on this machine' }, () => {
    const fifo = signedWithModule();
    rmSync(fifo.module);
    const made = spawnSync('mkfifo', [fifo.module]);
    assert.equal(made.status, 0, String(made.stderr));
    // A blocking open of a FIFO with no writer would hang here; the test timeout would catch it.
    expectRejection(() => loadSignedManifest(fifo.file, trust), 'module-unreadable', /not a regular file/);
  });

  it('refuses a module over 1 MiB, and takes one of exactly 1 MiB', () => {
    const big = signedWithModule();
    writeFileSync(big.module, Buffer.alloc(MAX_MODULE_BYTES + 1, 0x20));
    expectRejection(() => loadSignedManifest(big.file, trust), 'module-unreadable', /limit/);

    const huge = signedWithModule();
    writeFileSync(huge.module, Buffer.alloc(8 * MAX_MODULE_BYTES, 0x20));
    expectRejection(() => loadSignedManifest(huge.file, trust), 'module-unreadable');

    const exact = Buffer.alloc(MAX_MODULE_BYTES, 0x20);
    const module = writeModule(exact);
    const file = writeSigned(join(dir, 'signed', `exact-${counter++}.json`), sandboxSource({ module }));
    assert.equal(loadSignedManifest(file, trust).moduleSource?.length, MAX_MODULE_BYTES);
  });

  it('refuses a module that is not UTF-8 text: module-unreadable, even though its digest is pinned', () => {
    const samples: [string, Buffer][] = [
      ['latin-1', Buffer.from('export const caf\xe9 = 1;\n', 'latin1')],
      ['a lone surrogate (CESU-8)', Buffer.concat([Buffer.from('// '), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('\n')])],
      ['an overlong slash', Buffer.concat([Buffer.from('// '), Buffer.from([0xc0, 0xaf]), Buffer.from('\n')])],
      ['a truncated sequence at the end', Buffer.concat([Buffer.from('// x'), Buffer.from([0xe2, 0x82])])],
      ['UTF-16', Buffer.from('\uFEFFexport const a = 1;\n', 'utf16le')],
    ];
    for (const [label, bytes] of samples) {
      // The document pins exactly these bytes, so only the UTF-8 rule can refuse it.
      const module = writeModule(bytes);
      expectRejection(() => build(sandboxSource({ module, sha256: sha256Of(bytes) })), 'module-unreadable', /UTF-8/);
      // Signed with a good module that is then replaced.
      const signed = signedWithModule();
      writeFileSync(signed.module, bytes);
      const rejection = expectRejection(() => loadSignedManifest(signed.file, trust), 'module-unreadable');
      assert.ok(rejection.message.includes(signed.module), label);
    }
  });

  it('each module rejection has its own exit code for manifest verify', () => {
    assert.equal(REJECTIONS['module-unreadable'].exit, 42);
    assert.equal(REJECTIONS['module-modified'].exit, 43);
  });
});

describe('readModuleFile', () => {
  it('returns the text and the SHA-256 of exactly the bytes read', () => {
    const module = writeModule();
    assert.deepEqual(readModuleFile(module), { source: MODULE_TEXT, sha256: sha256Of(Buffer.from(MODULE_TEXT, 'utf8')) });
    const empty = writeModule('');
    assert.deepEqual(readModuleFile(empty), { source: '', sha256: sha256Of('') });
  });

  it('every failure is a ManifestRejection module-unreadable naming the path', () => {
    for (const path of [join(dir, 'no-such-module.js'), dir, '/dev/zero', join(dir, 'no-such-dir', 'x.js')]) {
      const rejection = expectRejection(() => readModuleFile(path), 'module-unreadable');
      assert.equal(rejection.detail['module'], path);
    }
  });
});

describe('buildManifest: rules of a sandbox transport', () => {
  const module = writeModule();
  const sha256 = sha256Of(MODULE_TEXT);

  it('accepts a valid document with per-tool limits at the schema\'s edges', () => {
    const low = { memoryMb: 8, cpuMs: 1, wallMs: 1, inputBytes: 2, outputBytes: 4, consoleBytes: 0 };
    const high = { memoryMb: 4096, cpuMs: 3_600_000, wallMs: 3_600_000, inputBytes: 67_108_864, outputBytes: 67_108_864, consoleBytes: 67_108_864 };
    for (const sandbox of [low, high, {}, { cpuMs: 50 }]) {
      const manifest = build(sandboxSource({ module, sha256 }, { tools: [{ ...TOOL, sandbox }] }));
      assert.deepEqual(manifest.tools[0]?.sandbox, sandbox);
    }
  });

  it('refuses a sha256 that is not 64 lowercase hex digits: invalid-manifest', () => {
    const bad = [sha256.toUpperCase(), sha256.slice(0, 63), `${sha256}0`, `${sha256.slice(0, 63)}g`, ` ${sha256.slice(1)}`, `${sha256}\n`, '', `sha256:${sha256}`, 42, null, [sha256]];
    for (const value of bad) {
      expectRejection(() => build(sandboxSource({ module, sha256: value })), 'invalid-manifest', /\/transport/);
    }
    expectRejection(() => build(sandboxSource({ module })), 'invalid-manifest', /\/transport/);
  });

  it('refuses a malformed sandbox transport: no module, an empty one, an unknown field', () => {
    expectRejection(() => build(sandboxSource({ sha256 })), 'invalid-manifest');
    expectRejection(() => build(sandboxSource({ module: '', sha256 })), 'invalid-manifest');
    expectRejection(() => build(sandboxSource({ module: 'x'.repeat(4097), sha256 })), 'invalid-manifest');
    expectRejection(() => build(sandboxSource({ module, sha256, command: process.execPath })), 'invalid-manifest');
    expectRejection(() => build(sandboxSource({ module, sha256, url: 'http://127.0.0.1:9/' })), 'invalid-manifest');
    expectRejection(() => build(sandboxSource({ module: 42, sha256 })), 'invalid-manifest');
  });

  it('refuses a code tool declared write or destructive, loaded or only being signed', () => {
    for (const access of ['write', 'destructive']) {
      for (const read of [true, false]) {
        const tools = [TOOL, { ...TOOL, name: 'changes_things', access }];
        expectRejection(() => build(sandboxSource({ module, sha256 }, { tools }), { read }), 'invalid-manifest', /\/tools\/1\/access/);
      }
    }
  });

  it('refuses credentials on a sandbox server, in any form', () => {
    const credentials = [[{ name: 'TOKEN' }], [{ name: 'TOKEN', env: 'TOKEN' }], [{ name: 'TOKEN', header: 'Authorization', prefix: 'Bearer ' }]];
    for (const list of credentials) {
      for (const read of [true, false]) {
        expectRejection(() => build(sandboxSource({ module, sha256 }, { credentials: list }), { read }), 'invalid-manifest', /\/credentials\/0/);
      }
    }
    // An empty list is no credential at all.
    assert.deepEqual(build(sandboxSource({ module, sha256 }, { credentials: [] })).credentials, []);
  });

  it('refuses sandbox limits on a tool of a stdio, http or http-api server', () => {
    const stdio = stdioManifest('x', NOTES_SERVER, [{ ...NOTES_TOOLS[0], sandbox: { cpuMs: 10 } }]);
    expectRejection(() => build(stdio), 'invalid-manifest', /\/tools\/0\/sandbox/);
    const emptyLimits = stdioManifest('x', NOTES_SERVER, [{ ...NOTES_TOOLS[0], sandbox: {} }]);
    expectRejection(() => build(emptyLimits), 'invalid-manifest', /\/tools\/0\/sandbox/);
    const http = { manifestVersion: 1, name: 'test.h', version: '1', serial: 1, transport: { type: 'http', url: 'http://127.0.0.1:9/mcp' }, tools: [{ ...TOOL, sandbox: { memoryMb: 16 } }] };
    expectRejection(() => build(http), 'invalid-manifest', /\/tools\/0\/sandbox/);
    const httpApi = {
      manifestVersion: 1,
      name: 'test.api',
      version: '1',
      serial: 1,
      transport: { type: 'http-api', baseUrl: 'http://127.0.0.1:9' },
      tools: [{ ...TOOL, http: { method: 'GET', path: '/x' }, sandbox: { wallMs: 100 } }],
    };
    expectRejection(() => build(httpApi), 'invalid-manifest', /\/tools\/0\/sandbox/);
  });

  it('refuses sandbox limits outside the schema\'s range, of the wrong type, or unknown', () => {
    const bad: Record<string, unknown>[] = [
      { memoryMb: 7 },
      { memoryMb: 4097 },
      { memoryMb: 0 },
      { cpuMs: 0 },
      { cpuMs: -1 },
      { cpuMs: 3_600_001 },
      { wallMs: 0 },
      { wallMs: 3_600_001 },
      { inputBytes: 1 },
      { inputBytes: 67_108_865 },
      { outputBytes: 3 },
      { outputBytes: 67_108_865 },
      { consoleBytes: -1 },
      { consoleBytes: 67_108_865 },
      { cpuMs: 1.5 },
      { memoryMb: '64' },
      { wallMs: null },
      { cpuMs: Number.MAX_SAFE_INTEGER },
      { networkAccess: true },
      { __proto__: null, constructor: 1 },
    ];
    for (const sandbox of bad) {
      expectRejection(() => build(sandboxSource({ module, sha256 }, { tools: [{ ...TOOL, sandbox }] })), 'invalid-manifest', /\/tools\/0\/sandbox/);
    }
    for (const sandbox of [null, 64, 'small', [{ cpuMs: 1 }]]) {
      expectRejection(() => build(sandboxSource({ module, sha256 }, { tools: [{ ...TOOL, sandbox }] })), 'invalid-manifest');
    }
  });

  it('only signing (resolveCommand false) does not read the module', () => {
    const manifest = build(sandboxSource({ module: join(dir, 'never-written.js'), sha256 }), { read: false });
    assert.equal(manifest.moduleSource, undefined);
    assert.equal(manifest.transport.type === 'sandbox' && manifest.transport.module, join(dir, 'never-written.js'));
  });
});

describe('signManifestSource: pinning the module', () => {
  const now = Date.now();
  const sign = (source: Record<string, unknown>, file: string, moduleBase?: string) =>
    signManifestSource(source, file, TEST_PUBLISHER, { now, validDays: 30, ...(moduleBase === undefined ? {} : { moduleBase }) });
  const payloadOf = (envelope: { payload: string }) => JSON.parse(Buffer.from(envelope.payload, 'base64').toString('utf8')) as { transport: Record<string, unknown> };

  it('fills sha256 in from the file when absent', () => {
    const module = writeModule();
    const expected = createHash('sha256').update(readFileSync(module)).digest('hex');
    const { envelope, manifest } = sign(sandboxSource({ module }), join(dir, 'src.yaml'));
    assert.equal(payloadOf(envelope).transport['sha256'], expected);
    assert.equal(manifest.transport.type === 'sandbox' && manifest.transport.sha256, expected);
    // Signing does not read the module for the manifest it returns.
    assert.equal(manifest.moduleSource, undefined);
  });

  it('keeps a sha256 that matches, refuses one that does not (WARDEN_MANIFEST_INVALID)', () => {
    const module = writeModule();
    const actual = sha256Of(readFileSync(module));
    const { envelope } = sign(sandboxSource({ module, sha256: actual }), join(dir, 'src.yaml'));
    assert.equal(payloadOf(envelope).transport['sha256'], actual);

    const other = sha256Of('something else');
    for (const wrong of [other, actual.toUpperCase(), actual.slice(0, 63), '', 42, null]) {
      const error = expectCode(() => sign(sandboxSource({ module, sha256: wrong }), join(dir, 'src.yaml')), 'WARDEN_MANIFEST_INVALID');
      if (wrong === other) assert.ok(error.message.includes(actual), 'names the digest the file has');
    }
  });

  it('refuses a module it cannot read: missing, a directory, a device, too big, not UTF-8', () => {
    const tooBig = writeModule(Buffer.alloc(MAX_MODULE_BYTES + 1, 0x20));
    const notUtf8 = writeModule(Buffer.from([0x2f, 0x2f, 0xff, 0xfe, 0x0a]));
    for (const module of [join(dir, 'absent.js'), dir, '/dev/zero', tooBig, notUtf8]) {
      const error = expectCode(() => sign(sandboxSource({ module }), join(dir, 'src.yaml')), 'WARDEN_MANIFEST_INVALID');
      assert.match(error.message, /\/transport\/module/);
    }
  });

  it('a relative module is read from moduleBase when given, else from the source file\'s folder', () => {
    const module = writeModule(MODULE_TEXT, 'base-test/out');
    const name = module.split('/').pop()!;
    const expected = sha256Of(MODULE_TEXT);
    // The source lives elsewhere: only moduleBase finds the module.
    const sourceFile = join(dir, 'base-test', 'src', 'deep', 'code.yaml');
    const { envelope } = sign(sandboxSource({ module: name }), sourceFile, join(dir, 'base-test', 'out'));
    assert.equal(payloadOf(envelope).transport['sha256'], expected);
    assert.equal(payloadOf(envelope).transport['module'], name, 'the module path is signed as written');
    expectCode(() => sign(sandboxSource({ module: name }), sourceFile), 'WARDEN_MANIFEST_INVALID');
    // Without moduleBase, the source file's folder.
    const { envelope: beside } = sign(sandboxSource({ module: name }), join(dir, 'base-test', 'out', 'code.yaml'));
    assert.equal(payloadOf(beside).transport['sha256'], expected);
  });

  it('the manifest it returns names the module it pinned (resolved against moduleBase)', () => {
    const module = writeModule(MODULE_TEXT, 'base-test-2/out');
    const name = module.split('/').pop()!;
    const { manifest } = sign(sandboxSource({ module: name }), join(dir, 'base-test-2', 'src', 'code.yaml'), join(dir, 'base-test-2', 'out'));
    assert.equal(manifest.transport.type === 'sandbox' && manifest.transport.module, module);
  });

  it('a source that is not a sandbox manifest is signed as before (no module read)', () => {
    const { manifest } = sign(stdioManifest('x', NOTES_SERVER, NOTES_TOOLS), join(dir, 'src.yaml'));
    assert.equal(manifest.transport.type, 'stdio');
  });

  it('the rules still apply when the module is fine: write access and credentials are refused', () => {
    const module = writeModule();
    expectCode(() => sign(sandboxSource({ module }, { tools: [{ ...TOOL, access: 'write' }] }), join(dir, 'src.yaml')), 'WARDEN_MANIFEST_INVALID');
    expectCode(() => sign(sandboxSource({ module }, { credentials: [{ name: 'TOKEN' }] }), join(dir, 'src.yaml')), 'WARDEN_MANIFEST_INVALID');
  });
  it('a co-signer vouches for the module too: addSignature refuses when the file no longer matches the pinned digest', () => {
    const module = writeModule();
    const file = join(dir, `cosign-${counter++}.signed.json`);
    const { envelope } = sign(sandboxSource({ module }), file);
    const second = { seed: Buffer.alloc(32, 7), keyId: 'second-key' };
    assert.equal(addSignature(envelope, file, second, now).envelope.signatures.length, 2);
    writeFileSync(module, `${MODULE_TEXT}// changed\n`);
    expectCode(() => addSignature(envelope, file, second, now), 'WARDEN_MANIFEST_INVALID');
  });
});
