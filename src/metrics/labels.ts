import type { AuditRecord } from '../audit/trail.ts';
import type { WardenConfig } from '../config/types.ts';
import { ERRORS } from '../errors.ts';
import type { TokenFailure } from '../front/oauth.ts';
import type { EgressReason } from '../guard/egress-rules.ts';
import { REJECTIONS } from '../manifest/rejections.ts';

/**
 * Label values. A label value the metrics keep forever comes either from a fixed list here
 * or from the config in force (tools of its catalog, its servers and agents); anything
 * else, such as a tool name an agent made up, becomes OTHER. An agent can therefore not
 * grow the number of series, whatever it sends.
 */
export const OTHER = '(unknown)';

/** A value from a fixed set, or OTHER. */
export function oneOf(set: ReadonlySet<string>, value: unknown): string {
  return typeof value === 'string' && set.has(value) ? value : OTHER;
}

export const DECISIONS: ReadonlySet<string> = new Set(['allow', 'deny']);
export const OUTCOMES: ReadonlySet<string> = new Set(['ok', 'tool_error', 'refused', 'failed', 'input_required']);
/** Refusal codes (docs/errors.md); `none` for a call that was not refused. */
export const REASONS: ReadonlySet<string> = new Set([...Object.keys(ERRORS), 'none']);
export const REJECTION_REASONS: ReadonlySet<string> = new Set(Object.keys(REJECTIONS));
export const QUARANTINE_REASONS: ReadonlySet<string> = new Set(['drift', 'expired', 'artifact-modified']);
/** What server.state records report. */
export const SERVER_EVENTS: ReadonlySet<string> = new Set(['ready', 'down', 'breaker-open', 'recheck-failed', 'quarantine-not-persisted']);
/** The states the server gauge shows, one series each. */
export const SERVER_STATES = ['starting', 'ready', 'down', 'quarantined', 'rejected'] as const;
export const KILL_SWITCH_STATES = ['off', 'readonly', 'on'] as const;

const EGRESS: Record<EgressReason, true> = {
  'not-allowlisted': true,
  'private-address': true,
  'unresolvable': true,
  'redirect-denied': true,
  'too-many-redirects': true,
  'too-large': true,
  'tls-unverified': true,
  'tls-pin-mismatch': true,
};
export const EGRESS_REASONS: ReadonlySet<string> = new Set(Object.keys(EGRESS));

const AUTH: Record<TokenFailure | 'missing-token' | 'unknown-subject' | 'session-identity-mismatch', true> = {
  'missing-token': true,
  'session-identity-mismatch': true,
  'invalid-token': true,
  'unknown-subject': true,
  'oversized': true,
  'malformed': true,
  'algorithm-not-allowed': true,
  'unknown-key': true,
  'bad-signature': true,
  'jwks-unavailable': true,
  'wrong-issuer': true,
  'wrong-audience': true,
  'expired': true,
  'not-yet-valid': true,
  'missing-claim': true,
  'internal-error': true,
};
/** Why an HTTP request's credentials were refused (auth.failure records). */
export const AUTH_REASONS: ReadonlySet<string> = new Set(Object.keys(AUTH));
export const APPROVAL_KINDS: ReadonlySet<string> = new Set(['out-of-band', 'user']);
export const APPROVAL_VERDICTS: ReadonlySet<string> = new Set(['approved', 'denied', 'expired']);
/** Why the broker ended a sandboxed run: the limit it broke, the call was cancelled, or its worker died. */
export const SANDBOX_STOPS: ReadonlySet<string> = new Set(['cpu', 'memory', 'wall', 'output', 'cancelled', 'crashed']);
export const SANDBOX_POOLS: ReadonlySet<string> = new Set(['tools', 'code-mode']);
export const SANDBOX_WORKER_STATES: ReadonlySet<string> = new Set(['crashed', 'failed-to-start']);
/** The counts a call's result may have had removed (its record's redactions). */
export const REDACTION_KINDS = ['credential', 'detected', 'invisible'] as const;
const EVENTS: Record<AuditRecord['event'], true> = {
  'tools/list': true,
  'tools/call': true,
  'tools/call.dispatch': true,
  'resources/list': true,
  'resources/templates/list': true,
  'resources/read': true,
  'resources/subscribe': true,
  'resources/unsubscribe': true,
  'subscriptions/listen': true,
  'prompts/list': true,
  'prompts/get': true,
  'completion/complete': true,
  'server.request': true,
  'server.state': true,
  'server.quarantined': true,
  'manifest.rejected': true,
  'manifest.accepted': true,
  'auth.failure': true,
  'broker.start': true,
  'broker.stop': true,
  'approval.requested': true,
  'approval.decided': true,
  'killswitch.changed': true,
  'config.reloaded': true,
  'config.refused': true,
  'egress.refused': true,
  'sandbox.worker': true,
  'audit.opened': true,
  'audit.checkpoint': true,
};
/** Every kind of audit record (compiled from the record type, so a new kind must be added here). */
export const AUDIT_EVENTS: ReadonlySet<string> = new Set(Object.keys(EVENTS));

/** The names a config allows as label values: its catalog's tools, its servers, its agents. */
export interface ConfigNames {
  readonly tools: ReadonlySet<string>;
  readonly servers: ReadonlySet<string>;
  readonly agents: ReadonlySet<string>;
}

const NONE: ConfigNames = { tools: new Set(), servers: new Set(), agents: new Set() };
const cache = new WeakMap<WardenConfig, ConfigNames>();

/** The config's names, computed once per loaded config (a reload brings a new object). */
export function configNames(config: WardenConfig | undefined): ConfigNames {
  if (!config) return NONE;
  let names = cache.get(config);
  if (!names) {
    const servers = new Set([...config.servers.keys(), ...config.rejected.keys()]);
    for (const tool of config.catalog.values()) servers.add(tool.server);
    names = { tools: new Set(config.catalog.keys()), servers, agents: new Set(config.agents.keys()) };
    cache.set(config, names);
  }
  return names;
}
