import { createHash } from 'node:crypto';
import { readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { writeOrLog } from '../audit/trail.ts';
import type { Broker } from '../broker.ts';
import { isWardenError, WardenError } from '../errors.ts';
import { loadConfig } from './load.ts';

/** A burst of file events (an editor's save) settles this long before the file is read. */
export const RELOAD_DEBOUNCE_MS = 300;
/** The file must stay the same this long, and match what was loaded, before it is applied. */
const SETTLE_MS = 200;
/** A file still changing after this many looks is refused this time; its next change retries. */
const SETTLE_TRIES = 10;

export type ReloadResult =
  | { readonly outcome: 'applied'; readonly fromSha256: string; readonly toSha256: string; readonly started: readonly string[]; readonly stopped: readonly string[] }
  | { readonly outcome: 'unchanged' }
  | { readonly outcome: 'refused'; readonly code: string; readonly message: string };

/**
 * Live policy edits. The whole new file is loaded and checked exactly as at start-up
 * (schema, rules, every signed manifest); only then is it swapped in, at once. A file
 * that is half-written, invalid or changes a setting that needs a restart never takes
 * effect: the broker keeps the config it has and says exactly why, in the log and the
 * audit trail. One reload runs at a time; a change that arrives meanwhile is read after.
 */
export class ConfigReloader {
  readonly #broker: Broker;
  readonly #file: string;
  #running: Promise<ReloadResult> | undefined;
  /** A reload asked for while one runs: the strongest trigger wins (a signal re-reads manifests). */
  #again: { trigger: 'file' | 'signal'; force: boolean } | undefined;
  #watcher: FSWatcher | undefined;
  #debounce: NodeJS.Timeout | undefined;

  constructor(broker: Broker, file: string) {
    this.#broker = broker;
    this.#file = file;
  }

  /**
   * Reloads now. `force` (SIGHUP) re-verifies the manifests even when the config text is
   * unchanged, so a newly signed release is picked up; a file event with the same text
   * (a touch, an editor's backup write) does nothing.
   */
  reload(trigger: 'file' | 'signal', force = trigger === 'signal'): Promise<ReloadResult> {
    if (this.#running) {
      const pending = this.#again;
      this.#again = pending && (pending.force || !force) ? pending : { trigger, force };
      return this.#running;
    }
    this.#running = this.#reloadOnce(trigger, force).finally(() => {
      this.#running = undefined;
      const again = this.#again;
      this.#again = undefined;
      if (again) void this.reload(again.trigger, again.force);
    });
    return this.#running;
  }

  async #reloadOnce(trigger: 'file' | 'signal', force: boolean): Promise<ReloadResult> {
    const broker = this.#broker;
    const before = broker.config;
    try {
      await this.#settled();
      // Cheap first: a touch or an editor's backup write leaves the text as it was.
      if (!force && sha256Of(this.#file) === before.sha256) return { outcome: 'unchanged' };
      // Read-only: the manifest history is written only once the new config is in force.
      const next = loadConfig(this.#file, { state: 'read-only' });
      // A writer still at work since the read: this text is not the one to apply.
      if (sha256Of(this.#file) !== next.sha256) throw new WardenError('WARDEN_RELOAD_REFUSED', `${this.#file} changed while it was being loaded; it is read again at its next change`);
      if (!force && next.sha256 === before.sha256) return { outcome: 'unchanged' };
      for (const warning of next.warnings) broker.logger.warn({ trigger }, `config warning: ${warning}`);
      const { started, stopped } = await broker.applyConfig(next);
      return { outcome: 'applied', fromSha256: before.sha256, toSha256: next.sha256, started, stopped };
    } catch (error) {
      const code = isWardenError(error) ? error.code : 'WARDEN_INTERNAL';
      const message = error instanceof Error ? error.message : String(error);
      broker.logger.error({ trigger, code }, `config change refused; the broker keeps the previous config: ${message}`);
      writeOrLog(broker.audit, { event: 'config.refused', config: this.#file, trigger, reason: code, message, keptSha256: before.sha256 }, broker.logger);
      return { outcome: 'refused', code, message };
    }
  }

  /**
   * Waits until the file's size and modification time hold still: a writer that is half
   * way through is given time to finish. Writing the new file beside the old one and
   * renaming it into place is still the way to be sure.
   */
  async #settled(): Promise<void> {
    let last = fingerprint(this.#file);
    for (let i = 0; i < SETTLE_TRIES; i++) {
      await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
      const now = fingerprint(this.#file);
      if (now === last) return;
      last = now;
    }
    throw new WardenError('WARDEN_RELOAD_REFUSED', `${this.#file} kept changing for ${(SETTLE_MS * SETTLE_TRIES) / 1000} s; it is read again at its next change`);
  }

  /**
   * Watches the config's folder rather than the file, so a file replaced by rename (how
   * careful editors and deploy tools write) is still seen.
   */
  watch(): void {
    if (this.#watcher) return;
    const name = basename(this.#file);
    this.#watcher = watch(dirname(this.#file), { persistent: false }, (_event, changed) => {
      if (changed !== null && changed.toString() !== name) return;
      clearTimeout(this.#debounce);
      this.#debounce = setTimeout(() => void this.reload('file'), RELOAD_DEBOUNCE_MS);
    });
    this.#watcher.on('error', (error) => this.#broker.logger.error({ err: error.message }, 'cannot watch the config file; SIGHUP still reloads it'));
    // An edit made between the first load and the watch would otherwise wait for the next one.
    if (sha256Of(this.#file) !== this.#broker.config.sha256) void this.reload('file');
  }

  close(): void {
    clearTimeout(this.#debounce);
    this.#watcher?.close();
    this.#watcher = undefined;
  }
}

function fingerprint(file: string): string {
  try {
    const stat = statSync(file);
    return `${stat.size}:${stat.mtimeMs}:${stat.ino}`;
  } catch {
    return 'missing';
  }
}

function sha256Of(file: string): string | undefined {
  try {
    return createHash('sha256').update(readFileSync(file, 'utf8'), 'utf8').digest('hex');
  } catch {
    return undefined;
  }
}
