import { AsyncLocalStorage } from 'node:async_hooks';
import {
  isJSONRPCErrorResponse,
  isJSONRPCNotification,
  isJSONRPCRequest,
  isJSONRPCResultResponse,
  PROTOCOL_VERSION_META_KEY,
  SUBSCRIPTION_ID_META_KEY,
  type JSONRPCErrorResponse,
  type JSONRPCMessage,
  type JSONRPCRequest,
  type MessageExtraInfo,
  type RequestId,
  type ServerEvent,
  type ServerEventBus,
  type Transport,
  type TransportSendOptions,
} from '@modelcontextprotocol/server';
import { SurfaceRefusal, type SurfaceRequest } from '../surface/judge.ts';
import type { ResourceSubscriptions, Subscriber } from '../surface/subscriptions.ts';

/**
 * Resource subscriptions of 2026-07-28 agents. Such an agent names the URIs it wants
 * updates for in subscriptions/listen, a request the SDK's serving entry answers itself
 * (its acknowledgement, then change notifications on the stream). So the fronts see the
 * request first: each URI is judged and subscribed like a 2025-era resources/subscribe
 * (ResourceSubscriptions#listen, one audit record each), and the request goes on to the
 * entry naming only the URIs granted, so that its acknowledgement tells the agent which it
 * got. Each listen stream is one subscriber: its updates go to that stream alone, and its
 * subscriptions end with it.
 */

/** The method whose requests are handled here. */
export const LISTEN_METHOD = 'subscriptions/listen';

/**
 * The protocol revision whose listen requests are judged. A listen claiming another (or
 * none) goes on without its resources, so an entry that serves it can never watch a URI
 * nobody judged; today's entry refuses it.
 */
export const LISTEN_REVISION = '2026-07-28';

/** Whether a listen request claims the revision whose listens are judged. */
export function claimsListenRevision(message: JSONRPCRequest): boolean {
  return message.params?._meta?.[PROTOCOL_VERSION_META_KEY] === LISTEN_REVISION;
}

/** The URIs a listen request asks updates for, as sent; undefined when it names none. */
export function listenedResources(message: JSONRPCRequest): unknown {
  const notifications = (message.params as { notifications?: unknown } | undefined)?.notifications;
  if (notifications === null || typeof notifications !== 'object') return undefined;
  return (notifications as { resourceSubscriptions?: unknown }).resourceSubscriptions;
}

/** The listen request naming only these URIs (none: the field is dropped, and the entry acknowledges no resource subscriptions). */
export function withResources(message: JSONRPCRequest, uris: readonly string[]): JSONRPCRequest {
  const params = message.params as { notifications: Record<string, unknown> } & Record<string, unknown>;
  const { resourceSubscriptions: _asked, ...notifications } = params.notifications;
  return { ...message, params: { ...params, notifications: uris.length > 0 ? { ...notifications, resourceSubscriptions: [...uris] } : notifications } };
}

/** The answer to a listen refused as a whole: the broker's code and the audit record's correlation id. */
export function listenRefusal(id: RequestId, error: unknown): JSONRPCErrorResponse {
  if (!(error instanceof SurfaceRefusal)) {
    return { jsonrpc: '2.0', id, error: { code: -32603, message: 'mcp-warden refused the request [WARDEN_INTERNAL]: the broker could not record it.' } };
  }
  const code = error.code === 'WARDEN_ARGUMENTS_INVALID' ? -32602 : -32603;
  return { jsonrpc: '2.0', id, error: { code, message: `mcp-warden refused the request [${error.code}]: ${error.message}`, data: { code: error.code, correlationId: error.correlationId } } };
}

/** The listener the entry registered for one HTTP listen stream, once it has. */
export interface ListenStream {
  listener?: (event: ServerEvent) => void;
}

/**
 * The change-event bus of the HTTP front's handler. List changes go to every open stream
 * (each agent then lists again and sees only its own). A resource update goes to one
 * stream only, through the listener the entry registered while serving that stream's
 * request: open() runs the request with the stream in scope, and the entry registers its
 * listener synchronously as it starts the stream. A resource update published for
 * everyone is dropped: which stream may see it is decided per subscriber.
 */
export class ListenBus implements ServerEventBus {
  readonly #listeners = new Set<(event: ServerEvent) => void>();
  readonly #opening = new AsyncLocalStorage<ListenStream>();
  readonly #onerror: (error: Error) => void;

  constructor(onerror: (error: Error) => void) {
    this.#onerror = onerror;
  }

