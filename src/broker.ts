import { randomUUID } from 'node:crypto';
import type { CallToolResult, ListToolsResult } from '@modelcontextprotocol/server';
import { memoryAuditTrail, openAuditTrail, writeOrLog, type AuditTrail } from './audit/trail.ts';
import { McpBackend } from './backends/mcp.ts';
import type { ExposedDefinition } from './catalog/build.ts';
import type { WardenConfig } from './config/types.ts';
import { createLogger, type Logger } from './log.ts';
import { buildCallPipeline, type CallPipeline } from './pipeline/pipeline.ts';
import type { Progress } from './pipeline/types.ts';
import { findGrant } from './policy/grants.ts';
import { secretForms } from './guard/sanitize-output.ts';
import { loadBrokerIdentity, type BrokerIdentity } from './identity/broker-identity.ts';
import { openStateStore, type StateStore } from './state/store.ts';

export interface BrokerOptions {
  readonly logger?: Logger;
  /** Defaults to the audit file the config names. */
  readonly audit?: AuditTrail | 'memory';
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
}

/** Prefix of the `_meta` key that carries a refusal's code to the agent's host. */
export const REFUSAL_META_KEY = 'mcp-warden/refusal';

/**
 * The broker: the config, one backend per downstream server, and the call pipeline. The
 * fronts (stdio, HTTP) authenticate an agent and then only ever call listTools/callTool.
 */
export class Broker {
  readonly config: WardenConfig;
  readonly logger: Logger;
  readonly audit: AuditTrail;
  readonly backends: ReadonlyMap<string, McpBackend>;
  readonly #pipeline: CallPipeline;
  /** The state store: quarantines are recorded here and outlive the process. */
  readonly #state: StateStore;
  /** Per agent, the definitions its grants make visible; computed once, since config is frozen. */
  readonly #visible = new Map<string, readonly { readonly server: string; readonly definition: ExposedDefinition }[]>();

