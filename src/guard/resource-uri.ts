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
/** Why a URI is refused, or undefined when it may be matched against grants. */
export function resourceUriProblem(uri: unknown): string | undefined {
  const problem = spellingProblem(uri);
  if (problem !== undefined) return problem;
  // A server that normalises (NFKC) would read fullwidth dots and slashes as "." and "/":
  // the normalised spelling must pass too.
  const normalised = (uri as string).normalize('NFKC');
  if (normalised !== uri && spellingProblem(normalised) !== undefined) return 'the URI contains characters that normalise (NFKC) to a dot, slash, backslash or percent sign';
  return undefined;
}

/** The checks on one spelling of a URI. */
function spellingProblem(uri: unknown): string | undefined {
  if (typeof uri !== 'string' || uri.length === 0) return 'the URI is empty';
  if (uri.length > MAX_RESOURCE_URI) return `the URI is longer than ${MAX_RESOURCE_URI} characters`;
  if (!SCHEME.test(uri)) return 'the URI has no scheme (such as file: or https:)';
  if (FORBIDDEN.test(uri) || findInvisible(uri) !== undefined) return 'the URI contains a space, a control or invisible character, or a backslash';
  if (ENCODED_SEPARATOR.test(uri)) return 'the URI contains an encoded dot, slash, backslash or NUL (%2e, %2f, %5c, %00, or these encoded again)';
  // Without the scheme, so a first segment right after it (scheme:../x) is checked too.
  let rest = uri.replace(SCHEME, '');
  if (rest.startsWith('//')) {
    const authority = /^\/\/([^/?#]*)/.exec(rest)![1]!;
    // user@host: a credential in a URI, and a way to make a host pattern read as user info.
    if (authority.includes('@')) return 'the URI has user information (user@host) in it';
    rest = rest.slice(2 + authority.length);
  }
  // "?" and "#" end nothing for a server that fills a {+path} template with them, so the
  // whole rest is checked. A segment's parameters (..;x) are ignored by some servers.
  if (rest.split(/[/?#]/).some((segment) => ['.', '..'].includes(segment.split(';')[0]!))) return 'the URI contains a "." or ".." path segment';
  // An empty segment makes a path absolute again for path.resolve and the like.
  if (rest.includes('//')) return 'the URI contains an empty path segment (//)';
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
    // matched[j]: the first i characters of the URI match the first j tokens (two rows, reused).
    let matched = new Uint8Array(tokens.length + 1);
    let next = new Uint8Array(tokens.length + 1);
    matched[0] = 1;
    for (let j = 1; j <= tokens.length && tokens[j - 1]!.kind !== 'char'; j++) matched[j] = 1;
    for (let i = 1; i <= uri.length; i++) {
      const char = uri[i - 1]!;
      next[0] = 0;
      let any = 0;
      for (let j = 1; j <= tokens.length; j++) {
        const token = tokens[j - 1]!;
        if (token.kind === 'char') next[j] = matched[j - 1]! & (token.char === char ? 1 : 0);
        // A star takes this character (staying on the star) or nothing (from the token before).
        else if (token.kind === 'globstar') next[j] = matched[j]! | next[j - 1]!;
        else next[j] = (matched[j]! & (char !== '/' ? 1 : 0)) | next[j - 1]!;
        any |= next[j]!;
      }
      // No prefix of the pattern matches this much of the URI: nothing longer can.
      if (!any) return false;
      [matched, next] = [next, matched];
    }
    return matched[tokens.length] === 1;
  };
}

/**
 * A template with each expression ({id}, {+path}, ...) filled in with one harmless value,
 * so a template is judged like the URIs it produces (listing and completion only; every
 * read is judged on its concrete URI); undefined for a template too long to be a URI. Linear: an expression cannot contain a brace, so no run of
 * unclosed braces makes the pattern scan again.
 */
export function templateExample(uriTemplate: string): string | undefined {
  if (uriTemplate.length > MAX_RESOURCE_URI) return undefined;
  return uriTemplate.replace(/\{[^{}]*\}/g, 'x');
}