  publish(event: ServerEvent): void {
    if (event.kind === 'resource_updated') return;
    for (const listener of [...this.#listeners]) {
      try {
        listener(event);
      } catch (error) {
        this.#onerror(error instanceof Error ? error : new Error(String(error)));
      }
    }
  }

  subscribe(listener: (event: ServerEvent) => void): () => void {
    const stream = this.#opening.getStore();
    this.#listeners.add(listener);
    if (stream) stream.listener = listener;
    return () => {
      this.#listeners.delete(listener);
      if (stream?.listener === listener) delete stream.listener;
    };
  }

  /** Serves a listen request whose stream takes this subscriber's updates. */
  open<T>(stream: ListenStream, serve: () => T): T {
    return this.#opening.run(stream, serve);
  }
}

/**
 * The stdio front's wire, between the SDK's stdio entry and stdin/stdout. A listen request
 * naming resources is held while its URIs are judged and subscribed, then passed on naming
 * only those granted. Updates are written to the wire stamped with the stream's id, once
 * the entry has acknowledged it. The stream's subscriptions end with it: the agent cancels
 * it, the entry answers it (a refusal, or the final result at shutdown), or the connection
 * closes.
 */
export class ListeningTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage, extra?: MessageExtraInfo) => void;
  readonly #inner: Transport;
  readonly #subscriptions: Pick<ResourceSubscriptions, 'listen' | 'dropSession'>;
  readonly #request: SurfaceRequest;
  /** The listen streams with resource subscriptions, by request id: opening, or acknowledged. */
  readonly #streams = new Map<RequestId, { readonly subscriber: Subscriber; acknowledged: boolean }>();

  constructor(inner: Transport, subscriptions: Pick<ResourceSubscriptions, 'listen' | 'dropSession'>, request: SurfaceRequest) {
    this.#inner = inner;
    this.#subscriptions = subscriptions;
    this.#request = request;
    inner.onmessage = (message, extra) => this.#receive(message, extra);
    inner.onerror = (error) => this.onerror?.(error);
    inner.onclose = () => {
      for (const id of [...this.#streams.keys()]) this.#end(id);
      this.onclose?.();
    };
  }

  start(): Promise<void> {
    return this.#inner.start();
  }

  close(): Promise<void> {
    return this.#inner.close();
  }

  send(message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    // Every message of the connection passes here: the cheap tests come first.
    if (this.#streams.size > 0) {
      if ('method' in message && message.method === 'notifications/subscriptions/acknowledged' && isJSONRPCNotification(message)) {
        const stream = this.#streams.get(message.params?._meta?.[SUBSCRIPTION_ID_META_KEY] as RequestId);
        if (stream) stream.acknowledged = true;
      }
      // The entry's answer to a listen ends it: a refusal, or the final result of a stream it
      // closes (which names the stream in its _meta).
      if ('id' in message && message.id !== undefined && this.#streams.has(message.id)) {
        if (isJSONRPCErrorResponse(message)) this.#end(message.id);
        else if (isJSONRPCResultResponse(message) && message.result._meta?.[SUBSCRIPTION_ID_META_KEY] === message.id) this.#end(message.id);
      }
    }
    return this.#inner.send(message, options);
  }

  #receive(message: JSONRPCMessage, extra?: MessageExtraInfo): void {
    const method = 'method' in message ? message.method : undefined;
    if (method === LISTEN_METHOD && isJSONRPCRequest(message)) {
      // A listen reusing the id of a stream the broker holds replaces it, as the entry
      // does: the old one ends on both sides first.
      if (this.#streams.has(message.id)) {
        this.#end(message.id);
        this.onmessage?.({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: message.id } }, extra);
      }
      if (listenedResources(message) !== undefined) {
        if (claimsListenRevision(message)) void this.#open(message, extra);
        else this.onmessage?.(withResources(message, []), extra);
        return;
      }
    }
    if (method === 'notifications/cancelled' && isJSONRPCNotification(message)) {
      const id = (message.params as { requestId?: unknown } | undefined)?.requestId;
      if (typeof id === 'string' || typeof id === 'number') this.#end(id);
    }
    this.onmessage?.(message, extra);
  }

  async #open(message: JSONRPCRequest, extra?: MessageExtraInfo): Promise<void> {
    const stream = {
      acknowledged: false,
      subscriber: {
        request: this.#request,
        notify: (uri: string) => {
          // Only to a stream the agent has been told of and still holds.
          if (!stream.acknowledged || this.#streams.get(message.id) !== stream) return;
          const update = { jsonrpc: '2.0' as const, method: 'notifications/resources/updated', params: { uri, _meta: { [SUBSCRIPTION_ID_META_KEY]: message.id } } };
          void this.#inner.send(update).catch((error: unknown) => this.onerror?.(error instanceof Error ? error : new Error(String(error))));
        },
      },
    };
    this.#streams.set(message.id, stream);
    let uris: string[];
    try {
      uris = await this.#subscriptions.listen(stream.subscriber, listenedResources(message));
    } catch (error) {
      // Answered only while it is still the stream of that id (not cancelled or replaced meanwhile).
      if (this.#streams.get(message.id) !== stream) return;
      this.#end(message.id);
      await this.#inner.send(listenRefusal(message.id, error)).catch(() => undefined);
      return;
    }
    // Cancelled, replaced or closed while its URIs were judged: the entry never sees it.
    if (this.#streams.get(message.id) !== stream) return;
    this.onmessage?.(withResources(message, uris), extra);
  }

  #end(id: RequestId): void {
    const stream = this.#streams.get(id);
    if (!stream) return;
    this.#streams.delete(id);
    void this.#subscriptions.dropSession(stream.subscriber).catch(() => undefined);
  }
}
