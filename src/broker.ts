import { CallFlows } from './front/call-flows.ts';
import { ResourceSubscriptions } from './surface/subscriptions.ts';
import type { HostChannel } from './surface/server-requests.ts';
import { randomUUID } from 'node:crypto';
import type { CallToolResult, ListToolsResult } from '@modelcontextprotocol/server';
import { loadAuditKey } from './audit/signing-key.ts';
import { memoryAuditTrail, openAuditTrail, writeOrLog, type AuditTrail } from './audit/trail.ts';
import { McpBackend, type HttpConnection } from './backends/mcp.ts';
import { HttpApiBackend } from './backends/http-api.ts';
import { SandboxBackend } from './backends/sandbox.ts';
import { CodeModeBackend, type CodeModeTool } from './backends/code-mode.ts';
import { CODE_MODE_SERVER, RUN_CODE } from './catalog/builtin.ts';
import { SandboxPool } from './sandbox/pool.ts';
import { describeCodeMode } from './sandbox/typed-api.ts';
import { createEgressAgent, type Resolver, type ServerTls } from './backends/egress-agent.ts';
import type { ToolBackend } from './backends/types.ts';
import { egressFetch } from './backends/egress-fetch.ts';
import type { EgressPolicy } from './guard/egress-rules.ts';
import type { Dispatcher } from 'undici';
import type { FetchLike } from '@modelcontextprotocol/client';
import type { ExposedDefinition } from './catalog/build.ts';
import type { WardenConfig } from './config/types.ts';
import { WardenError, type WardenErrorCode } from './errors.ts';
import { createLogger, type Logger } from './log.ts';
import { memoryLimitStore, type LimitStore } from './guard/rate-limits.ts';
import { buildCallPipeline, type CallPipeline } from './pipeline/pipeline.ts';
import { REFUSAL_META_KEY, type AskUser, type CallOutcome, type OAuthSession, type PipelineDeps, type LogMessage, type Progress, type Refusal, type UserInput } from './pipeline/types.ts';
import { ApprovalWaiter } from './policy/approval-waiter.ts';
import { findGrant, grantable } from './policy/grants.ts';
import { agentsReaching } from './policy/server-reach.ts';
import { secretForms } from './guard/sanitize-output.ts';
import { loadBrokerIdentity, type BrokerIdentity } from './identity/broker-identity.ts';
import { APPROVAL_RETENTION_MS } from './state/approvals.ts';
import { openStateStore, type StateStore } from './state/store.ts';
import type { KillSwitchState } from './state/switches.ts';
import type { BrokerMetrics } from './metrics/broker-metrics.ts';
import type { CompleteRequestParams, CompleteResult, GetPromptResult, ListPromptsResult, ListResourcesResult, ListResourceTemplatesResult, ReadResourceResult } from '@modelcontextprotocol/server';
import type { SurfaceDeps, SurfaceRequest } from './surface/judge.ts';
import { listResources, listResourceTemplates, readResource } from './surface/resources.ts';
import { getPrompt, listPrompts } from './surface/prompts.ts';
import { complete } from './surface/complete.ts';

export interface BrokerOptions {
  readonly logger?: Logger;
  /** Defaults to the audit file the config names. */
  readonly audit?: AuditTrail | 'memory';
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
  /** How often the state store is checked for approvals decided and kill-switch changes, ms. */
  readonly statePollMs?: number;
  /** Rate-limit state; a shared store can replace the embedded one. */
  readonly limits?: LimitStore;
  /** How outbound requests resolve host names (tests inject one); the system resolver otherwise. */
  readonly resolve?: Resolver;
  /** Metrics derived from every audit record this broker writes, and read from its state when scraped. */
  readonly metrics?: BrokerMetrics;
}

/** What a tools/call may carry besides the tool and its arguments. */
export interface CallOptions {
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: Progress) => void;
  readonly onLog?: (message: LogMessage) => void;
  /** The client's idempotency key from the request's _meta, unchecked. */
  readonly idempotencyKey?: unknown;
  readonly userInput?: UserInput;
  /** A call made by code mode: the run's correlation id, recorded with the call. */
  readonly parentCorrelationId?: string;
  /** Set by the front for a session authenticated with an OAuth access token: its scopes decide which grants apply. */
  readonly oauth?: OAuthSession;
  /** The agent's host, for a server's sampling or elicitation request during the call. */
  readonly host?: HostChannel;
}

export { REFUSAL_META_KEY };
/** The kill switch and approvals are seen within this long of being changed. */
export const STATE_POLL_MS = 250;
/** Calls of one agent that may wait at once for the host's answer to a server's question. */
const MAX_WAITING_CALLS_PER_AGENT = 16;
/** Questions one call's server may have open with the host at once. */
const MAX_QUESTIONS_PER_CALL = 8;
/** Expired idempotency records and approvals are cleared this often. */
const PRUNE_MS = 60_000;

/** One agent-visible tool: its server and its definition. */
interface VisibleTool {
  readonly server: string;
  /** The tool's name on its server. */
  readonly tool: string;
  readonly access: 'read' | 'write' | 'destructive';
  readonly definition: ExposedDefinition;
  /** A grant that names no scopes covers it: every session of the agent sees it. Otherwise only sessions with the scopes do. */
  readonly open: boolean;
}

