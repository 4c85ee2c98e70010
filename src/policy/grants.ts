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
  /** OAuth scopes the session's access token must all hold for this grant to apply; empty: none. */
  readonly scopes: readonly string[];
}

export interface RawGrant {
  /** Absent on an entry that grants prompts or resources instead (compiled in surface-grants.ts). */
  readonly tools?: readonly string[];
  readonly access?: readonly Access[];
  readonly approval?: Approval;
  readonly fallback?: 'required' | 'refuse';
  readonly scopes?: readonly string[];
}

/**
 * Compiles an agent's grants once, at load. Patterns are validated by the config schema
 * (only [A-Za-z0-9_-] plus the wildcards * and ?).
 */
export function compileGrants(raw: readonly RawGrant[]): readonly Grant[] {
  const grants: Grant[] = [];
  raw.forEach((grant, index) => {
    if (!grant.tools) return;
    grants.push({
      index,
      patterns: grant.tools,
      // Writes are never granted by accident: a grant covers reads unless it says otherwise.
      access: new Set(grant.access ?? ['read']),
      matchers: grant.tools.map(compileGrantPattern),
      approval: grant.approval ?? 'none',
      // Never approve silently: without a way to ask the user, refuse unless the rule says otherwise.
      fallback: grant.fallback ?? 'refuse',
      scopes: grant.scopes ?? [],
    });
  });
  return grants;
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

/**
 * The scopes of the session a call or a list comes from, as the front established them
 * from an OAuth access token; undefined for a session without one (a static token, stdio).
 */
export type SessionScopes = ReadonlySet<string> | undefined;

/** A grant that names scopes never applies to a session without an access token. */
function scopesHeld(grant: Grant, scopes: SessionScopes): boolean {
  return grant.scopes.length === 0 || (scopes !== undefined && grant.scopes.every((scope) => scopes.has(scope)));
}

function covers(grant: Grant, exposedName: string, access: Access): boolean {
  return grant.access.has(access) && grant.matchers.some((matches) => matches(exposedName));
}

/** Every grant that covers this exposed tool and its access class for a session with these scopes, in config order. */
export function matchingGrants(grants: readonly Grant[], exposedName: string, access: Access, scopes?: SessionScopes): Grant[] {
  return grants.filter((grant) => covers(grant, exposedName, access) && scopesHeld(grant, scopes));
}

/** Whether some grant covers the tool for a session holding the scopes it names. */
export function grantable(grants: readonly Grant[], exposedName: string, access: Access): boolean {
  return grants.some((grant) => covers(grant, exposedName, access));
}

/**
 * For a session with an access token that no grant covers the tool for: the scopes it
 * lacks for the grant that needs the fewest more, or undefined when no grant would cover
 * it with any scopes.
 */
export function missingScopes(grants: readonly Grant[], exposedName: string, access: Access, scopes: ReadonlySet<string>): readonly string[] | undefined {
  let fewest: string[] | undefined;
  for (const grant of grants) {
    if (!covers(grant, exposedName, access)) continue;
    const missing = grant.scopes.filter((scope) => !scopes.has(scope));
    if (missing.length > 0 && (fewest === undefined || missing.length < fewest.length)) fewest = missing;
  }
  return fewest;
}

/**
 * The grant that decides a call, or undefined (default deny). Only grants whose scopes the
 * session holds can allow it. When several cover the tool, the strictest approval wins,
 * so a broad grant cannot waive the approval a narrow one asks for; among equals, the
 * first in the file. That holds for scoped grants too: one the session does not hold
 * cannot allow the call, but its approval still binds the grant that does.
 */
export function findGrant(grants: readonly Grant[], exposedName: string, access: Access, scopes?: SessionScopes): Grant | undefined {
  let decider: Grant | undefined;
  let strictest: Approval = 'none';
  for (const grant of grants) {
    if (!covers(grant, exposedName, access)) continue;
    if (STRICTNESS[grant.approval] > STRICTNESS[strictest]) strictest = grant.approval;
    if (!scopesHeld(grant, scopes)) continue;
    if (!decider || STRICTNESS[grant.approval] > STRICTNESS[decider.approval]) decider = grant;
  }
  if (!decider || decider.approval === strictest) return decider;
  return { ...decider, approval: strictest };
}
