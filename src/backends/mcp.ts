import { AsyncLocalStorage } from 'node:async_hooks';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import {
  Client,
  ProtocolError,
  SdkError,
  SdkErrorCode,
  StreamableHTTPClientTransport,
  type CallToolResult,
  type Tool,
  type Prompt,
  type Resource,
  type ResourceTemplateType as ResourceTemplate,
  type ReadResourceResult,
  type GetPromptResult,
  type CompleteRequestParams,
  type CompleteResult,
  type FetchLike,
  type Transport,
  type VersionNegotiationMode,
  type LoggingLevel,
  type McpSubscription,
  LOG_LEVEL_META_KEY,
} from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { WardenError } from '../errors.ts';
import { LOG_SEVERITY } from '../pipeline/types.ts';
import type { Logger } from '../log.ts';
import type { Era, Manifest } from '../manifest/types.ts';
import { writeOrLog, type AuditRecord, type AuditTrail } from '../audit/trail.ts';
import type { CredentialSource } from '../config/types.ts';
import { cleanText, noRedactions, secretForms } from '../guard/sanitize-output.ts';
import { resolveCredentials, type ResolvedCredential } from './credentials.ts';
import { comparePins, diffDigest, type LiveServer } from '../manifest/pin.ts';
import { BROKER_INFO } from '../version.ts';
import { createHash, createPrivateKey, randomUUID, X509Certificate } from 'node:crypto';
import type { ServerTls } from './egress-agent.ts';
import { checkLaunch } from '../manifest/artifacts.ts';
import type { BackendState, PinTrigger, Quarantine, ToolBackend, ToolCall } from './types.ts';
import type { HttpTransport, StdioTransport } from '../manifest/types.ts';

export type { BackendState, PinTrigger, Quarantine } from './types.ts';

/** What a stdio server is started from: the executable and working directory as checked, links followed. */
interface Launch {
  readonly command: string;
  readonly cwd: string;
}

export interface BackendOptions {
  readonly server: string;
  readonly manifest: Manifest;
  readonly credentialSources?: ReadonlyMap<string, CredentialSource>;
  readonly connectTimeoutMs: number;
  readonly logger: Logger;
  readonly audit: AuditTrail;
  /** Restart backoff, in milliseconds. */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
  /** Circuit breaker: after this many timeouts in a row, refuse calls for cooldownMs. */
  readonly breaker?: { readonly timeouts: number; readonly cooldownMs: number };
  /** How often the live tools are compared with the manifest, besides connect and list_changed. */
  readonly recheckMs?: number;
  /** Called when the server's tools disappear for agents (quarantine). */
  readonly onToolsChanged?: () => void;
  /** A quarantine an earlier run raised against this same release: it still stands. */
  readonly persistedQuarantine?: { readonly reason: string; readonly diffDigest: string; readonly since: string };
  /** Called once when the server is quarantined for drift, so the quarantine can outlive the process. */
  readonly onQuarantine?: (quarantine: Quarantine) => void;
  /**
   * Streamable HTTP: a connection's fetch, through the broker's egress-controlled dispatcher
   * with this server's TLS settings; one per connection attempt, closed when it is replaced.
   */
  readonly httpConnection?: (tls: ServerTls) => HttpConnection;
  /** Streamable HTTP: PEM CA certificates the config trusts for this server instead of the default set. */
  readonly tlsCa?: string;
  /**
   * The one agent whose grants reach this server, or undefined. Over a connection that
   * cannot say which call a server's message belongs to (2025-era stdio), a message is
   * passed on only when this agent alone uses the server: then a guess can never cross
   * from one agent to another.
   */
  readonly soleAgent?: () => string | undefined;
  /** URIs the broker's agents hold subscriptions to on this server (subscribed again on connect, also by a replaced backend). */
  readonly subscriptions?: () => Iterable<string>;
  /** The server said its list of resources changed (notifications/resources/list_changed). */
  readonly onResourcesChanged?: () => void;
  /** The server said a subscribed resource changed (notifications/resources/updated). */
  readonly onResourceUpdated?: (uri: string) => void;
  /** The roots the server is told when it asks (roots/list); the host's own are never passed on. */
  readonly roots?: () => readonly { readonly uri: string; readonly name?: string }[];
}

/** A request of the broker's to this server that is waiting for its answer. */
interface InFlight {
  /** Set for a tools/call: where a sampling or elicitation request the server sends during it goes. */
  readonly ask?: NonNullable<ToolCall['ask']>;
  /** The call's own timeout, held while the host answers the server's question. */
  readonly deadline?: Deadline;
  /** Set for a tools/call whose agent takes log messages. */
  readonly log?: NonNullable<ToolCall['onLog']>;
  /** The broker refused a request the server made during the call (the code, for the call's error). */
  denied?: string;
  /** The agent whose call this is. */
  readonly agent?: string;
  /** Sampling and elicitation requests the server has made during this call. */
  questions: number;
}

/**
 * The broker's request a server-to-client request arrives under, where it can be known: a
 * request sent on a 2026-07-28 connection (the SDK fulfils its input_required inside the
 * call) or on its own Streamable HTTP response stream. Over a 2025-era stdio connection
 * nothing ties the server's request to a call; see #serverRequest.
 */
const requestScope = new AsyncLocalStorage<InFlight>();

/** Sampling and elicitation requests one call's server may make (each holds the call's timeout while the host answers). */
const MAX_QUESTIONS_PER_CALL = 16;
/** Server requests (sampling, elicitation, roots) one server may make a minute. */
const MAX_SERVER_MESSAGES_PER_MINUTE = 120;


export interface HttpConnection {
  readonly fetch: FetchLike;
  close(): Promise<void>;
}

const DEFAULT_RECHECK_MS = 300_000;
const MAX_AUDITED_DRIFTS = 100;

const DEFAULT_BACKOFF = { initialMs: 250, maxMs: 30_000 } as const;
const DEFAULT_BREAKER = { timeouts: 3, cooldownMs: 30_000 } as const;
/** A server that stayed up this long is healthy again: its next crash restarts fast. */
const STABLE_AFTER_MS = 30_000;
/** Pages of tools/list read from a downstream before it is considered hostile. */
const MAX_LIST_PAGES = 50;
/** Longest stderr line of a downstream kept in the broker's log. */
const MAX_STDERR_LINE = 2000;

