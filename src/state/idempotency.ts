import type { DatabaseSync } from 'node:sqlite';
import { guarded, prepare, transaction } from './sqlite.ts';

/** What begin() found for a call's idempotency key. */
export type IdempotencyEntry =
  /** No live record: this call is the first; it is now recorded, held (not yet sent), under `owner`. */
  | { readonly kind: 'first' }
  /** A call with this key is in flight, started by the process `owner`. */
  | { readonly kind: 'in-flight'; readonly owner: string; readonly argsDigest: string; readonly expiresAt: number }
  /** A call with this key finished; `outcome` is what it answered (JSON). */
  | { readonly kind: 'done'; readonly argsDigest: string; readonly outcome: string; readonly expiresAt: number };

/**
 * Write calls by idempotency key, in the state store, so a retry after a restart is still
 * recognised. Keys are per agent and tool: one agent's key never matches another's call.
 */
export interface IdempotencyLedger {
  begin(call: { readonly agent: string; readonly tool: string; readonly key: string; readonly argsDigest: string; readonly owner: string; readonly now: number; readonly windowMs: number }): IdempotencyEntry;
  /**
   * The call is being sent to the tool: from now on its outcome is what a repeat gets, and
   * the record is `owner`'s (another broker may have held the same call meanwhile). Until
   * `until` (its window plus its longest run), no other broker takes it for dead.
   */
  sending(call: { readonly agent: string; readonly tool: string; readonly key: string; readonly argsDigest: string; readonly owner: string; readonly now: number; readonly until: number }): 'mine' | 'taken';
  /** Records the outcome of a call begin() answered 'first' for; repeats get it for windowMs from now. */
  finish(agent: string, tool: string, key: string, owner: string, outcome: string, now: number, windowMs: number): void;
  /** Forgets a call of `owner` that never reached the tool, so it can be made again; another's record stays. */
  abandon(agent: string, tool: string, key: string, owner: string): void;
  /** Deletes records past their window, except the unfinished ones of `owner` (still running); returns how many. */
  prune(now: number, owner: string): number;
}

export const IDEMPOTENCY_SCHEMA = `
CREATE TABLE IF NOT EXISTS idempotency (
  agent TEXT NOT NULL,
  tool TEXT NOT NULL,
  key TEXT NOT NULL,
  args_digest TEXT NOT NULL,
  state TEXT NOT NULL,
  owner TEXT NOT NULL,
  outcome TEXT,
  started_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (agent, tool, key)
) STRICT;
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency (expires_at);
`;

interface Row {
  args_digest: string;
  state: string;
  owner: string;
  outcome: string | null;
  expires_at: number | bigint;
}

export function idempotencyLedger(db: DatabaseSync, file: string): IdempotencyLedger {
  const select = prepare(db, file, 'SELECT args_digest, state, owner, outcome, expires_at FROM idempotency WHERE agent = ? AND tool = ? AND key = ?');
  const remove = prepare(db, file, 'DELETE FROM idempotency WHERE agent = ? AND tool = ? AND key = ?');
  const insert = prepare(db, file, "INSERT INTO idempotency (agent, tool, key, args_digest, state, owner, started_at, expires_at) VALUES (?, ?, ?, ?, 'held', ?, ?, ?)");
  const send = prepare(
    db,
    file,
    "INSERT INTO idempotency (agent, tool, key, args_digest, state, owner, started_at, expires_at) VALUES (?, ?, ?, ?, 'in-flight', ?, ?, ?) ON CONFLICT (agent, tool, key) DO UPDATE SET state = 'in-flight', owner = excluded.owner, expires_at = MAX(expires_at, excluded.expires_at) WHERE state = 'held'",
  );
  const complete = prepare(db, file, "UPDATE idempotency SET state = 'done', outcome = ?, expires_at = ? WHERE agent = ? AND tool = ? AND key = ? AND owner = ? AND state IN ('held', 'in-flight')");
  const forget = prepare(db, file, "DELETE FROM idempotency WHERE agent = ? AND tool = ? AND key = ? AND owner = ? AND state <> 'done'");
  const pruneRows = prepare(db, file, "DELETE FROM idempotency WHERE expires_at <= ? AND (state = 'done' OR owner <> ?)");

  return {
    begin({ agent, tool, key, argsDigest, owner, now, windowMs }) {
      return transaction(db, file, () => {
        const row = select.get(agent, tool, key) as Row | undefined;
        // A held record of another process never reached the tool (that process stopped
        // while the call waited, e.g. for approval): nothing to protect, so it is replaced.
        const live = row && (Number(row.expires_at) > now || (row.state !== 'done' && row.owner === owner)) && !(row.state === 'held' && row.owner !== owner);
        if (row && live) {
          if (row.state === 'done') return { kind: 'done', argsDigest: row.args_digest, outcome: row.outcome ?? 'null', expiresAt: Number(row.expires_at) };
          return { kind: 'in-flight', owner: row.owner, argsDigest: row.args_digest, expiresAt: Number(row.expires_at) };
        }
        if (row) remove.run(agent, tool, key);
        insert.run(agent, tool, key, argsDigest, owner, now, now + windowMs);
        return { kind: 'first' };
      });
    },
    sending({ agent, tool, key, argsDigest, owner, now, until }) {
      // One transaction: two brokers sending the same call cannot both find it theirs.
      return transaction(db, file, () => {
        send.run(agent, tool, key, argsDigest, owner, now, until);
        const row = select.get(agent, tool, key) as Row | undefined;
        return row?.owner === owner && row.state === 'in-flight' ? 'mine' : 'taken';
      });
    },
    finish(agent, tool, key, owner, outcome, now, windowMs) {
      guarded(file, () => complete.run(outcome, now + windowMs, agent, tool, key, owner));
    },
    abandon(agent, tool, key, owner) {
      guarded(file, () => forget.run(agent, tool, key, owner));
    },
    prune(now, owner) {
      return guarded(file, () => Number(pruneRows.run(now, owner).changes));
    },
  };
}
