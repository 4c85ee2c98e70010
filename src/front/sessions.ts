import type { ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { NodeStreamableHTTPServerTransport } from '@modelcontextprotocol/node';
import { isJSONRPCRequest, type Server } from '@modelcontextprotocol/server';
import type { OAuthSession } from '../pipeline/types.ts';

/** Bounds on the 2025-era sessions one HTTP front keeps open. */
export interface SessionLimits {
  /** Open sessions, all agents together. */
  readonly max: number;
  /** Open sessions of one agent. */
  readonly maxPerAgent: number;
  /** A session with no request open and none for this long is closed, ms. */
  readonly idleMs: number;
}

/**
 * Each session holds a Server, its broker subscription and possibly an SSE stream: enough
 * for a few hundred agents' hosts, each with a few windows open, and no more.
 */
export const SESSION_LIMITS: SessionLimits = { max: 256, maxPerAgent: 32, idleMs: 30 * 60_000 };

/** SESSION_LIMITS with what is given instead; each must be a positive number. */
export function sessionLimits(given: Partial<SessionLimits> = {}): SessionLimits {
  const limits: Record<keyof SessionLimits, number> = { ...SESSION_LIMITS };
  for (const key of ['max', 'maxPerAgent', 'idleMs'] as const) {
    const value = given[key];
    if (value === undefined) continue;
    if (!(value > 0)) throw new RangeError(`sessions.${key} must be a positive number, not ${String(value)}`);
    limits[key] = value;
  }
  return limits;
}

/** The identity that opened a session; every later request on it must present the same one. */
export interface SessionOwner {
  readonly agent: string;
  readonly oauth?: OAuthSession;
}

export interface LegacySession {
  readonly id: string;
  readonly owner: SessionOwner;
  readonly transport: NodeStreamableHTTPServerTransport;
  readonly server: Server;
}

interface Entry extends LegacySession {
  lastSeen: number;
  /** Exchanges (POST answers, the GET stream) still open: a session in use is never idle. */
  open: number;
}

/**
 * Same agent, and for an access token the same subject and exactly the same scopes: a
 * token with other scopes gets a session of its own, so a session's tool list and grants
 * are always those of the token that uses it.
 */
export function ownedBy(session: LegacySession, owner: SessionOwner): boolean {
  const [a, b] = [session.owner.oauth, owner.oauth];
  if (session.owner.agent !== owner.agent) return false;
  if (a === undefined || b === undefined) return a === b;
  return a.subject === b.subject && a.scopes.size === b.scopes.size && [...a.scopes].every((scope) => b.scopes.has(scope));
}

/**
 * The open 2025-era sessions of one HTTP front: bounded in number overall and per agent,
 * closed when idle, when their owner is no longer in the config (isCurrent), and all at
 * close(). Closing a session closes its Server, which ends its broker subscription.
 */
export class SessionTable {
  readonly #limits: SessionLimits;
  readonly #isCurrent: (owner: SessionOwner) => boolean;
  /** Least recently used first: a use moves an entry to the end. */
  readonly #entries = new Map<string, Entry>();
  readonly #sweep: NodeJS.Timeout;
  #closed = false;

  constructor(limits: SessionLimits, isCurrent: (owner: SessionOwner) => boolean) {
    this.#limits = limits;
    this.#isCurrent = isCurrent;
    // Often enough that an idle session outlives its limit by at most half of it; unref'd so
    // that open sessions never keep the process alive.
    this.#sweep = setInterval(() => this.closeStale(), Math.min(Math.max(limits.idleMs / 2, 10), 60_000));
    this.#sweep.unref();
  }

  /** The session with this id; undefined when there is none, or it was stale and is now closed. */
  get(id: string): LegacySession | undefined {
    const entry = this.#entries.get(id);
    if (entry === undefined || !this.#stale(entry, performance.now())) return entry;
    this.close(id);
    return undefined;
  }

  /**
   * Adds a session whose Server is connected, making room first. An agent at its own limit
   * loses its least recently used session (one with nothing open if it has one); when the
   * table is full, the newcomer's agent loses one of its own the same way, and an agent
   * with none is refused (false): one agent can never push another's session out.
   */
  admit(session: LegacySession): boolean {
    if (this.#closed) return false;
    const own = [...this.#entries.values()].filter((entry) => entry.owner.agent === session.owner.agent);
    if (own.length >= this.#limits.maxPerAgent || this.#entries.size >= this.#limits.max) {
      const evicted = own.find((entry) => entry.open === 0) ?? own[0];
      if (evicted === undefined) return false;
      this.close(evicted.id);
    }
    if (this.#entries.size >= this.#limits.max) return false;
    this.#entries.set(session.id, { ...session, lastSeen: performance.now(), open: 0 });
    return true;
  }

  /**
   * Counts the exchange res answers (carrying body) as a use of the session, open until res
   * closes. A request whose answer stream closes before the answer is cancelled, as if the
   * client had sent notifications/cancelled: no event store keeps the answer for a later
   * stream, so the call would hold the downstream and the agent's limits for nothing.
   */
  track(session: LegacySession, res: ServerResponse, body: unknown): void {
    const entry = this.#entries.get(session.id);
    if (entry === undefined) return;
    this.#used(entry);
    entry.open++;
    res.once('close', () => {
      entry.open--;
      this.#used(entry);
      if (res.writableFinished) return;
      for (const message of Array.isArray(body) ? body : [body]) {
        if (!isJSONRPCRequest(message)) continue;
        entry.transport.onmessage?.({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: message.id, reason: 'the client closed the stream its answer was due on' } });
      }
    });
  }

  /** Forgets a session whose transport closed by itself (DELETE). */
  forget(id: string): void {
    this.#entries.delete(id);
  }

  close(id: string): void {
    const entry = this.#entries.get(id);
    if (entry === undefined) return;
    this.#entries.delete(id);
    void entry.server.close().catch(() => undefined);
  }

  /** Closes the sessions idle past the limit and those whose owner the config no longer names. */
  closeStale(): void {
    const now = performance.now();
    for (const entry of [...this.#entries.values()]) if (this.#stale(entry, now)) this.close(entry.id);
  }

  closeAll(): void {
    this.#closed = true;
    clearInterval(this.#sweep);
    for (const id of [...this.#entries.keys()]) this.close(id);
  }

  #used(entry: Entry): void {
    entry.lastSeen = performance.now();
    // Re-inserted at the end, unless it was closed meanwhile.
    if (this.#entries.delete(entry.id)) this.#entries.set(entry.id, entry);
  }

  #stale(entry: Entry, now: number): boolean {
    return (entry.open === 0 && now - entry.lastSeen > this.#limits.idleMs) || !this.#isCurrent(entry.owner);
  }
}
