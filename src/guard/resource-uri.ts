import { findInvisible } from './invisible.ts';

/**
 * Resource URIs as the broker judges them. A URI is opaque to the broker but not to the
 * server that resolves it: a grant for file:///srv/docs/** must not reach
 * file:///srv/docs/../../etc/passwd. So a URI that could climb out of what a pattern names
 * (dot segments, encoded separators or dots, backslashes) is refused before any pattern
 * is tried, as are control characters, spaces and oversized URIs.
 */

/** Longest resource URI accepted, in characters. */
export const MAX_RESOURCE_URI = 2048;

const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:/;
// Printable ASCII without space, and any character above it except the invisible ones the
// output sanitiser removes (checked separately); no controls.
// eslint-disable-next-line no-control-regex
const FORBIDDEN = /[\u0000-\u0020\u007f-\u009f\\]/;
/**
 * %2e (dot), %2f (slash), %5c (backslash) and %00, any case, also encoded twice (%252e): a
 * second spelling of a separator for a server that decodes before it resolves.
 */
const ENCODED_SEPARATOR = /%(25)*(2e|2f|5c|00)/i;
/** Fullwidth and other dots some servers normalise to "." (NFKC). */
const DOT_LOOKALIKE = /[\uff0e\u2024\ufe52]/;

/** Why a URI is refused, or undefined when it may be matched against grants. */
export function resourceUriProblem(uri: unknown): string | undefined {
  if (typeof uri !== 'string' || uri.length === 0) return 'the URI is empty';
  if (uri.length > MAX_RESOURCE_URI) return `the URI is longer than ${MAX_RESOURCE_URI} characters`;
  if (!SCHEME.test(uri)) return 'the URI has no scheme (such as file: or https:)';
  if (FORBIDDEN.test(uri) || findInvisible(uri) !== undefined) return 'the URI contains a space, a control or invisible character, or a backslash';
  if (ENCODED_SEPARATOR.test(uri)) return 'the URI contains an encoded dot, slash, backslash or NUL (%2e, %2f, %5c, %00, or these encoded again)';
  if (DOT_LOOKALIKE.test(uri)) return 'the URI contains a character that normalises to a dot';
  // Without the scheme, so a first segment right after it (scheme:../x) is checked too.
  const path = uri.replace(SCHEME, '').replace(/[?#].*$/s, '');
  // A segment's parameters (..;x) are ignored by some servers when they resolve it.
  if (path.split('/').some((segment) => ['.', '..'].includes(segment.split(';')[0]!))) return 'the URI contains a "." or ".." path segment';
  return undefined;
}

/** A compiled URI pattern. */
export type UriMatcher = (uri: string) => boolean;

type Token = { readonly kind: 'char'; readonly char: string } | { readonly kind: 'star' } | { readonly kind: 'globstar' };

/**
 * A URI pattern: * matches any run of characters except "/", ** any run at all; every
 * other character stands for itself (a "?" is the URI's query mark, not a wildcard).
 * Matched by dynamic programming over the pattern, O(pattern x URI) whatever the input:
 * no regular expression that a hostile pattern or URI could make backtrack.
 */
export function compileUriPattern(pattern: string): UriMatcher {
  const tokens: Token[] = [];
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] !== '*') tokens.push({ kind: 'char', char: pattern[i]! });
    else if (pattern[i + 1] === '*') {
      tokens.push({ kind: 'globstar' });
      while (pattern[i + 1] === '*') i++;
    } else tokens.push({ kind: 'star' });
  }
  return (uri) => {
    // matched[j]: the first i characters of the URI match the first j tokens.
    let matched = new Array<boolean>(tokens.length + 1).fill(false);
    matched[0] = true;
    for (let j = 1; j <= tokens.length && tokens[j - 1]!.kind !== 'char'; j++) matched[j] = true;
    for (let i = 1; i <= uri.length; i++) {
      const char = uri[i - 1]!;
      const next = new Array<boolean>(tokens.length + 1).fill(false);
      for (let j = 1; j <= tokens.length; j++) {
        const token = tokens[j - 1]!;
        if (token.kind === 'char') next[j] = matched[j - 1]! && token.char === char;
        // A star takes this character (staying on the star) or nothing (from the token before).
        else if (token.kind === 'globstar') next[j] = matched[j]! || next[j - 1]!;
        else next[j] = (matched[j]! && char !== '/') || next[j - 1]!;
      }
      matched = next;
    }
    return matched[tokens.length]!;
  };
}

/**
 * Whether a resource template could produce a URI the pattern allows: its expressions
 * ({id}, {+path}, ...) stand for one harmless value. Listing only; every read is judged on
 * its concrete URI.
 */
export function templateMatches(matcher: UriMatcher, uriTemplate: string): boolean {
  return matcher(uriTemplate.replace(/\{[^}]*\}/g, 'x'));
}
