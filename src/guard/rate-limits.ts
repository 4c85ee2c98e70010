/** A rate: calls per minute with a burst allowance (token bucket), and a cap on calls in flight. All optional. */
export interface RateLimit {
  readonly perMinute?: number;
  readonly burst?: number;
  readonly concurrent?: number;
}

/** Which limit refused a call. */
export type LimitScope = 'agent' | 'tool' | 'global';
export type LimitKind = 'rate' | 'concurrency';

/** The outcome of admitCall. release() frees the call's concurrency slots; calling it again is a no-op. */
export type Admission =
  /** release: frees the concurrency slots (idempotent). refund: returns the tokens too, for a call a later check refused. */
  | { readonly ok: true; readonly release: () => void; readonly refund: () => void }
  | { readonly ok: false; readonly scope: LimitScope; readonly kind: LimitKind; readonly limit: number; readonly retryAfterMs: number };

/** The state behind the limits, behind an interface so a shared store (several broker replicas) can replace the embedded one. */
export interface LimitStore {
  /** Takes one token from the bucket `key` (capacity `burst`, refilled at perMinute/60000 tokens per ms); refuses with the ms until a token is back. */
  take(key: string, perMinute: number, burst: number, now: number): { ok: true } | { ok: false; retryAfterMs: number };
  /** Returns a token taken by take() (used when a later limit of the same call refuses, so a refused call costs nothing). */
  giveBack(key: string, burst: number): void;
  /** Counts one more call in flight under `key` if fewer than `max` are; returns false otherwise. */
  enter(key: string, max: number): boolean;
  leave(key: string): void;
}

/** The embedded store, plus its size so tests and metrics can see that memory stays bounded. */
export interface MemoryLimitStore extends LimitStore {
  size(): { readonly buckets: number; readonly counters: number };
}

/** Buckets kept before full ones are swept; past it, with none full, new keys are refused. */
export const DEFAULT_MAX_BUCKETS = 10_000;

/** The wait reported for a bucket that never refills (perMinute 0, or a burst under one token). */
const NEVER_MS = 60_000; // one minute: finite, so callers never see NaN or Infinity

/** A concurrency refusal cannot know when a slot frees; this is only a hint. */
const CONCURRENCY_RETRY_MS = 1000; // one second

/**
 * Tokens are counted in 1/60 000ths, so refilling perMinute per 60 000 ms is exact integer
 * arithmetic for integer rates and clock readings (0.001 tokens/ms is not exact in binary).
 */
const UNITS_PER_TOKEN = 60_000;

interface Bucket {
  units: number;
  /** The latest clock reading seen; never moves backwards. */
  last: number;
  perMinute: number;
  capacity: number;
}

/**
 * An in-process store. `now` should come from a monotonic clock (performance.now()): a clock
 * that steps back is held at its latest reading, so it mints no tokens.
 */
export function memoryLimitStore(options: { readonly maxBuckets?: number } = {}): MemoryLimitStore {
  const maxBuckets = options.maxBuckets ?? DEFAULT_MAX_BUCKETS;
  // Maps, not objects: keys carry agent and tool names from outside.
  const buckets = new Map<string, Bucket>();
  const counters = new Map<string, number>();
  // No bucket is full before this time, so a sweep before it would free nothing. Kept at or
  // below the true earliest time (every change lowers it), so it only ever skips futile sweeps.
  let nextFullAt = Number.NEGATIVE_INFINITY;

  function noteFullAt(bucket: Bucket): void {
    nextFullAt = Math.min(nextFullAt, fullAt(bucket));
  }

  /** Drops full buckets (a dropped bucket comes back full, so dropping one changes nothing). */
  function makeRoom(now: number): boolean {
    if (now < nextFullAt) return false;
    let soonest = Number.POSITIVE_INFINITY;
    for (const [key, bucket] of buckets) {
      const at = fullAt(bucket);
      if (at <= now) buckets.delete(key);
      else soonest = Math.min(soonest, at);
    }
    nextFullAt = soonest;
    return buckets.size < maxBuckets;
  }

  return {
    take(key, perMinute, burst, now) {
      // Fails closed on values that would otherwise yield NaN: no refill, no whole token, no clock.
      if (!(perMinute > 0) || !(burst >= 1) || !Number.isFinite(now)) return { ok: false, retryAfterMs: NEVER_MS };
      const capacity = burst * UNITS_PER_TOKEN;
      let bucket = buckets.get(key);
      if (bucket === undefined) {
        // Fail closed rather than grow without bound or forget a bucket that is not full.
        if (buckets.size >= maxBuckets && !makeRoom(now)) return { ok: false, retryAfterMs: waitMs(nextFullAt - now) };
        bucket = { units: capacity, last: now, perMinute, capacity };
        buckets.set(key, bucket);
      } else {
        if (now > bucket.last) {
          bucket.units = Math.min(capacity, bucket.units + (now - bucket.last) * perMinute);
          bucket.last = now;
        } else {
          bucket.units = Math.min(capacity, bucket.units);
        }
        bucket.perMinute = perMinute;
        bucket.capacity = capacity;
      }
      noteFullAt(bucket);
      if (bucket.units >= UNITS_PER_TOKEN) {
        bucket.units -= UNITS_PER_TOKEN;
        return { ok: true };
      }
      // Counted from the bucket's own time, which is ahead of `now` if the clock stepped back.
      let wait = Math.ceil(bucket.last - now + (UNITS_PER_TOKEN - bucket.units) / perMinute);
      // With fractional rates or clocks, rounding must not make the promised time early.
      if (bucket.units + (now + wait - bucket.last) * perMinute < UNITS_PER_TOKEN) wait += 1;
      return { ok: false, retryAfterMs: waitMs(wait) };
    },

    giveBack(key, burst) {
      const bucket = buckets.get(key);
      // A bucket that is gone was full, and a full bucket has no room for the token.
      if (bucket === undefined) return;
      bucket.units = Math.min(burst * UNITS_PER_TOKEN, bucket.units + UNITS_PER_TOKEN);
      noteFullAt(bucket);
    },

    enter(key, max) {
      const count = counters.get(key) ?? 0;
      if (!(count < max)) return false;
      counters.set(key, count + 1);
      return true;
    },

    leave(key) {
      const count = counters.get(key);
      if (count === undefined) return;
      // Counters at zero are deleted, so only calls in flight take memory.
      if (count <= 1) counters.delete(key);
      else counters.set(key, count - 1);
    },

    size() {
      return { buckets: buckets.size, counters: counters.size };
    },
  };
}

