import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { DEFAULTS, loadConfig } from '../../src/config/load.ts';
import { NOTES_SERVER, NOTES_TOOLS, stdioManifest, tempDir, textToolsManifest, writeConfig, writeManifest, expectWardenError as expectCode } from '../helpers.ts';

// The config side of server requests: serverRequests grants (what a downstream server may
// ask an agent's host), the roots an MCP server is told, and the limits on both.
const { dir, cleanup } = tempDir('warden-server-requests-config-');
after(cleanup);

writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
writeManifest(join(dir, 'manifests/text.json'), textToolsManifest());
writeManifest(join(dir, 'manifests/api.json'), {
  manifestVersion: 1,
  name: 'test.api',
  version: '1',
  serial: 1,
  transport: { type: 'http-api', baseUrl: 'https://api.example.com/v1' },
  tools: [{ name: 'read', description: 'r', access: 'read', inputSchema: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] }, http: { method: 'GET', path: '/items/{id}' } }],
});

const ALL_SERVERS = { notes: { manifest: 'notes.json' }, text: { manifest: 'text.json' }, api: { manifest: 'api.json' } };

let counter = 0;
function config(allow: unknown[], servers: Record<string, unknown> = { notes: { manifest: 'notes.json' } }, extra: Record<string, unknown> = {}): string {
  return writeConfig(join(dir, `config-${counter++}.yaml`), { version: 1, servers, agents: { alice: { allow } }, ...extra });
}

describe('config: serverRequests grants', () => {
  it('compiles a grant into the agent\'s serverRequestGrants, apart from its tool grants', () => {
    const loaded = loadConfig(config([{ tools: ['notes__*'] }, { serverRequests: ['sampling', 'elicitation'], server: 'notes' }, { serverRequests: ['elicitation'], server: 'notes', scopes: ['ask'] }]));
    const alice = loaded.agents.get('alice')!;
    assert.deepEqual(alice.grants.map((grant) => grant.index), [0]);
    assert.deepEqual(
      alice.serverRequestGrants.map((grant) => [grant.index, grant.server, [...grant.kinds].sort(), grant.scopes]),
      [
        [1, 'notes', ['elicitation', 'sampling'], []],
        [2, 'notes', ['elicitation'], ['ask']],
      ],
    );
    assert.deepEqual(alice.resourceGrants, []);
  });

  it('an agent without a serverRequests grant has none (default deny)', () => {
    const loaded = loadConfig(config([{ tools: ['notes__*'] }, { resources: ['notes://x/*'], server: 'notes' }]));
    assert.deepEqual(loaded.agents.get('alice')!.serverRequestGrants, []);
  });

  const refused: readonly (readonly [string, unknown[]])[] = [
    ['serverRequests without server', [{ serverRequests: ['sampling'] }]],
    ['serverRequests on an unknown server', [{ serverRequests: ['sampling'], server: 'nosuch' }]],
    ['an unknown kind', [{ serverRequests: ['roots'], server: 'notes' }]],
    ['a kind of another case', [{ serverRequests: ['Sampling'], server: 'notes' }]],
    ['a kind that is not a string', [{ serverRequests: [1], server: 'notes' }]],
    ['an empty serverRequests list', [{ serverRequests: [], server: 'notes' }]],
    ['a kind twice', [{ serverRequests: ['sampling', 'sampling'], server: 'notes' }]],
    ['serverRequests that is not a list', [{ serverRequests: 'sampling', server: 'notes' }]],
    ['serverRequests and tools in one entry', [{ tools: ['notes__*'], serverRequests: ['sampling'], server: 'notes' }]],
    ['serverRequests and resources in one entry', [{ resources: ['notes://x/*'], serverRequests: ['sampling'], server: 'notes' }]],
    ['serverRequests and prompts in one entry', [{ prompts: ['notes__*'], serverRequests: ['elicitation'], server: 'notes' }]],
    ['access on a serverRequests grant', [{ serverRequests: ['sampling'], server: 'notes', access: ['read'] }]],
    ['approval on a serverRequests grant', [{ serverRequests: ['sampling'], server: 'notes', approval: 'required' }]],
    ['fallback on a serverRequests grant', [{ serverRequests: ['sampling'], server: 'notes', fallback: 'refuse' }]],
    ['server on a tool grant', [{ tools: ['notes__*'], server: 'notes' }]],
  ];
  for (const [label, allow] of refused) {
    it(`refuses ${label} (WARDEN_CONFIG_INVALID)`, () => {
      expectCode(() => loadConfig(config(allow)), 'WARDEN_CONFIG_INVALID', /\/agents\/alice\/allow\/0/);
    });
  }

  it('warns about serverRequests granted on a server that is not an MCP server (it sends no requests)', () => {
    for (const server of ['text', 'api']) {
      const loaded = loadConfig(config([{ serverRequests: ['sampling'], server }], ALL_SERVERS));
      const warning = loaded.warnings.find((text) => text.startsWith('/agents/alice/allow/0/server'));
      assert.ok(warning, `${server}: ${loaded.warnings.join('\n')}`);
      assert.match(warning, /sends no requests/);
    }
    // On an MCP server, no such warning.
    const quiet = loadConfig(config([{ serverRequests: ['sampling'], server: 'notes' }], ALL_SERVERS));
    assert.ok(!quiet.warnings.some((text) => text.startsWith('/agents/alice/allow/0/server')), quiet.warnings.join('\n'));
  });
});

