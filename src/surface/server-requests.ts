import { randomUUID } from 'node:crypto';
import type { AuditTrail } from '../audit/trail.ts';
import type { AgentPolicy, WardenConfig } from '../config/types.ts';
import { WardenError } from '../errors.ts';
import { checkElicitationAnswer, checkSamplingAnswer, cleanElicitationRequest, cleanSamplingRequest, type Checked } from '../guard/sanitize-server-request.ts';
import type { Redactions } from '../guard/sanitize-output.ts';
import { serverRequestAllowed, type ServerRequestKind } from '../policy/surface-grants.ts';
import type { OAuthSession } from '../pipeline/types.ts';
import type { KillSwitchState } from '../state/switches.ts';
import { formsFor } from '../pipeline/stages/sanitize-output.ts';

/**
 * Requests a downstream server sends back to the client in the middle of a call:
 * sampling/createMessage and elicitation/create. One reaches the agent's host only when a
 * grant of this agent lets this server ask it (default deny), the host can answer that
 * kind, and the request is well formed and within the size cap; it is cleaned before the
 * host sees it, the answer is checked before the server does, and each request gets one
 * audit record tied to the call's correlation id. Anything else is refused: the server gets
 * an error and the host sees nothing.
 */

/** The agent's side of a call in flight: what its host can answer, and how to ask it. Set by the front. */
export interface HostChannel {
  can(kind: ServerRequestKind): boolean;
  /** Resolves with the host's raw answer (untrusted); rejects when the host or the agent gives up. */
  ask(request: { readonly method: string; readonly params: Record<string, unknown> }, signal: AbortSignal): Promise<unknown>;
}

export interface RelayDeps {
  readonly config: WardenConfig;
  readonly audit: AuditTrail;
  secretForms(): readonly string[];
}

/** The call a request belongs to, as the dispatch stage knows it. */
export interface RelayCall {
  readonly correlationId: string;
  readonly agentName: string;
  readonly agent?: AgentPolicy;
  readonly server: string;
  readonly oauth?: OAuthSession;
  readonly host?: HostChannel;
  /** The kill switch now: 'on' refuses every request. */
  readonly killSwitch?: KillSwitchState;
  /** Values minted for this call (an identity token), cleaned out like credentials. */
  readonly callSecrets?: readonly string[];
}

const KINDS: Readonly<Record<string, ServerRequestKind>> = { 'sampling/createMessage': 'sampling', 'elicitation/create': 'elicitation' };

export async function relayServerRequest(deps: RelayDeps, call: RelayCall, method: string, params: unknown, signal: AbortSignal): Promise<Record<string, unknown>> {
  const { config, audit } = deps;
  const startedAt = performance.now();
  const facts: Record<string, unknown> = {};
  const record = (outcome: 'ok' | 'refused' | 'failed', reason: string | null, redactions?: Redactions) =>
    audit.write({
      event: 'server.request',
      correlationId: call.correlationId,
      requestId: randomUUID(),
      agent: call.agentName,
      server: call.server,
      method,
      decision: outcome === 'refused' ? 'deny' : 'allow',
      outcome,
      reason,
      durationMs: Math.round(performance.now() - startedAt),
      ...facts,
      ...(redactions && redactions.credential + redactions.detected + redactions.invisible + redactions.truncatedBytes > 0 ? { redactions } : {}),
    });
  const refuse = (reason: string, message: string): never => {
    record('refused', reason);
    throw new WardenError('WARDEN_SERVER_REQUEST_DENIED', message);
  };

  const kind = KINDS[method];
  if (!kind) return refuse('unsupported-method', `${method} is not relayed to the host`);
  if (call.killSwitch === 'on') return refuse('kill-switch', 'the kill switch is on');
  if (!call.agent || !serverRequestAllowed(call.agent.serverRequestGrants, call.server, kind, call.oauth?.scopes)) {
    return refuse('no-grant', `no grant lets server "${call.server}" ask agent "${call.agentName}" for ${kind}`);
  }
  if (!call.host?.can(kind)) return refuse('host-cannot-answer', `the agent's host did not declare ${kind} support`);
  const requestBytes = jsonBytes(params);
  facts['requestBytes'] = requestBytes;
  if (requestBytes > config.limits.maxServerRequestBytes) return refuse('too-large', `the ${kind} request is ${requestBytes} bytes, over limits.maxServerRequestBytes (${config.limits.maxServerRequestBytes})`);
  const options = { secretForms: formsFor(deps.secretForms(), call.callSecrets), maxTextBytes: config.limits.maxServerRequestBytes };
  const cleaned: Checked<object> = kind === 'sampling' ? await cleanSamplingRequest(params, options) : await cleanElicitationRequest(params, options);
  if (!cleaned.ok) return refuse('invalid', cleaned.problem);

  let raw: unknown;
  const limit = AbortSignal.timeout(config.limits.answerTimeoutMs);
  try {
    raw = await call.host.ask({ method, params: cleaned.value as Record<string, unknown> }, AbortSignal.any([signal, limit]));
  } catch (error) {
    const reason = limit.aborted ? 'answer-timeout' : signal.aborted ? 'cancelled' : 'host-failed';
    record('failed', reason, cleaned.redactions);
    throw new WardenError('WARDEN_SERVER_REQUEST_DENIED', reason === 'answer-timeout' ? `the host did not answer within ${config.limits.answerTimeoutMs} ms` : `the host did not answer (${reason})`, {
      cause: error instanceof Error ? error.message : String(error),
    });
  }
  const answerBytes = jsonBytes(raw);
  facts['answerBytes'] = answerBytes;
  if (answerBytes > config.limits.maxServerRequestBytes) return refuse('answer-too-large', `the host's answer is ${answerBytes} bytes, over limits.maxServerRequestBytes`);
  const answer = kind === 'sampling' ? checkSamplingAnswer(raw) : checkElicitationAnswer(raw);
  if (!answer.ok) return refuse('invalid-answer', answer.problem);
  // What the answer was, never what it said.
  const value = answer.value as { action?: string; model?: string; stopReason?: string };
  if (value.action !== undefined) facts['action'] = value.action;
  if (typeof value.model === 'string') facts['model'] = value.model.slice(0, 128);
  record('ok', null, cleaned.redactions);
  return answer.value as Record<string, unknown>;
}

/** Size of a value as JSON, in UTF-8 bytes; a value that cannot be serialised counts as too large. */
function jsonBytes(value: unknown): number {
  try {
    return Buffer.byteLength(JSON.stringify(value) ?? '', 'utf8');
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}
