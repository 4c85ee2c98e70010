import { randomBytes } from 'node:crypto';
import type { DatabaseSync } from 'node:sqlite';
import { WardenError } from '../errors.ts';
import { guarded, prepare, transaction } from './sqlite.ts';

/**
 * pending: waiting for a person. approved: may be used once, by exactly the call it binds.
 * used: consumed by that call. denied / expired: final.
 */
export type ApprovalStatus = 'pending' | 'approved' | 'denied' | 'expired' | 'used';

/** out-of-band: decided with mcp-warden approvals. user: asked of the host's user in the conversation. */
export type ApprovalKind = 'out-of-band' | 'user';

export interface ApprovalRecord {
  readonly id: string;
  readonly agent: string;
  readonly tool: string;
  /** SHA-256 of the canonical arguments: the approval is for these arguments only. */
  readonly argsDigest: string;
  /** The canonical arguments, for the person deciding. */
  readonly arguments: string;
  readonly kind: ApprovalKind;
  readonly status: ApprovalStatus;
  readonly correlationId: string;
  readonly requestedAt: number;
  readonly expiresAt: number;
  readonly decidedAt?: number;
  readonly decidedBy?: string;
  readonly reason?: string;
}

export interface ApprovalRequest {
  readonly agent: string;
  readonly tool: string;
  readonly argsDigest: string;
  readonly arguments: string;
  readonly kind: ApprovalKind;
  readonly correlationId: string;
  readonly now: number;
  readonly expireMs: number;
  /** Refuse a new request when this agent already has this many pending. */
  readonly maxPendingPerAgent: number;
}

/** Approvals, in the state store, so a pending one outlives a broker restart. */
export interface ApprovalLedger {
  /**
   * The open approval for exactly this call (pending, or approved and not yet used), or a
   * new pending one. 'backlog' when the agent has too many pending already.
   */
  open(request: ApprovalRequest): { readonly record: ApprovalRecord; readonly created: boolean } | 'backlog';
  get(id: string): ApprovalRecord | undefined;
  /** Newest first. */
  list(options: { readonly statuses?: readonly ApprovalStatus[]; readonly limit: number }): ApprovalRecord[];
  /** A person's decision on a pending approval; anything else is WARDEN_APPROVAL_NOT_PENDING. */
  decide(id: string, decision: 'approved' | 'denied', by: string, reason: string, now: number): ApprovalRecord;
  /** Marks an approved approval used; false when it is not (or no longer) approved. */
  consume(id: string): boolean;
  /** Marks every pending approval past its expiry expired; returns how many. */
  expire(now: number): number;
  /** Approvals still waiting for a decision at `now`, all agents. */
  pendingCount(now: number): number;
  /** Deletes approvals that ended (denied, expired, used) before `before`; returns how many. */
  prune(before: number): number;
  /** Approvals decided (approved, denied, expired) at or after `since`, oldest first. */
  decidedSince(since: number, limit: number): ApprovalRecord[];
  /** Up to when decisions have been written to the audit trail, so none is missed across a restart. */
  auditedUntil(): number | undefined;
  setAuditedUntil(until: number): void;
}

/** How long an approval that ended is kept in the store (the audit trail keeps its record). */
export const APPROVAL_RETENTION_MS = 7 * 24 * 60 * 60 * 1000; // 7 days

export const APPROVALS_SCHEMA = `
CREATE TABLE IF NOT EXISTS approvals (
  id TEXT PRIMARY KEY NOT NULL,
  agent TEXT NOT NULL,
  tool TEXT NOT NULL,
  args_digest TEXT NOT NULL,
  arguments TEXT NOT NULL,
  kind TEXT NOT NULL,
  status TEXT NOT NULL,
  correlation_id TEXT NOT NULL,
  requested_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  decided_at INTEGER,
  decided_by TEXT,
  reason TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS approvals_binding ON approvals (agent, tool, args_digest, status);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, expires_at);
CREATE INDEX IF NOT EXISTS approvals_decided ON approvals (decided_at);
CREATE TABLE IF NOT EXISTS approvals_audited (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  until INTEGER NOT NULL
) STRICT;
`;

/** Short enough to type, long enough not to be guessed: 10 random bytes, base32 without padding. */
export function newApprovalId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  let id = '';
  for (const byte of randomBytes(10)) id += alphabet[byte & 31];
  return `ap_${id}`;
}

export const APPROVAL_ID = /^ap_[a-z2-7]{10}$/;

interface Row {
  id: string;
  agent: string;
  tool: string;
  args_digest: string;
  arguments: string;
  kind: string;
  status: string;
  correlation_id: string;
  requested_at: number | bigint;
  expires_at: number | bigint;
  decided_at: number | bigint | null;
  decided_by: string | null;
  reason: string | null;
}

function toRecord(row: Row): ApprovalRecord {
  return {
    id: row.id,
    agent: row.agent,
    tool: row.tool,
    argsDigest: row.args_digest,
    arguments: row.arguments,
    kind: row.kind as ApprovalKind,
    status: row.status as ApprovalStatus,
    correlationId: row.correlation_id,
    requestedAt: Number(row.requested_at),
    expiresAt: Number(row.expires_at),
    ...(row.decided_at === null ? {} : { decidedAt: Number(row.decided_at) }),
    ...(row.decided_by === null ? {} : { decidedBy: row.decided_by }),
    ...(row.reason === null ? {} : { reason: row.reason }),
  };
}