/**
 * One downstream MCP server, over stdio or Streamable HTTP. Connects, pins the live tools
 * and instructions to the signed manifest (on connect, on every tools/list_changed and
 * periodically; any difference quarantines the server until a new signed release), restarts with exponential backoff
 * when the connection drops, and answers calls while connected and not quarantined. It
 * never throws anything but WardenError to callers.
 */
export class McpBackend implements ToolBackend {
  readonly server: string;
  readonly #transportSpec: StdioTransport | HttpTransport;
  /** The agent-side progress callback of each call in flight, by the progress token the broker sent. */
  readonly #progress = new Map<string, NonNullable<ToolCall['onProgress']>>();
  /** The broker's requests to the server awaiting an answer, by JSON-RPC id (as a number, as the SDK matches answers), with the request of the broker's they were sent for. */
  readonly #sentUnder = new Map<number, InFlight>();
  /** Resource URIs some agent subscribed to on this server; subscribed again after a reconnect. */
  readonly #subscribed = new Set<string>();
  /** The change stream carrying them, on a 2026-07-28 connection. */
  #resourceStream: McpSubscription | undefined;
  /** Subscription changes, one at a time (a 2026-07-28 stream is replaced whole). */
  #subscriptionWork: Promise<unknown> = Promise.resolve();
  /** Server requests and roots/list counted in the current minute. */
  #serverMessages = { since: 0, count: 0 };
  /** Requests of the broker's waiting for this server's answer (calls, reads, lists). */
  readonly #inFlight = new Set<InFlight>();
  #state: BackendState = 'starting';
  #client: Client | undefined;
  #attempt = 0;
  #readyAt = 0;
  #restartTimer: NodeJS.Timeout | undefined;
  #firstAttempt: Promise<void> | undefined;
  #quarantine: Quarantine | undefined;
  #recheckTimer: NodeJS.Timeout | undefined;
  #recheckInFlight = false;
  /** A list_changed arrived while a recheck was running: run one more after it. */
  #recheckAgain = false;
  #pinChecks = 0;
  /** Drifts already audited during this quarantine, by diff digest: a flapping server is recorded once per shape. */
  readonly #auditedDrifts = new Set<string>();
  /** Every credential value this server has been given; kept after rotation, for redaction. */
  readonly #credentialValues = new Set<string>();
  readonly #options: BackendOptions;
  readonly #backoff: { readonly initialMs: number; readonly maxMs: number };
  readonly #breaker: { readonly timeouts: number; readonly cooldownMs: number };
  #timeoutsInARow = 0;
  #httpConnection: HttpConnection | undefined;
  /** While the breaker is open: the time calls may be tried again. */
  #openUntil = 0;
  #trialInFlight = false;

  constructor(options: BackendOptions) {
    this.server = options.server;
    const transport = options.manifest.transport;
    if (transport.type === 'http-api' || transport.type === 'sandbox') throw new WardenError('WARDEN_INTERNAL', `server "${options.server}" is not an MCP server`);
    this.#transportSpec = transport;
    this.#options = options;
    this.#backoff = options.backoff ?? DEFAULT_BACKOFF;
    this.#breaker = options.breaker ?? DEFAULT_BREAKER;
    const persisted = options.persistedQuarantine;
    if (persisted) this.#quarantine = { reason: persisted.reason === 'artifact-modified' ? 'artifact-modified' : 'drift', since: persisted.since, trigger: 'persisted', diffDigest: persisted.diffDigest };
  }

  get state(): BackendState {
    return this.#state;
  }

  /** The protocol era of the current connection, when connected. */
  get era(): 'legacy' | 'modern' | undefined {
    return this.#client?.getProtocolEra();
  }

  /** How many times the live server has been compared with its manifest (connects and rechecks). */
  get pinChecks(): number {
    return this.#pinChecks;
  }

  /** Set while the live server does not match its signed manifest (or the manifest expired). */
  get quarantine(): Quarantine | undefined {
    return this.#quarantine;
  }

  /** Credential values this server has been given (current and earlier), for output redaction. */
  get credentialValues(): ReadonlySet<string> {
    return this.#credentialValues;
  }

  /** Starts connecting. The promise settles after the first attempt, whatever its result. */
  start(): Promise<void> {
    this.#firstAttempt ??= requestScope.exit(() => this.#connect());
    return this.#firstAttempt;
  }

  async callTool({ tool, args, timeoutMs, signal, meta, onProgress, onSend, ask, onLog, agent }: ToolCall): Promise<CallToolResult> {
    const client = this.#usableClient();
    const trial = this.#admit();
    let progressToken: string | undefined;
    // The call's timeout is the broker's own, so it can stand still while the host's user
    // answers the server's question; the SDK's is only a backstop past every such wait.
    const deadline = new Deadline(timeoutMs, signal);
    const entry: InFlight = { deadline, questions: 0, ...(ask ? { ask } : {}), ...(onLog ? { log: onLog } : {}), ...(agent === undefined ? {} : { agent }) };
    this.#inFlight.add(entry);
    try {
      // On timeout or abort the SDK sends notifications/cancelled to the server (or, on a
      // 2026-07-28 HTTP connection, aborts the request), so the server can stop working.
      // Progress goes by a token of the broker's own, routed as it arrives (see #routeMessages),
      // not through the SDK's onprogress, and never extends the call: the timeout is a hard cap.
      if (onProgress) this.#progress.set((progressToken = `warden-${randomUUID()}`), onProgress);
      // A 2026-07-28 server sends a request's log messages only when the request asks for a
      // level; the agent's own level is applied when they are passed on.
      const logLevel = onLog && client.getProtocolEra() === 'modern' ? { [LOG_LEVEL_META_KEY]: 'debug' } : undefined;
      const _meta = progressToken || logLevel ? { ...meta, ...logLevel, ...(progressToken ? { progressToken } : {}) } : meta;
      const params = { name: tool, arguments: args, ...(_meta ? { _meta } : {}) };
      const options = { timeout: BACKSTOP_TIMEOUT_MS, resetTimeoutOnProgress: false, signal: deadline.signal };
      onSend?.();
      const result = (await requestScope.run(entry, () => client.callTool(params, options))) as CallToolResult;
      this.#timeoutsInARow = 0;
      this.#openUntil = 0;
      return result;
    } catch (error) {
      const translated = entry.denied
        ? new WardenError('WARDEN_SERVER_REQUEST_DENIED', `server "${this.server}" asked the host for something the broker refused (${entry.denied}), and the call failed`, { server: this.server })
        : deadline.expired
        ? new WardenError('WARDEN_DOWNSTREAM_TIMEOUT', `server "${this.server}" did not answer within ${timeoutMs} ms`, { server: this.server })
        : signal?.aborted
          ? new WardenError('WARDEN_CALL_CANCELLED', 'the agent cancelled the call', { server: this.server })
          : this.#translate(error, timeoutMs);
      if (translated.code === 'WARDEN_DOWNSTREAM_TIMEOUT') this.#recordTimeout();
      throw translated;
    } finally {
      deadline.clear();
      this.#end(entry);
      if (progressToken) this.#progress.delete(progressToken);
      if (trial) this.#trialInFlight = false;
    }
  }

