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
} from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { WardenError } from '../errors.ts';
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
}

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
    this.#firstAttempt ??= this.#connect();
    return this.#firstAttempt;
  }

  async callTool({ tool, args, timeoutMs, signal, meta, onProgress, onSend }: ToolCall): Promise<CallToolResult> {
    const client = this.#usableClient();
    const trial = this.#admit();
    let progressToken: string | undefined;
    try {
      // On timeout or abort the SDK sends notifications/cancelled to the server (or, on a
      // 2026-07-28 HTTP connection, aborts the request), so the server can stop working.
      // Progress goes by a token of the broker's own, routed as it arrives (see #routeProgress),
      // not through the SDK's onprogress, and never extends the call: the timeout is a hard cap.
      if (onProgress) this.#progress.set((progressToken = `warden-${randomUUID()}`), onProgress);
      const _meta = progressToken ? { ...meta, progressToken } : meta;
      const params = { name: tool, arguments: args, ...(_meta ? { _meta } : {}) };
      const options = { timeout: timeoutMs, resetTimeoutOnProgress: false, ...(signal ? { signal } : {}) };
      onSend?.();
      const result = (await client.callTool(params, options)) as CallToolResult;
      this.#timeoutsInARow = 0;
      this.#openUntil = 0;
      return result;
    } catch (error) {
      const translated = signal?.aborted
        ? new WardenError('WARDEN_CALL_CANCELLED', 'the agent cancelled the call', { server: this.server })
        : this.#translate(error, timeoutMs);
      if (translated.code === 'WARDEN_DOWNSTREAM_TIMEOUT') this.#recordTimeout();
      throw translated;
    } finally {
      if (progressToken) this.#progress.delete(progressToken);
      if (trial) this.#trialInFlight = false;
    }
  }

  /**
   * Progress for a call in flight is handed on as its message arrives, before the SDK sees
   * it. The SDK runs notification handlers a microtask later but settles a response at once,
   * removing the call's onprogress: a server's last progress, read in the same chunk as its
   * result, was dropped (modelcontextprotocol/typescript-sdk#2580). Other messages, and
   * progress for tokens the broker did not send, go to the SDK unchanged.
   */
  #routeProgress(transport: Transport): void {
    const deliver = transport.onmessage;
    transport.onmessage = (message, extra) => {
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
        // Opens the change stream on a 2026-07-28 connection; the handler itself is set
        // after connecting, so it also runs for a server that never advertised the capability.
        listChanged: {
          tools: { autoRefresh: false, debounceMs: 0, onChanged: () => undefined },
          prompts: { autoRefresh: false, debounceMs: 0, onChanged: () => undefined },
        },
      },
    );
    let timer: NodeJS.Timeout | undefined;
    try {
      const credentials = resolveCredentials(this.server, manifest.credentials, this.#options.credentialSources);
      for (const { value } of credentials) this.#credentialValues.add(value);
      const transport = this.#transport(credentials, launch);
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${connectTimeoutMs} ms`)), connectTimeoutMs);
      });
      await Promise.race([client.connect(transport, { timeout: connectTimeoutMs }), deadline]);
      this.#routeProgress(transport);
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
    this.#restartTimer = setTimeout(() => void this.#connect(), delay);
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
