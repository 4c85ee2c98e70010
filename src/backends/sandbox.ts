import { basename } from 'node:path';
import type { CallToolResult } from '@modelcontextprotocol/client';
import { writeOrLog, type AuditTrail } from '../audit/trail.ts';
import type { SandboxSettings } from '../config/types.ts';
import { WardenError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Manifest, ManifestTool, SandboxTransport } from '../manifest/types.ts';
import { parseOutput, runFailure, runLimits } from '../sandbox/failures.ts';
import type { SandboxPool } from '../sandbox/pool.ts';
import { ExpiryWatch } from './expiry-watch.ts';
import { jsonResult } from './json-result.ts';
import type { BackendState, Quarantine, ToolBackend, ToolCall } from './types.ts';

export interface SandboxBackendOptions {
  readonly server: string;
  readonly manifest: Manifest;
  /** The code tools' worker pool (started on first use). */
  readonly pool: SandboxPool;
  /** The sandbox settings in force now (a reload may change the limits). */
  readonly settings: () => SandboxSettings;
  readonly logger: Logger;
  readonly audit: AuditTrail;
  readonly recheckMs?: number;
  readonly onToolsChanged?: () => void;
}

/**
 * Code tools: each call runs the tool's export of the signed module in a fresh isolate of
 * a sandbox worker, with the call's arguments as its input. The module text is the one
 * read and checked against its pinned SHA-256 when the manifest was loaded. The result is
 * sanitised by the pipeline like any tool's; a guest's own error is a tool error, a limit
 * or a crash a coded refusal.
 */
export class SandboxBackend implements ToolBackend {
  readonly server: string;
  readonly credentialValues: ReadonlySet<string> = new Set();
  readonly #options: SandboxBackendOptions;
  readonly #source: string;
  readonly #filename: string;
  readonly #expiry: ExpiryWatch;
  /** The manifest's tools by name, for their sandbox limits. */
  readonly #tools: ReadonlyMap<string, ManifestTool>;
  #state: BackendState = 'starting';

  constructor(options: SandboxBackendOptions) {
    const transport = options.manifest.transport;
    if (transport.type !== 'sandbox' || options.manifest.moduleSource === undefined) {
      throw new WardenError('WARDEN_INTERNAL', `server "${options.server}" is not a code-tool server with a checked module`);
    }
    this.server = options.server;
    this.#options = options;
    this.#source = options.manifest.moduleSource;
    // Guest stack traces name the module by its file name only: no broker path reaches an agent.
    this.#filename = `sandbox:///${options.server}/${basename((transport as SandboxTransport).module)}`;
    this.#expiry = new ExpiryWatch(options);
    this.#tools = new Map(options.manifest.tools.map((tool) => [tool.name, tool]));
  }

  get state(): BackendState {
    return this.#state;
  }

  get quarantine(): Quarantine | undefined {
    return this.#expiry.quarantine;
  }

  async start(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#expiry.start();
    this.#state = 'ready';
    const { manifest } = this.#options;
    writeOrLog(this.#options.audit, { event: 'server.state', server: this.server, state: 'ready', kind: 'sandbox', manifest: manifest.name, serial: manifest.serial, moduleSha256: (manifest.transport as SandboxTransport).sha256 }, this.#options.logger);
  }

  async close(): Promise<void> {
    this.#state = 'closed';
    this.#expiry.stop();
  }

  async callTool(call: ToolCall): Promise<CallToolResult> {
    this.#expiry.check();
    if (this.#expiry.quarantine) {
      throw new WardenError('WARDEN_SERVER_QUARANTINED', `server "${this.server}" is quarantined: its signed manifest expired; the publisher must sign a new release`, { server: this.server, reason: 'expired', notSent: true });
    }
    if (this.#state === 'closed') throw new WardenError('WARDEN_SERVER_UNAVAILABLE', `server "${this.server}" is stopped`, { server: this.server, notSent: true });
    const tool = this.#tools.get(call.tool);
    if (!tool) throw new WardenError('WARDEN_INTERNAL', `server "${this.server}" has no tool "${call.tool}"`, { server: this.server, notSent: true });
    const settings = this.#options.settings();
    const limits = runLimits(settings.limits, settings.maxLimits, tool.sandbox, call.timeoutMs);
    const input = JSON.stringify(call.args);
    const inputBytes = Buffer.byteLength(input);
    if (inputBytes > limits.inputBytes) {
      throw new WardenError('WARDEN_SANDBOX_LIMIT', `The arguments are ${inputBytes} bytes as JSON; this code tool takes at most ${limits.inputBytes} (sandbox limit inputBytes).`, { reason: 'input', notSent: true });
    }
    call.onSend?.();
    const outcome = await this.#options.pool.run(
      { kind: 'module', source: this.#source, filename: this.#filename, exportName: call.tool, input, limits },
      call.signal ? { signal: call.signal } : {},
    );
    if (call.facts) call.facts['sandbox'] = { cpuMs: Math.round(outcome.cpuMs * 1000) / 1000, ...(outcome.ok ? {} : { reason: outcome.reason }) };
    const what = `Code tool ${call.tool}`;
    if (!outcome.ok) {
      // The guest's own error is the tool's answer, as a downstream server's error would be.
      if (outcome.reason === 'thrown') return { content: [{ type: 'text', text: `${what} failed: ${outcome.message ?? 'it threw'}` }], isError: true };
      throw runFailure(outcome, limits, what, call.signal?.aborted === true);
    }
    const value = parseOutput(outcome.output, what);
    return typeof value === 'string' ? { content: [{ type: 'text', text: value }] } : jsonResult(value, outcome.output);
  }
}
