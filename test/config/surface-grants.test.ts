import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { writeWorkspace } from '../../src/cli/init.ts';
import { loadConfig } from '../../src/config/load.ts';
import { NOTES_SERVER, NOTES_TOOLS, startBroker, stdioManifest, tempDir, textOf, textToolsManifest, writeConfig, writeManifest, expectWardenError as expectCode } from '../helpers.ts';

// Prompt and resource grants in the config: the shapes an allow entry may take, the
// servers they may name, and servers exposed without their name prefix.
const { dir, cleanup } = tempDir('warden-surface-config-');
after(cleanup);

const PROMPTS = [
  { name: 'summary', title: 'Summary', description: 'Summarise the notes' },
  { name: 'draft', description: 'Draft a note', arguments: [{ name: 'topic', required: true }] },
];
writeManifest(join(dir, 'manifests/notes.json'), { ...stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS), prompts: PROMPTS });
writeManifest(join(dir, 'manifests/plain.json'), stdioManifest('plain', NOTES_SERVER, NOTES_TOOLS));
writeManifest(join(dir, 'manifests/other.json'), { ...stdioManifest('other', NOTES_SERVER, NOTES_TOOLS), prompts: [{ name: 'summary', description: 'Another summary' }] });
writeManifest(join(dir, 'manifests/dunder.json'), { ...stdioManifest('dunder', NOTES_SERVER, [{ ...NOTES_TOOLS[0], name: 'list__notes' }]) });
writeManifest(join(dir, 'manifests/dunder-prompt.json'), { ...stdioManifest('dunder-prompt', NOTES_SERVER, NOTES_TOOLS.slice(0, 1)), prompts: [{ name: 'my__prompt' }] });
writeManifest(join(dir, 'manifests/text.json'), textToolsManifest());

let counter = 0;
function configFile(data: Record<string, unknown>): string {
  return writeConfig(join(dir, `config-${counter++}.yaml`), data);
}

function config(allow: unknown[], servers: Record<string, unknown> = { notes: { manifest: 'notes.json' } }, extra: Record<string, unknown> = {}): string {
  return configFile({ version: 1, servers, agents: { alice: { allow } }, ...extra });
}

