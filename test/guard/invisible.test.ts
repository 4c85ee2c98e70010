import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { hasInvisible, INVISIBLE } from '../../src/guard/invisible.ts';

const invisible = (text: string): boolean => new RegExp(INVISIBLE.source, 'u').test(text);

describe('hasInvisible', () => {
  it('agrees with INVISIBLE on every UTF-16 code unit alone', () => {
    for (let unit = 0; unit <= 0xffff; unit++) {
      const char = String.fromCharCode(unit);
      if (hasInvisible(char) !== invisible(char)) assert.fail(`U+${unit.toString(16)}`);
    }
  });

  it('agrees with INVISIBLE on every astral character of the planes it covers, and around them', () => {
    for (let code = 0xe0000 - 0x100; code <= 0xe01ff + 0x100; code++) {
      const char = String.fromCodePoint(code);
      if (hasInvisible(char) !== invisible(char)) assert.fail(`U+${code.toString(16)}`);
    }
    for (const code of [0x10000, 0x1f600, 0xdffff, 0xeffff, 0xf0000, 0x10ffff]) assert.equal(hasInvisible(String.fromCodePoint(code)), false);
  });

  it('agrees with INVISIBLE on any text, lone and paired surrogates included (property)', () => {
    const units = fc.constantFrom('a', 'é', '\u2014', '\u200b', '\u00ad', '\u0007', '\t', '\ud800', '\udb40', '\udc00', '\udc41', '\udd00', '\uddef', '\uddf0', '\udfff', '\u{e0041}', '\u{e0100}');
    fc.assert(
      fc.property(fc.array(fc.oneof(units, fc.string({ maxLength: 3 }), fc.string({ unit: 'binary', maxLength: 3 })), { maxLength: 12 }), (parts) => {
        const text = parts.join('');
        assert.equal(hasInvisible(text), invisible(text), JSON.stringify(text));
      }),
      { numRuns: 5000 },
    );
  });
});
