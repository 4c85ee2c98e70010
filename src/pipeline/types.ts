import type { CallToolResult } from '@modelcontextprotocol/server';
import type { AuditTrail } from '../audit/trail.ts';
import type { BrokerIdentity } from '../identity/broker-identity.ts';
import type { McpBackend } from '../backends/mcp.ts';
import type { CatalogTool } from '../catalog/build.ts';
import type { AgentPolicy, WardenConfig } from '../config/types.ts';
import type { WardenErrorCode } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Grant } from '../policy/grants.ts';

/** One tools/call as it passes the stages. Stages fill in what they establish. */
export interface CallContext {
  readonly correlationId: string;
  /** The agent's name as established by the front (stdio flag or HTTP token), never by the agent's words. */
  readonly agentName: string;
  readonly toolName: string;
  readonly args: Readonly<Record<string, unknown>>;
  readonly startedAt: number;
  /** Aborted when the agent cancels the call or disconnects. */
  readonly signal?: AbortSignal;
  agent?: AgentPolicy;
  tool?: CatalogTool;
  grant?: Grant;
  /** Facts for the audit record only; nothing here reaches the agent. */
  readonly facts: Record<string, unknown>;
  /** Forwards the downstream's progress to the agent, when the agent asked for progress. */
  onProgress?: (progress: Progress) => void;
  /** Values minted for this call alone (an identity token) that must not come back to the agent. */
  readonly callSecrets?: string[];
}

export interface Progress {
  readonly progress: number;
  readonly total?: number;
  readonly message?: string;
}

export interface Refusal {
  readonly kind: 'refused';
  readonly code: WardenErrorCode;
  /** Shown to the agent: what was refused and what it can do instead. No secrets, paths or stacks. */
  readonly message: string;
}

export type CallOutcome = { readonly kind: 'result'; readonly result: CallToolResult } | Refusal;

export type Next = () => Promise<CallOutcome>;

/** A stage either refuses (returns a Refusal), or calls next() and may look at what comes back. */
export type Stage = (ctx: CallContext, next: Next) => Promise<CallOutcome>;

export interface PipelineDeps {
  readonly config: WardenConfig;
  readonly backends: ReadonlyMap<string, McpBackend>;
  readonly audit: AuditTrail;
  readonly logger: Logger;
  /** Every form of every credential value the broker has injected, longest first. */
  readonly secretForms: () => readonly string[];
  /** The broker's identity-token signer, once loaded (only when a server asks for tokens). */
  readonly identity: () => BrokerIdentity | undefined;
}

export type StageFactory = (deps: PipelineDeps) => Stage;

export function refuse(code: WardenErrorCode, message: string): Refusal {
  return { kind: 'refused', code, message };
}