  /**
   * A sampling or elicitation request from the server. It goes to the call it belongs to:
   * the one it arrived under, else, over a connection that cannot say (2025-era stdio), the
   * only request of the broker's in flight to this server. With none, or several, the
   * server's request cannot be tied to one agent's call and is refused, never guessed.
   */
  async #serverRequest(method: string, params: unknown, signal: AbortSignal): Promise<Record<string, unknown>> {
    if (!this.#admitServerMessage()) throw new ProtocolError(-32600, `mcp-warden refused ${method} [WARDEN_SERVER_REQUEST_DENIED]: too many requests from this server`);
    const call = this.#callOfMessage();
    const refuse = (reason: string, text: string): never => {
      if (call) call.denied = method;
      this.#audit({ event: 'server.request', server: this.server, method: printable(method), ...(call?.agent === undefined ? {} : { agent: call.agent }), decision: 'deny', outcome: 'refused', reason, inFlight: this.#inFlight.size });
      throw new ProtocolError(-32600, `mcp-warden refused ${method} [WARDEN_SERVER_REQUEST_DENIED]: ${text}`);
    };
    if (!call) return refuse(this.#inFlight.size === 0 ? 'no-call-in-flight' : 'unattributable', 'it cannot be tied to one agent\'s call, so it is not passed on');
    if (!call.ask) return refuse('not-during-a-tool-call', 'it is relayed only during a tool call');
    if (++call.questions > MAX_QUESTIONS_PER_CALL) return refuse('too-many-questions', `a call may ask the host at most ${MAX_QUESTIONS_PER_CALL} times`);
    call.deadline?.hold();
    try {
      return await call.ask(method, params, signal);
    } catch (error) {
      call.denied = method;
      const message = error instanceof WardenError ? `[${error.code}]: ${error.message}` : '[WARDEN_INTERNAL]: the broker could not relay it';
      throw new ProtocolError(-32600, `mcp-warden refused ${method} ${this.#redact(message)}`);
    } finally {
      call.deadline?.release();
    }
  }

  /**
   * The call a server's message (a request, a log message) belongs to: the one it arrived
   * under, when the connection says so (2026-07-28, or a Streamable HTTP response stream).
   * Otherwise (2025-era stdio) only a guess is possible, the single request in flight, and
   * it is taken only when one agent alone uses this server; else undefined: never a guess
   * that could hand one agent's message to another.
   */
  #callOfMessage(): InFlight | undefined {
    const scoped = requestScope.getStore();
    if (scoped) return this.#inFlight.has(scoped) ? scoped : undefined;
    if (this.#inFlight.size !== 1) return undefined;
    const only = [...this.#inFlight][0]!;
    const sole = this.#options.soleAgent?.();
    return only.agent !== undefined && only.agent === sole ? only : undefined;
  }

  /** Server requests and roots/list a minute, beyond which they are refused without a record each. */
  #admitServerMessage(): boolean {
    const now = performance.now();
    if (now - this.#serverMessages.since > 60_000) this.#serverMessages = { since: now, count: 0 };
    this.#serverMessages.count++;
    if (this.#serverMessages.count === MAX_SERVER_MESSAGES_PER_MINUTE + 1) {
      this.#audit({ event: 'server.request', server: this.server, decision: 'deny', outcome: 'refused', reason: 'rate-limited', perMinute: MAX_SERVER_MESSAGES_PER_MINUTE });
    }
    return this.#serverMessages.count <= MAX_SERVER_MESSAGES_PER_MINUTE;
  }

  /**
   * A log message from the server goes to the call it belongs to (found as for a server's
   * request); one that cannot be tied to exactly one call is not passed on to any agent.
   */
  #logMessage(params: { level: LoggingLevel; data?: unknown; logger?: string }): void {
    const call = this.#callOfMessage();
    if (call?.log) call.log({ level: params.level, data: params.data, ...(typeof params.logger === 'string' ? { logger: params.logger } : {}) });
  }

  /**
   * Subscribes to a resource for the broker (the broker fans updates out to the agents that
   * asked and may read it). Throws a WardenError when the server cannot subscribe.
   */
  async subscribeResource(uri: string, timeoutMs: number): Promise<void> {
    const client = this.#usableClient();
    if (!client.getServerCapabilities()?.resources?.subscribe) throw new WardenError('WARDEN_RESOURCE_NOT_FOUND', `server "${this.server}" does not offer resource subscriptions`, { server: this.server });
    if (this.#subscribed.has(uri)) return;
    this.#subscribed.add(uri);
    try {
      await this.#downstream(timeoutMs, () => this.#sendSubscriptions(client, uri, 'subscribe', timeoutMs));
    } catch (error) {
      this.#subscribed.delete(uri);
      throw error;
    }
  }

  async unsubscribeResource(uri: string, timeoutMs: number): Promise<void> {
    if (!this.#subscribed.delete(uri)) return;
    const client = this.#client;
    if (this.#state !== 'ready' || !client) return;
    await this.#downstream(timeoutMs, () => this.#sendSubscriptions(client, uri, 'unsubscribe', timeoutMs)).catch(() => undefined);
  }

  /** 2025 era: one request per URI. 2026-07-28: the change stream is opened anew with every URI. */
  #sendSubscriptions(client: Client, uri: string | undefined, change: 'subscribe' | 'unsubscribe', timeoutMs: number): Promise<void> {
    const work = this.#subscriptionWork.then(() => this.#changeSubscriptions(client, uri, change, timeoutMs));
    this.#subscriptionWork = work.catch(() => undefined);
    return work;
  }

  async #changeSubscriptions(client: Client, uri: string | undefined, change: 'subscribe' | 'unsubscribe', timeoutMs: number): Promise<void> {
    if (client.getProtocolEra() !== 'modern') {
      if (uri === undefined) return;
      await (change === 'subscribe' ? client.subscribeResource({ uri }, { timeout: timeoutMs }) : client.unsubscribeResource({ uri }, { timeout: timeoutMs }));
      return;
    }
    const previous = this.#resourceStream;
    this.#resourceStream = undefined;
    await previous?.close().catch(() => undefined);
    if (this.#subscribed.size === 0) return;
    this.#resourceStream = await client.listen({ resourceSubscriptions: [...this.#subscribed] }, { timeout: timeoutMs });
  }

  /** After a reconnect: the server has forgotten every subscription. */
  async #resubscribe(client: Client): Promise<void> {
    const timeoutMs = this.#options.connectTimeoutMs;
    this.#resourceStream = undefined;
    // A backend that replaced another (a reload) takes over the subscriptions agents hold.
    for (const uri of this.#options.subscriptions?.() ?? []) this.#subscribed.add(uri);
    if (this.#subscribed.size === 0 || !client.getServerCapabilities()?.resources?.subscribe) return;
    try {
      if (client.getProtocolEra() === 'modern') await this.#sendSubscriptions(client, undefined, 'subscribe', timeoutMs);
      else for (const uri of this.#subscribed) await client.subscribeResource({ uri }, { timeout: timeoutMs });
    } catch (error) {
      this.#options.logger.warn({ server: this.server, err: this.#redact(error instanceof Error ? error.message : String(error)) }, 'resource subscriptions could not be renewed after a reconnect');
    }
  }

  /** roots/list: the roots the config gives this server, the same for every agent. */
  #roots(): { roots: { uri: string; name?: string }[] } {
    if (!this.#admitServerMessage()) throw new ProtocolError(-32600, 'mcp-warden refused roots/list [WARDEN_SERVER_REQUEST_DENIED]: too many requests from this server');
    const roots = (this.#options.roots?.() ?? []).map((root) => ({ uri: root.uri, ...(root.name === undefined ? {} : { name: root.name }) }));
    this.#audit({ event: 'server.request', server: this.server, method: 'roots/list', decision: 'allow', outcome: 'ok', roots: roots.length });
    return { roots };
  }

  /**
   * Progress and log messages for a call in flight are handed on as they arrive, before the SDK sees
   * them. The SDK runs notification handlers a microtask later but settles a response at once,
   * removing the call's onprogress: a server's last progress, read in the same chunk as its
   * result, was dropped (modelcontextprotocol/typescript-sdk#2580). Other messages, and
   * progress for tokens the broker did not send, go to the SDK unchanged.
   *
   * An answer to a request the broker sent under one of its own requests in flight is handed
   * to the SDK inside that request's async context. The SDK continues a 2026-07-28 call
   * there (it fulfils input_required from the answer's delivery, not from the caller's
   * await), so the server's question is tied to its call over stdio too, whoever else
   * uses the server.
   */
  #routeMessages(transport: Transport): void {
    const send = transport.send.bind(transport);
    transport.send = (message, options) => {
      const under = requestScope.getStore();
      if (under && 'method' in message && 'id' in message && this.#inFlight.has(under)) this.#sentUnder.set(Number(message.id), under);
      return send(message, options);
    };
    const deliver = transport.onmessage;
    transport.onmessage = (message, extra) => {
      if (!('method' in message) && 'id' in message && message.id !== undefined && message.id !== null) {
        // Looked up as the SDK matches an answer to its request (Number(id)): "7" answers 7 too.
        const id = Number(message.id);
        const under = this.#sentUnder.get(id);
        this.#sentUnder.delete(id);
        if (under && this.#inFlight.has(under)) return requestScope.run(under, () => deliver?.call(transport, message, extra));
        // Every request sent under a call is mapped, so an answer that is not needs no call's
        // scope, and must not take that of the stream it arrived on.
        return requestScope.exit(() => deliver?.call(transport, message, extra));
      }
      // Log messages too: the call they belong to must still be in flight when they are read.
      if ('method' in message && message.method === 'notifications/message' && !('id' in message)) {
        const { level, data, logger } = (message.params ?? {}) as { level?: unknown; data?: unknown; logger?: unknown };
        if (typeof level === 'string' && LOG_SEVERITY.has(level)) this.#logMessage({ level: level as LoggingLevel, data, ...(typeof logger === 'string' ? { logger } : {}) });
        return;
      }
      if ('method' in message && message.method === 'notifications/progress' && !('id' in message)) {
        const { progressToken, progress, total, message: text } = (message.params ?? {}) as { progressToken?: unknown; progress?: unknown; total?: unknown; message?: unknown };
        const forward = typeof progressToken === 'string' ? this.#progress.get(progressToken) : undefined;
        if (forward) {
          if (typeof progress === 'number') forward({ progress, ...(typeof total === 'number' ? { total } : {}), ...(typeof text === 'string' ? { message: text } : {}) });
          return;
        }
      }
      deliver?.call(transport, message, extra);
    };
  }

  /** The connected client, or the reason calls are refused now (quarantined, not connected). */
  #usableClient(): Client {
    const client = this.#client;
    const quarantine = this.#quarantine;
    if (quarantine) {
      throw new WardenError(
        'WARDEN_SERVER_QUARANTINED',
        quarantine.reason === 'expired'
          ? `server "${this.server}" is quarantined: its signed manifest expired; the publisher must sign a new release`
          : quarantine.reason === 'artifact-modified'
            ? `server "${this.server}" is quarantined: what it runs (its executable, script or package) differs from the digests its signed manifest pins, so it was not started; calls are refused until a signed release that pins the files on disk is loaded`
            : `server "${this.server}" is quarantined: its live tools no longer match its signed manifest; calls are refused until a matching signed release is loaded`,
        { server: this.server, reason: quarantine.reason, diffDigest: quarantine.diffDigest },
      );
    }
    if (this.#state !== 'ready' || !client) {
      throw new WardenError('WARDEN_SERVER_UNAVAILABLE', `server "${this.server}" is ${this.#state === 'closed' ? 'stopped' : 'not connected (restarting)'}; retry later`, {
        server: this.server,
        state: this.#state,
      });
    }
    return client;
  }

  /**
   * The server's resources (every page), for a session whose grants name this server; the
   * broker filters and cleans them. None when the server does not offer resources.
   */
  async listResources(timeoutMs: number, signal?: AbortSignal): Promise<Resource[]> {
    const client = this.#usableClient();
    if (!client.getServerCapabilities()?.resources) return [];
    return this.#downstream(timeoutMs, () => allPages(MAX_LIST_PAGES, 'resources/list', async (cursor) => {
      const page = await client.listResources(cursor === undefined ? {} : { cursor }, { timeout: timeoutMs, cacheMode: 'bypass', ...(signal ? { signal } : {}) });
      return { items: page.resources, nextCursor: page.nextCursor };
    }));
  }

  async listResourceTemplates(timeoutMs: number, signal?: AbortSignal): Promise<ResourceTemplate[]> {
    const client = this.#usableClient();
    if (!client.getServerCapabilities()?.resources) return [];
    return this.#downstream(timeoutMs, () => allPages(MAX_LIST_PAGES, 'resources/templates/list', async (cursor) => {
      const page = await client.listResourceTemplates(cursor === undefined ? {} : { cursor }, { timeout: timeoutMs, cacheMode: 'bypass', ...(signal ? { signal } : {}) });
      return { items: page.resourceTemplates, nextCursor: page.nextCursor };
    }));
  }