describe('config: prompt and resource grants', () => {
  it('loads tool, prompt and resource grants side by side, each compiled into its own list', () => {
    const loaded = loadConfig(
      config([
        { tools: ['notes__*'] },
        { prompts: ['notes__summary'] },
        { prompts: ['notes__d*'], scopes: ['prompts'] },
        { resources: ['notes://notes/*', 'notes://archive/**'], server: 'notes' },
      ]),
    );
    const alice = loaded.agents.get('alice')!;
    assert.deepEqual(alice.grants.map((grant) => grant.index), [0]);
    assert.deepEqual(alice.promptGrants.map((grant) => [grant.index, grant.scopes]), [[1, []], [2, ['prompts']]]);
    assert.deepEqual(alice.resourceGrants.map((grant) => [grant.index, grant.server, grant.patterns]), [[3, 'notes', ['notes://notes/*', 'notes://archive/**']]]);
    assert.deepEqual([...loaded.prompts.keys()], ['notes__summary', 'notes__draft']);
    assert.equal(loaded.prompts.get('notes__draft')?.definition.name, 'notes__draft');
    assert.equal(loaded.prompts.get('notes__draft')?.prompt.name, 'draft');
    // The only warning: the scoped grant needs OAuth sessions, which this config has none of.
    assert.deepEqual(loaded.warnings.map((warning) => warning.split(':')[0]), ['/agents/alice/allow/2/scopes']);
  });

  it('prompt definitions are frozen', () => {
    const loaded = loadConfig(config([{ prompts: ['notes__*'] }]));
    const prompt = loaded.prompts.get('notes__summary')!;
    assert.throws(() => {
      (prompt.definition as { description?: string }).description = 'poisoned';
    }, TypeError);
    const draft = loaded.prompts.get('notes__draft')!;
    assert.throws(() => {
      (draft.definition.arguments as { name: string }[]).push({ name: 'apiKey' });
    }, TypeError);
    assert.throws(() => {
      (draft.definition.arguments![0] as { required?: boolean }).required = false;
    }, TypeError);
  });

  const refused: readonly (readonly [string, unknown[], Record<string, unknown>?])[] = [
    ['tools and prompts in one entry', [{ tools: ['notes__*'], prompts: ['notes__summary'] }]],
    ['prompts and resources in one entry', [{ prompts: ['notes__summary'], resources: ['notes://x/*'], server: 'notes' }]],
    ['tools and resources in one entry', [{ tools: ['notes__*'], resources: ['notes://x/*'], server: 'notes' }]],
    ['all three in one entry', [{ tools: ['notes__*'], prompts: ['notes__summary'], resources: ['notes://x/*'], server: 'notes' }]],
    ['an entry that grants nothing', [{ scopes: ['x'] }]],
    ['an empty entry', [{}]],
    ['resources without server', [{ resources: ['notes://x/*'] }]],
    ['resources on an unknown server', [{ resources: ['notes://x/*'], server: 'nosuch' }]],
    ['server on a prompt grant', [{ prompts: ['notes__summary'], server: 'notes' }]],
    ['server on a tool grant', [{ tools: ['notes__*'], server: 'notes' }]],
    ['approval on a prompt grant', [{ prompts: ['notes__summary'], approval: 'required' }]],
    ['access on a prompt grant', [{ prompts: ['notes__summary'], access: ['read'] }]],
    ['fallback on a prompt grant', [{ prompts: ['notes__summary'], fallback: 'refuse' }]],
    ['approval on a resource grant', [{ resources: ['notes://x/*'], server: 'notes', approval: 'required' }]],
    ['access on a resource grant', [{ resources: ['notes://x/*'], server: 'notes', access: ['write'] }]],
    ['an empty prompts list', [{ prompts: [] }]],
    ['an empty resources list', [{ resources: [], server: 'notes' }]],
    ['a prompt pattern with characters names cannot have', [{ prompts: ['notes__sum mary'] }]],
    ['a resource pattern with ..', [{ resources: ['notes://x/../*'], server: 'notes' }]],
    ['a resource pattern ending in ..', [{ resources: ['notes://x/**/..'], server: 'notes' }]],
    ['a resource pattern with a . segment', [{ resources: ['notes://x/./*'], server: 'notes' }]],
    ['a resource pattern with .. right after the scheme', [{ resources: ['notes:../*'], server: 'notes' }]],
    ['a resource pattern with an encoded dot', [{ resources: ['notes://x/%2e%2e/*'], server: 'notes' }]],
    ['a resource pattern with an encoded slash', [{ resources: ['notes://x%2F*'], server: 'notes' }]],
    ['a resource pattern with a backslash', [{ resources: ['notes://x\\*'], server: 'notes' }]],
    ['a resource pattern without a scheme', [{ resources: ['/srv/docs/*'], server: 'notes' }]],
    ['a resource pattern with a space', [{ resources: ['notes://x y/*'], server: 'notes' }]],
    ['a resource pattern with a zero-width character', [{ resources: ['notes://x\u200b/*'], server: 'notes' }]],
    ['a resource pattern longer than 2048 characters', [{ resources: [`notes://${'a'.repeat(2048)}`], server: 'notes' }]],
    ['a server key that cannot be a server', [{ resources: ['notes://x/*'], server: 'Not_A_Key' }]],
    ['a wildcard in the host part', [{ resources: ['https://*.example.com/**'], server: 'notes' }]],
    ['a globstar beside a name in the host part', [{ resources: ['https://**.example.com/x'], server: 'notes' }]],
    ['a wildcard after a name in the host part', [{ resources: ['https://example.*/x'], server: 'notes' }]],
  ];
  for (const [label, allow] of refused) {
    it(`refuses ${label} (WARDEN_CONFIG_INVALID)`, () => {
      // The refusal points at the entry (its path), whatever the wording.
      expectCode(() => loadConfig(config(allow)), 'WARDEN_CONFIG_INVALID', /\/agents\/alice\/allow\/0/);
    });
  }

  it('warns about a prompt pattern that matches no prompt', () => {
    const loaded = loadConfig(config([{ prompts: ['notes__summary', 'notes__nosuch*'] }]));
    assert.equal(loaded.warnings.length, 1);
    assert.match(loaded.warnings[0]!, /allow\/0\/prompts\/1/);
  });

  it('warns about resources granted on a server that is not an MCP server', () => {
    const loaded = loadConfig(config([{ tools: ['text__*'] }, { resources: ['text://x/*'], server: 'text' }], { notes: { manifest: 'notes.json' }, text: { manifest: 'text.json' } }));
    assert.ok(loaded.warnings.some((warning) => /allow\/1\/server/.test(warning)), loaded.warnings.join('\n'));
    assert.equal(loaded.agents.get('alice')?.resourceGrants.length, 1);
  });

  it('two servers may offer a prompt of the same name: the prefix tells them apart', () => {
    const loaded = loadConfig(config([{ prompts: ['*__summary'] }], { notes: { manifest: 'notes.json' }, other: { manifest: 'other.json' } }));
    assert.deepEqual([...loaded.prompts.keys()].sort(), ['notes__draft', 'notes__summary', 'other__summary']);
  });

  it('prompts of a rejected manifest are not in the catalog, and a grant for them warns', () => {
    const loaded = loadConfig(config([{ prompts: ['missing__*'] }], { notes: { manifest: 'notes.json' }, missing: { manifest: 'nosuch.json' } }));
    assert.ok(loaded.rejected.has('missing'));
    assert.deepEqual([...loaded.prompts.keys()], ['notes__summary', 'notes__draft']);
    assert.ok(loaded.warnings.some((warning) => /prompts\/0/.test(warning)));
  });
});

