import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { toNodeHandler } from '@modelcontextprotocol/node';
import { createMcpHandler } from '@modelcontextprotocol/server';
import { writeOrLog } from '../audit/trail.ts';
import type { Broker } from '../broker.ts';
import { METADATA_PATH } from '../config/oauth-settings.ts';
import type { ListenAddress } from '../config/types.ts';
import { WardenError } from '../errors.ts';
import type { OAuthSession } from '../pipeline/types.ts';
import { approvalStateCodec, createAgentServer } from './agent-server.ts';
import { agentForBearer } from './bearer.ts';
import { agentForSubject, createAccessTokenVerifier, protectedResourceMetadata, type TokenFailure } from './oauth.ts';

export const MCP_PATH = '/mcp';
const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];

export interface HttpFront {
  /** The endpoint agents connect to, e.g. http://127.0.0.1:7070/mcp */
  readonly url: string;
  readonly address: AddressInfo;
  close(): Promise<void>;
}

/** Who a request's bearer token names, or why it names nobody. */
type Authentication =
  | { readonly agent: string; readonly oauth?: OAuthSession }
  | { readonly failure: TokenFailure | 'missing-token' | 'unknown-subject'; readonly detail?: Readonly<Record<string, string>> };

/**
 * Streamable HTTP for agents. Before the MCP handler sees a request: path, Host (DNS
 * rebinding), Origin, body size and bearer token are checked, in that order. The agent's
 * identity is the one its token hash maps to in the config, or, with http.oauth, the one
 * its access token's subject maps to; nothing it says. With http.oauth the protected-
 * resource metadata (RFC 9728) is served too, after the same Host and Origin checks.
 */
