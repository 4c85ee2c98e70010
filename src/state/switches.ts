import type { DatabaseSync } from 'node:sqlite';
import { guarded, prepare } from './sqlite.ts';

/** off: normal. readonly: only read tools may be called or listed. on: nothing may. */
export type KillSwitchState = 'off' | 'readonly' | 'on';
export const KILL_SWITCH_STATES: readonly KillSwitchState[] = ['off', 'readonly', 'on'];

export interface KillSwitchRecord {
  readonly state: KillSwitchState;
  readonly changedAt: number;
  readonly changedBy: string;
}

/** The kill switch, in the state store: it outlives a restart, and a separate process sets it. */
export interface KillSwitch {
  read(): KillSwitchRecord;
  set(state: KillSwitchState, by: string, now: number): void;
}

export const SWITCHES_SCHEMA = `
CREATE TABLE IF NOT EXISTS switches (
  name TEXT PRIMARY KEY NOT NULL,
  value TEXT NOT NULL,
  changed_at INTEGER NOT NULL,
  changed_by TEXT NOT NULL
) STRICT;
`;

const OFF: KillSwitchRecord = Object.freeze({ state: 'off', changedAt: 0, changedBy: '' });

export function killSwitch(db: DatabaseSync, file: string, writable: boolean): KillSwitch {
  const select = prepare(db, file, "SELECT value, changed_at, changed_by FROM switches WHERE name = 'killswitch'");
  const upsert = writable
    ? prepare(db, file, "INSERT INTO switches (name, value, changed_at, changed_by) VALUES ('killswitch', ?, ?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value, changed_at = excluded.changed_at, changed_by = excluded.changed_by")
    : undefined;
  return {
    read() {
      return guarded(file, () => {
        const row = select.get() as { value: string; changed_at: number | bigint; changed_by: string } | undefined;
        if (!row) return OFF;
        // A value this version does not know is read as the strictest state: fail closed.
        const state = (KILL_SWITCH_STATES as readonly string[]).includes(row.value) ? (row.value as KillSwitchState) : 'on';
        return { state, changedAt: Number(row.changed_at), changedBy: row.changed_by };
      });
    },
    set(state, by, now) {
      guarded(file, () => {
        if (!upsert) throw new Error('the store is open read-only');
        upsert.run(state, now, by);
      });
    },
  };
}