/**
 * The broker: the config, one backend per downstream server, and the call pipeline. The
 * fronts (stdio, HTTP) authenticate an agent and then only ever call listTools/callTool.
 * The config can be replaced while it runs (applyConfig): every call is judged by one
 * config from start to end, and agents whose tool list changed are told.
 */
export class Broker {
  readonly logger: Logger;
  readonly audit: AuditTrail;
  /** Calls waiting on their host's answer to a server's question (see src/front/call-flows.ts). */
  readonly flows: CallFlows;
  /** Agents' resource subscriptions, one downstream subscription per server and URI. */
  readonly subscriptions: ResourceSubscriptions;
  /** Identifies this process in idempotency records. */
  readonly instanceId = randomUUID();
  #config: WardenConfig;
  #backends: Map<string, ToolBackend>;
  /** The one dispatcher every outbound request goes through, and the policy it enforces. */
  #egress: { readonly dispatcher: Dispatcher; readonly policy: EgressPolicy };
  readonly #resolve: Resolver | undefined;
  #pipeline: CallPipeline;
  /** Per agent, the definitions its grants make visible; recomputed when the config changes. */
  #visible = new Map<string, readonly VisibleTool[]>();
  /** Per agent, the names it was last shown (or would be): a change means list_changed. */
  readonly #listed = new Map<string, string>();
  /** Approvals, idempotency records, the kill switch and the manifest history live here. */
  readonly #state: StateStore;
  readonly #limits: LimitStore;
  readonly #approvals: ApprovalWaiter;
  readonly #writesInFlight: PipelineDeps['writesInFlight'] = new Map();
  readonly #backoff: BrokerOptions['backoff'];
  #killSwitch: KillSwitchState;
  #dataVersion = -1;
  #poll: NodeJS.Timeout | undefined;
  #lastPrune = 0;
  readonly #resourceListeners = new Set<(agents: ReadonlySet<string>) => void>();
  readonly #toolsListeners = new Set<(agents: ReadonlySet<string>) => void>();
  readonly #configListeners = new Set<() => void>();
  /** Sandbox workers: one pool for code tools, one for code mode (so a run never waits on itself). */
  readonly #pools: { readonly tools: SandboxPool; readonly codeMode: SandboxPool };
  readonly #codeMode: CodeModeBackend;

