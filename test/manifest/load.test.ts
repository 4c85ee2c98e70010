import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parse } from 'yaml';
import { buildManifest, loadSignedManifest, resolveCommand } from '../../src/manifest/load.ts';
import { ManifestRejection } from '../../src/manifest/rejections.ts';
import { compileTrust } from '../../src/manifest/trust.ts';
import { NOTES_SERVER, NOTES_TOOLS, ROOT, stdioManifest, TEST_PUBLISHER, TEST_TRUST, tempDir, writeManifest, writeYaml, expectRejection } from '../helpers.ts';

const { dir, cleanup } = tempDir();
after(cleanup);
let counter = 0;

/** The test publisher, trusted for test.* (the helpers' manifests). */
const trust = compileTrust(TEST_TRUST, join(dir, 'warden.yaml'));
/** The test publisher, trusted for the names of the repository's own manifests. */
const repoTrust = compileTrust({ publishers: { test: { keys: [TEST_PUBLISHER.publicKey], namespaces: ['example.*', 'modelcontextprotocol.*'] } } }, join(dir, 'warden.yaml'));
const NODE_DIR = dirname(process.execPath);

/** The two fields the signer fills in, so a source can be checked as the broker checks a payload. */
const DATES = { issuedAt: '2026-01-01T00:00:00Z', expiresAt: '2099-01-01T00:00:00Z' };

/** Checks a manifest document as the broker checks a verified payload. */
function build(source: unknown) {
  const data = typeof source === 'object' && source !== null && !Array.isArray(source) ? { ...DATES, ...source } : source;
  return buildManifest(data, join(dir, `m-${counter++}.json`), { resolveCommand: true, searchPath: NODE_DIR });
}

/** The ManifestRejection fn throws; fails the test if it throws nothing or something else. */
function rejectionOf(fn: () => unknown): ManifestRejection {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ManifestRejection, `expected a ManifestRejection, got ${String(error)}`);
    return error;
  }
  assert.fail('expected a ManifestRejection, but nothing was thrown');
}

/**
 * A repository manifest source, signed by the test publisher into a temporary folder whose
 * examples and node_modules are this checkout's (links), so the pins can be filled in.
 */
function signedRepoManifest(name: 'notes' | 'everything'): string {
  for (const folder of ['examples', 'node_modules']) {
    mkdirSync(join(dir, 'repo'), { recursive: true });
    if (!existsSync(join(dir, 'repo', folder))) symlinkSync(join(ROOT, folder), join(dir, 'repo', folder));
  }
  const source = parse(readFileSync(join(ROOT, `manifests/${name}.manifest.yaml`), 'utf8')) as Record<string, unknown>;
  return writeManifest(join(dir, 'repo/manifests', `${name}.manifest.signed.json`), source);
}