  constructor(config: WardenConfig, options: BrokerOptions = {}) {
    this.config = config;
    this.logger = options.logger ?? createLogger(config.log.level);
    this.audit = options.audit === 'memory' ? memoryAuditTrail() : (options.audit ?? openAuditTrail(config.audit.file));
    this.#state = openStateStore(config.state.dir, 'read-write');
    const backends = new Map<string, McpBackend>();
    for (const [server, manifest] of config.servers) {
      const persistedQuarantine = this.#state.quarantined(manifest.name, manifest.digest);
      backends.set(
        server,
        new McpBackend({
          server,
          manifest,
          connectTimeoutMs: config.limits.connectTimeoutMs,
          logger: this.logger,
          audit: this.audit,
          ...(config.credentials.has(server) ? { credentialSources: config.credentials.get(server)! } : {}),
          breaker: config.limits.breaker,
          recheckMs: config.pinning.recheckMs,
          onToolsChanged: () => this.#toolsChanged(),
          onQuarantine: (quarantine) => this.#recordQuarantine(server, manifest.name, manifest.digest, quarantine),
          ...(persistedQuarantine ? { persistedQuarantine } : {}),
          ...(options.backoff ? { backoff: options.backoff } : {}),
        }),
      );
    }
    this.backends = backends;
    this.#pipeline = buildCallPipeline({
      config,
      backends,
      audit: this.audit,
      logger: this.logger,
      secretForms: () => this.#currentSecretForms(),
      identity: () => this.#identity,
    });
    for (const [name, agent] of config.agents) {
      const visible = [...config.catalog.values()]
        .filter((tool) => findGrant(agent.grants, tool.exposedName, tool.tool.access) !== undefined)
        .map((tool) => ({ server: tool.server, definition: tool.definition }));
      this.#visible.set(name, Object.freeze(visible));
    }
  }

  readonly #toolsListeners = new Set<() => void>();

  /**
   * Registers a listener for changes to what agents may see (a server quarantined).
   * Fronts turn it into notifications/tools/list_changed. Returns the unsubscribe.
   */
  onToolsChanged(listener: () => void): () => void {
    this.#toolsListeners.add(listener);
    return () => this.#toolsListeners.delete(listener);
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

  #toolsChanged(): void {
    for (const listener of this.#toolsListeners) {
      try {
        listener();
      } catch (error) {
        this.logger.warn({ err: (error as Error).message }, 'a tools-changed listener failed');
      }
    }
  }

  #identity: BrokerIdentity | undefined;
  #secretFormsKey = -1;
  #secretForms: readonly string[] = [];

  /** Recomputed only when a backend has been given a new credential value (they are never removed). */
  #currentSecretForms(): readonly string[] {
    let count = 0;
    for (const backend of this.backends.values()) count += backend.credentialValues.size;
    if (count !== this.#secretFormsKey) {
      const values = [...this.backends.values()].flatMap((backend) => [...backend.credentialValues]);
      this.#secretForms = secretForms(values);
      this.#secretFormsKey = count;
    }
    return this.#secretForms;
  }

  /** Connects every downstream server; resolves when each has had its first attempt. */
  async start(): Promise<void> {
    // Only loaded (and created on first use) when a server asks for identity tokens.
    if (this.config.identityTokens.size > 0) this.#identity = await loadBrokerIdentity(this.config.identity.keyFile, this.config.identity.issuer);
    writeOrLog(this.audit, { event: 'broker.start', config: this.config.file, servers: [...this.backends.keys()], rejected: [...this.config.rejected.keys()] }, this.logger);
    for (const [server, manifest] of this.config.servers) {
      writeOrLog(this.audit, { event: 'manifest.accepted', server, manifest: manifest.name, serial: manifest.serial, digest: manifest.digest, signers: manifest.signers, expiresAt: manifest.expiresAt }, this.logger);
    }
    for (const [server, backend] of this.backends) {
      const quarantine = backend.quarantine;
      if (quarantine?.trigger !== 'persisted') continue;
      this.logger.warn({ server, since: quarantine.since }, 'server stays quarantined: this signed release drifted in an earlier run; a new release with a higher serial clears it');
      writeOrLog(this.audit, { event: 'server.quarantined', server, manifest: this.config.servers.get(server)?.name, reason: 'drift', trigger: 'persisted', since: quarantine.since, diffDigest: quarantine.diffDigest }, this.logger);
    }
    for (const [server, rejection] of this.config.rejected) {
      this.logger.warn({ server, reason: rejection.reason, file: rejection.file }, `manifest refused: ${rejection.message}`);
      writeOrLog(this.audit, { event: 'manifest.rejected', server, file: rejection.file, reason: rejection.reason, message: rejection.message }, this.logger);
    }
    await Promise.all([...this.backends.values()].map((backend) => backend.start()));
  }

  /** What tools/list answers this agent: only granted tools of servers not quarantined, with manifest definitions. */
  listTools(agentName: string): ListToolsResult {
    const tools = (this.#visible.get(agentName) ?? []).filter((tool) => this.backends.get(tool.server)?.quarantine === undefined);
    this.audit.write({ event: 'tools/list', correlationId: randomUUID(), agent: agentName, decision: 'allow', outcome: 'ok', count: tools.length });
    // The manifest schema guarantees inputSchema.type === 'object', which the SDK's type wants.
    return { tools: tools.map((tool) => tool.definition) as unknown as ListToolsResult['tools'] };
  }

  /** Runs one tools/call through the pipeline. Never throws: refusals become tool errors. */
  async callTool(agentName: string, toolName: string, args: Record<string, unknown>, signal?: AbortSignal, onProgress?: (progress: Progress) => void): Promise<CallToolResult> {
    const correlationId = randomUUID();
    const outcome = await this.#pipeline({
      correlationId,
      agentName,
      toolName,
      args,
      startedAt: performance.now(),
      facts: {},
      callSecrets: [],
      ...(signal ? { signal } : {}),
      ...(onProgress ? { onProgress } : {}),
    });
    if (outcome.kind === 'result') return outcome.result;
    return {
      content: [{ type: 'text', text: `mcp-warden refused the call [${outcome.code}]: ${outcome.message}` }],
      isError: true,
      _meta: { [REFUSAL_META_KEY]: { code: outcome.code, correlationId } },
    };
  }

  async close(): Promise<void> {
    await Promise.all([...this.backends.values()].map((backend) => backend.close()));
    writeOrLog(this.audit, { event: 'broker.stop' }, this.logger);
    this.audit.close();
    this.#state.close();
  }
}
