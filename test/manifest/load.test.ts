import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { WardenError } from '../../src/errors.ts';
import { loadManifest, resolveCommand } from '../../src/manifest/load.ts';
import { NOTES_SERVER, NOTES_TOOLS, ROOT, stdioManifest, tempDir, writeYaml } from '../helpers.ts';

const { dir, cleanup } = tempDir();
after(cleanup);
let counter = 0;
const file = (data: unknown) => writeYaml(join(dir, `m-${counter++}.yaml`), data);

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    if (error instanceof WardenError) return error.code;
    throw error;
  }
  return undefined;
}

describe('loadManifest', () => {
  it('loads the repository manifests', () => {
    const notes = loadManifest(join(ROOT, 'manifests/notes.manifest.yaml'));
    assert.equal(notes.name, 'example/notes');
    assert.equal(notes.transport.type, 'stdio');
    if (notes.transport.type === 'stdio') {
      assert.ok(notes.transport.command.startsWith('/'), 'command resolved to an absolute path at load');
      assert.equal(notes.transport.cwd, ROOT);
    }
    assert.ok(notes.tools.some((tool) => tool.access === 'write'));
    assert.equal(loadManifest(join(ROOT, 'manifests/everything.manifest.yaml')).transport.era, 'legacy');
  });

  it('a stdio server speaks legacy unless its manifest asks (no second start to probe)', () => {
    const manifest = loadManifest(file(stdioManifest('x', NOTES_SERVER, [])));
    assert.equal(manifest.transport.era, 'legacy');
  });

  it('loads an http manifest and normalises its URL', () => {
    const manifest = loadManifest(file({ manifestVersion: 1, name: 'x', version: '1', transport: { type: 'http', url: 'http://127.0.0.1:9/mcp' }, tools: [] }));
    assert.deepEqual(manifest.transport, { type: 'http', url: 'http://127.0.0.1:9/mcp', era: 'auto' });
  });

  it('refuses credentials written into an http URL', () => {
    const data = { manifestVersion: 1, name: 'x', version: '1', transport: { type: 'http', url: 'https://user:pw@example.test/mcp' }, tools: [] };
    assert.equal(codeOf(() => loadManifest(file(data))), 'WARDEN_MANIFEST_INVALID');
  });

  it('refuses a tool without an object input schema', () => {
    const tool = { ...NOTES_TOOLS[0], inputSchema: { type: 'string' } };
    assert.equal(codeOf(() => loadManifest(file(stdioManifest('x', NOTES_SERVER, [tool])))), 'WARDEN_MANIFEST_INVALID');
  });

  it('refuses an unknown access class and a missing one', () => {
    const bad = { ...NOTES_TOOLS[0], access: 'admin' };
    assert.equal(codeOf(() => loadManifest(file(stdioManifest('x', NOTES_SERVER, [bad])))), 'WARDEN_MANIFEST_INVALID');
    const { access: _access, ...missing } = NOTES_TOOLS[0] as Record<string, unknown>;
    assert.equal(codeOf(() => loadManifest(file(stdioManifest('x', NOTES_SERVER, [missing])))), 'WARDEN_MANIFEST_INVALID');
  });

  it('refuses a tool declared twice', () => {
    const tools = [NOTES_TOOLS[0], NOTES_TOOLS[0]];
    assert.equal(codeOf(() => loadManifest(file(stdioManifest('x', NOTES_SERVER, tools)))), 'WARDEN_MANIFEST_INVALID');
  });

  it('refuses tool names clients would reject', () => {
    for (const name of ['has space', 'dot.ted', 'x'.repeat(65), '']) {
      const tool = { ...NOTES_TOOLS[0], name };
      assert.equal(codeOf(() => loadManifest(file(stdioManifest('x', NOTES_SERVER, [tool])))), 'WARDEN_MANIFEST_INVALID', name);
    }
  });

  it('refuses a command that is not found', () => {
    const data = stdioManifest('x', NOTES_SERVER, []);
    (data['transport'] as Record<string, unknown>)['command'] = 'definitely-not-a-command-here';
    assert.equal(codeOf(() => loadManifest(file(data))), 'WARDEN_MANIFEST_INVALID');
  });

  it('refuses environment names that are not plain identifiers', () => {
    const data = stdioManifest('x', NOTES_SERVER, [], { env: { 'BAD-NAME': 'x' } });
    assert.equal(codeOf(() => loadManifest(file(data))), 'WARDEN_MANIFEST_INVALID');
  });

  it('refuses manifests that are not YAML or are not objects', () => {
    assert.equal(codeOf(() => loadManifest(file('tools: [unclosed'))), 'WARDEN_MANIFEST_UNREADABLE');
    assert.equal(codeOf(() => loadManifest(file('- just\n- a list\n'))), 'WARDEN_MANIFEST_INVALID');
    assert.equal(codeOf(() => loadManifest(file('42\n'))), 'WARDEN_MANIFEST_INVALID');
  });
});

describe('resolveCommand', () => {
  it('finds a bare name on the given PATH only', () => {
    const nodeDir = join(process.execPath, '..');
    assert.equal(resolveCommand('node', '/', nodeDir, 'm.yaml'), join(nodeDir, 'node'));
    assert.throws(() => resolveCommand('node', '/', '/nonexistent', 'm.yaml'), WardenError);
    // relative PATH entries are ignored: they would depend on the working directory
    assert.throws(() => resolveCommand('node', '/', 'relative/bin', 'm.yaml'), WardenError);
  });

  it('refuses a directory and a non-executable file', () => {
    assert.throws(() => resolveCommand('/tmp', '/', '', 'm.yaml'), WardenError);
    assert.throws(() => resolveCommand(join(ROOT, 'package.json'), '/', '', 'm.yaml'), WardenError);
  });
});

describe('loadManifest: input schemas', () => {
  it('refuses a schema that does not compile, naming its path', () => {
    const tool = { ...NOTES_TOOLS[0], inputSchema: { type: 'object', properties: { a: { type: 'strin' } } } };
    let message = '';
    try {
      loadManifest(file(stdioManifest('x', NOTES_SERVER, [NOTES_TOOLS[0], tool].map((t, i) => ({ ...t, name: `t${i}` })))));
    } catch (error) {
      assert.ok(error instanceof WardenError);
      assert.equal(error.code, 'WARDEN_MANIFEST_INVALID');
      message = error.message;
    }
    assert.match(message, /at \/tools\/1\/inputSchema: the schema does not compile/);
  });

  it('compiles each tool schema once, at load', () => {
    const manifest = loadManifest(join(ROOT, 'manifests/notes.manifest.yaml'));
    const validate = manifest.validators.get('get_note');
    assert.ok(validate);
    assert.equal(validate({ id: 1 }), true);
    assert.equal(validate({ id: '1' }), false);
  });
});
