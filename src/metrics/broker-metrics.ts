import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { AuditRecord, AuditTrail } from '../audit/trail.ts';
import type { ToolBackend } from '../backends/types.ts';
import type { WardenConfig } from '../config/types.ts';
import type { KillSwitchState } from '../state/switches.ts';
import {
  APPROVAL_KINDS,
  APPROVAL_VERDICTS,
  AUDIT_EVENTS,
  AUTH_REASONS,
  configNames,
  DECISIONS,
  EGRESS_REASONS,
  KILL_SWITCH_STATES,
  oneOf,
  OUTCOMES,
  QUARANTINE_REASONS,
  REASONS,
  REDACTION_KINDS,
  REJECTION_REASONS,
  SANDBOX_POOLS,
  SANDBOX_STOPS,
  SANDBOX_WORKER_STATES,
  SERVER_EVENTS,
  SERVER_STATES,
  type ConfigNames,
} from './labels.ts';
import { observeAuditTrail } from './observe-audit.ts';

/** What the metrics read from the broker when scraped. */
export interface ObservedBroker {
  readonly config: WardenConfig;
  readonly backends: ReadonlyMap<string, ToolBackend>;
  readonly killSwitch: KillSwitchState;
  readonly audit: AuditTrail;
  /** The broker can serve calls: started, not stopping, audit trail and state store usable. */
  readonly ready: boolean;
  /** Approvals waiting for a person now; throws when the state store cannot be read. */
  pendingApprovals(): number;
}

const SWITCH_STATES: ReadonlySet<string> = new Set(KILL_SWITCH_STATES);

/** Call latency buckets, seconds: refusals take microseconds, held calls up to the approval wait. */
const LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/**
 * One broker's metrics, in a registry of its own (never prom-client's global one), so any
 * number of brokers can share a process. Event counts come only from audit records (see
 * observe); state (servers, approvals pending, kill switch, readiness) is read from the
 * broker at scrape time. docs/operations.md lists every metric.
 */
export class BrokerMetrics {
  readonly registry = new Registry();
  #broker: ObservedBroker | undefined;

  readonly #records = this.#counter('mcp_warden_audit_records_total', 'Audit records written, by event.', ['event']);
  readonly #calls = this.#counter('mcp_warden_tool_calls_total', 'tools/call decisions: tool (exposed name; (unknown) for a name not in the catalog), decision, refusal code (none when not refused) and outcome.', ['tool', 'decision', 'reason', 'outcome']);
  readonly #agentCalls = this.#counter('mcp_warden_agent_calls_total', 'tools/call decisions by agent and decision.', ['agent', 'decision']);
  readonly #latency = new Histogram({
    name: 'mcp_warden_tool_call_duration_seconds',
    help: 'Time from a tools/call arriving to its answer, checks and the downstream call included, by tool and outcome.',
    labelNames: ['tool', 'outcome'],
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly #redactions = this.#counter('mcp_warden_redactions_total', 'Things removed from results before they reached an agent, by server and kind (credential, detected secret, invisible or control characters).', ['server', 'kind']);
  readonly #truncated = this.#counter('mcp_warden_results_truncated_total', 'Results cut to the size limit, by server.', ['server']);
  readonly #sandboxKills = this.#counter('mcp_warden_sandbox_kills_total', 'Sandboxed runs (code tools, code mode) the broker stopped, by why: the limit broken (cpu, memory, wall, output), cancelled, or crashed (the worker died).', ['reason']);
  readonly #sandboxWorkers = this.#counter('mcp_warden_sandbox_worker_exits_total', 'Sandbox worker processes that died or could not start, by pool and state.', ['pool', 'state']);
  readonly #serverEvents = this.#counter('mcp_warden_server_events_total', 'Downstream server state changes recorded (ready, down, breaker-open, recheck-failed, quarantine-not-persisted), by server.', ['server', 'state']);
  readonly #quarantines = this.#counter('mcp_warden_quarantines_total', 'Servers quarantined (tools withdrawn), by server and reason (drift, expired, artifact-modified).', ['server', 'reason']);
  readonly #rejections = this.#counter('mcp_warden_manifest_rejections_total', 'Manifests refused at start or reload, by reason.', ['reason']);
  readonly #egress = this.#counter('mcp_warden_egress_refusals_total', 'Outbound requests the egress policy refused, by server and reason.', ['server', 'reason']);
  readonly #auth = this.#counter('mcp_warden_auth_failures_total', 'HTTP requests refused for their credentials (no token, a wrong one, an access token that failed a check), by reason.', ['reason']);
  readonly #approvalsRequested = this.#counter('mcp_warden_approvals_requested_total', 'Approvals asked for, by kind (out-of-band, user).', ['kind']);
  readonly #approvalsDecided = this.#counter('mcp_warden_approvals_decided_total', 'Approvals decided, by kind and verdict (approved, denied, expired).', ['kind', 'verdict']);
  readonly #killSwitchChanges = this.#counter('mcp_warden_kill_switch_changes_total', 'Kill switch changes, by the state it changed to.', ['to']);
  readonly #reloads = this.#counter('mcp_warden_config_reloads_total', 'Config reloads, by result: applied, or refused (the previous config stays).', ['result']);

