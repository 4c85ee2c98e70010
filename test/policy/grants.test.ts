import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { compileGrants, findGrant, compileGlob } from '../../src/policy/grants.ts';

const NAME = fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/);

describe('grants', () => {
  it('a grant covers read tools only unless it names write', () => {
    const grants = compileGrants([{ tools: ['notes__*'] }, { tools: ['notes__add_note'], access: ['write'] }]);
    assert.equal(findGrant(grants, 'notes__list_notes', 'read')?.index, 0);
    assert.equal(findGrant(grants, 'notes__delete_note', 'write'), undefined);
    assert.equal(findGrant(grants, 'notes__add_note', 'write')?.index, 1);
  });

  it('default deny: no grants, nothing allowed', () => {
    assert.equal(findGrant(compileGrants([]), 'notes__list_notes', 'read'), undefined);
  });

  it('* and ? are the only wildcards; everything else is literal', () => {
    assert.ok(compileGlob('a?c')('abc'));
    assert.ok(!compileGlob('a?c')('ac'));
    assert.ok(compileGlob('notes__*')('notes__'));
    assert.ok(!compileGlob('notes__*')('notesX__a'));
    assert.ok(!compileGlob('a-b')('a_b'));
  });

  it('agrees with a reference regex on random patterns and names (property)', () => {
    const glob = fc.stringMatching(/^[ab*?]{0,12}$/);
    const name = fc.stringMatching(/^[ab]{0,12}$/);
    fc.assert(
      fc.property(glob, name, (pattern, candidate) => {
        const reference = new RegExp(`^${pattern.replaceAll('*', '.*').replaceAll('?', '.')}$`);
        assert.equal(compileGlob(pattern)(candidate), reference.test(candidate), `${pattern} ~ ${candidate}`);
      }),
      { numRuns: 3000 },
    );
  });

  it('a pattern with many stars takes no more than a linear walk per star', () => {
    // A backtracking regex for this pattern takes exponential time on this name.
    const pattern = `${'a*'.repeat(27)}b`;
    assert.equal(compileGlob(pattern)('a'.repeat(61)), false);
    assert.equal(compileGlob(pattern)(`${'a'.repeat(61)}b`), true);
  });

  it('a literal pattern matches exactly itself (property)', () => {
    fc.assert(
      fc.property(NAME, NAME, (pattern, other) => {
        const matcher = compileGlob(pattern);
        assert.ok(matcher(pattern));
        assert.equal(matcher(other), other === pattern);
      }),
      { numRuns: 500 },
    );
  });

  it('a prefix glob matches exactly the names with that prefix (property)', () => {
    fc.assert(
      fc.property(NAME, NAME, (prefix, name) => {
        assert.equal(compileGlob(`${prefix}*`)(name), name.startsWith(prefix));
      }),
      { numRuns: 500 },
    );
  });
});

describe('findGrant with scoped grants', () => {
  const grants = compileGrants([
    { tools: ['*'], access: ['read', 'write'] },
    { tools: ['payments__refund'], access: ['write'], approval: 'required', scopes: ['payments'] },
  ]);

  it('a scoped grant the session does not hold still makes the broad grant ask for approval', () => {
    for (const scopes of [undefined, new Set<string>(), new Set(['other'])]) {
      const grant = findGrant(grants, 'payments__refund', 'write', scopes);
      assert.ok(grant, 'the broad grant allows the call');
      assert.equal(grant.approval, 'required', `scopes ${scopes ? [...scopes].join(',') : 'none'}: the narrow grant's approval binds`);
    }
  });

  it('the session that holds the scope gets the scoped grant; other tools keep the broad grant as it is', () => {
    assert.equal(findGrant(grants, 'payments__refund', 'write', new Set(['payments']))?.approval, 'required');
    assert.equal(findGrant(grants, 'notes__add_note', 'write', undefined)?.approval, 'none');
    assert.equal(findGrant(grants, 'notes__add_note', 'write', undefined), grants[0]);
  });

  it('a scoped grant alone allows nothing to a session without the scope', () => {
    const only = compileGrants([{ tools: ['payments__refund'], access: ['write'], scopes: ['payments'] }]);
    assert.equal(findGrant(only, 'payments__refund', 'write', undefined), undefined);
    assert.equal(findGrant(only, 'payments__refund', 'write', new Set(['other'])), undefined);
    assert.ok(findGrant(only, 'payments__refund', 'write', new Set(['payments'])));
  });
});
