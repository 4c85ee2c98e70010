import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { NodeStreamableHTTPServerTransport, toNodeHandler } from '@modelcontextprotocol/node';
import { classifyInboundRequest, createMcpHandler, isInitializeRequest, isJsonContentType, type JSONRPCRequest } from '@modelcontextprotocol/server';
import { writeOrLog } from '../audit/trail.ts';
import type { Broker } from '../broker.ts';
import { METADATA_PATH } from '../config/oauth-settings.ts';
import type { ListenAddress } from '../config/types.ts';
import { WardenError } from '../errors.ts';
import type { OAuthSession } from '../pipeline/types.ts';
import { approvalStateCodec, createAgentServer } from './agent-server.ts';
import { claimsListenRevision, LISTEN_METHOD, ListenBus, listenedResources, listenRefusal, withResources, type ListenStream } from './listen.ts';
import { agentForBearer } from './bearer.ts';
import { agentForSubject, createAccessTokenVerifier, protectedResourceMetadata, type TokenFailure } from './oauth.ts';
import { ownedBy, sessionLimits, SessionTable, type SessionLimits, type SessionOwner } from './sessions.ts';
import { MAX_LISTEN_STREAMS_PER_AGENT, type Subscriber } from '../surface/subscriptions.ts';

export const MCP_PATH = '/mcp';
const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];

export interface HttpFront {
  /** The endpoint agents connect to, e.g. http://127.0.0.1:7070/mcp */
  readonly url: string;
  readonly address: AddressInfo;
  close(): Promise<void>;
}

export interface HttpFrontOptions {
  /** Bounds on 2025-era sessions; SESSION_LIMITS where not given. */
  readonly sessions?: Partial<SessionLimits>;
}

/** Who a request's bearer token names, or why it names nobody. */
type Authentication =
  | SessionOwner
  | { readonly failure: TokenFailure | 'missing-token' | 'unknown-subject'; readonly detail?: Readonly<Record<string, string>> };

/**
 * Streamable HTTP for agents. Before the MCP handler sees a request: path, Host (DNS
 * rebinding), Origin, body size and bearer token are checked, in that order. The agent's
 * identity is the one its token hash maps to in the config, or, with http.oauth, the one
 * its access token's subject maps to; nothing it says. With http.oauth the protected-
 * resource metadata (RFC 9728) is served too, after the same Host and Origin checks.
 *
 * 2026-07-28 requests are served one at a time by the SDK's handler. A 2025-era client
 * gets a session (Mcp-Session-Id) at initialize, so that what the server sends on its own
 * (list_changed, log messages, elicitation and sampling requests) can reach it and its
 * logging level holds; the session is bound to the identity that opened it.
 */