  constructor() {
    // Series worth alerting on from their first increment exist from the start, at 0.
    for (const result of ['applied', 'refused']) this.#reloads.inc({ result }, 0);
    for (const to of KILL_SWITCH_STATES) this.#killSwitchChanges.inc({ to }, 0);
    processMetrics();

    const metrics = this;
    new Gauge({
      name: 'mcp_warden_server_state',
      help: 'Each configured server\'s state: 1 for the state it is in, 0 for the others.',
      labelNames: ['server', 'state'],
      registers: [this.registry],
      collect() {
        this.reset();
        const broker = metrics.#broker;
        if (!broker) return;
        const states = new Map<string, (typeof SERVER_STATES)[number]>();
        try {
          for (const server of broker.config.rejected.keys()) states.set(server, 'rejected');
          for (const [server, backend] of broker.backends) {
            states.set(server, backend.quarantine ? 'quarantined' : backend.state === 'ready' || backend.state === 'starting' ? backend.state : 'down');
          }
        } catch {
          return; // a scrape never fails for one gauge
        }
        for (const [server, current] of states) for (const state of SERVER_STATES) this.set({ server, state }, state === current ? 1 : 0);
      },
    });
    new Gauge({
      name: 'mcp_warden_approvals_pending',
      help: 'Calls waiting for a person\'s approval now (absent while the state store cannot be read).',
      registers: [this.registry],
      collect() {
        this.reset();
        const broker = metrics.#broker;
        if (!broker) return;
        try {
          this.set(broker.pendingApprovals());
        } catch {
          // left absent: an alert on absent() notices
        }
      },
    });
    new Gauge({
      name: 'mcp_warden_kill_switch',
      help: 'The kill switch: 1 for the state in force (off, readonly, on), 0 for the others.',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        this.reset();
        const current = metrics.#broker?.killSwitch;
        if (current === undefined) return;
        for (const state of KILL_SWITCH_STATES) this.set({ state }, state === current ? 1 : 0);
      },
    });
    new Gauge({
      name: 'mcp_warden_audit_trail_healthy',
      help: '1 while the audit trail can be written; 0 once a write failed (every call is then refused).',
      registers: [this.registry],
      collect() {
        this.set(metrics.#broker?.audit.healthy === true ? 1 : 0);
      },
    });
    new Gauge({
      name: 'mcp_warden_ready',
      help: '1 when the broker can serve calls (what /readyz answers), else 0.',
      registers: [this.registry],
      collect() {
        this.set(metrics.#broker?.ready === true ? 1 : 0);
      },
    });
  }

  /**
   * Binds these metrics to a broker: returns its audit trail wrapped so that every record
   * written updates the counters. Called once, by the broker as it is made.
   */
  observe(broker: ObservedBroker, trail: AuditTrail): AuditTrail {
    if (this.#broker) throw new Error('these metrics already observe a broker');
    this.#broker = broker;
    return observeAuditTrail(trail, (record) => this.count(record));
  }

  /** Updates the counters from one audit record. */
  count(record: AuditRecord): void {
    const names = configNames(this.#broker?.config);
    this.#records.inc({ event: oneOf(AUDIT_EVENTS, record.event) });
    switch (record.event) {
      case 'tools/call':
        return this.#countCall(record, names);
      case 'server.state':
        return this.#serverEvents.inc({ server: oneOf(names.servers, record.server), state: oneOf(SERVER_EVENTS, record['state']) });
      case 'server.quarantined':
        return this.#quarantines.inc({ server: oneOf(names.servers, record.server), reason: oneOf(QUARANTINE_REASONS, record.reason) });
      case 'manifest.rejected':
        return this.#rejections.inc({ reason: oneOf(REJECTION_REASONS, record.reason) });
      case 'egress.refused':
        return this.#egress.inc({ server: oneOf(names.servers, record.server), reason: oneOf(EGRESS_REASONS, record.reason) });
      case 'auth.failure':
        return this.#auth.inc({ reason: oneOf(AUTH_REASONS, record.reason) });
      case 'approval.requested':
        return this.#approvalsRequested.inc({ kind: oneOf(APPROVAL_KINDS, record['kind']) });
      case 'approval.decided':
        return this.#approvalsDecided.inc({ kind: oneOf(APPROVAL_KINDS, record['kind']), verdict: oneOf(APPROVAL_VERDICTS, record['verdict']) });
      case 'killswitch.changed':
        return this.#killSwitchChanges.inc({ to: oneOf(SWITCH_STATES, record['to']) });
      case 'config.reloaded':
        return this.#reloads.inc({ result: 'applied' });
      case 'config.refused':
        return this.#reloads.inc({ result: 'refused' });
      case 'sandbox.worker':
        return this.#sandboxWorkers.inc({ pool: oneOf(SANDBOX_POOLS, record['pool']), state: oneOf(SANDBOX_WORKER_STATES, record['state']) });
      default:
        return;
    }
  }

  #countCall(record: AuditRecord, names: ConfigNames): void {
    const tool = oneOf(names.tools, record.tool);
    const outcome = oneOf(OUTCOMES, record.outcome);
    const decision = oneOf(DECISIONS, record.decision);
    this.#calls.inc({ tool, decision, reason: oneOf(REASONS, record.reason ?? 'none'), outcome });
    this.#agentCalls.inc({ agent: oneOf(names.agents, record.agent), decision });
    const duration = record.durationMs;
    if (typeof duration === 'number' && Number.isFinite(duration) && duration >= 0) this.#latency.observe({ tool, outcome }, duration / 1000);

    const server = oneOf(names.servers, record.server);
    const redactions = record['redactions'];
    if (typeof redactions === 'object' && redactions !== null) {
      const counts = redactions as Record<string, unknown>;
      for (const kind of REDACTION_KINDS) {
        const count = counts[kind];
        if (typeof count === 'number' && Number.isSafeInteger(count) && count > 0) this.#redactions.inc({ server, kind }, count);
      }
      const truncated = counts['truncatedBytes'];
      if (typeof truncated === 'number' && truncated > 0) this.#truncated.inc({ server });
    }
    // A run that happened has its sandbox facts; one the broker ended says why (its own throw does not count).
    const sandbox = record['sandbox'];
    const stop = typeof sandbox === 'object' && sandbox !== null ? (sandbox as Record<string, unknown>)['reason'] : undefined;
    if (typeof stop === 'string' && SANDBOX_STOPS.has(stop)) this.#sandboxKills.inc({ reason: stop });
  }

  /** The Prometheus text of this broker's metrics, then the process's. */
  async scrape(): Promise<{ readonly contentType: string; readonly text: string }> {
    const own = await this.registry.metrics();
    const shared = await processMetrics().metrics();
    return { contentType: this.registry.contentType, text: `${own}${own.endsWith('\n') ? '' : '\n'}${shared}` };
  }

  #counter<L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }
}

let processRegistry: Registry | undefined;

/**
 * The process's own metrics (CPU, resident memory, heap, open file descriptors, event-loop
 * delay, garbage collection), from prom-client's default collectors. Worth having: an
 * agent flooding the broker, a leak or a blocked event loop shows here before it shows in
 * calls. Collected once per process, in a registry of its own, since every broker in the
 * process would report the same numbers; nodejs_version_info is left out, as it tells a
 * reader which runtime to attack and nothing about how the broker is doing.
 */
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
    processRegistry.removeSingleMetric('nodejs_version_info');
  }
  return processRegistry;
}
