import { WardenError } from '../errors.ts';
import { serversAllowing } from '../policy/surface-grants.ts';
import { judged, scopesOf, SurfaceRefusal, surfaceTimeout, type SurfaceDeps, type SurfaceRequest } from './judge.ts';
import { grantedResource } from './resources.ts';

/**
 * Resource subscriptions: resources/subscribe of 2025-era sessions, and the URIs a
 * 2026-07-28 agent names in subscriptions/listen (each listen stream is a subscriber of
 * its own). An agent subscribes to a URI it may read; the broker subscribes once per server
 * and URI however many subscribers asked, and passes an update on only to the subscribers
 * that asked and may still read the URI when it arrives (a reload may have taken the grant
 * away). A subscriber's subscriptions end with it.
 */

/** One agent session that takes resource updates. */
export interface Subscriber {
  readonly request: SurfaceRequest;
  notify(uri: string): void;
}

/** Subscriptions one session, or one listen stream, may hold at once. */
export const MAX_SUBSCRIPTIONS_PER_SESSION = 100;

/** Listen streams one agent may hold open at once (the HTTP front counts every stream; here, those with resources). */
export const MAX_LISTEN_STREAMS_PER_AGENT = 32;

export class ResourceSubscriptions {
  readonly #deps: SurfaceDeps;
  /** By server, then URI: the sessions subscribed. */
  readonly #byServer = new Map<string, Map<string, Set<Subscriber>>>();
  /** By session: its subscriptions, as server and URI. */
  readonly #bySession = new Map<Subscriber, Set<string>>();
  /** By agent: its listen streams with resource subscriptions. */
  readonly #streams = new Map<string, Set<Subscriber>>();
  /** Sessions that have ended: a subscribe still waiting on its server is undone when it returns. */
  readonly #ended = new WeakSet<Subscriber>();

  constructor(deps: SurfaceDeps) {
    this.#deps = deps;
  }

