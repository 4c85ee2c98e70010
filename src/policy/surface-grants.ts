import { compileUriPattern, type UriMatcher } from '../guard/resource-uri.ts';
import { compileGlob, type Matcher, type SessionScopes } from './grants.ts';

/** One compiled prompt grant: which exposed prompt names (<server>__<prompt>) it covers. */
export interface PromptGrant {
  /** Position in the agent's allow list. */
  readonly index: number;
  readonly patterns: readonly string[];
  readonly matchers: readonly Matcher[];
  readonly scopes: readonly string[];
}

/** One compiled resource grant: one server, and the URIs of it that may be read. */
export interface ResourceGrant {
  readonly index: number;
  readonly server: string;
  readonly patterns: readonly string[];
  readonly matchers: readonly UriMatcher[];
  readonly scopes: readonly string[];
}

/** What a downstream server may ask an agent's host for, in the middle of a call. */
export type ServerRequestKind = 'sampling' | 'elicitation';

/** One compiled server-request grant: one server, and what it may ask this agent's host. */
export interface ServerRequestGrant {
  readonly index: number;
  readonly server: string;
  readonly kinds: ReadonlySet<ServerRequestKind>;
  readonly scopes: readonly string[];
}

/** An allow entry as the config writes it: exactly one of tools, prompts, resources or serverRequests (the loader checks). */
export interface RawSurfaceGrant {
  readonly prompts?: readonly string[];
  readonly resources?: readonly string[];
  readonly serverRequests?: readonly ServerRequestKind[];
  readonly server?: string;
  readonly scopes?: readonly string[];
}

export function compilePromptGrants(raw: readonly RawSurfaceGrant[]): readonly PromptGrant[] {
  const grants: PromptGrant[] = [];
  raw.forEach((grant, index) => {
    if (!grant.prompts) return;
    grants.push({ index, patterns: grant.prompts, matchers: grant.prompts.map(compileGlob), scopes: grant.scopes ?? [] });
  });
  return grants;
}

export function compileResourceGrants(raw: readonly RawSurfaceGrant[]): readonly ResourceGrant[] {
  const grants: ResourceGrant[] = [];
  raw.forEach((grant, index) => {
    if (!grant.resources || grant.server === undefined) return;
    grants.push({ index, server: grant.server, patterns: grant.resources, matchers: grant.resources.map(compileUriPattern), scopes: grant.scopes ?? [] });
  });
  return grants;
}

export function compileServerRequestGrants(raw: readonly RawSurfaceGrant[]): readonly ServerRequestGrant[] {
  const grants: ServerRequestGrant[] = [];
  raw.forEach((grant, index) => {
    if (!grant.serverRequests || grant.server === undefined) return;
    grants.push({ index, server: grant.server, kinds: new Set(grant.serverRequests), scopes: grant.scopes ?? [] });
  });
  return grants;
}

/** Whether this session lets the server ask its host for this kind of request (default deny). */
export function serverRequestAllowed(grants: readonly ServerRequestGrant[], server: string, kind: ServerRequestKind, scopes: SessionScopes): boolean {
  return matchingServerRequestGrants(grants, server, kind, scopes).length > 0;
}

/** The grants that let this session's server ask its host for this kind of request, in config order. */
export function matchingServerRequestGrants(grants: readonly ServerRequestGrant[], server: string, kind: ServerRequestKind, scopes: SessionScopes): ServerRequestGrant[] {
  return grants.filter((grant) => grant.server === server && grant.kinds.has(kind) && held(grant, scopes));
}

/** A grant that names scopes applies only to a session whose access token holds them all. */
function held(grant: { readonly scopes: readonly string[] }, scopes: SessionScopes): boolean {
  return grant.scopes.length === 0 || (scopes !== undefined && grant.scopes.every((scope) => scopes.has(scope)));
}

export function promptAllowed(grants: readonly PromptGrant[], exposedName: string, scopes: SessionScopes): boolean {
  return matchingPromptGrants(grants, exposedName, scopes).length > 0;
}

/** The grants that cover this exposed prompt for this session, in config order. */
export function matchingPromptGrants(grants: readonly PromptGrant[], exposedName: string, scopes: SessionScopes): PromptGrant[] {
  return grants.filter((grant) => held(grant, scopes) && grant.matchers.some((matches) => matches(exposedName)));
}

/** The resource grants of this session for one server: what its listing is filtered by. */
export function resourceGrantsFor(grants: readonly ResourceGrant[], server: string, scopes: SessionScopes): readonly ResourceGrant[] {
  return grants.filter((grant) => grant.server === server && held(grant, scopes));
}

/** Every server whose grants let this session read the URI (a URI checked by resourceUriProblem first). */
export function serversAllowing(grants: readonly ResourceGrant[], uri: string, scopes: SessionScopes): readonly string[] {
  return [...new Set(matchingResourceGrants(grants, uri, scopes).map((grant) => grant.server))];
}

/** The grants, of any server, that cover the URI for this session, in config order (a URI checked by resourceUriProblem first). */
export function matchingResourceGrants(grants: readonly ResourceGrant[], uri: string, scopes: SessionScopes): ResourceGrant[] {
  return grants.filter((grant) => held(grant, scopes) && grant.matchers.some((matches) => matches(uri)));
}