  async readResource(uri: string, timeoutMs: number, signal?: AbortSignal): Promise<ReadResourceResult> {
    const client = this.#usableClient();
    if (!client.getServerCapabilities()?.resources) throw new WardenError('WARDEN_RESOURCE_NOT_FOUND', `server "${this.server}" offers no resources`, { server: this.server });
    // bypass: the shared client's cache must not serve one agent's read to another.
    return this.#downstream(timeoutMs, () => client.readResource({ uri }, { timeout: timeoutMs, cacheMode: 'bypass', ...(signal ? { signal } : {}) }), signal);
  }

  async getPrompt(name: string, args: Record<string, string>, timeoutMs: number, signal?: AbortSignal): Promise<GetPromptResult> {
    const client = this.#usableClient();
    return this.#downstream(timeoutMs, () => client.getPrompt({ name, arguments: args }, { timeout: timeoutMs, ...(signal ? { signal } : {}) }), signal);
  }

  /** completion/complete for one of this server's prompts or resource templates; empty when the server offers no completions. */
  async complete(params: CompleteRequestParams, timeoutMs: number, signal?: AbortSignal): Promise<CompleteResult> {
    const client = this.#usableClient();
    if (!client.getServerCapabilities()?.completions) return { completion: { values: [] } };
    return this.#downstream(timeoutMs, () => client.complete(params, { timeout: timeoutMs, ...(signal ? { signal } : {}) }), signal);
  }

