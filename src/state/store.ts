import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { WardenError } from '../errors.ts';
import { approvalLedger, APPROVALS_SCHEMA, type ApprovalLedger } from './approvals.ts';
import { AUDIT_HEAD_SCHEMA, auditHeadLedger, type AuditHeadLedger } from './audit-head.ts';
import { idempotencyLedger, IDEMPOTENCY_SCHEMA, type IdempotencyLedger } from './idempotency.ts';
import { guarded, prepare, readOnlyStore, unavailable } from './sqlite.ts';
import { killSwitch, SWITCHES_SCHEMA, type KillSwitch } from './switches.ts';

/** The file in the state folder that holds the broker's durable state. */
export const STATE_FILE = 'warden.db';

export type Admission = 'accepted' | 'rollback' | 'equivocation';

/** The newest manifest accepted for each name: rollback and equivocation protection. */
export interface ManifestHistory {
  /** The highest serial accepted for this name and the digest accepted with it. */
  latest(name: string): { readonly serial: number; readonly digest: string } | undefined;
  /**
   * Judges a manifest against the history and, when accepted and the store is writable,
   * records it, in one transaction, so two brokers sharing the file cannot both win.
   */
  admit(name: string, serial: number, digest: string): Admission;
}

/** A quarantine that outlives the process: the release it was raised against, and why. */
export interface QuarantineRecord {
  readonly reason: string;
  readonly diffDigest: string;
  readonly since: string;
}

/**
 * Servers quarantined for drift, by manifest name and digest. Keyed by the digest: only a
 * different signed release (a higher serial, since a lower one is a rollback) clears it.
 */
export interface QuarantineLedger {
  quarantined(name: string, digest: string): QuarantineRecord | undefined;
  recordQuarantine(name: string, digest: string, record: QuarantineRecord): void;
}

