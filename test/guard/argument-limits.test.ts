import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { checkArgumentLimits, DEFAULT_ARGUMENT_LIMITS, type ArgumentLimits } from '../../src/guard/argument-limits.ts';

const small: ArgumentLimits = { maxBytes: 200, maxDepth: 3, maxStringLength: 10, maxArrayLength: 4, maxObjectKeys: 3 };

function nested(depth: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

describe('checkArgumentLimits', () => {
  it('accepts ordinary arguments', () => {
    assert.equal(checkArgumentLimits({ a: 'short', b: [1, 2], c: { d: null, e: true } }, small), undefined);
    assert.equal(checkArgumentLimits({}, small), undefined);
  });

  it('names the path and the rule of the first violation', () => {
    assert.deepEqual(pick(checkArgumentLimits({ a: { b: 'x'.repeat(11) } }, small)), ['/a/b', 'maxStringLength']);
    assert.deepEqual(pick(checkArgumentLimits({ a: [1, 2, 3, 4, 5] }, small)), ['/a', 'maxArrayLength']);
    assert.deepEqual(pick(checkArgumentLimits({ a: 1, b: 2, c: 3, d: 4 }, small)), ['/', 'maxObjectKeys']);
    assert.deepEqual(pick(checkArgumentLimits({ a: { b: { c: {} } } }, small)), ['/a/b/c', 'maxDepth']);
    assert.deepEqual(pick(checkArgumentLimits({ a: 'x'.repeat(9), b: 'y'.repeat(9), c: ['z'.repeat(9), 'z'.repeat(9), 'z'.repeat(9), 'z'.repeat(9)] }, { ...small, maxBytes: 60 })), ['', 'maxBytes']);
    assert.deepEqual(pick(checkArgumentLimits({ 'a/b~c': 'x'.repeat(11) }, small)), ['/a~1b~0c', 'maxStringLength']);
  });

  it('refuses prototype keys anywhere', () => {
    for (const key of ['__proto__', 'constructor', 'prototype']) {
      const args = JSON.parse(`{"ok": {"list": [{"${key}": {"polluted": true}}]}}`);
      assert.deepEqual(pick(checkArgumentLimits(args, DEFAULT_ARGUMENT_LIMITS)), [`/ok/list/0/${key}`, 'forbiddenKey']);
    }
  });

  it('handles hostile nesting without recursion', () => {
    assert.equal(checkArgumentLimits(nested(100_000), DEFAULT_ARGUMENT_LIMITS)?.rule, 'maxDepth');
  });

  it('never throws and agrees with a direct computation of depth and size (property)', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 6 }), (value) => {
        const violation = checkArgumentLimits(value, small);
        const bytes = Buffer.byteLength(JSON.stringify(value));
        if (violation === undefined) {
          assert.ok(bytes <= small.maxBytes);
          assert.ok(depthOf(value) <= small.maxDepth);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('within default limits, JSON without forbidden keys passes (property)', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string({ maxLength: 20 }), fc.jsonValue({ maxDepth: 4 }), { maxKeys: 20 }), (args) => {
        const json = JSON.stringify(args);
        fc.pre(!/"(__proto__|constructor|prototype)":/.test(json));
        fc.pre(Buffer.byteLength(json) < DEFAULT_ARGUMENT_LIMITS.maxBytes);
        assert.equal(checkArgumentLimits(args, DEFAULT_ARGUMENT_LIMITS), undefined);
      }),
      { numRuns: 300 },
    );
  });
});

function pick(violation: { path: string; rule: string } | undefined): [string, string] | undefined {
  return violation ? [violation.path, violation.rule] : undefined;
}

function depthOf(value: unknown): number {
  if (value === null || typeof value !== 'object') return 0;
  const children = Array.isArray(value) ? value : Object.values(value);
  return 1 + Math.max(0, ...children.map(depthOf));
}