  constructor(config: WardenConfig, options: BrokerOptions = {}) {
    this.#config = config;
    this.logger = options.logger ?? createLogger(config.log.level);
    this.#state = openStateStore(config.state.dir, 'read-write');
    try {
      this.audit = options.audit === 'memory' ? memoryAuditTrail() : (options.audit ?? this.#openAuditTrail(config));
    } catch (error) {
      this.#state.close();
      throw error;
    }
    if (options.metrics) this.audit = options.metrics.observe(this, this.audit);
    this.#killSwitch = this.#state.killSwitch.read().state;
    // First run on this store: decisions from before it are not this trail's to report.
    const audited = this.#state.approvals.auditedUntil();
    this.#decisionsSince = audited ?? Date.now();
    if (audited === undefined) this.#state.approvals.setAuditedUntil(this.#decisionsSince);
    this.#limits = options.limits ?? memoryLimitStore();
    this.#approvals = new ApprovalWaiter(this.#state.approvals);
    this.#backoff = options.backoff;
    this.#resolve = options.resolve;
    this.#egress = { dispatcher: createEgressAgent(config.egress, options.resolve), policy: config.egress };
    this.#pools = {
      tools: this.#createPool('tools', config.sandbox.workers),
      codeMode: this.#createPool('code-mode', config.sandbox.codeMode.workers),
    };
    this.#codeMode = new CodeModeBackend({
      pool: this.#pools.codeMode,
      settings: () => this.#config.sandbox,
      maxResultBytes: () => this.#config.limits.maxResultBytes,
      toolsFor: (agent, oauth) => this.#codeModeTools(agent, oauth),
      call: (agent, name, args, { signal, parentCorrelationId, oauth }) => this.callTool(agent, name, args, { signal, parentCorrelationId, ...(oauth ? { oauth } : {}) }),
    });
    this.#backends = new Map([[CODE_MODE_SERVER, this.#codeMode]]);
    for (const server of config.servers.keys()) this.#backends.set(server, this.#createBackend(config, server));
    this.#pipeline = this.#buildPipeline();
    this.flows = new CallFlows({ maxPerAgent: MAX_WAITING_CALLS_PER_AGENT, maxQuestions: MAX_QUESTIONS_PER_CALL, answerTimeoutMs: () => this.#config.limits.answerTimeoutMs });
    this.#surface = {
      config: () => this.#config,
      backend: (server) => {
        const backend = this.#backends.get(server);
        return backend instanceof McpBackend ? backend : undefined;
      },
      audit: this.audit,
      secretForms: () => this.#currentSecretForms(),
      killSwitch: () => this.#killSwitch,
      limits: this.#limits,
    };
    this.subscriptions = new ResourceSubscriptions(this.#surface);
    this.#visible = visibleTools(config);
    this.#listedChanges();
    const pollMs = options.statePollMs ?? STATE_POLL_MS;
    this.#poll = setInterval(() => this.#pollState(), pollMs);
    this.#poll.unref();
  }

  get config(): WardenConfig {
    return this.#config;
  }

  /** The configured servers' backends (code mode, the broker's own, is not one of them). */
  get backends(): ReadonlyMap<string, ToolBackend> {
    return new Map([...this.#backends].filter(([server]) => server !== CODE_MODE_SERVER));
  }

  /** The kill switch as this broker enforces it now. */
  get killSwitch(): KillSwitchState {
    return this.#killSwitch;
  }

  #phase: 'new' | 'started' | 'closing' = 'new';

  /**
   * Whether calls can be served now: started and not stopping, the audit trail writable
   * and the state store readable. What /readyz answers; the kill switch does not count
   * (refusing is then the broker doing its job).
   */
  get ready(): boolean {
    if (this.#phase !== 'started' || !this.audit.healthy) return false;
    try {
      this.#state.dataVersion();
      return true;
    } catch {
      return false;
    }
  }

  /** Approvals waiting for a person now, all agents. Throws when the state store cannot be read. */
  pendingApprovals(): number {
    return this.#state.approvals.pendingCount(Date.now());
  }

  /**
   * Registers a listener for changes to what agents may see (a server quarantined, the
   * kill switch, a new config); it gets the agents whose list changed. Fronts turn it
   * into notifications/tools/list_changed. Returns the unsubscribe.
   */
  onToolsChanged(listener: (agents: ReadonlySet<string>) => void): () => void {
    this.#toolsListeners.add(listener);
    return () => this.#toolsListeners.delete(listener);
  }

  /**
   * Calls the listener each time a new config is in force (before its new servers have
   * started): fronts end what the new config no longer lets in. Returns the unsubscribe.
   */
  onConfigApplied(listener: () => void): () => void {
    this.#configListeners.add(listener);
    return () => this.#configListeners.delete(listener);
  }

  /**
   * Calls the listener when a server says its resources changed (resources/list_changed),
   * with the agents whose resource grants name that server; they list again and see only
   * what their grants allow.
   */
  onResourcesChanged(listener: (agents: ReadonlySet<string>) => void): () => void {
    this.#resourceListeners.add(listener);
    return () => this.#resourceListeners.delete(listener);
  }

  #resourcesChanged(server: string): void {
    const agents = new Set([...this.#config.agents.values()].filter((agent) => agent.resourceGrants.some((grant) => grant.server === server)).map((agent) => agent.name));
    if (agents.size === 0) return;
    for (const listener of this.#resourceListeners) listener(agents);
  }

  #createBackend(config: WardenConfig, server: string): ToolBackend {
    const manifest = config.servers.get(server);
    if (!manifest) throw new WardenError('WARDEN_INTERNAL', `no manifest for server ${server}`);
    if (manifest.transport.type === 'sandbox') {
      return new SandboxBackend({
        server,
        manifest,
        pool: this.#pools.tools,
        settings: () => this.#config.sandbox,
        logger: this.logger,
        audit: this.audit,
        recheckMs: config.pinning.recheckMs,
        onToolsChanged: () => this.#listedChanges(),
      });
    }
    if (manifest.transport.type === 'http-api') {
      return new HttpApiBackend({
        server,
        manifest,
        logger: this.logger,
        audit: this.audit,
        egress: () => this.#egress,
        ...(config.credentials.has(server) ? { credentialSources: config.credentials.get(server)! } : {}),
        recheckMs: config.pinning.recheckMs,
        onToolsChanged: () => this.#listedChanges(),
      });
    }
    const persistedQuarantine = this.#state.quarantined(manifest.name, manifest.digest);
    return new McpBackend({
      server,
      manifest,
      connectTimeoutMs: config.limits.connectTimeoutMs,
      logger: this.logger,
      audit: this.audit,
      ...(config.credentials.has(server) ? { credentialSources: config.credentials.get(server)! } : {}),
      breaker: config.limits.breaker,
      recheckMs: config.pinning.recheckMs,
      onToolsChanged: () => this.#listedChanges(),
      // Read when the server asks: a reload changes the roots without a restart.
      roots: () => this.#config.roots.get(server) ?? [],
      onResourceUpdated: (uri) => this.subscriptions.updated(server, uri),
      onResourcesChanged: () => this.#resourcesChanged(server),
      soleAgent: () => soleAgent(this.#config, server),
      subscriptions: () => this.subscriptions.urisOf(server),
      onQuarantine: (quarantine) => this.#recordQuarantine(server, manifest.name, manifest.digest, quarantine),
      ...(persistedQuarantine ? { persistedQuarantine } : {}),
      ...(this.#backoff ? { backoff: this.#backoff } : {}),
      ...(manifest.transport.type === 'http' ? { httpConnection: (tls: ServerTls) => this.#egressConnection(server, tls) } : {}),
      ...(config.serverTls.get(server)?.ca === undefined ? {} : { tlsCa: config.serverTls.get(server)!.ca! }),
    });
  }

  #createPool(name: 'tools' | 'code-mode', workers: number): SandboxPool {
    const { sandbox } = this.#config;
    return new SandboxPool({
      workers,
      warmIsolates: sandbox.warmIsolates,
      warmMemoryMb: sandbox.limits.memoryMb,
      workerMemoryMb: sandbox.workerMemoryMb,
      logger: this.logger,
      onWorkerEvent: (event) => writeOrLog(this.audit, { event: 'sandbox.worker', pool: name, state: event.state, reason: event.reason, exitCode: event.exitCode, signal: event.signal }, this.logger),
    });
  }

  /** What an agent's code may call: what its tools/list shows now in this session, less code mode itself. */
  #codeModeTools(agentName: string, oauth: OAuthSession | undefined): readonly CodeModeTool[] {
    return this.#sessionTools(agentName, oauth)
      .filter((tool) => tool.server !== CODE_MODE_SERVER)
      .map((tool) => ({ server: tool.server, tool: tool.tool, exposedName: tool.definition.name, definition: tool.definition }));
  }

  /**
   * A Streamable HTTP server's connection: a dispatcher of its own, built from the egress
   * policy in force (a new policy restarts the server) and the server's TLS settings; each
   * refusal audited.
   */
  #egressConnection(server: string, tls: ServerTls): HttpConnection {
    const dispatcher = createEgressAgent(this.#egress.policy, this.#resolve, tls);
    return { fetch: this.#egressFetch(server, dispatcher), close: () => closeDispatcher(dispatcher) };
  }

  #egressFetch(server: string, dispatcher: Dispatcher): FetchLike {
    return egressFetch({
      dispatcher: () => dispatcher,
      requestLimitMs: () => this.#config.limits.maxCallTimeoutMs + this.#config.limits.connectTimeoutMs,
      onRefused: (refusal) =>
        writeOrLog(this.audit, { event: 'egress.refused', server, reason: refusal.reason, origin: refusal.origin, ...(refusal.address === undefined ? {} : { address: refusal.address, range: refusal.range }), message: refusal.message }, this.logger),
    });
  }

  #buildPipeline(): CallPipeline {
    return buildCallPipeline({
      config: this.#config,
      backends: this.#backends,
      audit: this.audit,
      logger: this.logger,
      secretForms: () => this.#currentSecretForms(),
      identity: () => this.#identity,
      state: this.#state,
      liveConfig: () => this.#config,
      killSwitch: () => this.#killSwitch,
      limits: this.#limits,
      approvals: this.#approvals,
      writesInFlight: this.#writesInFlight,
      instanceId: this.instanceId,
    });
  }

  #recordQuarantine(server: string, name: string, digest: string, quarantine: { reason: string; diffDigest?: string; since: string }): void {
    try {
      this.#state.recordQuarantine(name, digest, { reason: quarantine.reason, diffDigest: quarantine.diffDigest ?? '', since: quarantine.since });
    } catch (error) {
      // The quarantine stands in this process; only its survival of a restart is lost.
      this.logger.error({ server, err: (error as Error).message }, 'cannot record the quarantine in the state store');
      writeOrLog(this.audit, { event: 'server.state', server, state: 'quarantine-not-persisted', reason: (error as Error).message }, this.logger);
    }
  }

  /** What each agent may see now: its grants, less quarantined servers, less what the kill switch withholds. */
  #currentTools(agentName: string): readonly VisibleTool[] {
    if (this.#killSwitch === 'on') return [];
    return (this.#visible.get(agentName) ?? []).filter(
      (tool) => this.#backends.get(tool.server)?.quarantine === undefined && (this.#killSwitch === 'off' || tool.access === 'read'),
    );
  }

  /**
   * What one session of the agent may see now: the tools a grant without scopes covers,
   * and those a scoped grant covers when the session's access token holds its scopes.
   */
  #sessionTools(agentName: string, oauth: OAuthSession | undefined): readonly VisibleTool[] {
    const agent = this.#config.agents.get(agentName);
    return this.#currentTools(agentName).filter((tool) => tool.open || (oauth !== undefined && agent !== undefined && findGrant(agent.grants, tool.definition.name, tool.access, oauth.scopes) !== undefined));
  }

  /** Tells the listeners which agents' lists differ from what they were last time. */
  #listedChanges(): void {
    const changed = new Set<string>();
    for (const agent of new Set([...this.#config.agents.keys(), ...this.#listed.keys()])) {
      const names = this.#config.agents.has(agent) ? this.#currentTools(agent).map((tool) => tool.definition.name).join('\n') : '';
      if (this.#listed.get(agent) !== names) {
        if (this.#listed.has(agent) || names !== '') changed.add(agent);
        this.#listed.set(agent, names);
      }
    }
    if (changed.size === 0) return;
    for (const listener of this.#toolsListeners) {
      try {
        listener(changed);
      } catch (error) {
        this.logger.warn({ err: (error as Error).message }, 'a tools-changed listener failed');
      }
    }
  }

  /**
   * Notices what other processes wrote to the state store (a decided approval, the kill
   * switch) without reading it every time: data_version only moves when they commit.
   * A store that cannot be read turns the kill switch on: the broker fails closed.
   */
  #pollState(): void {
    const now = Date.now();
    try {
      if (now - this.#lastPrune >= PRUNE_MS) {
        this.#lastPrune = now;
        this.#state.idempotency.prune(now, this.instanceId);
        this.#state.approvals.expire(now);
        this.#state.approvals.prune(now - APPROVAL_RETENTION_MS);
      }
      const version = this.#state.dataVersion();
      if (version === this.#dataVersion) return;
      this.#dataVersion = version;
      this.#setKillSwitch(this.#state.killSwitch.read());
      this.#auditDecisions();
      this.#approvals.check(now);
    } catch (error) {
      this.#dataVersion = -1;
      if (this.#killSwitch !== 'on') {
        this.logger.error({ err: (error as Error).message }, 'cannot read the state store; refusing every call until it can be read');
        this.#setKillSwitch({ state: 'on', changedBy: 'mcp-warden (state store unreadable)', changedAt: now });
      }
    }
  }

  /**
   * Decisions made out of band since the last look, including those made while no broker
   * ran (the store keeps how far the audit got); in-band ones are audited where they are made.
   */
  #decisionsSince = 0;
  readonly #decisionsAudited = new Set<string>();
  #auditDecisions(): void {
    const decided = this.#state.approvals.decidedSince(this.#decisionsSince, 1000);
    for (const record of decided) {
      if (record.kind !== 'out-of-band' || this.#decisionsAudited.has(record.id)) continue;
      writeOrLog(this.audit, { event: 'approval.decided', id: record.id, kind: record.kind, verdict: record.status === 'used' ? 'approved' : record.status, by: record.decidedBy ?? null, reason: record.reason ?? null, agent: record.agent, tool: record.tool, correlationId: record.correlationId, decidedAt: new Date(record.decidedAt ?? 0).toISOString() }, this.logger);
    }
    const last = decided.at(-1)?.decidedAt;
    if (last !== undefined && last > this.#decisionsSince) {
      // Decisions in the same millisecond as the newest may still arrive: remember only those.
      this.#decisionsAudited.clear();
      this.#decisionsSince = last;
      // The next broker starts after this millisecond. (A decision stamped with the same
      // millisecond but committed after this read would be missed across a restart.)
      this.#state.approvals.setAuditedUntil(last + 1);
    }
    for (const record of decided) if (record.decidedAt === this.#decisionsSince) this.#decisionsAudited.add(record.id);
  }

  #setKillSwitch(record: { state: KillSwitchState; changedBy: string; changedAt: number }): void {
    if (record.state === this.#killSwitch) return;
    const from = this.#killSwitch;
    this.#killSwitch = record.state;
    this.logger.warn({ from, to: record.state, by: record.changedBy }, 'kill switch changed');
    writeOrLog(this.audit, { event: 'killswitch.changed', from, to: record.state, by: record.changedBy, at: new Date(record.changedAt).toISOString() }, this.logger);
    this.#listedChanges();
  }

  /** Reads the state store now rather than at the next poll (tests, and right after start). */
  refreshState(): void {
    this.#dataVersion = -1;
    this.#pollState();
  }

  #identity: BrokerIdentity | undefined;
  #secretFormsKey = '';
  #secretForms: readonly string[] = [];
  /** Backends a reload replaced: the values they were given are still redacted. */
  readonly #retired = new Set<ToolBackend>();
  #generation = 0;

  /**
   * Every credential value ever injected, in every form, longest first. Recomputed only
   * when a backend has been given a new value (a backend never forgets one) or the set of
   * backends changed; retired backends' values stay, since a result may still carry them.
   */
  #currentSecretForms(): readonly string[] {
    const backends = [...this.#backends.values(), ...this.#retired];
    let count = 0;
    for (const backend of backends) count += backend.credentialValues.size;
    const key = `${this.#generation}:${count}`;
    if (key !== this.#secretFormsKey) {
      this.#secretForms = secretForms(backends.flatMap((backend) => [...backend.credentialValues]));
      this.#secretFormsKey = key;
    }
    return this.#secretForms;
  }

  /** Connects every downstream server; resolves when each has had its first attempt. */
  async start(): Promise<void> {
    await this.#loadIdentity(this.#config);
    const config = this.#config;
    writeOrLog(this.audit, { event: 'broker.start', config: config.file, configSha256: config.sha256, servers: [...config.servers.keys()], rejected: [...config.rejected.keys()], killSwitch: this.#killSwitch }, this.logger);
    if (this.#killSwitch !== 'off') this.logger.warn({ killSwitch: this.#killSwitch }, `the kill switch is ${this.#killSwitch} (mcp-warden killswitch off turns it off)`);
    this.#auditManifests(config, new Set(config.servers.keys()));
    try {
      this.#auditDecisions();
    } catch (error) {
      this.logger.error({ err: (error as Error).message }, 'cannot read the decisions made while the broker was stopped');
    }
    // Workers start now only where they will be used; otherwise on the first run.
    const needsTools = [...config.servers.values()].some((manifest) => manifest.transport.type === 'sandbox');
    const needsCodeMode = [...config.agents.keys()].some((agent) => this.#visible.get(agent)?.some((tool) => tool.definition.name === RUN_CODE));
    await Promise.all([
      ...[...this.#backends.values()].map((backend) => backend.start()),
      ...(needsTools ? [this.#pools.tools.start()] : []),
      ...(needsCodeMode ? [this.#pools.codeMode.start()] : []),
    ]);
    if (this.#phase === 'new') this.#phase = 'started';
  }

  async #loadIdentity(config: WardenConfig): Promise<void> {
    // Only loaded (and created on first use) when a server asks for identity tokens.
    if (config.identityTokens.size > 0 && !this.#identity) this.#identity = await loadBrokerIdentity(config.identity.keyFile, config.identity.issuer);
  }

  #auditManifests(config: WardenConfig, fresh: ReadonlySet<string>): void {
    for (const server of fresh) {
      const manifest = config.servers.get(server);
      if (manifest) writeOrLog(this.audit, { event: 'manifest.accepted', server, manifest: manifest.name, serial: manifest.serial, digest: manifest.digest, signers: manifest.signers, expiresAt: manifest.expiresAt }, this.logger);
      const quarantine = this.#backends.get(server)?.quarantine;
      if (quarantine?.trigger !== 'persisted') continue;
      const what = quarantine.reason === 'artifact-modified' ? 'what this signed release runs differed from its pins' : 'this signed release drifted';
      this.logger.warn({ server, since: quarantine.since, reason: quarantine.reason }, `server stays quarantined: ${what} in an earlier run; a new release with a higher serial clears it`);
      writeOrLog(this.audit, { event: 'server.quarantined', server, manifest: manifest?.name, reason: quarantine.reason, trigger: 'persisted', since: quarantine.since, diffDigest: quarantine.diffDigest }, this.logger);
    }
    for (const [server, rejection] of config.rejected) {
      this.logger.warn({ server, reason: rejection.reason, file: rejection.file }, `manifest refused: ${rejection.message}`);
      writeOrLog(this.audit, { event: 'manifest.rejected', server, file: rejection.file, reason: rejection.reason, message: rejection.message }, this.logger);
    }
  }

  /**
   * Swaps in a new config, already loaded and checked in full. Settings the running
   * process cannot change (state folder, audit file, HTTP listener, identity key, log
   * level) must be unchanged, or nothing changes: WARDEN_RELOAD_REFUSED. Servers whose
   * release, credentials and limits are unchanged keep running; the others are started
   * anew, and removed ones are stopped. The swap itself is synchronous: each call is
   * judged by the old config or the new one, never a mix.
   */
  async applyConfig(next: WardenConfig): Promise<{ readonly started: readonly string[]; readonly stopped: readonly string[] }> {
    const previous = this.#config;
    const fixed = restartOnlyChange(previous, next);
    if (fixed) throw new WardenError('WARDEN_RELOAD_REFUSED', `${next.file}: ${fixed} changed; that needs a restart, so the running broker keeps the previous config`, { file: next.file });
    await this.#loadIdentity(next);
    // A new egress policy gets a new dispatcher: no connection checked under the old rules is reused.
    let retiredEgress: Dispatcher | undefined;
    // Unchanged text keeps the dispatcher and the policy it was built from.
    if (next.egress.source !== previous.egress.source) {
      retiredEgress = this.#egress.dispatcher;
      this.#egress = { dispatcher: createEgressAgent(next.egress, this.#resolve), policy: next.egress };
    }
    const backends = new Map<string, ToolBackend>([[CODE_MODE_SERVER, this.#codeMode]]);
    const started: string[] = [];
    for (const server of next.servers.keys()) {
      const current = this.#backends.get(server);
      if (current && backendKey(previous, server) === backendKey(next, server)) {
        backends.set(server, current);
      } else {
        backends.set(server, this.#createBackend(next, server));
        started.push(server);
      }
    }
    const retired = [...this.#backends].filter(([server, backend]) => backends.get(server) !== backend);

    this.#config = next;
    this.#backends = backends;
    for (const [, backend] of retired) this.#retired.add(backend);
    this.#generation++;
    this.#pipeline = this.#buildPipeline();
    this.#visible = visibleTools(next);
    // The new config was checked read-only; its releases enter the history now it is in force.
    for (const [server, manifest] of next.servers) {
      try {
        const admission = this.#state.admit(manifest.name, manifest.serial, manifest.digest);
        if (admission !== 'accepted') this.logger.error({ server, admission }, 'a release in force was refused by the manifest history meanwhile (another broker shares the state store)');
      } catch (error) {
        this.logger.error({ server, err: (error as Error).message }, 'cannot record a release in the manifest history');
      }
    }

    const stopped = retired.map(([server]) => server);
    writeOrLog(this.audit, { event: 'config.reloaded', config: next.file, fromSha256: previous.sha256, toSha256: next.sha256, started, stopped }, this.logger);
    this.logger.info({ fromSha256: previous.sha256, toSha256: next.sha256, started, stopped }, 'config reloaded');
    this.#auditManifests(next, new Set(started));
    this.#listedChanges();
    for (const listener of this.#configListeners) {
      try {
        listener();
      } catch (error) {
        this.logger.warn({ err: (error as Error).message }, 'a config listener failed');
      }
    }
    await Promise.all([
      ...started.map((server) => backends.get(server)!.start()),
      ...retired.map(([, backend]) => backend.close()),
    ]);
    if (retiredEgress) void closeDispatcher(retiredEgress);
    // A server started anew may have connected (or been quarantined) meanwhile.
    this.#listedChanges();
    return { started, stopped };
  }

  /** What tools/list answers this agent: only granted tools of servers not quarantined, with manifest definitions. */
  listTools(agentName: string, options: { readonly oauth?: OAuthSession } = {}): ListToolsResult {
    const tools = this.#sessionTools(agentName, options.oauth);
    this.audit.write({ ...oauthFacts(options.oauth), event: 'tools/list', correlationId: randomUUID(), agent: agentName, decision: 'allow', outcome: 'ok', count: tools.length, ...(this.#killSwitch === 'off' ? {} : { killSwitch: this.#killSwitch }) });
    // Code mode describes this agent's own tools as a typed API.
    const definitions = tools.map((tool) => (tool.definition.name === RUN_CODE ? { ...tool.definition, description: describeCodeMode(this.#codeModeTools(agentName, options.oauth), this.#config.sandbox) } : tool.definition));
    // The manifest schema guarantees inputSchema.type === 'object', which the SDK's type wants.
    return { tools: definitions as unknown as ListToolsResult['tools'] };
  }

  /**
   * The audit trail the config names, signed with the broker's audit key; every
   * checkpoint is also kept in the state store, so a trail cut after it is noticed.
   */
  #openAuditTrail(config: WardenConfig): AuditTrail {
    const heads = this.#state.auditHeads;
    const audit = openAuditTrail(config.audit.file, {
      key: loadAuditKey(config.audit.keyFile),
      rotateBytes: config.audit.rotateBytes,
      checkpointEvery: config.audit.checkpointEvery,
      checkpointMs: config.audit.checkpointMs,
      fsyncMs: config.audit.fsyncMs,
      // Each chain's newest checkpoint is kept under the file it is written to.
      lastCheckpoint: (file) => heads.read(file),
      onCheckpoint: (head) => {
        try {
          heads.save(head.file, head);
        } catch (error) {
          this.logger.error({ err: (error as Error).message }, 'cannot record the audit checkpoint in the state store');
        }
      },
    });
    if (audit.file !== config.audit.file) {
      this.logger.warn({ configured: config.audit.file, file: audit.file }, 'another broker is writing the configured audit trail; this one writes its own chain beside it');
    }
    return audit;
  }

  /**
   * Resources, prompts and completion: reads, each judged by the agent's resource and
   * prompt grants, cleaned like tool results and audited (src/surface/). A refusal throws
   * a SurfaceRefusal, which the front answers as a protocol error.
   */
  readonly #surface: SurfaceDeps;

  listResources(request: SurfaceRequest): Promise<ListResourcesResult> {
    return listResources(this.#surface, request);
  }

  listResourceTemplates(request: SurfaceRequest): Promise<ListResourceTemplatesResult> {
    return listResourceTemplates(this.#surface, request);
  }

  readResource(request: SurfaceRequest, uri: unknown): Promise<ReadResourceResult> {
    return readResource(this.#surface, request, uri);
  }

  listPrompts(request: SurfaceRequest): Promise<ListPromptsResult> {
    return listPrompts(this.#surface, request);
  }

  getPrompt(request: SurfaceRequest, name: unknown, args: unknown): Promise<GetPromptResult> {
    return getPrompt(this.#surface, request, name, args);
  }

  complete(request: SurfaceRequest, params: CompleteRequestParams): Promise<CompleteResult> {
    return complete(this.#surface, request, params);
  }

  /** Runs one tools/call for a caller that cannot ask a user: never a question, never throws. */
  async callTool(agentName: string, toolName: string, args: Record<string, unknown>, options: Omit<CallOptions, 'userInput'> = {}): Promise<CallToolResult> {
    const answer = await this.call(agentName, toolName, args, options);
    // Without userInput nothing can ask (the approval stage falls back or refuses).
    if (answer.kind === 'ask-user') return this.#refusal('WARDEN_INTERNAL', 'The call was refused because it needs a user the broker cannot ask.', randomUUID());
    return answer.result;
  }

  /**
   * Runs one tools/call through the pipeline. Never throws: refusals become tool errors.
   * An in-band approval comes back as a question for the host's user, which only the
   * front can ask.
   */
  async call(agentName: string, toolName: string, args: Record<string, unknown>, options: CallOptions = {}): Promise<{ readonly kind: 'result'; readonly result: CallToolResult } | AskUser> {
    const correlationId = randomUUID();
    const outcome: CallOutcome = await this.#pipeline({
      correlationId,
      agentName,
      toolName,
      args,
      startedAt: performance.now(),
      facts: { ...oauthFacts(options.oauth), ...(options.parentCorrelationId === undefined ? {} : { parentCorrelationId: options.parentCorrelationId }) },
      callSecrets: [],
      sendGuards: [],
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.oauth ? { oauth: options.oauth } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      ...(options.onLog ? { onLog: options.onLog } : {}),
      ...(options.idempotencyKey === undefined ? {} : { idempotencyKey: options.idempotencyKey }),
      ...(options.userInput ? { userInput: options.userInput } : {}),
      ...(options.host ? { host: options.host } : {}),
    });
    if (outcome.kind !== 'refused') return outcome;
    return { kind: 'result', result: this.#refusal(outcome.code, outcome.message, correlationId, outcome.hints) };
  }

  #refusal(code: WardenErrorCode, message: string, correlationId: string, hints?: Refusal['hints']): CallToolResult {
    return {
      content: [{ type: 'text', text: `mcp-warden refused the call [${code}]: ${message}` }],
      isError: true,
      _meta: { [REFUSAL_META_KEY]: { code, correlationId, ...hints } },
    };
  }

  async close(): Promise<void> {
    this.#phase = 'closing';
    if (this.#poll) clearInterval(this.#poll);
    this.#poll = undefined;
    await Promise.all([...this.#backends.values()].map((backend) => backend.close()));
    await Promise.all([this.#pools.tools.close(), this.#pools.codeMode.close()]);
    await closeDispatcher(this.#egress.dispatcher);
    writeOrLog(this.audit, { event: 'broker.stop' }, this.logger);
    this.audit.close();
    this.#state.close();
  }
}

/** Per agent, the tools its grants make visible to a session holding every scope they name, in catalog order. */
function visibleTools(config: WardenConfig): Map<string, readonly VisibleTool[]> {
  const visible = new Map<string, readonly VisibleTool[]>();
  for (const [name, agent] of config.agents) {
    const tools = [...config.catalog.values()]
      .filter((tool) => grantable(agent.grants, tool.exposedName, tool.tool.access))
      .map((tool) => ({ server: tool.server, tool: tool.tool.name, access: tool.tool.access, definition: tool.definition, open: findGrant(agent.grants, tool.exposedName, tool.tool.access) !== undefined }));
    visible.set(name, Object.freeze(tools));
  }
  return visible;
}

const soleAgents = new WeakMap<WardenConfig, Map<string, string | undefined>>();

/** The one agent whose grants reach a server (its tools, prompts, resources or requests), or undefined when none or several do. */
function soleAgent(config: WardenConfig, server: string): string | undefined {
  let known = soleAgents.get(config);
  if (!known) soleAgents.set(config, (known = new Map()));
  if (known.has(server)) return known.get(server);
  const users = agentsReaching(config, server);
  const sole = users.length === 1 ? users[0]! : undefined;
  known.set(server, sole);
  return sole;
}

/** Who an access token named, for the audit records of its session; never the token. */
function oauthFacts(oauth: OAuthSession | undefined): Record<string, string> {
  if (!oauth) return {};
  return { oauthSubject: oauth.subject, ...(oauth.tokenId === undefined ? {} : { tokenId: oauth.tokenId }) };
}

/** Lets requests in flight finish (up to a few seconds), then drops what is left. */
async function closeDispatcher(dispatcher: Dispatcher): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const grace = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => resolve('late'), 5_000);
    timer.unref();
  });
  const closed = await Promise.race([dispatcher.close().then(() => 'closed' as const, () => 'closed' as const), grace]);
  clearTimeout(timer);
  if (closed === 'late') await dispatcher.destroy().catch(() => undefined);
}

/** Everything a running backend was built from: when it differs, the server is started anew. */
function backendKey(config: WardenConfig, server: string): string {
  const manifest = config.servers.get(server);
  return JSON.stringify({
    // A Streamable HTTP server reconnects under a new egress policy.
    egress: manifest?.transport.type === 'http' ? config.egress.source : undefined,
    tlsCa: config.serverTls.get(server)?.ca,
    digest: manifest?.digest,
    credentials: [...(config.credentials.get(server) ?? new Map())],
    connectTimeoutMs: config.limits.connectTimeoutMs,
    breaker: config.limits.breaker,
    recheckMs: config.pinning.recheckMs,
  });
}

/** The first setting a running broker cannot change, or undefined. */
function restartOnlyChange(before: WardenConfig, after: WardenConfig): string | undefined {
  const fixed: readonly [string, (config: WardenConfig) => unknown][] = [
    ['state.dir', (config) => config.state.dir],
    // The trail is opened once, with its key, rotation, checkpoint and flush settings.
    ['audit', (config) => config.audit],
    ['http', (config) => config.http],
    ['identity', (config) => config.identity],
    ['log.level', (config) => config.log.level],
    ['metrics', (config) => config.metrics],
    // The worker pools are made once.
    ['sandbox.workers', (config) => config.sandbox.workers],
    ['sandbox.codeMode.workers', (config) => config.sandbox.codeMode.workers],
    ['sandbox.warmIsolates', (config) => config.sandbox.warmIsolates],
    ['sandbox.workerMemoryMb', (config) => config.sandbox.workerMemoryMb],
  ];
  for (const [name, read] of fixed) {
    if (JSON.stringify(read(before)) !== JSON.stringify(read(after))) return name;
  }
  return undefined;
}
