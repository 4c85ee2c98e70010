import { WardenError } from '../errors.ts';
import { serversAllowing } from '../policy/surface-grants.ts';
import { judged, scopesOf, surfaceTimeout, type SurfaceDeps, type SurfaceRequest } from './judge.ts';
import { grantedResource } from './resources.ts';

/**
 * Resource subscriptions (resources/subscribe, 2025-era sessions). An agent subscribes to
 * a URI it may read; the broker subscribes once per server and URI however many sessions
 * asked, and passes an update on only to the sessions that subscribed and may still read
 * the URI when it arrives (a reload may have taken the grant away). A session's
 * subscriptions end with it.
 */

/** One agent session that takes resource updates. */
export interface Subscriber {
  readonly request: SurfaceRequest;
  notify(uri: string): void;
}

/** Subscriptions one session may hold at once. */
export const MAX_SUBSCRIPTIONS_PER_SESSION = 100;

export class ResourceSubscriptions {
  readonly #deps: SurfaceDeps;
  /** By server, then URI: the sessions subscribed. */
  readonly #byServer = new Map<string, Map<string, Set<Subscriber>>>();
  /** By session: its subscriptions, as server and URI. */
  readonly #bySession = new Map<Subscriber, Set<string>>();
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

/** URIs in audit records are cut to this length. */
const MAX_AUDITED_URI = 2048;

function quoted(uri: unknown): string | null {
  return typeof uri === 'string' ? uri.slice(0, MAX_AUDITED_URI) : null;
}
