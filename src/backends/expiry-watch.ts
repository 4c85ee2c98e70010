import { writeOrLog, type AuditTrail } from '../audit/trail.ts';
import type { Logger } from '../log.ts';
import type { Manifest } from '../manifest/types.ts';
import type { Quarantine } from './types.ts';

export interface ExpiryWatchOptions {
  readonly server: string;
  readonly manifest: Manifest;
  readonly logger: Logger;
  readonly audit: AuditTrail;
  /** How often the expiry is checked, besides whenever check() is called (each call). */
  readonly recheckMs?: number;
  /** Called when the server's tools disappear for agents. */
  readonly onToolsChanged?: () => void;
}

/**
 * Quarantines a server whose signed manifest has expired, for backends with no live
 * server to compare (native HTTP APIs, code tools): checked on every call and every
 * recheckMs, so tools disappear from lists on time and calls are refused.
 */
export class ExpiryWatch {
  readonly #options: ExpiryWatchOptions;
  readonly #expiresAt: number;
  #quarantine: Quarantine | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: ExpiryWatchOptions) {
    this.#options = options;
    this.#expiresAt = Date.parse(options.manifest.expiresAt);
  }

  get quarantine(): Quarantine | undefined {
    return this.#quarantine;
  }

  check(): void {
    const { manifest, server } = this.#options;
    if (this.#quarantine || this.#expiresAt > Date.now()) return;
    this.#quarantine = { reason: 'expired', since: new Date().toISOString(), trigger: 'interval' };
    this.#options.logger.warn({ server, expiresAt: manifest.expiresAt }, 'server quarantined: its signed manifest expired');
    writeOrLog(this.#options.audit, { event: 'server.quarantined', server, manifest: manifest.name, serial: manifest.serial, reason: 'expired', trigger: 'interval', expiresAt: manifest.expiresAt }, this.#options.logger);
    this.#options.onToolsChanged?.();
  }

  start(): void {
    this.check();
    clearInterval(this.#timer);
    this.#timer = setInterval(() => this.check(), this.#options.recheckMs ?? 300_000);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
