import type { ManifestTool } from '../manifest/types.ts';

export type Access = ManifestTool['access'];

/** One compiled grant: which exposed names it matches, and for which access classes. */
export interface Grant {
  readonly index: number;
  readonly patterns: readonly string[];
  readonly access: ReadonlySet<Access>;
  readonly matchers: readonly RegExp[];
}

export interface RawGrant {
  readonly tools: readonly string[];
  readonly access?: readonly Access[];
}

/**
 * Compiles an agent's grants once, at load. Patterns are validated by the config schema
 * (only [A-Za-z0-9_-] plus the wildcards * and ?), so the regex built here cannot contain
 * anything but literals and the two wildcard forms.
 */
export function compileGrants(raw: readonly RawGrant[]): readonly Grant[] {
  return raw.map((grant, index) => ({
    index,
    patterns: grant.tools,
    // Writes are never granted by accident: a grant covers reads unless it says otherwise.
    access: new Set(grant.access ?? ['read']),
    matchers: grant.tools.map(globToRegExp),
  }));
}

export function globToRegExp(pattern: string): RegExp {
  let source = '';
  for (const char of pattern) {
    if (char === '*') source += '.*';
    else if (char === '?') source += '.';
    else if (/^[A-Za-z0-9_]$/.test(char)) source += char;
    else source += `\\${char}`;
  }
  return new RegExp(`^${source}$`);
}

/** The first grant that allows this exposed tool, or undefined (default deny). */
export function findGrant(grants: readonly Grant[], exposedName: string, access: Access): Grant | undefined {
  return grants.find((grant) => grant.access.has(access) && grant.matchers.some((matcher) => matcher.test(exposedName)));
}
