import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { compileGrants, findGrant, globToRegExp } from '../../src/policy/grants.ts';

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
    assert.ok(globToRegExp('a?c').test('abc'));
    assert.ok(!globToRegExp('a?c').test('ac'));
    assert.ok(globToRegExp('notes__*').test('notes__'));
    assert.ok(!globToRegExp('notes__*').test('notesX__a'));
    assert.ok(!globToRegExp('a-b').test('a_b'));
  });

  it('a literal pattern matches exactly itself (property)', () => {
    fc.assert(
      fc.property(NAME, NAME, (pattern, other) => {
        const matcher = globToRegExp(pattern);
        assert.ok(matcher.test(pattern));
        assert.equal(matcher.test(other), other === pattern);
      }),
      { numRuns: 500 },
    );
  });

  it('a prefix glob matches exactly the names with that prefix (property)', () => {
    fc.assert(
      fc.property(NAME, NAME, (prefix, name) => {
        assert.equal(globToRegExp(`${prefix}*`).test(name), name.startsWith(prefix));
      }),
      { numRuns: 500 },
    );
  });
});
