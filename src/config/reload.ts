import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { writeOrLog } from '../audit/trail.ts';
import type { Broker } from '../broker.ts';
import { isWardenError } from '../errors.ts';
import { loadConfig } from './load.ts';

/** A burst of file events (an editor's save) settles this long before the file is read. */
export const RELOAD_DEBOUNCE_MS = 300;

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
  #again = false;
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
      this.#again = true;
      return this.#running;
    }
    this.#running = this.#reloadOnce(trigger, force).finally(() => {
      this.#running = undefined;
      if (this.#again) {
        this.#again = false;
        void this.reload(trigger, force);
      }
    });
    return this.#running;
  }

  async #reloadOnce(trigger: 'file' | 'signal', force: boolean): Promise<ReloadResult> {
    const broker = this.#broker;
    const before = broker.config;
    try {
      // read-write: accepted releases enter the manifest history, as at start-up.
      const next = loadConfig(this.#file, { state: 'read-write' });
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
  }

  close(): void {
    clearTimeout(this.#debounce);
    this.#watcher?.close();
    this.#watcher = undefined;
  }
}