/** When a bucket will be full again at its rate, with no more takes. */
function fullAt(bucket: Bucket): number {
  if (bucket.units >= bucket.capacity) return bucket.last;
  return bucket.last + (bucket.capacity - bucket.units) / bucket.perMinute;
}

/** A positive, finite wait in whole milliseconds. */
function waitMs(ms: number): number {
  return Number.isFinite(ms) ? Math.max(1, Math.ceil(ms)) : NEVER_MS;
}

type Refusal = Extract<Admission, { ok: false }>;

/**
 * Checks, in this order: global concurrency, agent rate, agent concurrency, tool rate, tool
 * concurrency. All or nothing: a refused call holds no slot and has used no token. A limit
 * left undefined is not checked.
 */
export function admitCall(
  store: LimitStore,
  call: { agent: string; tool: string; agentLimit: RateLimit; toolLimit: RateLimit; globalConcurrent?: number },
  now: number,
): Admission {
  const entered: string[] = [];
  const taken: { key: string; burst: number }[] = [];

  function undo(): void {
    for (const key of entered.toReversed()) store.leave(key);
    for (const { key, burst } of taken.toReversed()) store.giveBack(key, burst);
  }

  function rate(scope: LimitScope, key: string, limit: RateLimit): Refusal | undefined {
    if (limit.perMinute === undefined) return undefined;
    // Without a burst, a full minute's allowance may be spent at once.
    const burst = limit.burst ?? limit.perMinute;
    const result = store.take(key, limit.perMinute, burst, now);
    if (!result.ok) return { ok: false, scope, kind: 'rate', limit: limit.perMinute, retryAfterMs: result.retryAfterMs };
    taken.push({ key, burst });
    return undefined;
  }

  function concurrency(scope: LimitScope, key: string, max: number | undefined): Refusal | undefined {
    if (max === undefined) return undefined;
    if (!store.enter(key, max)) return { ok: false, scope, kind: 'concurrency', limit: max, retryAfterMs: CONCURRENCY_RETRY_MS };
    entered.push(key);
    return undefined;
  }

  const agentKey = `agent:${call.agent}`;
  const toolKey = `tool:${call.tool}`;
  let refusal: Refusal | undefined;
  try {
    refusal =
      concurrency('global', 'global', call.globalConcurrent) ??
      rate('agent', agentKey, call.agentLimit) ??
      concurrency('agent', agentKey, call.agentLimit.concurrent) ??
      rate('tool', toolKey, call.toolLimit) ??
      concurrency('tool', toolKey, call.toolLimit.concurrent);
  } catch (error) {
    // A store that fails (a shared one can) must not keep what this call already took.
    undo();
    throw error;
  }
  if (refusal !== undefined) {
    undo();
    return refusal;
  }
  let released = false;
  let refunded = false;
  return {
    ok: true,
    release: () => {
      if (released) return;
      released = true;
      for (const key of entered.toReversed()) store.leave(key);
    },
    refund: () => {
      if (refunded) return;
      refunded = true;
      for (const { key, burst } of taken.toReversed()) store.giveBack(key, burst);
    },
  };
}
