import { randomUUID } from 'node:crypto';
import type { AuditRecord, AuditTrail, SurfaceEvent } from '../audit/trail.ts';
import type { WardenConfig } from '../config/types.ts';
import { maskSecrets } from '../guard/detect-secrets.ts';
import { admitCall, type LimitStore } from '../guard/rate-limits.ts';
import { cleanText, noRedactions, type Redactions } from '../guard/sanitize-output.ts';
import type { SessionScopes } from '../policy/grants.ts';
import type { KillSwitchState } from '../state/switches.ts';
import type { McpBackend } from '../backends/mcp.ts';
import { WardenError, isWardenError } from '../errors.ts';
import type { OAuthSession } from '../pipeline/types.ts';

/**
 * What the resource, prompt and completion paths need from the broker. They are reads:
 * judged by the agent's prompt and resource grants, limited by its rate limit, cleaned like
 * tool results, and audited one record per request.
 */
export interface SurfaceDeps {
  config(): WardenConfig;
  /** The MCP backend of a configured server, or undefined (not an MCP server, not configured). */
  backend(server: string): McpBackend | undefined;
  readonly audit: AuditTrail;
  secretForms(): readonly string[];
  killSwitch(): KillSwitchState;
  readonly limits: LimitStore;
}

/** Who asks: the agent the front authenticated, and for an OAuth session its scopes. */
export interface SurfaceRequest {
  readonly agentName: string;
  readonly oauth?: OAuthSession;
  readonly signal?: AbortSignal;
}

export function scopesOf(request: SurfaceRequest): SessionScopes {
  return request.oauth?.scopes;
}

/** A refusal of a surface request: its code and the correlation id of its audit record. */
export class SurfaceRefusal extends WardenError {
  readonly correlationId: string;
  constructor(code: WardenError['code'], message: string, correlationId: string) {
    super(code, message);
    this.correlationId = correlationId;
  }
}

/** The facts a request's audit record collects while it is judged and served. */
export interface Judgement {
  readonly correlationId: string;
  readonly facts: Record<string, unknown>;
  redactions: Redactions;
}

/**
 * Runs one surface request: the kill switch and the agent's rate limit first, then the
 * body (which throws a WardenError to refuse), then one audit record with the decision,
 * outcome and redaction counts. Every failure becomes a SurfaceRefusal whose message is
 * cleaned (a downstream's error text may carry a secret); the audit write happens before
 * anything is returned, and a failed write refuses (fail closed).
 */
export async function judged<T>(deps: SurfaceDeps, request: SurfaceRequest, event: SurfaceEvent, facts: Record<string, unknown>, body: (judgement: Judgement) => Promise<T>): Promise<T> {
  const startedAt = performance.now();
  const judgement: Judgement = { correlationId: randomUUID(), facts: { ...facts }, redactions: noRedactions() };
  let outcome: { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: WardenError };
  try {
    if (!deps.audit.healthy) throw new WardenError('WARDEN_INTERNAL', 'The broker cannot write its audit trail, so it refuses all requests. Tell the operator.');
    const killSwitch = deps.killSwitch();
    if (killSwitch === 'on') throw new WardenError('WARDEN_KILL_SWITCH', 'The kill switch is on: every request is refused until an operator turns it off.');
    const agent = deps.config().agents.get(request.agentName);
    if (!agent) throw new WardenError('WARDEN_INTERNAL', 'The request was refused because the agent is no longer configured.');
    const admission = admitCall(deps.limits, { agent: agent.name, tool: event, agentLimit: agent.rateLimit, toolLimit: {}, globalConcurrent: deps.config().rateLimits.concurrent }, performance.now());
    if (!admission.ok) {
      const seconds = Math.max(1, Math.ceil(admission.retryAfterMs / 1000));
      judgement.facts['limit'] = { scope: admission.scope, kind: admission.kind, limit: admission.limit, retryAfterMs: admission.retryAfterMs };
      throw new WardenError('WARDEN_RATE_LIMITED', `The ${admission.kind} limit for ${admission.scope === 'agent' ? 'this agent' : 'the broker'} refused this request. Retry in ${seconds} s.`);
    }
    try {
      outcome = { ok: true, value: await body(judgement) };
    } finally {
      admission.release();
    }
  } catch (error) {
    const wardenError = isWardenError(error) ? error : new WardenError('WARDEN_INTERNAL', 'A broker check failed unexpectedly; the request was refused.');
    // The audit trail never holds a credential: an unexpected error's text is cleaned too.
    if (!isWardenError(error)) judgement.facts['error'] = cleanText((error instanceof Error ? error.message : String(error)).slice(0, 1000), deps.secretForms(), noRedactions());
    if (wardenError.detail) judgement.facts['detail'] = wardenError.detail;
    outcome = { ok: false, error: wardenError };
  }
  const counts = judgement.redactions;
  const record: AuditRecord = {
    ...judgement.facts,
    event,
    correlationId: judgement.correlationId,
    agent: request.agentName,
    ...(request.oauth ? { oauthSubject: request.oauth.subject } : {}),
    decision: outcome.ok ? 'allow' : 'deny',
    reason: outcome.ok ? null : outcome.error.code,
    outcome: outcome.ok ? 'ok' : 'refused',
    durationMs: Math.round((performance.now() - startedAt) * 1000) / 1000,
    ...(counts.credential + counts.detected + counts.invisible + counts.truncatedBytes > 0 ? { redactions: counts } : {}),
  };
  // Written before the answer leaves; a failure throws, and the front answers with an error.
  deps.audit.write(record);
  if (outcome.ok) return outcome.value;
  const message = await maskSecrets(cleanText(outcome.error.message, deps.secretForms(), noRedactions()), { detected: 0 });
  throw new SurfaceRefusal(outcome.error.code, message, judgement.correlationId);
}

/** The timeout for one downstream request of a surface path: the policy's call timeout. */
export function surfaceTimeout(config: WardenConfig): number {
  return Math.min(config.limits.callTimeoutMs, config.limits.maxCallTimeoutMs);
}