  subscribe(subscriber: Subscriber, uri: unknown): Promise<Record<string, never>> {
    return judged(this.#deps, subscriber.request, 'resources/subscribe', { uri: quoted(uri) }, async (judgement) => {
      const { target, server, backend } = grantedResource(this.#deps, subscriber.request, uri);
      judgement.facts['server'] = server;
      if (this.#ended.has(subscriber)) throw new WardenError('WARDEN_RESOURCE_NOT_FOUND', 'This session has ended.');
      const mine = this.#bySession.get(subscriber) ?? new Set<string>();
      const key = `${server}\n${target}`;
      if (mine.has(key)) return {};
      if (mine.size >= MAX_SUBSCRIPTIONS_PER_SESSION) {
        throw new WardenError('WARDEN_RATE_LIMITED', `A session may hold ${MAX_SUBSCRIPTIONS_PER_SESSION} resource subscriptions; unsubscribe from one first.`);
      }
      const sessions = this.#sessions(server, target);
      // Counted before the downstream answers, so a session that ends meanwhile releases it.
      sessions.add(subscriber);
      mine.add(key);
      this.#bySession.set(subscriber, mine);
      if (sessions.size === 1) {
        try {
          await backend.subscribeResource(target, surfaceTimeout(this.#deps.config()));
        } catch (error) {
          await this.#release(subscriber, key);
          throw error;
        }
      }
      if (this.#ended.has(subscriber)) await this.#release(subscriber, key);
      return {};
    });
  }

  /**
   * The resource subscriptions of a 2026-07-28 listen stream, all at once. The list itself
   * is checked first (refused as a whole, and audited as subscriptions/listen, when it is
   * not a list of at most MAX_SUBSCRIPTIONS_PER_SESSION URIs); then each URI is subscribed
   * one at a time, exactly as resources/subscribe would be, with an audit record of its own.
   * Returns the URIs subscribed (none if the stream ended meanwhile): one refused is left
   * out, and the agent sees which in the acknowledgement. Anything but a refusal (the audit trail cannot be written) ends them
   * all and is thrown.
   */
  async listen(subscriber: Subscriber, uris: unknown): Promise<string[]> {
    const problem = listProblem(uris);
    if (problem !== undefined) {
      const facts = { resources: Array.isArray(uris) ? uris.length : null };
      return judged<never>(this.#deps, subscriber.request, 'subscriptions/listen', facts, () => Promise.reject(new WardenError('WARDEN_ARGUMENTS_INVALID', problem)));
    }
    const agent = subscriber.request.agentName;
    const streams = this.#streams.get(agent) ?? new Set<Subscriber>();
    if (!streams.has(subscriber) && streams.size >= MAX_LISTEN_STREAMS_PER_AGENT) {
      const refusal = new WardenError('WARDEN_RATE_LIMITED', `An agent may have ${MAX_LISTEN_STREAMS_PER_AGENT} listen streams with resource subscriptions open at once; close one first.`);
      return judged<never>(this.#deps, subscriber.request, 'subscriptions/listen', { resources: (uris as unknown[]).length, open: streams.size }, () => Promise.reject(refusal));
    }
    if (this.#ended.has(subscriber)) return [];
    streams.add(subscriber);
    this.#streams.set(agent, streams);
    const subscribed: string[] = [];
    for (const uri of new Set(uris as string[])) {
      // The stream closed while its URIs were being judged: the rest are not asked for.
      if (this.#ended.has(subscriber)) break;
      try {
        await this.subscribe(subscriber, uri);
        subscribed.push(uri);
      } catch (error) {
        if (error instanceof SurfaceRefusal) continue;
        await this.dropSession(subscriber);
        throw error;
      }
    }
    return this.#ended.has(subscriber) ? [] : subscribed;
  }

  unsubscribe(subscriber: Subscriber, uri: unknown): Promise<Record<string, never>> {
    return judged(this.#deps, subscriber.request, 'resources/unsubscribe', { uri: quoted(uri) }, async (judgement) => {
      // Whatever the grants say now: a session can always end what it started.
      const mine = this.#bySession.get(subscriber);
      const key = [...(mine ?? [])].find((entry) => entry.slice(entry.indexOf('\n') + 1) === uri);
      if (key === undefined) throw new WardenError('WARDEN_RESOURCE_NOT_FOUND', 'This session has no subscription to that URI.');
      judgement.facts['server'] = key.slice(0, key.indexOf('\n'));
      await this.#release(subscriber, key);
      return {};
    });
  }

  /** The session ended: all its subscriptions go, without audit records of their own. */
  async dropSession(subscriber: Subscriber): Promise<void> {
    this.#ended.add(subscriber);
    const streams = this.#streams.get(subscriber.request.agentName);
    if (streams?.delete(subscriber) && streams.size === 0) this.#streams.delete(subscriber.request.agentName);
    for (const key of [...(this.#bySession.get(subscriber) ?? [])]) await this.#release(subscriber, key);
  }

  /** The URIs some session holds a subscription to on a server. */
  urisOf(server: string): string[] {
    return [...(this.#byServer.get(server)?.keys() ?? [])];
  }

  /** A server said a resource changed: each subscribed session that may still read it is told. */
  updated(server: string, uri: string): void {
    for (const subscriber of this.#byServer.get(server)?.get(uri) ?? []) {
      const agent = this.#deps.config().agents.get(subscriber.request.agentName);
      if (serversAllowing(agent?.resourceGrants ?? [], uri, scopesOf(subscriber.request)).includes(server)) subscriber.notify(uri);
    }
  }

  #sessions(server: string, uri: string): Set<Subscriber> {
    let uris = this.#byServer.get(server);
    if (!uris) this.#byServer.set(server, (uris = new Map()));
    let sessions = uris.get(uri);
    if (!sessions) uris.set(uri, (sessions = new Set()));
    return sessions;
  }

  async #release(subscriber: Subscriber, key: string): Promise<void> {
    const server = key.slice(0, key.indexOf('\n'));
    const uri = key.slice(key.indexOf('\n') + 1);
    this.#bySession.get(subscriber)?.delete(key);
    if (this.#bySession.get(subscriber)?.size === 0) this.#bySession.delete(subscriber);
    const uris = this.#byServer.get(server);
    const sessions = uris?.get(uri);
    if (!uris || !sessions) return;
    sessions.delete(subscriber);
    if (sessions.size > 0) return;
    uris.delete(uri);
    await this.#deps.backend(server)?.unsubscribeResource(uri, surfaceTimeout(this.#deps.config()));
  }
}

/** What is wrong with the URI list of a listen request, or undefined. */
function listProblem(uris: unknown): string | undefined {
  if (!Array.isArray(uris) || !uris.every((uri) => typeof uri === 'string')) return 'notifications.resourceSubscriptions must be a list of resource URIs.';
  if (new Set(uris).size > MAX_SUBSCRIPTIONS_PER_SESSION) {
    return `A subscriptions/listen stream may carry at most ${MAX_SUBSCRIPTIONS_PER_SESSION} resource subscriptions; open another stream for the rest.`;
  }
  return undefined;
}

/** URIs in audit records are cut to this length. */
const MAX_AUDITED_URI = 2048;

function quoted(uri: unknown): string | null {
  return typeof uri === 'string' ? uri.slice(0, MAX_AUDITED_URI) : null;
}