export async function startHttpFront(broker: Broker, listen: ListenAddress): Promise<HttpFront> {
  // Fixed for the life of the listener (a reload that changes http is refused); the agents are read per request.
  const { config, logger, audit } = broker;
  const approvalState = approvalStateCodec(config.approvals.expireMs / 1000);
  const oauth = config.http.oauth;
  const verifyAccessToken = oauth ? createAccessTokenVerifier(oauth, logger) : undefined;
  // The document at the root and at the MCP path's suffixed form (RFC 9728 section 3.1).
  const metadataPaths = new Set(oauth ? [METADATA_PATH, `${METADATA_PATH}${MCP_PATH}`] : []);
  // The session's scopes come from the access token the front verified, never from a message.
  const handler = createMcpHandler(({ authInfo }) => {
    const session = authInfo?.extra?.['oauth'] as OAuthSession | undefined;
    return createAgentServer(broker, authInfo?.clientId ?? '', { notifyToolsChanged: false, approvalState, ...(session ? { oauth: session } : {}) });
  }, {
    onerror: (error) => logger.debug({ err: error.message }, 'mcp handler rejected a request'),
  });
  // One publication reaches every open change stream (2026-07-28 subscriptions/listen);
  // each agent then lists again and sees only its own tools.
  const stopNotifying = broker.onToolsChanged(() => {
    handler.notify.toolsChanged();
    // A quarantine or a new config can change the prompts too.
    handler.notify.promptsChanged();
  });
  const mcp = toNodeHandler(handler, {
    maxRequestBodySize: config.http.maxBodyBytes,
    onerror: (error) => logger.warn({ err: error.message }, 'http adapter error'),
  });
  const allowedHosts = new Set([...LOOPBACK_NAMES, ...config.http.allowedHosts.map((host) => normaliseHostName(host) ?? host.toLowerCase())]);
  const allowedOrigins = new Set(config.http.allowedOrigins.map((origin) => origin.toLowerCase()));

  const server: HttpServer = createServer((req, res) => {
    // The last line of defence: nothing a request contains may take the process down.
    try {
      handle(req, res);
    } catch (error) {
      logger.error({ err: error instanceof Error ? error.message : String(error) }, 'http request handler failed');
      reject(res, 400, 'bad_request', 'The request could not be processed.');
    }
  });

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    // The request target is compared as text, never parsed: a hostile one cannot throw.
    const target = req.url ?? '';
    const path = target.split('?', 1)[0] ?? '';
    const metadata = metadataPaths.has(path);
    if (path !== MCP_PATH && !metadata) return reject(res, 404, 'not_found', `The MCP endpoint is ${MCP_PATH}.`);
    // One Host and one Authorization header: duplicates would make the check ambiguous.
    if (countHeader(req.rawHeaders, 'host') !== 1 || countHeader(req.rawHeaders, 'authorization') > 1) {
      return reject(res, 400, 'duplicate_header', 'Send exactly one Host header and at most one Authorization header.');
    }
    const hostname = hostOf(req.headers.host);
    if (hostname === undefined || !allowedHosts.has(hostname)) {
      return reject(res, 403, 'host_not_allowed', 'The Host header is not one this broker serves (DNS-rebinding defence). Add it to http.allowedHosts.');
    }
    const origin = req.headers.origin;
    if (origin !== undefined && !allowedOrigins.has(origin.toLowerCase())) {
      return reject(res, 403, 'origin_not_allowed', 'Requests from this Origin are not allowed. Add it to http.allowedOrigins.');
    }
    if (metadata && oauth) {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('allow', 'GET, HEAD');
        return reject(res, 405, 'method_not_allowed', 'Read the metadata document with GET.');
      }
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      return void res.end(req.method === 'HEAD' ? undefined : JSON.stringify(protectedResourceMetadata(oauth, broker.config.agents)));
    }
    const length = Number(req.headers['content-length'] ?? 0);
    if (!Number.isFinite(length) || length > config.http.maxBodyBytes) {
      return reject(res, 413, 'body_too_large', `Request bodies are limited to ${config.http.maxBodyBytes} bytes.`);
    }
    serveAuthenticated(req, res).catch((error: unknown) => {
      logger.error({ err: error }, 'http request failed');
      if (!res.headersSent) reject(res, 500, 'internal', 'The request failed inside the broker.');
      else res.destroy();
    });
  };

  /** A static token (its hash in the config) first; then, with http.oauth, an access token whose subject maps to an agent. */
  const authenticate = async (header: string | undefined): Promise<Authentication> => {
    if (header === undefined) return { failure: 'missing-token' };
    const agent = agentForBearer(header, broker.config.agents);
    if (agent !== undefined) return { agent };
    if (!verifyAccessToken) return { failure: 'invalid-token' };
    const verdict = await verifyAccessToken(header);
    if (!verdict.ok) return { failure: verdict.reason, ...(verdict.detail ? { detail: verdict.detail } : {}) };
    // Read now, not when the listener started: a reload may have changed who maps to whom.
    const named = agentForSubject(verdict.subject, broker.config.agents);
    if (named === undefined) return { failure: 'unknown-subject', detail: { subject: verdict.subject } };
    const { subject, scopes, tokenId } = verdict;
    return { agent: named, oauth: { subject, scopes, ...(tokenId === undefined ? {} : { tokenId }) } };
  };

  const serveAuthenticated = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const header = req.headers.authorization;
    const identity = await authenticate(header);
    if ('failure' in identity) {
      // The reason and a few facts (a claim's name, a verified subject), never the token.
      writeOrLog(audit, { ...identity.detail, event: 'auth.failure', reason: identity.failure, remote: req.socket.remoteAddress }, logger);
      res.setHeader('WWW-Authenticate', challenge(header !== undefined));
      return reject(res, 401, 'WARDEN_UNAUTHENTICATED', oauth
        ? `A valid bearer token is required: this agent's static token, or an access token for ${oauth.resource} from ${oauth.issuer}.`
        : 'A valid bearer token is required. Ask the operator for this agent\'s token.');
    }
    // Only the agent's name and the token's facts travel on; the token itself is not kept.
    Object.assign(req, { auth: { token: '', clientId: identity.agent, scopes: identity.oauth ? [...identity.oauth.scopes] : [], ...(identity.oauth ? { extra: { oauth: identity.oauth } } : {}) } });
    await mcp(req, res);
  };

  /** RFC 6750 section 3: a challenge on every 401, error only when a token was presented; RFC 9728 section 5.1: where the metadata is. */
  const challenge = (presented: boolean): string =>
    ['Bearer realm="mcp-warden"', ...(oauth ? [`resource_metadata="${oauth.metadataUrl}"`] : []), ...(presented ? ['error="invalid_token"'] : [])].join(', ');
  server.headersTimeout = 10_000; // 10 s to send headers
  server.requestTimeout = 5 * 60_000; // 5 min for a whole request, streaming included
  server.maxHeadersCount = 100;

  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      stopNotifying();
      reject(new WardenError('WARDEN_LISTEN_FAILED', `cannot listen on ${listen.host}:${listen.port}: ${error.code ?? error.message}`, { listen }));
    });
    server.listen(listen.port, listen.host, () => resolve());
  });
  server.on('error', (error) => logger.error({ err: error }, 'http server error'));
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}${MCP_PATH}`,
    address,
    async close() {
      stopNotifying();
      await handler.close().catch(() => undefined);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * The hostname of a Host header (RFC 9110 section 7.2: host [":" port]), lower-cased,
 * without the port; undefined for anything else. Only plain DNS names, IPv4 and bracketed
 * IPv6 are accepted, compared as written: no URL parser decides what "127.1" means.
 */
function hostOf(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::\d{1,5})?$/.exec(header);
  return match?.[1]?.toLowerCase();
}

/** An allowedHosts entry in the form hostOf() produces: ::1 becomes [::1]; a port is dropped. */
function normaliseHostName(entry: string): string | undefined {
  const trimmed = entry.trim();
  return hostOf(/^[0-9A-Fa-f:]+$/.test(trimmed) && trimmed.includes(':') ? `[${trimmed}]` : trimmed);
}

function countHeader(rawHeaders: readonly string[], name: string): number {
  let count = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]?.toLowerCase() === name) count++;
  return count;
}

function reject(res: ServerResponse, status: number, code: string, message: string): void {
  if (res.headersSent) return void res.destroy();
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32000, message, data: { code } } }));
}