  /** One request to the server, its failures translated like a tool call's. */
  async #downstream<T>(timeoutMs: number, send: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const entry: InFlight = { questions: 0 };
    this.#inFlight.add(entry);
    try {
      return await requestScope.run(entry, () => this.#downstreamOnce(timeoutMs, send, signal));
    } finally {
      this.#end(entry);
    }
  }

  /** A request of the broker's is over: neither it nor the messages it sent are in flight. */
  #end(entry: InFlight): void {
    this.#inFlight.delete(entry);
    for (const [id, owner] of this.#sentUnder) if (owner === entry) this.#sentUnder.delete(id);
  }

  async #downstreamOnce<T>(timeoutMs: number, send: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    try {
      return await send();
    } catch (error) {
      if (signal?.aborted) throw new WardenError('WARDEN_CALL_CANCELLED', 'the agent cancelled the request', { server: this.server });
      throw this.#translate(error, timeoutMs);
    }
  }

  /**
   * Circuit breaker: refuses at once while open; after the cooldown lets one trial call
   * through (returns true for it), whose outcome closes or reopens the breaker.
   */
  #admit(): boolean {
    if (this.#openUntil === 0) return false;
    const wait = this.#openUntil - Date.now();
    if (wait > 0 || this.#trialInFlight) {
      throw new WardenError(
        'WARDEN_SERVER_UNAVAILABLE',
        `server "${this.server}" is not answering (${this.#timeoutsInARow} calls in a row timed out); calls are refused for ${Math.max(1, Math.ceil(wait / 1000))} s more`,
        { server: this.server, breaker: 'open' },
      );
    }
    this.#trialInFlight = true;
    return true;
  }

  #recordTimeout(): void {
    this.#timeoutsInARow++;
    if (this.#timeoutsInARow < this.#breaker.timeouts) return;
    this.#openUntil = Date.now() + this.#breaker.cooldownMs;
    this.#options.logger.warn({ server: this.server, timeouts: this.#timeoutsInARow }, 'circuit breaker open: calls refused during the cooldown');
    this.#audit({ event: 'server.state', server: this.server, state: 'breaker-open', timeoutsInARow: this.#timeoutsInARow, cooldownMs: this.#breaker.cooldownMs });
  }

  async close(): Promise<void> {
    this.#state = 'closed';
    clearTimeout(this.#restartTimer);
    clearInterval(this.#recheckTimer);
    const client = this.#client;
    this.#client = undefined;
    if (client) await client.close().catch(() => undefined);
    await this.#httpConnection?.close().catch(() => undefined);
  }

  async #connect(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'starting';
    const { manifest, connectTimeoutMs, logger } = this.#options;
    // What a stdio server runs is checked before every spawn, the first and each restart;
    // it is started from the executable and folder the check resolved.
    let launch: Launch | undefined;
    if (this.#transportSpec.type === 'stdio') {
      launch = this.#artifactsHold(this.#transportSpec);
      if (!launch) return;
    }
    const client = new Client(
      { ...BROKER_INFO },
      {
        versionNegotiation: { mode: negotiationMode(this.#transportSpec.era) },
        // Declared for every agent at once; each request is then judged for the agent whose
        // call it arrives in (and refused when it cannot be tied to one).
        capabilities: { sampling: {}, elicitation: { form: {} }, roots: {} },
        // Opens the change stream on a 2026-07-28 connection; the handler itself is set
        // after connecting, so it also runs for a server that never advertised the capability.
        listChanged: {
          tools: { autoRefresh: false, debounceMs: 0, onChanged: () => undefined },
          prompts: { autoRefresh: false, debounceMs: 0, onChanged: () => undefined },
          resources: { autoRefresh: false, debounceMs: 0, onChanged: () => undefined },
        },
      },
    );
    client.setRequestHandler('sampling/createMessage', (request, ctx) => this.#serverRequest('sampling/createMessage', request.params, ctx.mcpReq.signal) as never);
    client.setRequestHandler('elicitation/create', (request, ctx) => this.#serverRequest('elicitation/create', request.params, ctx.mcpReq.signal) as never);
    client.setRequestHandler('roots/list', () => this.#roots());
    let timer: NodeJS.Timeout | undefined;
    try {
      const credentials = resolveCredentials(this.server, manifest.credentials, this.#options.credentialSources);
      for (const { value } of credentials) this.#credentialValues.add(value);
      const transport = this.#transport(credentials, launch);
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${connectTimeoutMs} ms`)), connectTimeoutMs);
      });
      await Promise.race([client.connect(transport, { timeout: connectTimeoutMs }), deadline]);
      this.#routeMessages(transport);
      const tools = await Promise.race([listAllTools(client, connectTimeoutMs), deadline]);
      const prompts = await Promise.race([listAllPrompts(client, connectTimeoutMs), deadline]);
      clearTimeout(timer);
      if (this.#closed()) {
        await client.close().catch(() => undefined);
        return;
      }
      this.#client = client;
      this.#state = 'ready';
      this.#readyAt = Date.now();
      // Registered only now: a close during the handshake is handled by the catch below.
      client.onclose = () => this.#onDisconnect(client);
      client.setNotificationHandler('notifications/tools/list_changed', () => void this.#recheck('list_changed'));
      client.setNotificationHandler('notifications/prompts/list_changed', () => void this.#recheck('list_changed'));
      client.setNotificationHandler('notifications/resources/updated', (notification) => {
        // Only what the broker subscribed to: a server cannot push updates nobody asked for.
        if (this.#subscribed.has(notification.params.uri)) this.#options.onResourceUpdated?.(notification.params.uri);
      });
      client.setNotificationHandler('notifications/resources/list_changed', () => this.#options.onResourcesChanged?.());
      void this.#resubscribe(client);
      // One level for the whole 2025-era session, shared by every agent: the lowest, so
      // each agent's own level can be applied when a message is passed on.
      if (client.getProtocolEra() === 'legacy' && client.getServerCapabilities()?.logging) {
        void client.setLoggingLevel('debug', { timeout: connectTimeoutMs }).catch((error: unknown) => {
          logger.debug({ server: this.server, err: error instanceof Error ? error.message : String(error) }, 'logging/setLevel refused by the server');
        });
      }
      logger.info({ server: this.server, era: client.getProtocolEra() }, 'downstream server connected');
      this.#audit({ event: 'server.state', server: this.server, state: 'ready', era: client.getProtocolEra(), manifest: manifest.name, serial: manifest.serial });
      this.#judge({ tools, prompts, instructions: client.getInstructions() }, 'connect');
      this.#recheckTimer = setInterval(() => void this.#recheck('interval'), this.#options.recheckMs ?? DEFAULT_RECHECK_MS);
      this.#recheckTimer.unref();
    } catch (error) {
      clearTimeout(timer);
      await client.close().catch(() => undefined);
      if (this.#closed()) return;
      this.#state = 'down';
      const reason = this.#redact(error instanceof Error ? error.message : String(error));
      logger.warn({ server: this.server, reason }, 'downstream server failed to connect');
      this.#audit({ event: 'server.state', server: this.server, state: 'down', reason });
      this.#scheduleRestart();
    }
  }

  /**
   * Lists the live tools again (never from the client's cache) and judges them. A
   * recheck that cannot finish cannot vouch for the server: the connection is dropped and
   * the reconnect, which pins again, decides.
   */
  async #recheck(trigger: PinTrigger): Promise<void> {
    const client = this.#client;
    if (this.#state !== 'ready' || !client) return;
    if (this.#recheckInFlight) {
      // The running recheck may have read the list before this change: look again after it.
      this.#recheckAgain = true;
      return;
    }
    this.#recheckInFlight = true;
    try {
      const tools = await listAllTools(client, this.#options.connectTimeoutMs);
      const prompts = await listAllPrompts(client, this.#options.connectTimeoutMs);
      if (this.#client === client) this.#judge({ tools, prompts, instructions: client.getInstructions() }, trigger);
    } catch (error) {
      if (this.#client !== client) return;
      const reason = this.#redact(error instanceof Error ? error.message : String(error));
      this.#options.logger.warn({ server: this.server, trigger, reason }, 'pin recheck failed; reconnecting');
      this.#audit({ event: 'server.state', server: this.server, state: 'recheck-failed', trigger, reason });
      await client.close().catch(() => undefined);
    } finally {
      this.#recheckInFlight = false;
    }
    if (this.#recheckAgain) {
      this.#recheckAgain = false;
      await this.#recheck(trigger);
    }
  }

  /**
   * Quarantines the server when the live side differs from the signed manifest, or the
   * manifest has expired. A quarantine is not lifted when the server matches again: a
   * server that changed once is not trusted to stay put. Only a new signed release (a
   * higher serial that matches) clears it, when the broker loads it.
   */
  #judge(live: LiveServer, trigger: PinTrigger): void {
    const { manifest, logger } = this.#options;
    this.#pinChecks++;
    const wasQuarantined = this.#quarantine !== undefined;
    if (Date.parse(manifest.expiresAt) <= Date.now()) {
      if (this.#quarantine?.reason === 'expired') return;
      this.#quarantine = { reason: 'expired', since: new Date().toISOString(), trigger };
      logger.warn({ server: this.server, expiresAt: manifest.expiresAt }, 'server quarantined: its signed manifest expired');
      this.#audit({ event: 'server.quarantined', server: this.server, manifest: manifest.name, serial: manifest.serial, reason: 'expired', trigger, expiresAt: manifest.expiresAt });
    } else {
      const report = comparePins(manifest, live);
      if (report.matches) {
        if (wasQuarantined) logger.info({ server: this.server, trigger }, 'the live server matches its signed manifest again; it stays quarantined until a new signed release is loaded');
        return;
      }
      const digest = diffDigest(report);
      // Bounded: past MAX_AUDITED_DRIFTS shapes, a server that keeps changing is not audited further.
      if (this.#quarantine?.diffDigest === digest || this.#auditedDrifts.has(digest) || this.#auditedDrifts.size >= MAX_AUDITED_DRIFTS) return;
      this.#auditedDrifts.add(digest);
      const quarantine: Quarantine = { reason: 'drift', since: this.#quarantine?.since ?? new Date().toISOString(), trigger, report, diffDigest: digest };
      this.#quarantine = quarantine;
      const { added, removed, changed, instructionsChanged, prompts, liveDigest } = report;
      logger.warn({ server: this.server, trigger, added, removed, changed, instructionsChanged, prompts }, 'server quarantined: live tools or prompts differ from the signed manifest');
      this.#audit({ event: 'server.quarantined', server: this.server, manifest: manifest.name, serial: manifest.serial, digest: manifest.digest, reason: 'drift', trigger, diffDigest: digest, liveDigest, added, removed, changed, instructionsChanged, prompts });
      if (!wasQuarantined) this.#options.onQuarantine?.(quarantine);
    }
    if (!wasQuarantined) this.#options.onToolsChanged?.();
  }

  /**
   * The executable and working directory to start, with their links followed, when they,
   * every pinned file, folder and package match their digests and every argument naming a
   * file is pinned (all resolved once, so what starts is what was checked). Otherwise the
   * server is not started but quarantined, the expected and found digests audited. A
   * quarantine from an earlier run for the same reason also keeps it from starting.
   */
  #artifactsHold(spec: StdioTransport): Launch | undefined {
    if (this.#quarantine?.reason !== 'artifact-modified') {
      const checked = checkLaunch(spec);
      const artifacts = checked.mismatches;
      const unpinned = [...new Set(checked.unpinned.map((problem) => problem.arg))];
      if (artifacts.length === 0 && unpinned.length === 0) return { command: checked.command, cwd: checked.cwd };
      const diff = createHash('sha256').update(JSON.stringify({ artifacts, unpinned })).digest('hex');
      const wasQuarantined = this.#quarantine !== undefined;
      this.#quarantine = { reason: 'artifact-modified', since: new Date().toISOString(), trigger: 'spawn', artifacts, diffDigest: diff };
      const { manifest, logger } = this.#options;
      logger.error({ server: this.server, artifacts, unpinned: checked.unpinned }, 'server not started and quarantined: what it would run differs from its signed pins');
      this.#audit({ event: 'server.quarantined', server: this.server, manifest: manifest.name, serial: manifest.serial, digest: manifest.digest, reason: 'artifact-modified', trigger: 'spawn', diffDigest: diff, artifacts, unpinned });
      this.#options.onQuarantine?.(this.#quarantine);
      if (!wasQuarantined) this.#options.onToolsChanged?.();
    }
    this.#state = 'down';
    return undefined;
  }

  /** A server's own output (stderr, error texts) may repeat its credentials: never log them. */
  #redact(text: string): string {
    if (this.#credentialValues.size === 0) return text;
    return cleanText(text, secretForms([...this.#credentialValues]), noRedactions());
  }

  #audit(record: AuditRecord): void {
    writeOrLog(this.#options.audit, record, this.#options.logger);
  }

  /** Read through a method: close() may run while #connect awaits. */
  #closed(): boolean {
    return this.#state === 'closed';
  }

  #onDisconnect(client: Client): void {
    if (this.#client !== client || this.#state === 'closed') return;
    this.#client = undefined;
    clearInterval(this.#recheckTimer);
    this.#state = 'down';
    if (Date.now() - this.#readyAt >= STABLE_AFTER_MS) this.#attempt = 0;
    this.#options.logger.warn({ server: this.server }, 'downstream server disconnected');
    this.#audit({ event: 'server.state', server: this.server, state: 'down', reason: 'disconnected' });
    this.#scheduleRestart();
  }

  #scheduleRestart(): void {
    const delay = Math.min(this.#backoff.initialMs * 2 ** this.#attempt, this.#backoff.maxMs);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    clearTimeout(this.#restartTimer);
    // Outside any call's scope: the new connection's messages must not inherit one.
    this.#restartTimer = requestScope.exit(() => setTimeout(() => void this.#connect(), delay));
    this.#restartTimer.unref();
  }

  #transport(credentials: readonly ResolvedCredential[], launch: Launch | undefined): Transport {
    const transport = this.#transportSpec;
    if (transport.type === 'http') {
      const headers: Record<string, string> = {};
      for (const { credential, value } of credentials) if (credential.header) headers[credential.header] = `${credential.prefix}${value}`;
      const certificate = credentials.find(({ credential }) => credential.clientCertificate);
      if (certificate) checkClientCertificate(certificate.credential.name, certificate.value);
      const tls: ServerTls = {
        spki: transport.spki,
        ...(this.#options.tlsCa === undefined ? {} : { ca: this.#options.tlsCa }),
        ...(certificate ? { clientCertificate: certificate.value } : {}),
      };
      // Each attempt gets its own connection pool, built with the settings in force now.
      void this.#httpConnection?.close().catch(() => undefined);
      this.#httpConnection = this.#options.httpConnection?.(tls);
      const fetch = this.#httpConnection?.fetch;
      // redirect: 'error': a redirect must not carry the credential headers to another origin.
      return new StreamableHTTPClientTransport(new URL(transport.url), { requestInit: { headers, redirect: 'error' }, ...(fetch ? { fetch } : {}) });
    }
    if (!launch) throw new Error('a stdio server is started only after its pins are checked');
    const env: Record<string, string> = { ...transport.env };
    for (const { credential, value } of credentials) if (credential.env) env[credential.env] = value;
    // The arguments as signed; taken from the resolved folder, they lead where the check followed them.
    const stdio = new StdioClientTransport({
      command: launch.command,
      args: [...transport.args],
      cwd: launch.cwd,
      // The SDK adds only a minimal set (PATH, HOME, USER, SHELL, TERM, LOGNAME) to this;
      // the broker's own environment never reaches a downstream server.
      env,
      stderr: 'pipe',
    });
    forwardStderr(stdio.stderr, this.server, this.#options.logger, (line) => this.#redact(line));
    if (transport.era !== 'legacy') {
      // auto and modern: the SDK first starts a short-lived copy of this transport (the same
      // parameters) to probe the era, and starts this one only after it answered. Check the
      // pins again right before that second start: it must run what was checked.
      const start = stdio.start.bind(stdio);
      stdio.start = async () => {
        const again = this.#artifactsHold(transport);
        if (again === undefined) throw new Error('what the server runs no longer matches its signed pins');
        if (again.command !== launch.command || again.cwd !== launch.cwd) throw new Error('the executable or working directory changed while the server was starting');
        return start();
      };
    }
    return stdio;
  }

  #translate(error: unknown, timeoutMs: number): WardenError {
    if (error instanceof WardenError) return error;
    if (error instanceof SdkError) {
      if (error.code === SdkErrorCode.RequestTimeout) {
        return new WardenError('WARDEN_DOWNSTREAM_TIMEOUT', `server "${this.server}" did not answer within ${timeoutMs} ms`, { server: this.server });
      }
      if (error.code === SdkErrorCode.ConnectionClosed || error.code === SdkErrorCode.NotConnected || error.code === SdkErrorCode.SendFailed) {
        return new WardenError('WARDEN_SERVER_UNAVAILABLE', `server "${this.server}" disconnected during the call; retry later`, { server: this.server });
      }
      return new WardenError('WARDEN_DOWNSTREAM_ERROR', `server "${this.server}" returned an invalid answer (${error.code})`, { server: this.server, sdk: error.code });
    }
    if (error instanceof ProtocolError) {
      return new WardenError('WARDEN_DOWNSTREAM_ERROR', `server "${this.server}" returned error ${error.code}: ${printable(this.#redact(error.message))}`, {
        server: this.server,
        rpcCode: error.code,
      });
    }
    return new WardenError('WARDEN_DOWNSTREAM_ERROR', `server "${this.server}" failed the call`, { server: this.server, error: printable(this.#redact(String(error))) });
  }
}

/** A client certificate credential must hold a certificate and its private key; its value is never quoted. */
function checkClientCertificate(name: string, pem: string): void {
  try {
    const certificate = new X509Certificate(pem);
    if (!certificate.checkPrivateKey(createPrivateKey(pem))) throw new Error('mismatch');
  } catch {
    throw new Error(`credential "${name}" is not a PEM client certificate with its matching private key`);
  }
}

function negotiationMode(era: Era): VersionNegotiationMode {
  if (era === 'legacy') return 'legacy';
  if (era === 'modern') return { pin: '2026-07-28' };
  return 'auto';
}

/**
 * The SDK's own timeout for a tools/call: only a backstop, far past the broker's deadline
 * and the longest a server's question can wait for its answer.
 */
const BACKSTOP_TIMEOUT_MS = 24 * 60 * 60 * 1000;

/**
 * A call's timeout that stands still while held: a server's sampling or elicitation request
 * waits on a person, whose time is bounded separately (limits.answerTimeoutMs). Its signal
 * also aborts when the agent's does (one listener; AbortSignal.any costs more per call).
 */
class Deadline {
  readonly #controller = new AbortController();
  readonly #agentSignal: AbortSignal | undefined;
  readonly #onAgentAbort = (): void => this.#controller.abort(this.#agentSignal?.reason);
  #remainingMs: number;
  #startedAt = performance.now();
  #holds = 0;
  #cleared = false;
  #expired = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(timeoutMs: number, agentSignal?: AbortSignal) {
    this.#remainingMs = timeoutMs;
    this.#agentSignal = agentSignal;
    if (agentSignal?.aborted) this.#onAgentAbort();
    else agentSignal?.addEventListener('abort', this.#onAgentAbort, { once: true });
    this.#arm();
  }

  /** Aborts when the time is up or the agent cancels. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Whether the time ran out (not: the agent cancelled). */
  get expired(): boolean {
    return this.#expired;
  }

  hold(): void {
    if (this.#holds++ > 0 || this.#controller.signal.aborted) return;
    clearTimeout(this.#timer);
    this.#remainingMs -= performance.now() - this.#startedAt;
  }

  release(): void {
    if (--this.#holds > 0 || this.#controller.signal.aborted || this.#cleared) return;
    this.#startedAt = performance.now();
    this.#arm();
  }

  clear(): void {
    this.#cleared = true;
    clearTimeout(this.#timer);
    this.#agentSignal?.removeEventListener('abort', this.#onAgentAbort);
  }

  #arm(): void {
    this.#timer = setTimeout(() => {
      if (this.#controller.signal.aborted) return;
      this.#expired = true;
      this.#controller.abort(new Error('call timeout'));
    }, Math.max(0, this.#remainingMs));
  }
}

/** Every page of a list, bounded: a server that pages on and on is not believed. */
async function allPages<T>(maxPages: number, method: string, page: (cursor: string | undefined) => Promise<{ items: T[]; nextCursor?: string | undefined }>): Promise<T[]> {
  const items: T[] = [];
  let cursor: string | undefined;
  for (let count = 0; count < maxPages; count++) {
    const result = await page(cursor);
    items.push(...result.items);
    cursor = result.nextCursor;
    if (cursor === undefined) return items;
  }
  throw new Error(`${method} returned more than ${maxPages} pages`);
}

function listAllTools(client: Client, timeoutMs: number): Promise<Tool[]> {
  // bypass: a server-sent cache lifetime must not let an old list stand in for the live one.
  return allPages(MAX_LIST_PAGES, 'tools/list', async (cursor) => {
    const page = await client.listTools(cursor === undefined ? {} : { cursor }, { timeout: timeoutMs, cacheMode: 'bypass' });
    return { items: page.tools, nextCursor: page.nextCursor };
  });
}

/** The live prompts, every page; none when the server does not offer prompts. */
async function listAllPrompts(client: Client, timeoutMs: number): Promise<Prompt[]> {
  if (!client.getServerCapabilities()?.prompts) return [];
  return allPages(MAX_LIST_PAGES, 'prompts/list', async (cursor) => {
    const page = await client.listPrompts(cursor === undefined ? {} : { cursor }, { timeout: timeoutMs, cacheMode: 'bypass' });
    return { items: page.prompts, nextCursor: page.nextCursor };
  });
}

function forwardStderr(stream: unknown, server: string, logger: Logger, redact: (text: string) => string): void {
  if (!stream) return;
  const lines = createInterface({ input: stream as Readable, crlfDelay: Infinity });
  lines.on('line', (line) => {
    logger.info({ server, stderr: printable(redact(line.slice(0, MAX_STDERR_LINE))) }, 'downstream stderr');
  });
  lines.on('error', () => undefined);
}

/** Keeps a downstream's text to printable characters and a bounded length. */
function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ').slice(0, 500);
}
