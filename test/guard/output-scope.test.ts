import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { compileOutputScope, ScopeError } from '../../src/guard/output-scope.ts';

describe('compileOutputScope', () => {
  const record = { id: 7, name: 'widget', internal: { a: 1 }, items: [{ name: 'a', cost: 1 }, { name: 'b', cost: 2 }], 'a/b': 1, 'c~d': 2 };

  it('keeps only the listed fields', () => {
    assert.deepEqual(compileOutputScope(['/id', '/items/*/name'])(record), { id: 7, items: [{ name: 'a' }, { name: 'b' }] });
    assert.deepEqual(compileOutputScope(['/items/1'])(record), { items: [{ name: 'b', cost: 2 }] });
    assert.deepEqual(compileOutputScope(['/a~1b', '/c~0d'])(record), { 'a/b': 1, 'c~d': 2 });
    assert.deepEqual(compileOutputScope([''])(record), record);
    assert.deepEqual(compileOutputScope([])(record), {});
  });

  it('a scalar where an object is expected selects nothing', () => {
    assert.deepEqual(compileOutputScope(['/id/deeper'])(record), {});
    assert.equal(compileOutputScope(['/x'])('just text'), undefined);
  });

  it('refuses what is not a JSON pointer', () => {
    for (const bad of ['id', '/a~2', '/a~', `/${'x/'.repeat(40)}`]) assert.throws(() => compileOutputScope([bad]), ScopeError, bad);
  });

  it('never throws, and never invents a value (property)', () => {
    const pointer = fc.array(fc.oneof(fc.constant('*'), fc.string({ maxLength: 3 }).map((s) => s.replaceAll('~', '~0').replaceAll('/', '~1'))), { minLength: 1, maxLength: 4 }).map((segments) => `/${segments.join('/')}`);
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4 }), fc.array(pointer, { maxLength: 4 }), (value, pointers) => {
        const out = compileOutputScope(pointers)(value);
        // every scalar in the output occurs in the input
        const scalars = (v: unknown): unknown[] => (v !== null && typeof v === 'object' ? Object.values(v).flatMap(scalars) : [v]);
        const input = new Set(scalars(value).map((v) => JSON.stringify(v)));
        for (const leaf of scalars(out ?? null)) if (out !== undefined) assert.ok(input.has(JSON.stringify(leaf)) || leaf === null);
      }),
      { numRuns: 500 },
    );
  });
});
