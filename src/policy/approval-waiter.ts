import type { ApprovalLedger, ApprovalRecord } from '../state/approvals.ts';

/** How a held call's wait ended. */
export type WaitEnd =
  | { readonly end: 'decided'; readonly record: ApprovalRecord }
  /** The hold time passed with no decision: the approval stays pending. */
  | { readonly end: 'still-pending' }
  | { readonly end: 'cancelled' };

/**
 * Holds calls waiting for a person's decision. Decisions are written to the state store by
 * another process (mcp-warden approvals); the broker calls check() when the store changes,
 * and each held call whose approval is no longer pending is released.
 */
export class ApprovalWaiter {
  readonly #ledger: ApprovalLedger;
  readonly #waits = new Map<string, Set<(record: ApprovalRecord) => void>>();

  constructor(ledger: ApprovalLedger) {
    this.#ledger = ledger;
  }

  /** How many calls are held now. */
  get held(): number {
    let count = 0;
    for (const waits of this.#waits.values()) count += waits.size;
    return count;
  }

  /**
   * Waits up to holdMs for approval `id` to be decided. An approval that expires during
   * the hold is marked expired and ends the wait as decided.
   */
  wait(id: string, holdMs: number, signal?: AbortSignal): Promise<WaitEnd> {
    const now = this.#ledger.get(id);
    if (now && now.status !== 'pending') return Promise.resolve({ end: 'decided', record: now });
    if (signal?.aborted) return Promise.resolve({ end: 'cancelled' });
    const { promise, resolve } = Promise.withResolvers<WaitEnd>();
    let waits = this.#waits.get(id);
    if (!waits) {
      waits = new Set();
      this.#waits.set(id, waits);
    }
    const onDecision = (record: ApprovalRecord) => finish({ end: 'decided', record });
    const onAbort = () => finish({ end: 'cancelled' });
    // The approval's own expiry may come before the hold ends.
    const until = Math.max(0, Math.min(holdMs, (now?.expiresAt ?? 0) - Date.now()));
    const timer = setTimeout(() => {
      let record: ApprovalRecord | undefined;
      try {
        this.#ledger.expire(Date.now());
        record = this.#ledger.get(id);
      } catch {
        // The store cannot be read: the call is not approved (the stage refuses it).
      }
      finish(record && record.status !== 'pending' ? { end: 'decided', record } : { end: 'still-pending' });
    }, until);
    const finish = (end: WaitEnd) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      waits.delete(onDecision);
      if (waits.size === 0) this.#waits.delete(id);
      resolve(end);
    };
    waits.add(onDecision);
    signal?.addEventListener('abort', onAbort, { once: true });
    return promise;
  }

  /** Releases every held call whose approval was decided (or expired) since it was held. */
  check(now: number): void {
    if (this.#waits.size === 0) return;
    this.#ledger.expire(now);
    for (const [id, waits] of [...this.#waits]) {
      const record = this.#ledger.get(id);
      if (record && record.status === 'pending') continue;
      if (!record) continue;
      for (const release of [...waits]) release(record);
    }
  }
}
