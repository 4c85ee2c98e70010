import type { CallToolResult, LoggingLevel } from '@modelcontextprotocol/client';
import type { OAuthSession } from '../pipeline/types.ts';

export type BackendState = 'starting' | 'ready' | 'down' | 'closed';

/** Why a server's tools are withdrawn from every agent. */
export interface Quarantine {
  /** artifact-modified: what a stdio server would run differs from its pins (it is not started). */
  readonly reason: 'drift' | 'expired' | 'artifact-modified';
  readonly since: string;
  /** What set it off: the connect, a tools/list_changed, or the periodic recheck. */
  readonly trigger: PinTrigger;
  readonly report?: import('../manifest/pin.ts').PinReport;
  /** artifact-modified: the pins that did not hold. */
  readonly artifacts?: readonly import('../manifest/artifacts.ts').ArtifactMismatch[];
  readonly diffDigest?: string;
}

/** persisted: raised by an earlier run against this same signed release; spawn: the check before starting a stdio server. */
export type PinTrigger = 'connect' | 'list_changed' | 'interval' | 'persisted' | 'spawn';

/** One tools/call as the dispatch stage hands it to a backend. */
export interface ToolCall {
  /** The tool's name on its server (not the exposed name). */
  readonly tool: string;
  readonly args: Record<string, unknown>;
  readonly timeoutMs: number;
  /** Aborted when the agent cancels the call. */
  readonly signal?: AbortSignal;
  /** The request's _meta for the server (the broker's identity token). */
  readonly meta?: Record<string, unknown>;
  readonly onProgress?: (progress: { progress: number; total?: number; message?: string }) => void;
  /** A log message the server sends during this call (notifications/message), uncleaned. */
  readonly onLog?: (message: { readonly level: LoggingLevel; readonly data: unknown; readonly logger?: string }) => void;
  /**
   * Relays a request the server sends back during this call (sampling, elicitation) to the
   * agent's host, under policy; throws a WardenError to refuse it. The call's timeout does
   * not run while it waits.
   */
  readonly ask?: (method: string, params: unknown, signal: AbortSignal) => Promise<Record<string, unknown>>;
  /** Runs just before the request is sent, after every local refusal; may throw to stop it. */
  readonly onSend?: () => void;
  /** For audit records the backend writes about this call. */
  readonly correlationId?: string;
  readonly agent?: string;
  /** The session's OAuth access token facts (its scopes), for the calls code mode makes on its behalf. */
  readonly oauth?: OAuthSession;
  /** The call's audit facts, for what only the backend knows (CPU time of a sandboxed run). */
  readonly facts?: Record<string, unknown>;
}

/**
 * What a call is dispatched to: a downstream MCP server (McpBackend), an HTTP API the
 * broker calls itself (HttpApiBackend), a code tool (SandboxBackend) or code mode
 * (CodeModeBackend). Backends throw nothing but WardenError.
 */
export interface ToolBackend {
  readonly server: string;
  readonly state: BackendState;
  /** Set while the server's tools are withdrawn (drift, expired manifest). */
  readonly quarantine: Quarantine | undefined;
  /** Credential values this backend has been given (current and earlier), for output redaction. */
  readonly credentialValues: ReadonlySet<string>;
  /** Starts the backend. The promise settles after the first attempt, whatever its result. */
  start(): Promise<void>;
  close(): Promise<void>;
  callTool(call: ToolCall): Promise<CallToolResult>;
}
