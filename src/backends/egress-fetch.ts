import type { FetchLike } from '@modelcontextprotocol/client';
import { fetch as undiciFetch, type Dispatcher } from 'undici';
import { EgressRefusal, findEgressRefusal } from '../guard/egress-rules.ts';

export interface EgressFetchOptions {
  /** The dispatcher in force now (a reload may replace it between requests). */
  readonly dispatcher: () => Dispatcher;
  /** Longest a POST or DELETE may take, ms; the event stream (GET) has no limit. */
  readonly requestLimitMs: () => number;
  /** Told of every refusal, to audit it. */
  readonly onRefused: (refusal: EgressRefusal) => void;
}

/**
 * The fetch a Streamable HTTP server's transport uses: every request through the broker's
 * egress-controlled dispatcher. A message (POST) or the end of a session (DELETE) never
 * outlives the longest call, however the server behaves (the SDK does not always abort
 * one when its call times out); only the server's event stream (GET) stays open. A
 * refusal is reported, then thrown as itself, so the transport's error names it.
 */
export function egressFetch(options: EgressFetchOptions): FetchLike {
  return async (url, init) => {
    const method = (init?.method ?? 'GET').toUpperCase();
    let signal = init?.signal ?? undefined;
    if (method !== 'GET') {
      const limit = AbortSignal.timeout(options.requestLimitMs());
      signal = signal ? AbortSignal.any([signal, limit]) : limit;
    }
    try {
      return (await undiciFetch(url, { ...(init as object), ...(signal ? { signal } : {}), dispatcher: options.dispatcher() })) as unknown as Response;
    } catch (error) {
      const refusal = findEgressRefusal(error);
      if (!refusal) throw error;
      options.onRefused(refusal);
      throw refusal;
    }
  };
}