export async function startHttpFront(broker: Broker, listen: ListenAddress, options: HttpFrontOptions = {}): Promise<HttpFront> {
  // Fixed for the life of the listener (a reload that changes http is refused); the agents are read per request.
  const { config, logger, audit } = broker;
  const approvalState = approvalStateCodec(config.approvals.expireMs / 1000);
  const oauth = config.http.oauth;
  const verifyAccessToken = oauth ? createAccessTokenVerifier(oauth, logger) : undefined;
  // The document at the root and at the MCP path's suffixed form (RFC 9728 section 3.1).
  const metadataPaths = new Set(oauth ? [METADATA_PATH, `${METADATA_PATH}${MCP_PATH}`] : []);
  const bus = new ListenBus((error) => logger.warn({ err: error.message }, 'listen stream listener failed'));
  // The session's scopes come from the access token the front verified, never from a message.
  const handler = createMcpHandler(({ authInfo, era }) => {
    const session = authInfo?.extra?.['oauth'] as OAuthSession | undefined;
    return createAgentServer(broker, authInfo?.clientId ?? '', { notifyToolsChanged: false, approvalState, era, ...(session ? { oauth: session } : {}) });
  }, {
    // 2025-era traffic is routed to sessions before it gets here; should any slip through,
    // it is refused rather than served without one.
    legacy: 'reject',
    // 2026-07-28 listen streams: resource updates reach the stream that asked (serveListen).
    bus,
    onerror: (error) => logger.debug({ err: error.message }, 'mcp handler rejected a request'),
  });
  // A session, or a listen stream, lasts while the config still lets its owner in the way
  // it came: a static token on the agent, or the access token's subject mapped to it.
  const admitted = ({ agent, oauth: token }: SessionOwner): boolean => {
    const policy = broker.config.agents.get(agent);
    if (policy === undefined) return false;
    return token === undefined ? policy.tokenSha256 !== undefined : agentForSubject(token.subject, broker.config.agents) === agent;
  };
  const sessions = new SessionTable(sessionLimits(options.sessions), admitted);
  /** The open 2026-07-28 listen streams, each with who opened it. */
  const listens = new Map<ServerResponse, SessionOwner>();
  // One publication reaches every open change stream (2026-07-28 subscriptions/listen);
  // each agent then lists again and sees only its own tools. Sessions notify their own
  // agent (createAgentServer with notifyToolsChanged).
  const stopNotifying = broker.onToolsChanged(() => {
    handler.notify.toolsChanged();
    // A quarantine or a new config can change the prompts too.
    handler.notify.promptsChanged();
  });
  // A new config may have removed an agent or its token: its sessions and listen streams end now.
  const stopConfigWatch = broker.onConfigApplied(() => {
    sessions.closeStale();
    for (const [res, owner] of listens) if (!admitted(owner)) res.destroy();
  });
  const stopResourceNotices = broker.onResourcesChanged(() => handler.notify.resourcesChanged());
  const mcp = toNodeHandler(handler, {
    maxRequestBodySize: config.http.maxBodyBytes,
    onerror: (error) => logger.warn({ err: error.message }, 'http adapter error'),
  });
  const allowedHosts = new Set([...LOOPBACK_NAMES, ...config.http.allowedHosts.map((host) => normaliseHostName(host) ?? host.toLowerCase())]);
  const allowedOrigins = new Set(config.http.allowedOrigins.map((origin) => origin.toLowerCase()));
  const tooLarge = (res: ServerResponse): void => {
    // The rest of the body is left unread, so the connection cannot carry another request.
    res.setHeader('connection', 'close');
    reject(res, 413, 'body_too_large', `Request bodies are limited to ${config.http.maxBodyBytes} bytes.`);
  };

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
    if (countHeader(req.rawHeaders, 'mcp-session-id') > 1) return reject(res, 400, 'duplicate_header', 'Send at most one Mcp-Session-Id header.');
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
    if (!Number.isFinite(length) || length > config.http.maxBodyBytes) return tooLarge(res);
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
      // A session whose agent a reload removed ends on its next request, though that is refused here.
      const sessionId = headerValue(req, 'mcp-session-id');
      if (sessionId !== undefined) sessions.get(sessionId);
      res.setHeader('WWW-Authenticate', challenge(header !== undefined));
      return reject(res, 401, 'WARDEN_UNAUTHENTICATED', oauth
        ? `A valid bearer token is required: this agent's static token, or an access token for ${oauth.resource} from ${oauth.issuer}.`
        : 'A valid bearer token is required. Ask the operator for this agent\'s token.');
    }
    // Only the agent's name and the token's facts travel on; the token itself is not kept.
    Object.assign(req, { auth: { token: '', clientId: identity.agent, scopes: identity.oauth ? [...identity.oauth.scopes] : [], ...(identity.oauth ? { extra: { oauth: identity.oauth } } : {}) } });
    await route(req, res, identity);
  };

  /** The body is read here, under the size limit, to tell the two eras apart. */
  const route = async (req: IncomingMessage, res: ServerResponse, owner: SessionOwner): Promise<void> => {
    if (req.method === 'GET' || req.method === 'DELETE') return serveSession(req, res, owner, undefined);
    if (req.method !== 'POST') {
      res.setHeader('allow', 'GET, POST, DELETE');
      return reject(res, 405, 'method_not_allowed', 'Send MCP messages with POST; GET and DELETE take a 2025-era session id.');
    }
    if (!isJsonContentType(req.headers['content-type'] ?? null)) return reject(res, 415, 'unsupported_media_type', 'Send the JSON-RPC message as Content-Type: application/json.');
    const read = await readBody(req, config.http.maxBodyBytes);
    if (read === 'aborted') return void res.destroy();
    if (read === 'too-large') return tooLarge(res);
    let body: unknown;
    try {
      body = JSON.parse(read.toString('utf8'));
    } catch {
      return reject(res, 400, 'parse_error', 'Parse error: the request body is not valid JSON.', -32700);
    }
    const inbound = classifyInboundRequest({
      httpMethod: 'POST',
      protocolVersionHeader: headerValue(req, 'mcp-protocol-version'),
      mcpMethodHeader: headerValue(req, 'mcp-method'),
      mcpNameHeader: headerValue(req, 'mcp-name'),
      body,
    });
    if (inbound.kind === 'modern' && inbound.messageKind === 'request' && inbound.message.method === LISTEN_METHOD) return serveListen(req, res, owner, inbound.message);
    // Modern requests, and those the SDK refuses (it owns those answers), go to its handler.
    if (inbound.kind !== 'legacy') return mcp(req, res, body);
    return serveSession(req, res, owner, body);
  };

  /**
   * A 2026-07-28 listen stream. The URIs it names are judged and subscribed first (see
   * listen.ts), and the handler serves it naming only those; the stream then takes this
   * subscriber's updates, and its subscriptions end when its response does, however it ends.
   */
  const serveListen = async (req: IncomingMessage, res: ServerResponse, owner: SessionOwner, message: JSONRPCRequest): Promise<void> => {
    let open = 0;
    for (const other of listens.values()) if (other.agent === owner.agent) open++;
    if (open >= MAX_LISTEN_STREAMS_PER_AGENT) {
      writeOrLog(audit, { event: 'subscriptions/listen', correlationId: randomUUID(), agent: owner.agent, decision: 'deny', reason: 'WARDEN_RATE_LIMITED', outcome: 'refused', open }, logger);
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      const text = `mcp-warden refused the request [WARDEN_RATE_LIMITED]: an agent may have ${MAX_LISTEN_STREAMS_PER_AGENT} listen streams open at once; close one first.`;
      return void res.end(JSON.stringify({ jsonrpc: '2.0', id: message.id, error: { code: -32603, message: text, data: { code: 'WARDEN_RATE_LIMITED' } } }));
    }
    // Gone already: nothing to serve, and a close already past would never remove it.
    if (req.socket.destroyed) return;
    listens.set(res, owner);
    res.once('close', () => listens.delete(res));
    const requested = listenedResources(message);
    if (requested === undefined) return mcp(req, res, message);
    // Judged for the revision the broker knows; any other is the entry's to refuse, and never carries resources.
    if (!claimsListenRevision(message)) return mcp(req, res, withResources(message, []));
    const stream: ListenStream = {};
    const subscriber: Subscriber = {
      request: { agentName: owner.agent, ...(owner.oauth ? { oauth: owner.oauth } : {}) },
      notify: (uri) => stream.listener?.({ kind: 'resource_updated', uri }),
    };
    res.once('close', () => void broker.subscriptions.dropSession(subscriber).catch(() => undefined));
    let uris: string[];
    try {
      uris = await broker.subscriptions.listen(subscriber, requested);
    } catch (error) {
      if (res.headersSent) return void res.destroy();
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      return void res.end(JSON.stringify(listenRefusal(message.id, error)));
    }
    await bus.open(stream, () => mcp(req, res, withResources(message, uris)));
  };

  /**
   * 2025-era traffic: initialize opens a session; every other request names one the same
   * identity opened. Another identity's session is answered like an unknown one (404), so
   * that session ids cannot be probed, and audited.
   */
  const serveSession = async (req: IncomingMessage, res: ServerResponse, owner: SessionOwner, body: unknown): Promise<void> => {
    const id = headerValue(req, 'mcp-session-id');
    if (id === undefined) {
      if (req.method === 'POST' && isInitializeRequest(body)) return openSession(req, res, owner, body);
      return reject(res, 400, 'session_required', 'Mcp-Session-Id required: send initialize first, then the session id its answer carries with every request.');
    }
    const session = sessions.get(id);
    if (session === undefined || !ownedBy(session, owner)) {
      if (session !== undefined) writeOrLog(audit, { event: 'auth.failure', reason: 'session-identity-mismatch', agent: owner.agent, sessionAgent: session.owner.agent, remote: req.socket.remoteAddress }, logger);
      return reject(res, 404, 'session_not_found', 'Session not found: it ended, expired or was never opened. Send initialize to open a new one.', -32001);
    }
    sessions.track(session, res, body);
    await session.transport.handleRequest(req, res, body);
  };

  const openSession = async (req: IncomingMessage, res: ServerResponse, owner: SessionOwner, body: unknown): Promise<void> => {
    // Chosen before the session exists, so that it is counted against the limits at once.
    const id = randomUUID();
    const transport = new NodeStreamableHTTPServerTransport({ sessionIdGenerator: () => id, maxRequestBodySize: config.http.maxBodyBytes });
    // Set before connect: the Server chains its own close (which ends its broker subscription) after it.
    transport.onclose = () => sessions.forget(id);
    transport.onerror = (error) => logger.debug({ err: error.message, agent: owner.agent }, 'session transport rejected a request');
    // The per-session Server tells its agent itself when its tools or prompts change.
    const server = createAgentServer(broker, owner.agent, { notifyToolsChanged: true, approvalState, era: 'legacy', ...(owner.oauth ? { oauth: owner.oauth } : {}) });
    await server.connect(transport);
    const session = { id, owner, transport, server };
    if (!sessions.admit(session)) {
      await server.close().catch(() => undefined);
      res.setHeader('retry-after', '60');
      return reject(res, 503, 'sessions_full', 'The broker has as many sessions open as it allows, none of them this agent\'s. Try again later, or use protocol version 2026-07-28, which needs no session.');
    }
    sessions.track(session, res, body);
    try {
      await transport.handleRequest(req, res, body);
    } finally {
      // Refused before it began (the Accept header, say): nobody holds its id.
      if (transport.sessionId === undefined) sessions.close(id);
    }
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
      stopConfigWatch();
      stopResourceNotices();
      sessions.closeAll();
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
      stopConfigWatch();
      stopResourceNotices();
      sessions.closeAll();
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

/**
 * The body, kept up to limit bytes whatever Content-Length says (a chunked body has none).
 * Past the limit the rest is left unread: the 413 closes the connection.
 */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | 'too-large' | 'aborted'> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const settle = (outcome: Buffer | 'too-large' | 'aborted'): void => {
      req.off('data', onData).off('end', onEnd).off('close', onClose).off('error', onClose);
      resolve(outcome);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) return settle('too-large');
      chunks.push(chunk);
    };
    const onEnd = (): void => settle(Buffer.concat(chunks));
    const onClose = (): void => settle('aborted');
    req.on('data', onData).once('end', onEnd).once('close', onClose).once('error', onClose);
  });
}

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return typeof value === 'string' ? value : undefined;
}

function reject(res: ServerResponse, status: number, code: string, message: string, rpcCode = -32000): void {
  if (res.headersSent) return void res.destroy();
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: rpcCode, message, data: { code } } }));
}

