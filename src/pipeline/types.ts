import type { CallToolResult, LoggingLevel } from '@modelcontextprotocol/server';
import type { LimitStore } from '../guard/rate-limits.ts';
import type { ApprovalWaiter } from '../policy/approval-waiter.ts';
import type { StateStore } from '../state/store.ts';
import type { KillSwitchState } from '../state/switches.ts';
import type { AuditTrail } from '../audit/trail.ts';
import type { BrokerIdentity } from '../identity/broker-identity.ts';
import type { ToolBackend } from '../backends/types.ts';
import type { CatalogTool } from '../catalog/build.ts';
import type { AgentPolicy, WardenConfig } from '../config/types.ts';
import type { WardenErrorCode } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Grant } from '../policy/grants.ts';
import type { HostChannel } from '../surface/server-requests.ts';

/** The `_meta` key that carries a refusal's code (and hints) to the agent's host. */
export const REFUSAL_META_KEY = 'mcp-warden/refusal';

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
  /** What the agent's OAuth access token established, set by the front; absent for a static token and stdio. */
  readonly oauth?: OAuthSession;
  agent?: AgentPolicy;
  tool?: CatalogTool;
  grant?: Grant;
  /** Facts for the audit record only; nothing here reaches the agent. */
  readonly facts: Record<string, unknown>;
  /** Forwards the downstream's progress to the agent, when the agent asked for progress. */
  onProgress?: (progress: Progress) => void;
  /** Forwards the downstream's log messages during the call to the agent (its session's level applies). */
  onLog?: (message: LogMessage) => void;
  /** Values minted for this call alone (an identity token) that must not come back to the agent. */
  readonly callSecrets?: string[];
  /** SHA-256 of the canonical arguments, computed once by the record stage (undefined: they cannot be serialised). */
  argsSha256?: string;
  /** The idempotency key the client put in the request's _meta, unchecked. */
  readonly idempotencyKey?: unknown;
  /** What the front knows of the host's user: whether it can be asked, and its answers. */
  readonly userInput?: UserInput;
  /** Where a server's sampling or elicitation request during this call goes (the agent's host), when the front can reach it. */
  readonly host?: HostChannel;
  /**
   * Checks that run at the moment the request is sent to the tool, after every local
   * refusal: one may veto the call (an approval already used) or commit to it (the
   * approval is used, the write is marked in flight). Stages add them; dispatch runs them.
   */
  readonly sendGuards?: (() => Refusal | undefined)[];
}

/**
 * A session authenticated with an OAuth access token: its scopes (grants that name scopes
 * apply only when it holds them all), and for the audit trail the subject it was mapped
 * from and the token's id (jti). Never the token itself.
 */
export interface OAuthSession {
  readonly scopes: ReadonlySet<string>;
  readonly subject: string;
  readonly tokenId?: string;
}

/** In-band input (elicitation): can the host ask its user, and what came back on a retry. */
export interface UserInput {
  readonly canAsk: boolean;
  /** The answers a retried request carries, from the client: untrusted. */
  readonly responses?: Readonly<Record<string, unknown>>;
  /** The request state the broker minted in an earlier round, verified by the front. */
  readonly state?: unknown;
}

export interface Progress {
  readonly progress: number;
  readonly total?: number;
  readonly message?: string;
}

/** MCP's log levels (RFC 5424 severities), lowest first: a level's index is its severity. */
export const LOG_SEVERITY: ReadonlyMap<string, number> = new Map(['debug', 'info', 'notice', 'warning', 'error', 'critical', 'alert', 'emergency'].map((level, index) => [level, index]));

/** A downstream's notifications/message, as the agent gets it. */
export interface LogMessage {
  readonly level: LoggingLevel;
  readonly data: unknown;
  readonly logger?: string;
}

export interface Refusal {
  readonly kind: 'refused';
  readonly code: WardenErrorCode;
  /** Shown to the agent: what was refused and what it can do instead. No secrets, paths or stacks. */
  readonly message: string;
  /** For the agent's host, beside the code: when to retry, which approval it waits on. */
  readonly hints?: { readonly retryAfterMs?: number; readonly approvalId?: string; readonly missingScopes?: readonly string[] };
}

export type CallOutcome =
  | { readonly kind: 'result'; readonly result: CallToolResult }
  /** The host must ask its user first (in-band approval); the client retries with the answer. */
  | AskUser
  | Refusal;

/**
 * A yes/no question for the host's user. The front sends it as an elicitation, with
 * `state` sealed so the retry that carries the answer can be tied to this question.
 */
export interface AskUser {
  readonly kind: 'ask-user';
  readonly message: string;
  readonly state: { readonly approvalId: string };
}

/** The key of the answer in the retried request's input responses. */
export const APPROVAL_INPUT_KEY = 'approval';

export type Next = () => Promise<CallOutcome>;

/** A stage either refuses (returns a Refusal), or calls next() and may look at what comes back. */
export type Stage = (ctx: CallContext, next: Next) => Promise<CallOutcome>;

export interface PipelineDeps {
  readonly config: WardenConfig;
  readonly backends: ReadonlyMap<string, ToolBackend>;
  readonly audit: AuditTrail;
  readonly logger: Logger;
  /** Every form of every credential value the broker has injected, longest first. */
  readonly secretForms: () => readonly string[];
  /** The broker's identity-token signer, once loaded (only when a server asks for tokens). */
  readonly identity: () => BrokerIdentity | undefined;
  /** Approvals, idempotency records and the kill switch live here. */
  readonly state: StateStore;
  /** The config in force now, which a reload may have replaced since this call began. */
  readonly liveConfig: () => WardenConfig;
  /** The kill switch as last read from the state store ('on' when it cannot be read). */
  readonly killSwitch: () => KillSwitchState;
  readonly limits: LimitStore;
  readonly approvals: ApprovalWaiter;
  /** Writes in flight in this process, by idempotency record key; shared across config reloads. */
  readonly writesInFlight: Map<string, { readonly argsDigest: string; readonly outcome: Promise<CallOutcome> }>;
  /** Identifies this broker process in idempotency records. */
  readonly instanceId: string;
}

export type StageFactory = (deps: PipelineDeps) => Stage;

export function refuse(code: WardenErrorCode, message: string, hints?: Refusal['hints']): Refusal {
  return hints ? { kind: 'refused', code, message, hints } : { kind: 'refused', code, message };
}