describe('config: servers.<key>.roots', () => {
  it('an MCP server\'s roots are kept, by server key; a server without roots has none', () => {
    const roots = [{ uri: 'file:///srv/projects/alpha', name: 'Alpha' }, { uri: 'file:///srv/shared' }];
    const loaded = loadConfig(config([{ tools: ['*'] }], { notes: { manifest: 'notes.json', roots }, plain: { manifest: 'notes.json' } }));
    assert.deepEqual(loaded.roots.get('notes'), roots);
    assert.equal(loaded.roots.get('plain'), undefined);
    assert.deepEqual(loaded.warnings.filter((text) => text.includes('roots')), []);
  });

  const badRoots: readonly (readonly [string, unknown])[] = [
    ['an https URI', [{ uri: 'https://example.com/repo' }]],
    ['a relative path', [{ uri: 'srv/projects' }]],
    ['an absolute path without a scheme', [{ uri: '/srv/projects' }]],
    ['a FILE:// scheme in capitals', [{ uri: 'FILE:///srv' }]],
    ['a space in the URI', [{ uri: 'file:///srv/my projects' }]],
    ['a newline in the URI', [{ uri: 'file:///srv\n/x' }]],
    ['a non-ASCII character in the URI', [{ uri: 'file:///srv/caf\u00e9' }]],
    ['a zero-width character in the URI', [{ uri: 'file:///srv/\u200bx' }]],
    ['a root without uri', [{ name: 'Nameless' }]],
    ['an unknown field', [{ uri: 'file:///srv', writable: true }]],
    ['an empty name', [{ uri: 'file:///srv', name: '' }]],
    ['roots that are not a list', { uri: 'file:///srv' }],
    ['more than 64 roots', Array.from({ length: 65 }, (_, index) => ({ uri: `file:///srv/${index}` }))],
    ['a URI longer than 2048 characters', [{ uri: `file:///${'a'.repeat(2048)}` }]],
  ];
  for (const [label, roots] of badRoots) {
    it(`refuses ${label} (WARDEN_CONFIG_INVALID)`, () => {
      expectCode(() => loadConfig(config([{ tools: ['*'] }], { notes: { manifest: 'notes.json', roots } })), 'WARDEN_CONFIG_INVALID', /\/servers\/notes\/roots/);
    });
  }

  it('64 roots are accepted', () => {
    const roots = Array.from({ length: 64 }, (_, index) => ({ uri: `file:///srv/${index}` }));
    assert.equal(loadConfig(config([{ tools: ['*'] }], { notes: { manifest: 'notes.json', roots } })).roots.get('notes')?.length, 64);
  });

  it('roots on an http-api or sandbox server: a warning, and nothing kept', () => {
    const roots = [{ uri: 'file:///srv' }];
    const loaded = loadConfig(config([{ tools: ['*'] }], { notes: { manifest: 'notes.json' }, text: { manifest: 'text.json', roots }, api: { manifest: 'api.json', roots } }));
    assert.deepEqual(loaded.warnings.filter((text) => text.includes('/roots')).map((text) => text.split(':')[0]).sort(), ['/servers/api/roots', '/servers/text/roots']);
    assert.equal(loaded.roots.get('text'), undefined);
    assert.equal(loaded.roots.get('api'), undefined);
  });
});

describe('config: limits for server requests', () => {
  it('defaults: answerTimeoutMs 5 min, maxServerRequestBytes 256 KiB', () => {
    const loaded = loadConfig(config([{ tools: ['*'] }]));
    assert.equal(loaded.limits.answerTimeoutMs, 300_000);
    assert.equal(loaded.limits.maxServerRequestBytes, 256 * 1024);
    assert.equal(DEFAULTS.answerTimeoutMs, 300_000);
    assert.equal(DEFAULTS.maxServerRequestBytes, 262_144);
  });

  it('accepts the bounds', () => {
    for (const [answerTimeoutMs, maxServerRequestBytes] of [
      [1000, 1024],
      [3_600_000, 16 * 1024 * 1024],
    ] as const) {
      const loaded = loadConfig(config([{ tools: ['*'] }], undefined, { limits: { answerTimeoutMs, maxServerRequestBytes } }));
      assert.equal(loaded.limits.answerTimeoutMs, answerTimeoutMs);
      assert.equal(loaded.limits.maxServerRequestBytes, maxServerRequestBytes);
    }
  });

  const badLimits: readonly (readonly [string, Record<string, unknown>, RegExp])[] = [
    ['answerTimeoutMs under 1 s', { answerTimeoutMs: 999 }, /limits\/answerTimeoutMs/],
    ['answerTimeoutMs over 1 h', { answerTimeoutMs: 3_600_001 }, /limits\/answerTimeoutMs/],
    ['answerTimeoutMs of 0', { answerTimeoutMs: 0 }, /limits\/answerTimeoutMs/],
    ['a fractional answerTimeoutMs', { answerTimeoutMs: 1500.5 }, /limits\/answerTimeoutMs/],
    ['answerTimeoutMs as a string', { answerTimeoutMs: '5000' }, /limits\/answerTimeoutMs/],
    ['maxServerRequestBytes under 1 KiB', { maxServerRequestBytes: 1023 }, /limits\/maxServerRequestBytes/],
    ['maxServerRequestBytes over 16 MiB', { maxServerRequestBytes: 16 * 1024 * 1024 + 1 }, /limits\/maxServerRequestBytes/],
    ['a negative maxServerRequestBytes', { maxServerRequestBytes: -1 }, /limits\/maxServerRequestBytes/],
  ];
  for (const [label, limits, pattern] of badLimits) {
    it(`refuses ${label} (WARDEN_CONFIG_INVALID)`, () => {
      expectCode(() => loadConfig(config([{ tools: ['*'] }], undefined, { limits })), 'WARDEN_CONFIG_INVALID', pattern);
    });
  }
});
