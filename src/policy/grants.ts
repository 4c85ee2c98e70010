import type { ManifestTool } from '../manifest/types.ts';

export type Access = ManifestTool['access'];

/** One compiled grant: which exposed names it matches, and for which access classes. */
export type Matcher = (name: string) => boolean;

export interface Grant {
  readonly index: number;
  readonly patterns: readonly string[];
  readonly access: ReadonlySet<Access>;
  readonly matchers: readonly Matcher[];
}

export interface RawGrant {
  readonly tools: readonly string[];
  readonly access?: readonly Access[];
}

/**
 * Compiles an agent's grants once, at load. Patterns are validated by the config schema
 * (only [A-Za-z0-9_-] plus the wildcards * and ?).
 */
export function compileGrants(raw: readonly RawGrant[]): readonly Grant[] {
  return raw.map((grant, index) => ({
    index,
    patterns: grant.tools,
    // Writes are never granted by accident: a grant covers reads unless it says otherwise.
    access: new Set(grant.access ?? ['read']),
    matchers: grant.tools.map(compileGlob),
  }));
}

/**
 * A glob matcher where * matches any run of characters and ? exactly one. Not a regex: a
 * pattern with many stars would make a backtracking regex take exponential time. This
 * greedy two-pointer walk, which backs up only to the last star, is O(pattern x name).
 */
export function compileGlob(pattern: string): Matcher {
  return (name) => {
    let p = 0;
    let n = 0;
    let star = -1;
    let resume = 0;
    while (n < name.length) {
      if (p < pattern.length && (pattern[p] === '?' || pattern[p] === name[n])) {
        p++;
        n++;
      } else if (p < pattern.length && pattern[p] === '*') {
        star = p++;
        resume = n;
      } else if (star !== -1) {
        p = star + 1;
        n = ++resume;
      } else {
        return false;
      }
    }
    while (p < pattern.length && pattern[p] === '*') p++;
    return p === pattern.length;
  };
}

/** The first grant that allows this exposed tool, or undefined (default deny). */
export function findGrant(grants: readonly Grant[], exposedName: string, access: Access): Grant | undefined {
  return grants.find((grant) => grant.access.has(access) && grant.matchers.some((matches) => matches(exposedName)));
}