describe('config: servers.<key>.prefix: false', () => {
  it('exposes the server\'s tools and prompts under their own names; grants name them so', () => {
    const loaded = loadConfig(config([{ tools: ['list_notes', 'echo'] }, { prompts: ['summary'] }], { notes: { manifest: 'notes.json', prefix: false } }));
    assert.ok(loaded.catalog.has('list_notes'));
    assert.ok(loaded.catalog.has('echo'));
    assert.ok(!loaded.catalog.has('notes__echo'));
    assert.equal(loaded.catalog.get('echo')?.definition.name, 'echo');
    assert.equal(loaded.catalog.get('echo')?.server, 'notes');
    assert.deepEqual([...loaded.prompts.keys()], ['summary', 'draft']);
    assert.equal(loaded.prompts.get('summary')?.definition.name, 'summary');
    assert.deepEqual(loaded.warnings, []);
  });

  it('prefix: true (the default, or said) keeps <server>__<name>', () => {
    for (const entry of [{ manifest: 'notes.json' }, { manifest: 'notes.json', prefix: true }]) {
      const loaded = loadConfig(config([{ tools: ['notes__*'] }], { notes: entry }));
      assert.ok(loaded.catalog.has('notes__echo'));
      assert.ok(!loaded.catalog.has('echo'));
    }
  });

  it('only the server that says so loses its prefix', () => {
    const loaded = loadConfig(config([{ tools: ['*'] }], { notes: { manifest: 'notes.json', prefix: false }, plain: { manifest: 'plain.json' } }));
    assert.ok(loaded.catalog.has('echo'));
    assert.ok(loaded.catalog.has('plain__echo'));
  });

  it('refuses a tool name containing __ on an unprefixed server', () => {
    expectCode(() => loadConfig(config([{ tools: ['*'] }], { dunder: { manifest: 'dunder.json', prefix: false } })), 'WARDEN_CONFIG_INVALID', /\/servers\/dunder\/prefix/);
    // With the prefix the same manifest loads.
    assert.ok(loadConfig(config([{ tools: ['*'] }], { dunder: { manifest: 'dunder.json' } })).catalog.has('dunder__list__notes'));
  });

  it('refuses a prompt name containing __ on an unprefixed server', () => {
    expectCode(() => loadConfig(config([{ tools: ['*'] }], { dp: { manifest: 'dunder-prompt.json', prefix: false } })), 'WARDEN_CONFIG_INVALID', /\/servers\/dp\/prefix/);
  });

  it('refuses two unprefixed servers whose tool names collide', () => {
    const error = expectCode(() => loadConfig(config([{ tools: ['*'] }], { notes: { manifest: 'notes.json', prefix: false }, plain: { manifest: 'plain.json', prefix: false } })), 'WARDEN_CONFIG_INVALID');
    assert.equal(error.detail?.['name'], 'list_notes');
  });

  it('refuses two unprefixed servers whose prompt names collide', () => {
    // notes and other both offer "summary"; their tools would collide first, so other's tools are renamed here.
    writeManifest(join(dir, 'manifests/other-tools.json'), { ...stdioManifest('other-tools', NOTES_SERVER, NOTES_TOOLS.map((tool) => ({ ...tool, name: `other_${String(tool['name'])}` }))), prompts: [{ name: 'summary' }] });
    const error = expectCode(() => loadConfig(config([{ prompts: ['*'] }], { notes: { manifest: 'notes.json', prefix: false }, other: { manifest: 'other-tools.json', prefix: false } })), 'WARDEN_CONFIG_INVALID');
    assert.equal(error.detail?.['name'], 'summary');
  });

  it('refuses a prefix that is not a boolean', () => {
    expectCode(() => loadConfig(config([{ tools: ['*'] }], { notes: { manifest: 'notes.json', prefix: 'no' } })), 'WARDEN_CONFIG_INVALID');
  });

  it('a call to an unprefixed tool reaches its server under its own name', async () => {
    const loaded = loadConfig(config([{ tools: ['echo'] }], { notes: { manifest: 'plain.json', name: 'test.plain', prefix: false } }, { audit: { file: 'audit-prefix.jsonl' }, state: { dir: 'state-prefix' } }));
    const broker = await startBroker(loaded);
    try {
      assert.deepEqual(broker.listTools('alice').tools.map((tool) => tool.name), ['echo']);
      assert.equal(textOf(await broker.callTool('alice', 'echo', { text: 'raw name' })), 'raw name');
      const refused = await broker.callTool('alice', 'notes__echo', { text: 'x' });
      assert.equal(refused.isError, true);
    } finally {
      await broker.close();
    }
  });
});

describe('the init workspace (examples/workspace/warden.yaml)', () => {
  it('grants the demo agent three everything prompts, two resource patterns (all matching) and elicitation from everything', () => {
    const workspace = writeWorkspace(join(dir, 'ws'), false);
    const loaded = loadConfig(workspace.config);
    assert.deepEqual(loaded.rejected, new Map());
    const demo = loaded.agents.get('demo')!;
    assert.deepEqual(demo.promptGrants.flatMap((grant) => grant.patterns), ['everything__simple-prompt', 'everything__args-prompt', 'everything__completable-prompt']);
    assert.deepEqual(demo.resourceGrants.map((grant) => [grant.server, grant.patterns]), [['everything', ['demo://resource/static/document/*', 'demo://resource/dynamic/text/*']]]);
    assert.ok(loaded.prompts.has('everything__resource-prompt'), 'the signed manifest declares every live prompt');
    assert.ok(!loaded.warnings.some((warning) => /prompts/.test(warning)), loaded.warnings.join('\n'));
    // The reference server may ask the demo agent's host for elicitation, not for sampling.
    assert.deepEqual(demo.serverRequestGrants.map((grant) => [grant.server, [...grant.kinds]]), [['everything', ['elicitation']]]);
  });
});
