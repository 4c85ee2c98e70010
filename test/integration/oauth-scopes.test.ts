import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Broker } from '../../src/broker.ts';
import { loadConfig } from '../../src/config/load.ts';
import type { OAuthSession } from '../../src/pipeline/types.ts';
import { compileGrants, findGrant, missingScopes } from '../../src/policy/grants.ts';
import { NOTES_SERVER, NOTES_TOOLS, refusalCode, startBroker, stdioManifest, tempDir, textOf, writeConfig, writeManifest } from '../helpers.ts';

// Scoped grants at the broker's API, below the HTTP front: what a session with an access
// token sees and may call, and that code mode's calls carry the run's scopes.

const RUN = 'warden__run_code';
const { dir, cleanup } = tempDir();
let broker: Broker;

const session = (...scopes: string[]): OAuthSession => ({ scopes: new Set(scopes), subject: 'client-1', tokenId: 'jti-1' });

before(async () => {
  writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
  const config = loadConfig(
    writeConfig(join(dir, 'warden.yaml'), {
      version: 1,
      servers: { notes: { manifest: 'notes.json' } },
      agents: {
        bot: {
          oauthSubject: 'client-1',
          allow: [
            { tools: [RUN, 'notes__echo'] },
            { tools: ['notes__list_notes'], scopes: ['notes.read'] },
            // A tool only a token that holds admin too may call, and only with approval.
            { tools: ['notes__get_note'], scopes: ['notes.read', 'admin'], approval: 'required' },
          ],
        },
      },
      http: { oauth: { issuer: 'https://login.example.test/', resource: 'https://warden.example.test/mcp', jwksUrl: 'https://login.example.test/keys' } },
      approvals: { waitSeconds: 0 },
      sandbox: { workers: 1, warmIsolates: 0, codeMode: { workers: 1 } },
    }),
  );
  broker = await startBroker(config);
});

after(async () => {
  await broker?.close();
  cleanup();
});

const names = (oauth?: OAuthSession) => broker.listTools('bot', oauth ? { oauth } : {}).tools.map((tool) => tool.name).sort();

describe('scoped grants', () => {
  it('findGrant and missingScopes', () => {
    const grants = compileGrants([{ tools: ['a__*'] }, { tools: ['b__x'], scopes: ['s1', 's2'] }, { tools: ['b__x'], scopes: ['s3'] }]);
    assert.equal(findGrant(grants, 'a__y', 'read')?.index, 0, 'a grant without scopes applies to every session');
    assert.equal(findGrant(grants, 'b__x', 'read'), undefined, 'never to a session without a token');
    assert.equal(findGrant(grants, 'b__x', 'read', new Set(['s1'])), undefined);
    assert.equal(findGrant(grants, 'b__x', 'read', new Set(['s2', 's1']))?.index, 1);
    assert.deepEqual(missingScopes(grants, 'b__x', 'read', new Set(['s1'])), ['s2']);
    assert.deepEqual(missingScopes(grants, 'b__x', 'read', new Set()), ['s3'], 'the grant that needs the fewest');
    assert.equal(missingScopes(grants, 'c__z', 'read', new Set()), undefined);
  });

  it('tools/list shows a scoped tool only to sessions holding its scopes', () => {
    assert.deepEqual(names(), ['notes__echo', RUN]);
    assert.deepEqual(names(session()), ['notes__echo', RUN]);
    assert.deepEqual(names(session('notes.read')), ['notes__echo', 'notes__list_notes', RUN]);
  });

  it('calls: allowed with the scope, refused with WARDEN_INSUFFICIENT_SCOPE without it, never for a session without a token', async () => {
    assert.match(textOf(await broker.callTool('bot', 'notes__list_notes', {}, { oauth: session('notes.read') })), /Welcome/);
    assert.equal(refusalCode(await broker.callTool('bot', 'notes__list_notes', {}, { oauth: session('other') })), 'WARDEN_INSUFFICIENT_SCOPE');
    assert.equal(refusalCode(await broker.callTool('bot', 'notes__list_notes', {})), 'WARDEN_TOOL_NOT_FOUND');
    // A tool that needs admin as well: refused without it, and with it held for approval.
    assert.equal(refusalCode(await broker.callTool('bot', 'notes__get_note', { id: 1 }, { oauth: session('notes.read') })), 'WARDEN_INSUFFICIENT_SCOPE');
    assert.equal(refusalCode(await broker.callTool('bot', 'notes__get_note', { id: 1 }, { oauth: session('notes.read', 'admin') })), 'WARDEN_APPROVAL_PENDING');
  });

  it("code mode: the description and the run's calls follow the session's scopes", async () => {
    const description = (oauth?: OAuthSession) => broker.listTools('bot', oauth ? { oauth } : {}).tools.find((tool) => tool.name === RUN)?.description ?? '';
    assert.match(description(session('notes.read')), /list_notes/);
    assert.doesNotMatch(description(session()), /list_notes/);
    const code = 'return JSON.parse(await tools.notes.list_notes({})).length';
    const allowed = await broker.callTool('bot', RUN, { code }, { oauth: session('notes.read') });
    assert.equal(allowed.isError, undefined, textOf(allowed));
    assert.equal(typeof (allowed.structuredContent as { result: unknown }).result, 'number');
    const refused = await broker.callTool('bot', RUN, { code }, { oauth: session() });
    assert.equal(refused.isError, true);
    const records = (broker.audit as unknown as { records: Record<string, unknown>[] }).records;
    const inner = records.filter((record) => record['event'] === 'tools/call' && record['tool'] === 'notes__list_notes' && record['parentCorrelationId'] !== undefined);
    assert.ok(inner.length >= 1);
    assert.equal(inner[0]?.['oauthSubject'], 'client-1');
    assert.equal(inner[0]?.['tokenId'], 'jti-1');
  });
});