describe('loadSignedManifest', () => {
  it('loads the repository manifests once signed', () => {
    const notes = loadSignedManifest(signedRepoManifest('notes'), repoTrust, { searchPath: NODE_DIR });
    assert.equal(notes.name, 'example.notes');
    assert.equal(notes.serial, 1);
    assert.match(notes.digest, /^[0-9a-f]{64}$/);
    assert.deepEqual(notes.signers, [{ keyId: TEST_PUBLISHER.keyId, publisher: 'test' }]);
    assert.equal(notes.transport.type, 'stdio');
    if (notes.transport.type === 'stdio') {
      assert.equal(notes.transport.command, join(NODE_DIR, 'node'), 'command resolved to an absolute path at load');
      // cwd ".." is relative to the signed file's folder
      assert.equal(notes.transport.cwd, join(dir, 'repo'));
    }
    assert.ok(notes.tools.some((tool) => tool.access === 'write'));
    assert.equal((loadSignedManifest(signedRepoManifest('everything'), repoTrust, { searchPath: NODE_DIR }).transport as { era?: string }).era, 'legacy');
  });

  it('refuses the repository manifests as they are: unsigned sources', () => {
    for (const name of ['notes', 'everything']) {
      expectRejection(() => loadSignedManifest(join(ROOT, `manifests/${name}.manifest.yaml`), repoTrust, { searchPath: NODE_DIR }), 'unsigned', /unsigned manifest/);
    }
  });

  it('refuses an unsigned manifest, in YAML or in JSON', () => {
    const source = stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS);
    const yamlFile = writeYaml(join(dir, 'unsigned.yaml'), { ...DATES, ...source });
    expectRejection(() => loadSignedManifest(yamlFile, trust), 'unsigned');
    const jsonFile = join(dir, 'unsigned.json');
    writeFileSync(jsonFile, JSON.stringify({ ...DATES, ...source }));
    expectRejection(() => loadSignedManifest(jsonFile, trust), 'unsigned');
  });

  it('a signed helper manifest loads under the trust that covers its name, and only under it', () => {
    const file = writeManifest(join(dir, 'signed-notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
    assert.equal(loadSignedManifest(file, trust, { searchPath: NODE_DIR }).name, 'test.notes');
    expectRejection(() => loadSignedManifest(file, repoTrust, { searchPath: NODE_DIR }), 'namespace-not-trusted');
  });

  it('refuses a missing file, text that is not JSON, and JSON that is not an envelope', () => {
    expectRejection(() => loadSignedManifest(join(dir, 'missing.json'), trust), 'unreadable', /ENOENT/);
    for (const text of ['tools: [unclosed', '- just\n- a list\n', '42\n']) {
      const file = writeYaml(join(dir, `not-an-envelope-${counter++}.yaml`), text);
      expectRejection(() => loadSignedManifest(file, trust), 'not-an-envelope');
    }
  });

  it('refuses a signed manifest whose command is not there, naming the path', () => {
    const data = stdioManifest('x', NOTES_SERVER, []);
    (data['transport'] as Record<string, unknown>)['command'] = 'definitely-not-a-command-here';
    const file = writeManifest(join(dir, 'no-command.json'), data);
    expectRejection(() => loadSignedManifest(file, trust, { searchPath: NODE_DIR }), 'invalid-manifest', /at \/transport\/command: "definitely-not-a-command-here" is not an executable file on PATH/);
  });
});

describe('buildManifest', () => {
  it('a stdio server speaks legacy unless its manifest asks (no second start to probe)', () => {
    const manifest = build(stdioManifest('x', NOTES_SERVER, []));
    assert.equal(manifest.transport.type === 'stdio' && manifest.transport.era, 'legacy');
  });

  it('loads an http manifest and normalises its URL', () => {
    const manifest = build({ manifestVersion: 1, name: 'test.x', version: '1', serial: 1, transport: { type: 'http', url: 'http://127.0.0.1:9/mcp' }, tools: [] });
    assert.deepEqual(manifest.transport, { type: 'http', url: 'http://127.0.0.1:9/mcp', era: 'auto', spki: [] });
  });

  it('refuses credentials written into an http URL', () => {
    const data = { manifestVersion: 1, name: 'test.x', version: '1', serial: 1, transport: { type: 'http', url: 'https://user:pw@example.test/mcp' }, tools: [] };
    expectRejection(() => build(data), 'invalid-manifest', /at \/transport\/url: credentials must not be written into the URL/);
  });

  it('refuses a tool without an object input schema', () => {
    const tool = { ...NOTES_TOOLS[0], inputSchema: { type: 'string' } };
    expectRejection(() => build(stdioManifest('x', NOTES_SERVER, [tool])), 'invalid-manifest', /at \/tools\/0\/inputSchema\/type: must be equal to constant/);
  });

  it('refuses an unknown access class and a missing one', () => {
    const bad = { ...NOTES_TOOLS[0], access: 'admin' };
    expectRejection(() => build(stdioManifest('x', NOTES_SERVER, [bad])), 'invalid-manifest', /at \/tools\/0\/access: must be one of \["read","write","destructive"\]/);
    const { access: _access, ...missing } = NOTES_TOOLS[0] as Record<string, unknown>;
    expectRejection(() => build(stdioManifest('x', NOTES_SERVER, [missing])), 'invalid-manifest', /at \/tools\/0: is missing required property "access"/);
  });

  it('refuses a tool declared twice', () => {
    const tools = [NOTES_TOOLS[0], NOTES_TOOLS[0]];
    expectRejection(() => build(stdioManifest('x', NOTES_SERVER, tools)), 'invalid-manifest', /at \/tools\/1\/name: tool "list_notes" is declared twice/);
  });

  it('refuses tool names clients would reject', () => {
    for (const name of ['has space', 'dot.ted', 'x'.repeat(65), '']) {
      const tool = { ...NOTES_TOOLS[0], name };
      const rejection = rejectionOf(() => build(stdioManifest('x', NOTES_SERVER, [tool])));
      assert.equal(rejection.reason, 'invalid-manifest', name);
      assert.match(rejection.message, /at \/tools\/0\/name: must match pattern/, name);
    }
  });

  it('refuses manifest names that are not dotted lowercase labels (two at least)', () => {
    for (const name of ['example/notes', 'notes', 'Test.Notes', 'test..notes', '.test.notes', 'test.notes.', 'test.-notes', 'test.no tes']) {
      const rejection = rejectionOf(() => build({ ...stdioManifest('x', NOTES_SERVER, []), name }));
      assert.equal(rejection.reason, 'invalid-manifest', name);
      assert.match(rejection.message, /at \/name: must match pattern/, name);
    }
    for (const name of ['test.notes', 'acme.crm.eu', 'a1.b-2']) assert.equal(build({ ...stdioManifest('x', NOTES_SERVER, []), name }).name, name);
  });

  it('requires a serial of at least 1 and both validity dates', () => {
    const source = stdioManifest('x', NOTES_SERVER, []);
    for (const serial of [0, -1, 1.5, '1']) {
      const rejection = rejectionOf(() => build({ ...source, serial }));
      assert.equal(rejection.reason, 'invalid-manifest', String(serial));
      assert.match(rejection.message, /at \/serial: /, String(serial));
    }
    const { serial: _serial, ...noSerial } = source;
    expectRejection(() => build(noSerial), 'invalid-manifest', /at \/: is missing required property "serial"/);
    for (const field of ['issuedAt', 'expiresAt'] as const) {
      const { [field]: _dropped, ...rest } = { ...DATES, ...source };
      expectRejection(() => buildManifest(rest, join(dir, 'dates.json'), { resolveCommand: false }), 'invalid-manifest', new RegExp(`at /: is missing required property "${field}"`));
    }
    expectRejection(() => build({ ...source, expiresAt: 'next year' }), 'invalid-manifest', /at \/expiresAt: must match format "date-time"/);
  });

  it('refuses a command that is not found', () => {
    const data = stdioManifest('x', NOTES_SERVER, []);
    (data['transport'] as Record<string, unknown>)['command'] = 'definitely-not-a-command-here';
    expectRejection(() => build(data), 'invalid-manifest', /at \/transport\/command: /);
  });

  it('refuses environment names that are not plain identifiers', () => {
    const data = stdioManifest('x', NOTES_SERVER, [], { env: { 'BAD-NAME': 'x' } });
    expectRejection(() => build(data), 'invalid-manifest', /at \/transport\/env: property name must be valid/);
  });

  it('refuses documents that are not objects', () => {
    expectRejection(() => build(['just', 'a list']), 'invalid-manifest', /at \/: must be object/);
    expectRejection(() => build(42), 'invalid-manifest', /at \/: must be object/);
  });

  it('refuses invisible characters in a tool description, naming the path', () => {
    const tool = { ...NOTES_TOOLS[0], description: 'List all notes.\u200b' };
    expectRejection(() => build(stdioManifest('x', NOTES_SERVER, [tool])), 'invisible-characters', /at \/tools\/0\/description: U\+200B/);
  });
});

describe('resolveCommand', () => {
  it('finds a bare name on the given PATH only', () => {
    assert.equal(resolveCommand('node', '/', NODE_DIR), join(NODE_DIR, 'node'));
    expectRejection(() => resolveCommand('node', '/', '/nonexistent'), 'invalid-manifest', /"node" is not an executable file on PATH/);
    // relative PATH entries are ignored: they would depend on the working directory
    expectRejection(() => resolveCommand('node', '/', 'relative/bin'), 'invalid-manifest');
    expectRejection(() => resolveCommand('node', '/', undefined), 'invalid-manifest');
  });

  it('refuses a directory and a non-executable file', () => {
    expectRejection(() => resolveCommand('/tmp', '/', ''), 'invalid-manifest', /"\/tmp" is not an executable file$/);
    expectRejection(() => resolveCommand(join(ROOT, 'package.json'), '/', ''), 'invalid-manifest');
  });

  it('takes a relative path from cwd, never from PATH', () => {
    assert.equal(resolveCommand('./node', NODE_DIR, ''), join(NODE_DIR, 'node'));
    expectRejection(() => resolveCommand('./node', ROOT, NODE_DIR), 'invalid-manifest');
  });
});

describe('buildManifest: input schemas', () => {
  it('refuses a schema that does not compile, naming its path', () => {
    const tool = { ...NOTES_TOOLS[0], inputSchema: { type: 'object', properties: { a: { type: 'strin' } } } };
    const tools = [NOTES_TOOLS[0], tool].map((t, i) => ({ ...t, name: `t${i}` }));
    expectRejection(() => build(stdioManifest('x', NOTES_SERVER, tools)), 'invalid-manifest', /at \/tools\/1\/inputSchema: the schema does not compile/);
  });

  it('compiles each tool schema once, at load', () => {
    const manifest = loadSignedManifest(signedRepoManifest('notes'), repoTrust, { searchPath: NODE_DIR });
    const validate = manifest.validators.get('get_note');
    assert.ok(validate);
    assert.equal(validate({ id: 1 }), true);
    assert.equal(validate({ id: '1' }), false);
  });
});

describe('buildManifest: a stdio server\'s arguments and pins, as the server will follow them', () => {
  /** A folder with a script; the manifest runs it with Node from cwd "run", a link to "real". */
  function project(): string {
    const root = join(dir, `args-${counter++}`);
    mkdirSync(join(root, 'real'), { recursive: true });
    writeFileSync(join(root, 'real', 'server.js'), 'server');
    writeFileSync(join(root, 'real', 'setup.js'), 'setup');
    symlinkSync('real', join(root, 'run'));
    return root;
  }
  const manifestFor = (root: string, args: string[], pins: Record<string, unknown>) => ({
    manifestVersion: 1,
    name: 'test.args',
    version: '1',
    serial: 1,
    transport: { type: 'stdio', command: process.execPath, args, cwd: join(root, 'run'), pins: { command: '0'.repeat(64), ...pins } },
    tools: [],
  });

  it('refuses environment variables that make the runtime load code, in transport.env and as a credential\'s variable', () => {
    for (const name of ['NODE_OPTIONS', 'NODE_PATH', 'LD_PRELOAD', 'LD_LIBRARY_PATH', 'DYLD_INSERT_LIBRARIES', 'PYTHONPATH', 'PERL5OPT', 'RUBYOPT', 'JAVA_TOOL_OPTIONS', 'BASH_ENV']) {
      const source = stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS) as { transport: Record<string, unknown> };
      source.transport = { ...source.transport, env: { [name]: '--require ./unpinned.js' } };
      expectRejection(() => build(source), 'artifact-unpinned', new RegExp(`at /transport/env/${name}: this variable makes the runtime load code`));
      const viaCredential = { ...stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS), credentials: [{ name: 'TOKEN', env: name }] };
      expectRejection(() => build(viaCredential), 'invalid-manifest', new RegExp(`"${name}" makes the runtime load code; a credential cannot set it`));
    }
    // Ordinary variables stay allowed.
    const plain = stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS) as { transport: Record<string, unknown> };
    plain.transport = { ...plain.transport, env: { NODE_ENV: 'production', LOG_LEVEL: 'info' } };
    assert.doesNotThrow(() => build(plain));
  });

  it('refuses (artifact-unpinned) what Node would load without a pin, naming the argument and what to pin', () => {
    const root = project();
    const rejection = expectRejection(() => build(manifestFor(root, ['-r', './setup', 'server'], {})), 'artifact-unpinned');
    assert.deepEqual(rejection.detail, { unpinned: ['./setup', 'server'] });
    assert.ok(rejection.message.includes(`"./setup" leads to ${join(root, 'real', 'setup.js')}, which no pin covers; pin it under /transport/pins`), rejection.message);
    assert.ok(rejection.message.includes(`"server" leads to ${join(root, 'real', 'server.js')}, which no pin covers`), rejection.message);
    const pinned = { files: [{ path: 'server.js', sha256: '1'.repeat(64) }, { path: 'setup.js', sha256: '2'.repeat(64) }] };
    assert.equal(build(manifestFor(root, ['-r', './setup', 'server'], pinned)).transport.type, 'stdio');
    expectRejection(() => build(manifestFor(root, ['--import', 'not-installed-anywhere-here', 'server'], pinned)), 'artifact-unpinned', /"not-installed-anywhere-here" names the package not-installed-anywhere-here, which no node_modules folder above .* holds/);
  });

  it('keeps a ".." in a pin\'s path, to be applied after the links before it', () => {
    const root = project();
    mkdirSync(join(root, 'lib'));
    writeFileSync(join(root, 'lib', 'x.js'), 'x');
    const manifest = build(manifestFor(root, [], { files: [{ path: '../lib/x.js', sha256: '1'.repeat(64) }, { path: './server.js', sha256: '2'.repeat(64) }] }));
    assert.equal(manifest.transport.type, 'stdio');
    if (manifest.transport.type !== 'stdio') return;
    // From run (a link to real), ".." is the parent of real, not of run: the same folder here, but only the walk can tell.
    assert.deepEqual(manifest.transport.pins.files.map((pin) => pin.path), [`${root}/run/../lib/x.js`, `${root}/run/server.js`]);
  });
});
