import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { pino, type Logger } from 'pino';
import { WardenError } from '../errors.ts';

/** One audit record. Argument values never appear; argsSha256 identifies them. */
export interface AuditRecord {
  readonly event:
    | 'tools/list'
    | 'tools/call'
    | 'server.state'
    | 'server.quarantined'
    | 'manifest.rejected'
    | 'manifest.accepted'
    | 'auth.failure'
    | 'broker.start'
    | 'broker.stop'
    | 'approval.requested'
    | 'approval.decided'
    | 'killswitch.changed'
    | 'config.reloaded'
    | 'config.refused'
    | 'egress.refused'
    | 'sandbox.worker';
  readonly correlationId?: string;
  readonly agent?: string;
  readonly tool?: string;
  readonly server?: string;
  readonly decision?: 'allow' | 'deny';
  readonly reason?: string | null;
  readonly outcome?: 'ok' | 'tool_error' | 'refused' | 'failed' | 'input_required';
  readonly durationMs?: number;
  readonly argsSha256?: string | null;
  readonly [key: string]: unknown;
}

export interface AuditTrail {
  /** Writes a record now. Throws if it cannot be written. */
  write(record: AuditRecord): void;
  /**
   * Writes a record together with the others committed in the same event-loop turn (one
   * write(2) for all of them) and resolves once it is written; rejects if it cannot be.
   */
  commit(record: AuditRecord): Promise<void>;
  /** False once a write has failed; callers then refuse calls (fail closed). */
  readonly healthy: boolean;
  close(): void;
}

/**
 * The audit trail: one JSON line per decision (serialised by pino) appended to the file
 * the config names. A call's record is in the kernel's hands before its result is
 * returned: commit() batches the records of calls that finish in the same event-loop
 * turn into one write, so concurrent calls share the cost of the system call.
 */
export function openAuditTrail(file: string): AuditTrail {
  let fd: number;
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    fd = openSync(file, 'a', 0o600);
  } catch (error) {
    throw new WardenError('WARDEN_AUDIT_UNWRITABLE', `cannot open the audit trail ${file}: ${(error as NodeJS.ErrnoException).code ?? 'error'}; the broker does not serve without it`, { file });
  }
  let healthy = true;
  let closed = false;
  let lines: string[] = [];
  let waiting: { resolve: () => void; reject: (error: Error) => void }[] = [];
  let scheduled = false;
  // pino serialises each record and hands the line to this sink synchronously.
  const sink = { write: (line: string) => void lines.push(line) };
  const logger: Logger = pino(
    { base: { service: 'mcp-warden' }, messageKey: 'msg', timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: () => ({ kind: 'audit' }) } },
    sink,
  );

  const flush = (): void => {
    scheduled = false;
    const batch = waiting;
    const text = lines.join('');
    lines = [];
    waiting = [];
    if (text === '' && batch.length === 0) return;
    try {
      if (!healthy || closed) throw new Error('audit trail is not writable');
      const bytes = Buffer.from(text, 'utf8');
      for (let offset = 0; offset < bytes.length; ) offset += writeSync(fd, bytes, offset);
    } catch (error) {
      healthy = false;
      const failure = new Error(`audit write failed: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
      for (const waiter of batch) waiter.reject(failure);
      throw failure;
    }
    for (const waiter of batch) waiter.resolve();
  };

  return {
    write(record) {
      logger.info(record);
      flush();
    },
    commit(record) {
      logger.info(record);
      const written = new Promise<void>((resolve, reject) => waiting.push({ resolve, reject }));
      if (!scheduled) {
        scheduled = true;
        setImmediate(() => {
          try {
            flush();
          } catch {
            // each waiter has been rejected with the failure
          }
        });
      }
      return written;
    },
    get healthy() {
      return healthy;
    },
    close() {
      if (closed) return;
      try {
        flush();
      } catch {
        // already reported to the waiters and marked unhealthy
      }
      closed = true;
      closeSync(fd);
    },
  };
}

/**
 * For records outside a call (server state, auth failures, start and stop): a failed write
 * must not crash the broker from an event handler. It is logged, and the trail is then
 * unhealthy, so the record stage refuses every call until it is fixed.
 */
export function writeOrLog(audit: AuditTrail, record: AuditRecord, logger: { error: (obj: object, msg: string) => void }): void {
  try {
    audit.write(record);
  } catch (error) {
    logger.error({ err: error instanceof Error ? error.message : String(error), event: record.event }, 'audit trail write failed');
  }
}

/** An audit trail held in memory; for tests and tooling that must not touch disk. */
export function memoryAuditTrail(): AuditTrail & { readonly records: AuditRecord[] } {
  const records: AuditRecord[] = [];
  return {
    records,
    healthy: true,
    write(record) {
      records.push(record);
    },
    async commit(record) {
      records.push(record);
    },
    close() {},
  };
}
