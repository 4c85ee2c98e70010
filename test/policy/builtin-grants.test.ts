import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { CODE_MODE_SERVER, RUN_CODE } from '../../src/catalog/builtin.ts';
import { compileGrants, findGrant, matchingGrants } from '../../src/policy/grants.ts';

const BUILTIN = 'warden__run_code';

/** Every matcher of a one-pattern grant, as the policy uses it. */
const matches = (pattern: string, name: string): boolean => compileGrants([{ tools: [pattern] }])[0]!.matchers[0]!(name);

describe('grants and the broker\'s own tools', () => {
  it('the built-in tool is warden__run_code', () => {
    assert.equal(RUN_CODE, BUILTIN);
    assert.equal(CODE_MODE_SERVER, 'warden');
  });

  it('no wildcard pattern matches warden__run_code', () => {
    const patterns = ['*', '**', '*__*', 'warden__*', 'warden*', 'w*', 'w?rden__run_code', 'warden__run_cod?', '?arden__run_code', '*run_code', '*_code', 'warden__*code', 'warden_?run_code', '????????????????', '*?', '?*', 'warden__run_code*', '*warden__run_code', '*warden__run_code*'];
    for (const pattern of patterns) {
      assert.equal(matches(pattern, BUILTIN), false, pattern);
      for (const access of ['read', 'write', 'destructive'] as const) {
        const grants = compileGrants([{ tools: [pattern], access: ['read', 'write', 'destructive'] }]);
        assert.equal(findGrant(grants, BUILTIN, access), undefined, `${pattern} (${access})`);
      }
    }
  });

  it('the exact name does, for the access classes the grant names', () => {
    assert.equal(matches(BUILTIN, BUILTIN), true);
    const grants = compileGrants([{ tools: ['*'] }, { tools: [BUILTIN] }]);
    assert.equal(findGrant(grants, BUILTIN, 'read')?.index, 1);
    assert.equal(findGrant(grants, BUILTIN, 'write'), undefined, 'a grant covers reads unless it says otherwise');
    assert.deepEqual(matchingGrants(grants, BUILTIN, 'read').map((grant) => grant.index), [1]);
  });

  it('an exact grant keeps its approval; a broad grant cannot waive it, nor does it add to it', () => {
    const grants = compileGrants([{ tools: ['*'], approval: 'none' }, { tools: [BUILTIN], approval: 'required' }]);
    assert.equal(findGrant(grants, BUILTIN, 'read')?.approval, 'required');
    const loose = compileGrants([{ tools: ['*'], approval: 'required' }, { tools: [BUILTIN] }]);
    assert.equal(findGrant(loose, BUILTIN, 'read')?.approval, 'none', 'the wildcard grant does not cover it, so it cannot decide');
  });

  it('a grant listing both a wildcard and the exact name covers it through the exact name', () => {
    const grants = compileGrants([{ tools: ['*', BUILTIN] }]);
    assert.equal(findGrant(grants, BUILTIN, 'read')?.index, 0);
    assert.deepEqual(grants[0]!.matchers.map((matcher) => matcher(BUILTIN)), [false, true]);
  });

  it('near-miss exact names do not match it, nor does it match them', () => {
    for (const name of ['Warden__run_code', 'warden__run_code_', 'warden__run', 'warden_run_code', 'warden__Run_code']) {
      assert.equal(matches(name, BUILTIN), false, name);
      assert.equal(matches(BUILTIN, name), false, name);
    }
  });

  it('wildcards still match ordinary tools, including servers whose key only starts with "warden"', () => {
    const cases: [string, string][] = [
      ['*', 'notes__list_notes'],
      ['notes__*', 'notes__add_note'],
      ['*run_code', 'notes__run_code'],
      ['n?tes__*', 'notes__echo'],
      ['warden-tools__*', 'warden-tools__x'],
      ['warden*', 'wardens__x'],
      ['warden*', 'warden-tools__x'],
      ['w?rden-tools__x', 'warden-tools__x'],
      ['*', 'warden'],
      ['*', 'warden_'],
      ['*', 'wardenx__run_code'],
    ];
    for (const [pattern, name] of cases) assert.equal(matches(pattern, name), true, `${pattern} ~ ${name}`);
    const grants = compileGrants([{ tools: ['*'], access: ['read', 'write'] }]);
    assert.equal(findGrant(grants, 'notes__add_note', 'write')?.index, 0);
  });

  it('every name under warden__ is the broker\'s: a wildcard reaches none of them', () => {
    for (const name of ['warden__', 'warden__x', 'warden__list_tools', `warden__${'a'.repeat(56)}`]) {
      for (const pattern of ['*', 'warden__*', '*__*', `${name.slice(0, -1)}?`]) assert.equal(matches(pattern, name), false, `${pattern} ~ ${name}`);
      assert.equal(matches(name, name), true, `exact ${name}`);
    }
  });

  it('no pattern with * or ? ever matches a name starting with warden__ (property)', () => {
    const piece = fc.constantFrom('*', '?', 'w', 'a', 'r', 'd', 'e', 'n', '_', '__', 'warden', 'warden__', 'run_code', 'run', '_code', '-', 'x', '0');
    const wildcardPattern = fc
      .array(piece, { minLength: 1, maxLength: 12 })
      .map((parts) => parts.join(''))
      .filter((pattern) => /[*?]/.test(pattern) && pattern.length <= 64);
    const builtinName = fc.oneof(fc.constant(BUILTIN), fc.stringMatching(/^[A-Za-z0-9_-]{0,56}$/).map((rest) => `warden__${rest}`));
    fc.assert(
      fc.property(wildcardPattern, builtinName, (pattern, name) => {
        assert.equal(matches(pattern, name), false, `${pattern} ~ ${name}`);
        const grants = compileGrants([{ tools: [pattern], access: ['read', 'write', 'destructive'] }]);
        assert.equal(findGrant(grants, name, 'read'), undefined);
      }),
      { numRuns: 3000 },
    );
  });

  it('arbitrary patterns with a wildcard (any characters) never match a warden__ name (property)', () => {
    const anyPattern = fc.string({ maxLength: 24 }).chain((text) => fc.constantFrom('*', '?').map((wild) => `${text}${wild}`));
    const shuffled = fc.tuple(anyPattern, fc.nat()).map(([pattern, at]) => {
      // Move the wildcard somewhere random, so it is not always last.
      const index = at % pattern.length;
      return pattern.slice(0, index) + pattern.at(-1)! + pattern.slice(index, -1);
    });
    fc.assert(
      fc.property(fc.oneof(anyPattern, shuffled), fc.string({ maxLength: 20 }), (pattern, rest) => {
        assert.equal(matches(pattern, `warden__${rest}`), false, `${JSON.stringify(pattern)} ~ warden__${JSON.stringify(rest)}`);
      }),
      { numRuns: 3000 },
    );
  });

  it('on other names, a wildcard grant behaves exactly like the plain glob (property)', () => {
    const pattern = fc.stringMatching(/^[a-z_*?]{1,16}$/);
    const name = fc.stringMatching(/^[a-z_]{1,16}$/).filter((candidate) => !candidate.startsWith('warden__'));
    fc.assert(
      fc.property(pattern, name, (glob, candidate) => {
        const reference = new RegExp(`^${glob.replaceAll('*', '.*').replaceAll('?', '.')}$`);
        assert.equal(matches(glob, candidate), reference.test(candidate), `${glob} ~ ${candidate}`);
      }),
      { numRuns: 2000 },
    );
  });
});
