import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { WardenError } from '../errors.ts';

/** Prepares a statement; a failure means the store is unusable, never a silent skip. */
export function prepare(db: DatabaseSync, file: string, sql: string): StatementSync {
  try {
    return db.prepare(sql);
  } catch (error) {
    throw unavailable(file, error);
  }
}

/** Runs fn in one IMMEDIATE transaction, so two processes sharing the file cannot interleave. */
export function transaction<T>(db: DatabaseSync, file: string, fn: () => T): T {
  try {
    db.exec('BEGIN IMMEDIATE');
  } catch (error) {
    throw unavailable(file, error);
  }
  try {
    const result = fn();
    db.exec('COMMIT');
    return result;
  } catch (error) {
    try {
      db.exec('ROLLBACK');
    } catch {
      // The transaction is already gone; the first error is the one that matters.
    }
    throw error instanceof WardenError ? error : unavailable(file, error);
  }
}

/** Wraps a store failure: the broker fails closed on it, it never guesses. */
export function guarded<T>(file: string, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    throw error instanceof WardenError ? error : unavailable(file, error);
  }
}

export function unavailable(file: string, error: unknown): WardenError {
  const reason = error instanceof Error ? error.message : String(error);
  return new WardenError('WARDEN_STATE_UNAVAILABLE', `cannot use the state store ${file}: ${reason}`, { file }, { cause: error });
}

export function readOnlyStore(file: string): WardenError {
  return new WardenError('WARDEN_STATE_UNAVAILABLE', `the state store ${file} is open read-only`, { file });
}
