import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfig } from '../../src/config/load.ts';
import { WardenError } from '../../src/errors.ts';
import { NOTES_SERVER, NOTES_TOOLS, startBroker, stdioManifest, TEST_PUBLISHER, tempDir, writeConfig, writeManifest, writeYaml, expectWardenError as expectCode } from '../helpers.ts';

const { dir, cleanup } = tempDir();
after(cleanup);

writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));

const NOTES_CATALOG = ['list_notes', 'get_note', 'search_notes', 'add_note', 'delete_note', 'echo', 'server_info', 'debug_dump'].map((tool) => `notes__${tool}`);

function baseConfig(): Record<string, any> {
  return {
    version: 1,
    servers: { notes: { manifest: 'notes.json' } },
    agents: { alice: { allow: [{ tools: ['notes__*'] }] } },
  };
}

let counter = 0;
/** Writes a config; an object gets the test publisher's trust unless it says whom to trust. */
function configFile(data: string | Record<string, unknown>): string {
  const file = join(dir, `config-${counter++}.yaml`);
  return typeof data === 'string' ? writeYaml(file, data) : writeConfig(file, data);
}

describe('loadConfig', () => {
  it('a server entry cannot add to the signed launch: no command, arguments, environment or working directory', () => {
    // Launch comes only from the signed manifest; the config names the release and its credentials' sources.
    for (const [key, value] of [['command', '/bin/sh'], ['args', ['--inspect']], ['env', { NODE_OPTIONS: '--require /tmp/x.js' }], ['cwd', '/tmp'], ['pins', { command: '0'.repeat(64) }]] as const) {
      const data = baseConfig();
      data['servers'].notes[key] = value;
      expectCode(() => loadConfig(configFile(data)), 'WARDEN_CONFIG_INVALID', new RegExp(`at /servers/notes: has unknown property "${key}"`));
    }
  });

  it('loads a valid config with its manifests, defaults and catalog', () => {
    const config = loadConfig(configFile(baseConfig()));
    assert.deepEqual([...config.catalog.keys()], NOTES_CATALOG);
    assert.deepEqual(config.rejected, new Map());
    const notes = config.servers.get('notes');
    assert.equal(notes?.name, 'test.notes');
    assert.equal(notes?.serial, 1);
    assert.deepEqual(notes?.signers, [{ keyId: TEST_PUBLISHER.keyId, publisher: 'test' }]);
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
    const full = 'version: 1\nservers:\n  notes:\n    manifest: notes.json\nagents:\n  alice:\n    allow:\n      - tools: ["notes__*"]\n';
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
      data['servers'] = { [key]: { manifest: 'notes.json' } };
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

  it('reports a missing manifest as a refusal naming the file; the config still loads, without that server', () => {
    const data = baseConfig();
    data['servers'] = { notes: { manifest: 'missing.yaml' } };
    const config = loadConfig(configFile(data));
    const rejection = config.rejected.get('notes');
    assert.equal(rejection?.reason, 'unreadable');
    assert.equal(rejection?.file, join(dir, 'manifests/missing.yaml'));
    assert.match(rejection?.message ?? '', /ENOENT/);
    assert.equal(config.servers.size, 0);
    assert.equal(config.catalog.size, 0);
  });

  it('refuses an unsigned manifest (the old YAML form) with reason unsigned; the other servers load', async () => {
    writeYaml(join(dir, 'manifests/unsigned.yaml'), stdioManifest('unsigned', NOTES_SERVER, NOTES_TOOLS));
    const data = baseConfig();
    data['servers'] = { notes: { manifest: 'notes.json' }, plain: { manifest: 'unsigned.yaml' } };
    data['agents'] = { alice: { allow: [{ tools: ['plain__*'] }] } };
    const config = loadConfig(configFile(data));
    assert.equal(config.rejected.get('plain')?.reason, 'unsigned');
    assert.equal(config.rejected.get('plain')?.file, join(dir, 'manifests/unsigned.yaml'));
    assert.deepEqual([...config.servers.keys()], ['notes']);
    assert.deepEqual([...config.catalog.keys()], NOTES_CATALOG, 'no plain__ tool exists');
    assert.match(config.warnings.join('\n'), /"plain__\*" matches no tool/);
    // The broker starts without the refused server: it has no backend, its tools are listed for nobody.
    const only = configFile({ ...data, servers: { plain: { manifest: 'unsigned.yaml' } } });
    const broker = await startBroker(loadConfig(only));
    try {
      assert.deepEqual([...broker.backends.keys()], []);
      assert.deepEqual(broker.listTools('alice').tools, []);
    } finally {
      await broker.close();
    }
  });

  it('a signed manifest that breaks a load rule is refused (invalid-manifest), no longer a fatal error', () => {
    const source = stdioManifest('nocommand', NOTES_SERVER, NOTES_TOOLS);
    (source['transport'] as Record<string, unknown>)['command'] = 'definitely-not-a-command-here';
    writeManifest(join(dir, 'manifests/no-command.json'), source);
    const data = baseConfig();
    data['servers'] = { notes: { manifest: 'notes.json' }, broken: { manifest: 'no-command.json' } };
    const config = loadConfig(configFile(data));
    const rejection = config.rejected.get('broken');
    assert.equal(rejection?.reason, 'invalid-manifest');
    assert.match(rejection?.message ?? '', /at \/transport\/command: "definitely-not-a-command-here" is not an executable file/);
    assert.ok(![...config.catalog.keys()].some((name) => name.startsWith('broken__')));
    assert.ok(config.servers.has('notes'));
  });

  it('only the trust section decides whose signature counts', () => {
    const data = baseConfig();
    data['trust'] = { publishers: { test: { keys: [TEST_PUBLISHER.publicKey], namespaces: ['other.*'] } } };
    assert.equal(loadConfig(configFile(data)).rejected.get('notes')?.reason, 'namespace-not-trusted');
    data['trust'] = {};
    const untrusted = loadConfig(configFile(data));
    assert.equal(untrusted.rejected.get('notes')?.reason, 'unknown-key');
    assert.ok(untrusted.warnings.some((warning) => /no trusted publishers/.test(warning)));
    assert.equal(untrusted.catalog.size, 0);
  });

  it('skips disabled servers entirely', () => {
    const data = baseConfig();
    data['servers'] = { notes: { manifest: 'missing.yaml', enabled: false } };
    data['agents'] = { alice: { allow: [] } };
    const config = loadConfig(configFile(data));
    assert.equal(config.servers.size, 0);
    assert.equal(config.rejected.size, 0, 'a disabled server is not even checked');
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
    writeManifest(join(dir, 'manifests/long.json'), stdioManifest('long', NOTES_SERVER, [{ ...NOTES_TOOLS[0], name: long }]));
    const data = baseConfig();
    data['servers'] = { 'long-server': { manifest: 'long.json' } };
    expectCode(() => loadConfig(configFile(data)), 'WARDEN_CONFIG_INVALID', /longer than 64/);
  });

  it('binds each server slot to a manifest name: another publisher\'s valid manifest never gets its credentials or grants', () => {
    // "intruder" is trusted, but only for intruder.*; it signs its own manifest, validly,
    // and the file is put where the crm server's manifest belongs.
    writeManifest(join(dir, 'manifests/intruder.json'), { ...stdioManifest('intruder', NOTES_SERVER, NOTES_TOOLS), name: 'test.intruder' });
    const file = writeConfig(join(dir, 'slot.yaml'), {
      version: 1,
      servers: { crm: { manifest: 'intruder.json', name: 'test.crm' } },
      credentials: {},
      agents: { alice: { allow: [{ tools: ['crm__*'] }] } },
    });
    const config = loadConfig(file);
    assert.equal(config.servers.has('crm'), false);
    assert.equal(config.rejected.get('crm')?.reason, 'unexpected-name');
    assert.match(config.rejected.get('crm')?.message ?? '', /"test.intruder"; servers.crm.name expects "test.crm"/);
    assert.equal(config.catalog.size, 0);
  });

  it('a server entry without a name is a config error', () => {
    const file = writeYaml(join(dir, 'noname.yaml'), { version: 1, servers: { notes: { manifest: 'notes.json' } }, agents: {} });
    expectCode(() => loadConfig(file), 'WARDEN_CONFIG_INVALID', /servers\/notes: is missing required property "name"/);
  });
});
