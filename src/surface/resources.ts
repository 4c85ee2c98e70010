import type { ListResourcesResult, ListResourceTemplatesResult, ReadResourceResult } from '@modelcontextprotocol/server';
import type { McpBackend } from '../backends/mcp.ts';
import type { Redactions, SanitizeOptions } from '../guard/sanitize-output.ts';
import { WardenError } from '../errors.ts';
import { resourceUriProblem, templateExample } from '../guard/resource-uri.ts';
import { sanitizeResource, sanitizeResourceContents, sanitizeTemplate } from '../guard/sanitize-surface.ts';
import type { SessionScopes } from '../policy/grants.ts';
import { resourceGrantsFor, serversAllowing, type ResourceGrant } from '../policy/surface-grants.ts';
import { judged, scopesOf, surfaceTimeout, type SurfaceDeps, type SurfaceRequest } from './judge.ts';

/** Most resources (or templates) one listing passes on, all servers together. */
export const MAX_LISTED = 1000;
/** Most live entries one listing looks at, all servers together: a flood of ungranted URIs costs bounded time. */
const MAX_EXAMINED = 10 * MAX_LISTED;
/** Longest URI quoted in an audit record. */
const MAX_AUDITED_URI = 512;

/**
 * resources/list: for each server the agent's resource grants name, the live resources
 * whose URI a grant matches (and that the URI check accepts), cleaned. A quarantined or
 * unreachable server contributes nothing; the audit record says which.
 */
export async function listResources(deps: SurfaceDeps, request: SurfaceRequest): Promise<ListResourcesResult> {
  const resources = await listing(deps, request, 'resources/list', {
    list: (backend, timeoutMs) => backend.listResources(timeoutMs, request.signal),
    uri: (resource) => resource.uri,
    clean: sanitizeResource,
  });
  return { resources };
}

/** resources/templates/list: the templates whose filled-in form a grant allows, as a read of it would be. */
export async function listResourceTemplates(deps: SurfaceDeps, request: SurfaceRequest): Promise<ListResourceTemplatesResult> {
  const resourceTemplates = await listing(deps, request, 'resources/templates/list', {
    list: (backend, timeoutMs) => backend.listResourceTemplates(timeoutMs, request.signal),
    uri: (template) => (typeof template.uriTemplate === 'string' ? templateExample(template.uriTemplate) : undefined),
    clean: sanitizeTemplate,
  });
  return { resourceTemplates };
}

/** One listing over the granted servers: at most MAX_EXAMINED live entries looked at and MAX_LISTED passed on, all servers together. */
function listing<T>(
  deps: SurfaceDeps,
  request: SurfaceRequest,
  event: 'resources/list' | 'resources/templates/list',
  how: {
    readonly list: (backend: McpBackend, timeoutMs: number) => Promise<T[]>;
    /** The URI an entry is judged by, or undefined (never listed). */
    readonly uri: (entry: T) => unknown;
    readonly clean: (entry: T, options: SanitizeOptions, counts: Redactions) => Promise<T>;
  },
): Promise<T[]> {
  return judged(deps, request, event, {}, async (judgement) => {
    const listed: T[] = [];
    const unavailable: string[] = [];
    let examined = 0;
    const options = { secretForms: deps.secretForms(), maxTextBytes: deps.config().limits.maxResultBytes };
    for (const [server, grants] of grantedServers(deps, request)) {
      if (listed.length >= MAX_LISTED || examined >= MAX_EXAMINED) break;
      const live = await fromServer(deps, server, unavailable, (backend) => how.list(backend, surfaceTimeout(deps.config())));
      for (const entry of live.slice(0, MAX_EXAMINED - examined)) {
        examined++;
        const uri = how.uri(entry);
        if (typeof uri === 'string' && allowed(grants, uri)) listed.push(await how.clean(entry, options, judgement.redactions));
        if (listed.length >= MAX_LISTED) break;
      }
    }
    Object.assign(judgement.facts, { count: listed.length, ...(unavailable.length > 0 ? { unavailable } : {}) });
    return listed;
  });
}

/**
 * resources/read: the URI is checked, then exactly one server's grants must cover it
 * (none: not found; several: ambiguous, never a guess). Only contents whose URIs the same
 * grants cover come back, cleaned and within the size cap.
 */