export interface StateStore extends ManifestHistory, QuarantineLedger {
  readonly file: string;
  readonly writable: boolean;
  readonly approvals: ApprovalLedger;
  readonly idempotency: IdempotencyLedger;
  readonly killSwitch: KillSwitch;
  /** The newest signed checkpoint of each audit trail. */
  readonly auditHeads: AuditHeadLedger;
  /**
   * A number that changes whenever another connection (the approvals or killswitch
   * command) has committed a change: the broker polls it, cheaply, to notice them.
   */
  dataVersion(): number;
  close(): void;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS manifest_history (
  name TEXT PRIMARY KEY NOT NULL,
  serial INTEGER NOT NULL,
  digest TEXT NOT NULL,
  accepted_at TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS quarantine (
  name TEXT NOT NULL,
  digest TEXT NOT NULL,
  reason TEXT NOT NULL,
  diff_digest TEXT NOT NULL,
  since TEXT NOT NULL,
  PRIMARY KEY (name, digest)
) STRICT;
${APPROVALS_SCHEMA}
${IDEMPOTENCY_SCHEMA}
${SWITCHES_SCHEMA}
${AUDIT_HEAD_SCHEMA}
`;

/**
 * Opens the embedded store (node:sqlite) in the state folder, creating both on first
 * use. Read-only mode is for checks that must not change anything (`config check`,
 * `manifest verify`): a missing file then reads as an empty history. Any failure to open
 * or write is WARDEN_STATE_UNAVAILABLE: without its history the broker cannot refuse a
 * rollback, so it does not start.
 */
export function openStateStore(dir: string, mode: 'read-write' | 'read-only'): StateStore {
  const file = join(dir, STATE_FILE);
  if (mode === 'read-only' && !existsSync(file)) return emptyHistory(file);
  let db: DatabaseSync;
  try {
    if (mode === 'read-write') mkdirSync(dir, { recursive: true, mode: 0o700 });
    db = new DatabaseSync(file, { readOnly: mode === 'read-only', timeout: 5000 });
    if (mode === 'read-write') {
      db.exec('PRAGMA journal_mode = WAL;');
      db.exec(SCHEMA);
      // The state holds approvals' arguments: only the broker's user may read it.
      chmodSync(file, 0o600);
    }
  } catch (error) {
    throw unavailable(file, error);
  }
  const select = prepare(db, file, 'SELECT serial, digest FROM manifest_history WHERE name = ?');
  const upsert = mode === 'read-write'
    ? prepare(db, file, 'INSERT INTO manifest_history (name, serial, digest, accepted_at) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET serial = excluded.serial, digest = excluded.digest, accepted_at = excluded.accepted_at')
    : undefined;

  // An older file may predate the quarantine table; read-only mode cannot create it.
  const hasQuarantine = tableExists(db, 'quarantine');
  const selectQuarantine = hasQuarantine ? prepare(db, file, 'SELECT reason, diff_digest, since FROM quarantine WHERE name = ? AND digest = ?') : undefined;
  const insertQuarantine = mode === 'read-write'
    ? prepare(db, file, 'INSERT INTO quarantine (name, digest, reason, diff_digest, since) VALUES (?, ?, ?, ?, ?) ON CONFLICT (name, digest) DO NOTHING')
    : undefined;

  const latest = (name: string) => {
    try {
      const row = select?.get(name) as { serial: number; digest: string } | undefined;
      return row ? { serial: Number(row.serial), digest: String(row.digest) } : undefined;
    } catch (error) {
      throw unavailable(file, error);
    }
  };

  const writable = mode === 'read-write';
  const dataVersion = prepare(db, file, 'PRAGMA data_version');
  return {
    file,
    writable,
    // Read-only checks on a file that predates these tables see an empty ledger and the switch off.
    approvals: writable || tableExists(db, 'approvals') ? approvalLedger(db, file) : noApprovals(file),
    idempotency: writable || tableExists(db, 'idempotency') ? idempotencyLedger(db, file) : noIdempotency(file),
    killSwitch: writable || tableExists(db, 'switches') ? killSwitch(db, file, writable) : switchOff(file),
    auditHeads: writable || tableExists(db, 'audit_head') ? auditHeadLedger(db, file, writable) : noAuditHeads(file),
    dataVersion: () => guarded(file, () => Number((dataVersion.get() as { data_version: number | bigint }).data_version)),
    latest,
    admit(name, serial, digest) {
      if (!upsert) return judge(latest(name), serial, digest);
      try {
        db.exec('BEGIN IMMEDIATE');
        try {
          const verdict = judge(latest(name), serial, digest);
          if (verdict === 'accepted') upsert.run(name, serial, digest, new Date().toISOString());
          db.exec('COMMIT');
          return verdict;
        } catch (error) {
          db.exec('ROLLBACK');
          throw error;
        }
      } catch (error) {
        throw error instanceof WardenError ? error : unavailable(file, error);
      }
    },
    quarantined(name, digest) {
      try {
        const row = selectQuarantine?.get(name, digest) as { reason: string; diff_digest: string; since: string } | undefined;
        return row ? { reason: String(row.reason), diffDigest: String(row.diff_digest), since: String(row.since) } : undefined;
      } catch (error) {
        throw unavailable(file, error);
      }
    },
    recordQuarantine(name, digest, record) {
      if (!insertQuarantine) throw readOnlyStore(file);
      try {
        insertQuarantine.run(name, digest, record.reason, record.diffDigest, record.since);
      } catch (error) {
        throw unavailable(file, error);
      }
    },
    close() {
      if (db.isOpen) db.close();
    },
  };
}

function tableExists(db: DatabaseSync, table: string): boolean {
  try {
    return db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(table) !== undefined;
  } catch {
    return false;
  }
}

/** Same serial and digest is the same release seen again: accepted, nothing changes. */
function judge(current: { serial: number; digest: string } | undefined, serial: number, digest: string): Admission {
  if (!current || serial > current.serial) return 'accepted';
  if (serial < current.serial) return 'rollback';
  return digest === current.digest ? 'accepted' : 'equivocation';
}

function emptyHistory(file: string): StateStore {
  return {
    file,
    writable: false,
    approvals: noApprovals(file),
    idempotency: noIdempotency(file),
    killSwitch: switchOff(file),
    auditHeads: noAuditHeads(file),
    dataVersion: () => 0,
    latest: () => undefined,
    admit: () => 'accepted',
    quarantined: () => undefined,
    recordQuarantine: () => {
      throw readOnlyStore(file);
    },
    close: () => undefined,
  };
}

function noApprovals(file: string): ApprovalLedger {
  const fail = () => {
    throw readOnlyStore(file);
  };
  return { open: fail, get: () => undefined, list: () => [], decide: fail, consume: fail, expire: fail, pendingCount: () => 0, prune: fail, decidedSince: () => [], auditedUntil: () => undefined, setAuditedUntil: fail };
}

function noIdempotency(file: string): IdempotencyLedger {
  const fail = () => {
    throw readOnlyStore(file);
  };
  return { begin: fail, sending: fail, finish: fail, abandon: fail, prune: fail };
}

function noAuditHeads(file: string): AuditHeadLedger {
  return {
    read: () => undefined,
    list: () => [],
    save: () => {
      throw readOnlyStore(file);
    },
  };
}

function switchOff(file: string): KillSwitch {
  return {
    read: () => ({ state: 'off', changedAt: 0, changedBy: '' }),
    set: () => {
      throw readOnlyStore(file);
    },
  };
}
