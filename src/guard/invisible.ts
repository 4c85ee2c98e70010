/**
 * Characters a reader cannot see but a model reads: C0 controls but tab and newline (ESC
 * included, so every ANSI escape starts with one), DEL and C1 controls, soft hyphen,
 * zero-width characters, bidi marks, embeddings, overrides and isolates, word joiners,
 * interlinear annotation marks, BOM, the Unicode tag characters U+E0000-E007F and the
 * supplementary variation selectors U+E0100-E01EF (both used to smuggle hidden text).
 */
// eslint-disable-next-line no-control-regex
export const INVISIBLE =
  /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\u2800\u3164\ufe00-\ufe0e\ufeff\uffa0\ufff9-\ufffb\u{e0000}-\u{e007f}\u{e0100}-\u{e01ef}]/gu;

/** The first invisible character in a text, as U+XXXX, or undefined. */
export function findInvisible(text: string): string | undefined {
  const match = new RegExp(INVISIBLE.source, 'u').exec(text);
  return match ? `U+${match[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}` : undefined;
}

/**
 * The same characters as INVISIBLE, in two patterns without the u flag: Latin-1 and the
 * rest (an astral one as its UTF-16 pair). V8 scans a text holding characters beyond
 * Latin-1 about five times faster for these than for INVISIBLE, and does not scan a
 * Latin-1 text for the second at all (it cannot match). test/guard/invisible.test.ts
 * checks them against INVISIBLE on every code unit and on the astral ranges.
 */
// eslint-disable-next-line no-control-regex
const LATIN1_INVISIBLE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u00ad]/;
const OTHER_INVISIBLE = /[\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\u2800\u3164\ufe00-\ufe0e\ufeff\uffa0\ufff9-\ufffb]|\udb40[\udc00-\udc7f\udd00-\uddef]/;

/** Whether a text holds an invisible character (a match of INVISIBLE), found faster than by INVISIBLE. */
export function hasInvisible(text: string): boolean {
  return LATIN1_INVISIBLE.test(text) || OTHER_INVISIBLE.test(text);
}
