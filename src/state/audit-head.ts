import type { DatabaseSync } from 'node:sqlite';
import type { AuditHead } from '../audit/trail.ts';
import { guarded, prepare } from './sqlite.ts';

/**
 * The newest signed checkpoint of each audit trail, by the trail's file path. Kept apart
 * from the trail itself: a trail cut after its last checkpoint, or replaced, no longer
 * contains the checkpoint recorded here, which `mcp-warden audit verify --config` and
 * the broker at start report.
 */
export interface AuditHeadLedger {
  read(trail: string): AuditHead | undefined;
  save(trail: string, head: AuditHead): void;
  /** Every trail the store has a checkpoint for, by file path. */
  list(): readonly { readonly trail: string; readonly head: AuditHead }[];
}

export const AUDIT_HEAD_SCHEMA = `
CREATE TABLE IF NOT EXISTS audit_head (
  trail TEXT PRIMARY KEY NOT NULL,
  seq INTEGER NOT NULL,
  hash TEXT NOT NULL,
  file TEXT NOT NULL,
  time TEXT NOT NULL
) STRICT;
`;

export function auditHeadLedger(db: DatabaseSync, file: string, writable: boolean): AuditHeadLedger {
  const select = prepare(db, file, 'SELECT seq, hash, file, time FROM audit_head WHERE trail = ?');
  const selectAll = prepare(db, file, 'SELECT trail, seq, hash, file, time FROM audit_head ORDER BY trail');
  const upsert = writable
    ? prepare(db, file, 'INSERT INTO audit_head (trail, seq, hash, file, time) VALUES (?, ?, ?, ?, ?) ON CONFLICT (trail) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, file = excluded.file, time = excluded.time')
    : undefined;
  return {
    read(trail) {
      return guarded(file, () => {
        const row = select.get(trail) as { seq: number | bigint; hash: string; file: string; time: string } | undefined;
        return row ? { seq: Number(row.seq), hash: String(row.hash), file: String(row.file), time: String(row.time) } : undefined;
      });
    },
    list() {
      return guarded(file, () =>
        (selectAll.all() as { trail: string; seq: number | bigint; hash: string; file: string; time: string }[]).map((row) => ({
          trail: String(row.trail),
          head: { seq: Number(row.seq), hash: String(row.hash), file: String(row.file), time: String(row.time) },
        })),
      );
    },
    save(trail, head) {
      guarded(file, () => {
        if (!upsert) throw new Error('the store is open read-only');
        upsert.run(trail, head.seq, head.hash, head.file, head.time);
      });
    },
  };
}