export function approvalLedger(db: DatabaseSync, file: string): ApprovalLedger {
  const selectOpen = prepare(db, file, "SELECT * FROM approvals WHERE agent = ? AND tool = ? AND args_digest = ? AND kind = ? AND status IN ('pending', 'approved') AND expires_at > ? ORDER BY requested_at LIMIT 1");
  const countPending = prepare(db, file, "SELECT COUNT(*) AS n FROM approvals WHERE agent = ? AND status = 'pending' AND expires_at > ?");
  const insert = prepare(db, file, "INSERT INTO approvals (id, agent, tool, args_digest, arguments, kind, status, correlation_id, requested_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)");
  const selectOne = prepare(db, file, 'SELECT * FROM approvals WHERE id = ?');
  const decideRow = prepare(db, file, "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ?, reason = ? WHERE id = ? AND status = 'pending' AND expires_at > ?");
  const consumeRow = prepare(db, file, "UPDATE approvals SET status = 'used' WHERE id = ? AND status = 'approved'");
  const selectDecided = prepare(db, file, 'SELECT * FROM approvals WHERE decided_at >= ? ORDER BY decided_at LIMIT ?');
  const selectAudited = prepare(db, file, 'SELECT until FROM approvals_audited WHERE id = 1');
  const upsertAudited = prepare(db, file, 'INSERT INTO approvals_audited (id, until) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET until = MAX(until, excluded.until)');
  const pruneRows = prepare(db, file, "DELETE FROM approvals WHERE status IN ('denied', 'expired', 'used') AND COALESCE(decided_at, expires_at) < ?");
  const expireRows = prepare(db, file, "UPDATE approvals SET status = 'expired', decided_at = ?, decided_by = 'mcp-warden', reason = 'unanswered in time' WHERE status = 'pending' AND expires_at <= ?");
  const countAllPending = prepare(db, file, "SELECT COUNT(*) AS n FROM approvals WHERE status = 'pending' AND expires_at > ?");

  const get = (id: string) => guarded(file, () => {
    const row = selectOne.get(id) as Row | undefined;
    return row ? toRecord(row) : undefined;
  });

  return {
    open(request) {
      return transaction(db, file, () => {
        expireRows.run(request.now, request.now);
        const existing = selectOpen.get(request.agent, request.tool, request.argsDigest, request.kind, request.now) as Row | undefined;
        if (existing) return { record: toRecord(existing), created: false };
        const pending = Number((countPending.get(request.agent, request.now) as { n: number | bigint }).n);
        if (pending >= request.maxPendingPerAgent) return 'backlog';
        const id = newApprovalId();
        insert.run(id, request.agent, request.tool, request.argsDigest, request.arguments, request.kind, request.correlationId, request.now, request.now + request.expireMs);
        return { record: toRecord(selectOne.get(id) as unknown as Row), created: true };
      });
    },
    get,
    list({ statuses, limit }) {
      return guarded(file, () => {
        const wanted = statuses ?? ['pending', 'approved', 'denied', 'expired', 'used'];
        const placeholders = wanted.map(() => '?').join(', ');
        const rows = db.prepare(`SELECT * FROM approvals WHERE status IN (${placeholders}) ORDER BY requested_at DESC LIMIT ?`).all(...wanted, limit) as unknown as Row[];
        return rows.map(toRecord);
      });
    },
    decide(id, decision, by, reason, now) {
      // Outside the transaction below, so an expiry found here stands even though deciding fails.
      guarded(file, () => expireRows.run(now, now));
      return transaction(db, file, () => {
        const changed = Number(decideRow.run(decision, now, by, reason, id, now).changes);
        const record = get(id);
        if (!record) throw new WardenError('WARDEN_APPROVAL_NOT_PENDING', `there is no approval ${id}; mcp-warden approvals list shows the pending ones`, { id });
        if (changed !== 1) throw new WardenError('WARDEN_APPROVAL_NOT_PENDING', `approval ${id} is ${record.status}${record.decidedBy ? ` (by ${record.decidedBy})` : ''}; only a pending approval can be decided`, { id, status: record.status });
        return record;
      });
    },
    consume(id) {
      return guarded(file, () => Number(consumeRow.run(id).changes) === 1);
    },
    expire(now) {
      return guarded(file, () => Number(expireRows.run(now, now).changes));
    },
    pendingCount(now) {
      return guarded(file, () => Number((countAllPending.get(now) as { n: number | bigint }).n));
    },
    auditedUntil() {
      return guarded(file, () => {
        const row = selectAudited.get() as { until: number | bigint } | undefined;
        return row ? Number(row.until) : undefined;
      });
    },
    setAuditedUntil(until) {
      guarded(file, () => upsertAudited.run(until));
    },
    decidedSince(since, limit) {
      return guarded(file, () => (selectDecided.all(since, limit) as unknown as Row[]).map(toRecord));
    },
    prune(before) {
      return guarded(file, () => Number(pruneRows.run(before).changes));
    },
  };
}
