import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfig } from '../../src/config/load.ts';
import { WardenError } from '../../src/errors.ts';
import { NOTES_SERVER, NOTES_TOOLS, stdioManifest, tempDir, writeYaml } from '../helpers.ts';

const { dir, cleanup } = tempDir();
after(cleanup);

writeYaml(join(dir, 'manifests/notes.yaml'), stdioManifest('example/notes', NOTES_SERVER, NOTES_TOOLS));

function baseConfig(): Record<string, any> {
  return {
    version: 1,
    servers: { notes: { manifest: 'notes.yaml' } },
    agents: { alice: { allow: [{ tools: ['notes__*'] }] } },
  };
}

let counter = 0;
function configFile(data: unknown): string {
  return writeYaml(join(dir, `config-${counter++}.yaml`), data);
}

function expectCode(fn: () => unknown, code: string, pattern?: RegExp): WardenError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof WardenError, `expected a WardenError, got ${String(caught)}`);
  assert.equal(caught.code, code);
  if (pattern) assert.match(caught.message, pattern);
  return caught;
}

describe('loadConfig', () => {
  it('loads a valid config with its manifests, defaults and catalog', () => {
    const config = loadConfig(configFile(baseConfig()));
    assert.deepEqual([...config.catalog.keys()], ['notes__list_notes', 'notes__add_note', 'notes__echo']);
    assert.equal(config.http.maxBodyBytes, 1024 * 1024);
    assert.equal(config.limits.callTimeoutMs, 30_000);
    assert.deepEqual(config.http.listen, { host: '127.0.0.1', port: 7070 });
    assert.ok(config.audit.file.startsWith(dir));
    assert.deepEqual(config.warnings, []);
  });

  it('is frozen: policy cannot be changed in place', () => {
    const config = loadConfig(configFile(baseConfig()));
    assert.throws(() => {
      (config.limits as { callTimeoutMs: number }).callTimeoutMs = 1;
    }, TypeError);
    const tool = config.catalog.get('notes__echo');
    assert.ok(tool);
    assert.throws(() => {
      (tool.definition as { description: string }).description = 'poisoned';
    }, TypeError);
  });

  it('refuses a missing file', () => {
    expectCode(() => loadConfig(join(dir, 'nope.yaml')), 'WARDEN_CONFIG_UNREADABLE', /ENOENT/);
  });

  it('refuses an empty file', () => {
    expectCode(() => loadConfig(configFile('')), 'WARDEN_CONFIG_UNREADABLE', /empty/);
  });

  it('refuses a half-written file', () => {
    const full = 'version: 1\nservers:\n  notes:\n    manifest: notes.yaml\nagents:\n  alice:\n    allow:\n      - tools: ["notes__*"]\n';
    for (const cut of [12, 30, 60, full.length - 8]) {
      const file = configFile(full.slice(0, cut));
      let caught: unknown;
      try {
        loadConfig(file);
      } catch (error) {
        caught = error;
      }
      assert.ok(caught instanceof WardenError, `cut at ${cut} must fail`);
      assert.ok(['WARDEN_CONFIG_UNREADABLE', 'WARDEN_CONFIG_INVALID'].includes(caught.code));
    }
  });

  it('names the path and the expectation for a schema error', () => {
    const data = baseConfig();
    data['limits'] = { callTimeoutMs: 'soon' };
    expectCode(() => loadConfig(configFile(data)), 'WARDEN_CONFIG_INVALID', /at \/limits\/callTimeoutMs: must be integer/);
  });

  it('refuses unknown properties, naming them', () => {
    const data = baseConfig();
    data['agents']['alice']['allowAll'] = true;
    expectCode(() => loadConfig(configFile(data)), 'WARDEN_CONFIG_INVALID', /at \/agents\/alice: has unknown property "allowAll"/);
  });

  it('refuses server keys that would make tool names ambiguous', () => {
    for (const key of ['no_tes', 'Notes', '-notes', 'a--b']) {
      const data = baseConfig();
      data['servers'] = { [key]: { manifest: 'notes.yaml' } };
      expectCode(() => loadConfig(configFile(data)), 'WARDEN_CONFIG_INVALID');
    }
  });

  it('refuses duplicate keys', () => {
    const text = 'version: 1\nservers: {}\nagents: {}\nagents: {}\n';
    expectCode(() => loadConfig(configFile(text)), 'WARDEN_CONFIG_UNREADABLE', /not valid YAML/);
  });

  it('refuses a token hash that is not 64 hex characters', () => {
    const data = baseConfig();
    data['agents']['alice']['tokenSha256'] = 'secret-token-in-clear';
    expectCode(() => loadConfig(configFile(data)), 'WARDEN_CONFIG_INVALID', /tokenSha256/);
  });

  it('refuses an oversized file without reading it', () => {
    const file = join(dir, 'huge.yaml');
    writeFileSync(file, `# ${'x'.repeat(1024 * 1024 + 10)}\n`);
    expectCode(() => loadConfig(file), 'WARDEN_CONFIG_UNREADABLE', /limit/);
  });

  it('refuses a non-loopback listen address without allowedHosts', () => {
    const data = baseConfig();
    data['http'] = { listen: '0.0.0.0:7070' };
    expectCode(() => loadConfig(configFile(data)), 'WARDEN_CONFIG_INVALID', /allowedHosts/);
    data['http'] = { listen: '0.0.0.0:7070', allowedHosts: ['warden.internal'] };
    assert.equal(loadConfig(configFile(data)).http.listen.host, '0.0.0.0');
  });

  it('refuses a malformed listen address', () => {
    const data = baseConfig();
    data['http'] = { listen: 'localhost' };
    expectCode(() => loadConfig(configFile(data)), 'WARDEN_CONFIG_INVALID', /\/http\/listen/);
  });

  it('reports a missing manifest as a manifest error naming the file', () => {
    const data = baseConfig();
    data['servers'] = { notes: { manifest: 'missing.yaml' } };
    expectCode(() => loadConfig(configFile(data)), 'WARDEN_MANIFEST_UNREADABLE', /missing\.yaml/);
  });

  it('skips disabled servers entirely', () => {
    const data = baseConfig();
    data['servers'] = { notes: { manifest: 'missing.yaml', enabled: false } };
    data['agents'] = { alice: { allow: [] } };
    assert.equal(loadConfig(configFile(data)).servers.size, 0);
  });

  it('warns about a grant that matches no tool', () => {
    const data = baseConfig();
    data['agents']['alice']['allow'].push({ tools: ['notse__*'] });
    const config = loadConfig(configFile(data));
    assert.equal(config.warnings.length, 1);
    assert.match(config.warnings[0] ?? '', /notse__\*/);
  });

  it('refuses an exposed name longer than 64 characters', () => {
    const long = 'a'.repeat(60);
    writeYaml(join(dir, 'manifests/long.yaml'), stdioManifest('x/long', NOTES_SERVER, [{ ...NOTES_TOOLS[0], name: long }]));
    const data = baseConfig();
    data['servers'] = { 'long-server': { manifest: 'long.yaml' } };
    expectCode(() => loadConfig(configFile(data)), 'WARDEN_CONFIG_INVALID', /longer than 64/);
  });
});
