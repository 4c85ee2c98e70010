import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { pino, type Logger } from 'pino';

/** One audit record. Argument values never appear; argsSha256 identifies them. */
export interface AuditRecord {
  readonly event: 'tools/list' | 'tools/call' | 'server.state' | 'server.drift' | 'auth.failure' | 'broker.start' | 'broker.stop';
  readonly correlationId?: string;
  readonly agent?: string;
  readonly tool?: string;
  readonly server?: string;
  readonly decision?: 'allow' | 'deny';
  readonly reason?: string | null;
  readonly outcome?: 'ok' | 'tool_error' | 'refused' | 'failed';
  readonly durationMs?: number;
  readonly argsSha256?: string | null;
  readonly [key: string]: unknown;
}

export interface AuditTrail {
  write(record: AuditRecord): void;
  /** False once a write has failed; callers then refuse calls (fail closed). */
  readonly healthy: boolean;
  close(): void;
}

/**
 * The audit trail: one JSON line per decision, written synchronously (the call does not
 * proceed until its line is in the kernel's hands) to the file the config names.
 */
export function openAuditTrail(file: string): AuditTrail {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const destination = pino.destination({ dest: file, sync: true, mode: 0o600 });
  let healthy = true;
  destination.on('error', () => {
    healthy = false;
  });
  const logger: Logger = pino(
    { base: { service: 'mcp-warden' }, messageKey: 'msg', timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: () => ({ kind: 'audit' }) } },
    destination,
  );
  return {
    write(record) {
      try {
        logger.info(record);
      } catch {
        healthy = false;
        throw new Error('audit write failed');
      }
      if (!healthy) throw new Error('audit write failed');
    },
    get healthy() {
      return healthy;
    },
    close() {
      // Writes are synchronous, so nothing is buffered while the trail is healthy. After a
      // failed write the stream still holds the failed bytes and would retry them forever
      // on end() (a full disk stays full): drop them; the failure is already logged.
      if (healthy) destination.end();
      else destination.destroy();
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
    close() {},
  };
}
