import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { compileGrants, type RawGrant } from '../../src/policy/grants.ts';
import { compilePromptGrants, compileResourceGrants, promptAllowed, resourceGrantsFor, serversAllowing, type RawSurfaceGrant } from '../../src/policy/surface-grants.ts';

const RAW: readonly (RawGrant & RawSurfaceGrant)[] = [
  { tools: ['notes__*'] },
  { prompts: ['everything__simple-prompt', 'everything__args-*'] },
  { prompts: ['notes__*'], scopes: ['prompts:read'] },
  { resources: ['demo://resource/static/document/*'], server: 'everything' },
  { resources: ['demo://resource/dynamic/**'], server: 'everything', scopes: ['resources:read', 'resources:dynamic'] },
  { resources: ['file:///srv/docs/**'], server: 'files' },
];

describe('prompt grants', () => {
  const grants = compilePromptGrants(RAW);

  it('compiles only the entries that grant prompts, keeping their place in the allow list', () => {
    assert.deepEqual(grants.map((grant) => grant.index), [1, 2]);
    assert.deepEqual(grants[1]?.scopes, ['prompts:read']);
    assert.deepEqual(grants[0]?.scopes, []);
  });

  it('a grant without scopes applies to every session; literal and wildcard patterns', () => {
    for (const scopes of [undefined, new Set<string>(), new Set(['other'])]) {
      assert.ok(promptAllowed(grants, 'everything__simple-prompt', scopes));
      assert.ok(promptAllowed(grants, 'everything__args-prompt', scopes));
      assert.ok(!promptAllowed(grants, 'everything__resource-prompt', scopes));
      assert.ok(!promptAllowed(grants, 'everything__simple-prompt2', scopes));
    }
  });

  it('a grant with scopes applies only to a session holding all of them', () => {
    assert.ok(!promptAllowed(grants, 'notes__summary', undefined), 'no access token: a scoped grant never applies');
    assert.ok(!promptAllowed(grants, 'notes__summary', new Set()));
    assert.ok(!promptAllowed(grants, 'notes__summary', new Set(['prompts:write'])));
    assert.ok(promptAllowed(grants, 'notes__summary', new Set(['prompts:read'])));
    assert.ok(promptAllowed(grants, 'notes__summary', new Set(['prompts:read', 'x'])));
  });

  it('default deny: no prompt grants, no prompt', () => {
    assert.ok(!promptAllowed(compilePromptGrants([{ tools: ['*'] } as RawSurfaceGrant]), 'everything__simple-prompt', undefined));
    assert.ok(!promptAllowed([], 'x', undefined));
  });

  it('tool grants do not see prompt or resource entries', () => {
    const tools = compileGrants(RAW);
    assert.deepEqual(tools.map((grant) => grant.index), [0]);
  });

  it('a prompt pattern matches a name exactly as a tool glob would (property)', () => {
    const pattern = fc.stringMatching(/^[ab_*?]{1,10}$/);
    const name = fc.stringMatching(/^[ab_]{0,10}$/);
    fc.assert(
      fc.property(pattern, name, (p, n) => {
        const expected = new RegExp(`^${p.replaceAll('*', '.*').replaceAll('?', '.')}$`).test(n);
        assert.equal(promptAllowed(compilePromptGrants([{ prompts: [p] }]), n, undefined), expected, `${p} ~ ${n}`);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('resource grants', () => {
  const grants = compileResourceGrants(RAW);

  it('compiles only resource entries that name a server', () => {
    assert.deepEqual(grants.map((grant) => [grant.index, grant.server]), [[3, 'everything'], [4, 'everything'], [5, 'files']]);
    // The loader refuses a resources entry without server; if one got here, it would grant nothing.
    assert.deepEqual(compileResourceGrants([{ resources: ['a:*'] }]), []);
  });

  it('serversAllowing: the server whose grant covers the URI, for a session holding the grant scopes', () => {
    assert.deepEqual(serversAllowing(grants, 'demo://resource/static/document/a.md', undefined), ['everything']);
    assert.deepEqual(serversAllowing(grants, 'demo://resource/static/document/sub/a.md', undefined), []);
    assert.deepEqual(serversAllowing(grants, 'file:///srv/docs/a/b.md', undefined), ['files']);
    assert.deepEqual(serversAllowing(grants, 'file:///srv/other', undefined), []);
    // The dynamic grant needs both scopes.
    assert.deepEqual(serversAllowing(grants, 'demo://resource/dynamic/text/1', undefined), []);
    assert.deepEqual(serversAllowing(grants, 'demo://resource/dynamic/text/1', new Set(['resources:read'])), []);
    assert.deepEqual(serversAllowing(grants, 'demo://resource/dynamic/text/1', new Set(['resources:read', 'resources:dynamic'])), ['everything']);
  });

  it('serversAllowing names each server once, and every server that covers the URI (ambiguity is the caller\'s to refuse)', () => {
    const twice = compileResourceGrants([
      { resources: ['demo://x/*'], server: 'a' },
      { resources: ['demo://x/**'], server: 'a' },
      { resources: ['demo://**'], server: 'b' },
    ]);
    assert.deepEqual(serversAllowing(twice, 'demo://x/1', undefined), ['a', 'b']);
    assert.deepEqual(serversAllowing(twice, 'demo://y/1', undefined), ['b']);
  });

  it('resourceGrantsFor: one server\'s grants this session holds, in order', () => {
    assert.deepEqual(resourceGrantsFor(grants, 'everything', undefined).map((grant) => grant.index), [3]);
    assert.deepEqual(resourceGrantsFor(grants, 'everything', new Set(['resources:read', 'resources:dynamic'])).map((grant) => grant.index), [3, 4]);
    assert.deepEqual(resourceGrantsFor(grants, 'files', undefined).map((grant) => grant.index), [5]);
    assert.deepEqual(resourceGrantsFor(grants, 'nobody', undefined), []);
  });

  it('a grant for one server never lets a URI be read from another', () => {
    fc.assert(
      fc.property(fc.constantFrom('a', 'b', 'c'), fc.stringMatching(/^[a-z/]{0,12}$/), (server, path) => {
        const only = compileResourceGrants([{ resources: ['demo://**'], server }]);
        assert.deepEqual(serversAllowing(only, `demo://${path}`, undefined), [server]);
      }),
      { numRuns: 300 },
    );
  });
});
