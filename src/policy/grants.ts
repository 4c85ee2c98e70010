import { CODE_MODE_SERVER } from '../catalog/builtin.ts';
import { SEPARATOR } from '../catalog/build.ts';
import type { ManifestTool } from '../manifest/types.ts';

export type Access = ManifestTool['access'];

/** One compiled grant: which exposed names it matches, and for which access classes. */
export type Matcher = (name: string) => boolean;

/**
 * none: the grant alone allows the call. required: a person approves each call out of
 * band (mcp-warden approvals). user: the host's user approves it in the conversation.
 */
export type Approval = 'none' | 'required' | 'user';

export interface Grant {
  readonly index: number;
  readonly patterns: readonly string[];
  readonly access: ReadonlySet<Access>;
  readonly matchers: readonly Matcher[];
  readonly approval: Approval;
  /** For approval user, when the agent's host cannot ask its user: out-of-band approval, or refuse. */
  readonly fallback: 'required' | 'refuse';
}

export interface RawGrant {
  readonly tools: readonly string[];
  readonly access?: readonly Access[];
  readonly approval?: Approval;
  readonly fallback?: 'required' | 'refuse';
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
    matchers: grant.tools.map(compileGrantPattern),
    approval: grant.approval ?? 'none',
    // Never approve silently: without a way to ask the user, refuse unless the rule says otherwise.
    fallback: grant.fallback ?? 'refuse',
  }));
}

/** Names of the broker's own tools (code mode). */
const BUILTIN_PREFIX = `${CODE_MODE_SERVER}${SEPARATOR}`;

/**
 * A grant's pattern. A wildcard never matches the broker's own tools: code mode is
 * granted by its exact name, so no existing "*" grant starts running agents' code.
 */
function compileGrantPattern(pattern: string): Matcher {
  const glob = compileGlob(pattern);
  if (!pattern.includes('*') && !pattern.includes('?')) return glob;
  return (name) => !name.startsWith(BUILTIN_PREFIX) && glob(name);
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

const STRICTNESS: Readonly<Record<Approval, number>> = { none: 0, user: 1, required: 2 };

/** Every grant that covers this exposed tool and its access class, in config order. */
export function matchingGrants(grants: readonly Grant[], exposedName: string, access: Access): Grant[] {
  return grants.filter((grant) => grant.access.has(access) && grant.matchers.some((matches) => matches(exposedName)));
}

/**
 * The grant that decides a call, or undefined (default deny). When several cover the
 * tool, the strictest approval wins, so a broad grant cannot waive the approval a narrow
 * one asks for; among equals, the first in the file.
 */
export function findGrant(grants: readonly Grant[], exposedName: string, access: Access): Grant | undefined {
  let decider: Grant | undefined;
  for (const grant of matchingGrants(grants, exposedName, access)) {
    if (!decider || STRICTNESS[grant.approval] > STRICTNESS[decider.approval]) decider = grant;
  }
  return decider;
}