export function readResource(deps: SurfaceDeps, request: SurfaceRequest, uri: unknown): Promise<ReadResourceResult> {
  const quoted = typeof uri === 'string' ? uri.slice(0, MAX_AUDITED_URI) : null;
  return judged(deps, request, 'resources/read', { uri: quoted }, async (judgement) => {
    const { target, server, backend } = grantedResource(deps, request, uri);
    judgement.facts['server'] = server;
    const agent = deps.config().agents.get(request.agentName);
    const config = deps.config();
    const result = await backend.readResource(target, surfaceTimeout(config), request.signal);
    const grants = resourceGrantsFor(agent?.resourceGrants ?? [], server, scopesOf(request));
    const entries = Array.isArray(result.contents) ? result.contents : [];
    // A server may answer with other URIs (a folder's files): only granted ones pass.
    const contents = entries.filter((entry) => typeof entry.uri === 'string' && allowed(grants, entry.uri));
    if (contents.length < entries.length) judgement.facts['droppedContents'] = entries.length - contents.length;
    const { result: clean, redactions } = await sanitizeResourceContents({ contents }, { secretForms: deps.secretForms(), maxTextBytes: config.limits.maxResultBytes });
    judgement.redactions = redactions;
    return clean;
  });
}

/** The one server this session may read a URI from, and its backend (none: not found). */
export function grantedResource(deps: SurfaceDeps, request: SurfaceRequest, uri: unknown): { readonly target: string; readonly server: string; readonly backend: McpBackend } {
  const agent = deps.config().agents.get(request.agentName);
  const { target, server } = resourceServer(agent?.resourceGrants ?? [], uri, scopesOf(request));
  const backend = deps.backend(server);
  if (!backend) throw notFound();
  return { target, server, backend };
}

/**
 * The server whose grants let a session read a URI: the URI is checked first, then it must
 * be granted on exactly one server (two is ambiguous: the broker does not guess). Throws
 * the refusal. No I/O, so mcp-warden policy explain decides with it too.
 */
export function resourceServer(grants: readonly ResourceGrant[], uri: unknown, scopes: SessionScopes): { readonly target: string; readonly server: string } {
  const problem = resourceUriProblem(uri);
  if (problem !== undefined) throw new WardenError('WARDEN_RESOURCE_URI_INVALID', `The resource URI was refused: ${problem}.`);
  const target = uri as string;
  const servers = serversAllowing(grants, target, scopes);
  if (servers.length === 0) throw notFound();
  if (servers.length > 1) throw new WardenError('WARDEN_RESOURCE_AMBIGUOUS', `The URI is granted on more than one server (${servers.join(', ')}); the broker does not guess which to read. Tell the security team.`);
  return { target, server: servers[0]! };
}

function notFound(): WardenError {
  return new WardenError('WARDEN_RESOURCE_NOT_FOUND', 'No resource with this URI is available to this agent. Use resources/list or resources/templates/list to see what is.');
}

function allowed(grants: readonly ResourceGrant[], uri: string): boolean {
  return resourceUriProblem(uri) === undefined && grants.some((grant) => grant.matchers.some((matches) => matches(uri)));
}

/** The servers this session's resource grants name, each with those grants, in config order. */
function grantedServers(deps: SurfaceDeps, request: SurfaceRequest): Map<string, readonly ResourceGrant[]> {
  const agent = deps.config().agents.get(request.agentName);
  const servers = new Map<string, readonly ResourceGrant[]>();
  for (const grant of agent?.resourceGrants ?? []) {
    if (servers.has(grant.server)) continue;
    const held = resourceGrantsFor(agent!.resourceGrants, grant.server, scopesOf(request));
    if (held.length > 0) servers.set(grant.server, held);
  }
  return servers;
}

/** A listing from one server; a server that cannot answer (quarantined, down) adds nothing and is named in the record. */
async function fromServer<T>(deps: SurfaceDeps, server: string, unavailable: string[], list: (backend: McpBackend) => Promise<T[]>): Promise<T[]> {
  const backend = deps.backend(server);
  if (!backend) return [];
  try {
    return await list(backend);
  } catch (error) {
    unavailable.push(`${server}: ${error instanceof WardenError ? error.code : 'error'}`);
    return [];
  }
}
