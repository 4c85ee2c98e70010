import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SUBSCRIPTION_ID_META_KEY, type JSONRPCMessage, type Transport } from '@modelcontextprotocol/server';
import { ListenBus, ListeningTransport, listenRefusal, withResources, type ListenStream } from '../../src/front/listen.ts';
import { SurfaceRefusal } from '../../src/surface/judge.ts';
import type { Subscriber } from '../../src/surface/subscriptions.ts';

// The stdio front's wire and the HTTP front's bus, against fakes: what reaches the SDK's
// entry, what is written to the agent, and when a stream's subscriptions end.

/** The wire under test: messages the agent sends are pushed in; what is written out is kept. */
class FakeWire implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage) => void;
  readonly written: JSONRPCMessage[] = [];
  async start(): Promise<void> {}
  async close(): Promise<void> {
    this.onclose?.();
  }
  async send(message: JSONRPCMessage): Promise<void> {
    this.written.push(message);
  }
}

/** Subscriptions that grant what `grant` says, when `release()` is called (or at once). */
class FakeSubscriptions {
  readonly asked: { subscriber: Subscriber; uris: unknown }[] = [];
  readonly dropped: Subscriber[] = [];
  grant: (uris: unknown) => string[] | Error = (uris) => (uris as string[]).filter((uri) => uri.startsWith('ok://'));
  held = false;
  #waiting: (() => void)[] = [];
  listen(subscriber: Subscriber, uris: unknown): Promise<string[]> {
    this.asked.push({ subscriber, uris });
    const answer = () => {
      const granted = this.grant(uris);
      return granted instanceof Error ? Promise.reject(granted) : Promise.resolve(granted);
    };
    if (!this.held) return answer();
    return new Promise((resolve, reject) => this.#waiting.push(() => void answer().then(resolve, reject)));
  }
  async dropSession(subscriber: Subscriber): Promise<void> {
    this.dropped.push(subscriber);
  }
  release(): void {
    for (const go of this.#waiting.splice(0)) go();
  }
}

const META = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28' };
const listen = (id: number | string, notifications: Record<string, unknown>): JSONRPCMessage => ({ jsonrpc: '2.0', id, method: 'subscriptions/listen', params: { notifications, _meta: META } });
const ack = (id: number | string, notifications: Record<string, unknown>): JSONRPCMessage => ({ jsonrpc: '2.0', method: 'notifications/subscriptions/acknowledged', params: { notifications, _meta: { [SUBSCRIPTION_ID_META_KEY]: id } } });
const cancel = (id: number | string): JSONRPCMessage => ({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: id } });
const tick = () => new Promise((resolve) => setImmediate(resolve));

function setUp() {
  const wire = new FakeWire();
  const subscriptions = new FakeSubscriptions();
  const transport = new ListeningTransport(wire, subscriptions, { agentName: 'alice' });
  const delivered: JSONRPCMessage[] = [];
  transport.onmessage = (message) => void delivered.push(message);
  let closed = 0;
  transport.onclose = () => void closed++;
  return { wire, subscriptions, transport, delivered, closed: () => closed };
}

describe('ListeningTransport (stdio)', () => {
  it('holds a listen naming resources until they are judged, then passes it on naming only those granted', async () => {
    const { wire, subscriptions, delivered } = setUp();
    subscriptions.held = true;
    wire.onmessage?.(listen(1, { resourceSubscriptions: ['ok://a', 'no://b', 'ok://c'], toolsListChanged: true }));
    // Other messages are not held behind it.
    const call: JSONRPCMessage = { jsonrpc: '2.0', id: 2, method: 'tools/list', params: { _meta: META } };
    wire.onmessage?.(call);
    assert.deepEqual(delivered, [call]);
    assert.deepEqual(subscriptions.asked.map((entry) => entry.uris), [['ok://a', 'no://b', 'ok://c']]);
    subscriptions.release();
    await tick();
    assert.deepEqual(delivered[1], listen(1, { resourceSubscriptions: ['ok://a', 'ok://c'], toolsListChanged: true }));
  });

  it('none granted: the listen goes on without the field, so the acknowledgement names none', async () => {
    const { wire, subscriptions, delivered } = setUp();
    subscriptions.grant = () => [];
    wire.onmessage?.(listen(1, { resourceSubscriptions: ['no://b'], promptsListChanged: true }));
    await tick();
    assert.deepEqual(delivered, [listen(1, { promptsListChanged: true })]);
  });

  it('a listen of list changes only, and every other message, passes at once, untouched', () => {
    const { wire, subscriptions, delivered } = setUp();
    const plain = listen(1, { toolsListChanged: true });
    wire.onmessage?.(plain);
    assert.deepEqual(delivered, [plain]);
    assert.equal(subscriptions.asked.length, 0);
  });

  it('updates reach the agent only after the entry acknowledged the stream, stamped with its id; none after the agent cancels it', async () => {
    const { wire, subscriptions, transport, delivered } = setUp();
    wire.onmessage?.(listen('s1', { resourceSubscriptions: ['ok://a'] }));
    await tick();
    assert.equal(delivered.length, 1);
    const subscriber = subscriptions.asked[0]!.subscriber;
    subscriber.notify('ok://a');
    assert.equal(wire.written.length, 0, 'nothing before the acknowledgement');
    await transport.send(ack('s1', { resourceSubscriptions: ['ok://a'] }));
    subscriber.notify('ok://a');
    assert.deepEqual(wire.written.at(-1), { jsonrpc: '2.0', method: 'notifications/resources/updated', params: { uri: 'ok://a', _meta: { [SUBSCRIPTION_ID_META_KEY]: 's1' } } });
    wire.onmessage?.(cancel('s1'));
    // The entry sees the cancel too (it ends its own stream), and the subscriptions end.
    assert.deepEqual(delivered.at(-1), cancel('s1'));
    assert.deepEqual(subscriptions.dropped, [subscriber]);
    const count = wire.written.length;
    subscriber.notify('ok://a');
    assert.equal(wire.written.length, count, 'nothing after the cancel');
  });

  it('cancelled while its URIs are judged: the entry never sees it, and what was subscribed is dropped', async () => {
    const { wire, subscriptions, delivered } = setUp();
    subscriptions.held = true;
    wire.onmessage?.(listen(1, { resourceSubscriptions: ['ok://a'] }));
    wire.onmessage?.(cancel(1));
    subscriptions.release();
    await tick();
    assert.deepEqual(delivered, [cancel(1)]);
    assert.deepEqual(subscriptions.dropped, [subscriptions.asked[0]!.subscriber]);
  });

  it('refused whole: the agent gets the broker\'s error, the entry never sees the listen', async () => {
    const { wire, subscriptions, delivered } = setUp();
    subscriptions.grant = () => new SurfaceRefusal('WARDEN_ARGUMENTS_INVALID', 'too many', 'corr-1');
    wire.onmessage?.(listen(4, { resourceSubscriptions: ['ok://a'] }));
    await tick();
    assert.deepEqual(delivered, []);
    assert.deepEqual(wire.written, [listenRefusal(4, new SurfaceRefusal('WARDEN_ARGUMENTS_INVALID', 'too many', 'corr-1'))]);
    assert.deepEqual(wire.written[0], { jsonrpc: '2.0', id: 4, error: { code: -32602, message: 'mcp-warden refused the request [WARDEN_ARGUMENTS_INVALID]: too many', data: { code: 'WARDEN_ARGUMENTS_INVALID', correlationId: 'corr-1' } } });
    assert.equal(subscriptions.dropped.length, 1);
  });

  it('refused after the agent replaced it with a stream of the same id: no answer, and the new stream is kept', async () => {
    const { wire, subscriptions, delivered } = setUp();
    subscriptions.held = true;
    subscriptions.grant = (uris) => ((uris as string[]).includes('bad://x') ? new SurfaceRefusal('WARDEN_ARGUMENTS_INVALID', 'bad', 'corr-3') : (uris as string[]));
    wire.onmessage?.(listen(1, { resourceSubscriptions: ['bad://x'] }));
    wire.onmessage?.(listen(1, { resourceSubscriptions: ['ok://a'] }));
    subscriptions.release();
    await tick();
    assert.deepEqual(wire.written, []);
    assert.deepEqual(delivered, [cancel(1), listen(1, { resourceSubscriptions: ['ok://a'] })]);
    // Only the replaced stream was ended.
    assert.deepEqual(subscriptions.dropped, [subscriptions.asked[0]!.subscriber]);
  });

  it('a failure that is not a refusal (the audit trail) is answered as WARDEN_INTERNAL', async () => {
    const { wire, subscriptions } = setUp();
    subscriptions.grant = () => new Error('disk full');
    wire.onmessage?.(listen(5, { resourceSubscriptions: ['ok://a'] }));
    await tick();
    assert.deepEqual(wire.written, [{ jsonrpc: '2.0', id: 5, error: { code: -32603, message: 'mcp-warden refused the request [WARDEN_INTERNAL]: the broker could not record it.' } }]);
  });

  it('the entry answering the listen (an error, or the final result at shutdown) ends its subscriptions', async () => {
    const { wire, subscriptions, transport } = setUp();
    wire.onmessage?.(listen(1, { resourceSubscriptions: ['ok://a'] }));
    wire.onmessage?.(listen(2, { resourceSubscriptions: ['ok://b'] }));
    await tick();
    const [first, second] = subscriptions.asked.map((entry) => entry.subscriber);
    await transport.send({ jsonrpc: '2.0', id: 1, error: { code: -32601, message: 'Method not found' } });
    assert.deepEqual(subscriptions.dropped, [first]);
    // Another request's answer reusing the id is not the stream's end; the stream's final result names it.
    await transport.send({ jsonrpc: '2.0', id: 2, result: { tools: [] } });
    assert.deepEqual(subscriptions.dropped, [first]);
    await transport.send({ jsonrpc: '2.0', id: 2, result: { resultType: 'complete', _meta: { [SUBSCRIPTION_ID_META_KEY]: 2 } } });
    assert.deepEqual(subscriptions.dropped, [first, second]);
  });

  it('a listen reusing an open stream\'s id replaces it: the old one ends on both sides first, whatever the new one names', async () => {
    const { wire, subscriptions, delivered } = setUp();
    wire.onmessage?.(listen(1, { resourceSubscriptions: ['ok://a'] }));
    await tick();
    wire.onmessage?.(listen(1, { resourceSubscriptions: ['ok://b'] }));
    await tick();
    assert.deepEqual(subscriptions.dropped, [subscriptions.asked[0]!.subscriber]);
    assert.deepEqual(delivered.slice(1), [cancel(1), listen(1, { resourceSubscriptions: ['ok://b'] })]);
    wire.onmessage?.(listen(1, { toolsListChanged: true }));
    assert.deepEqual(subscriptions.dropped, [subscriptions.asked[0]!.subscriber, subscriptions.asked[1]!.subscriber]);
    assert.deepEqual(delivered.slice(3), [cancel(1), listen(1, { toolsListChanged: true })]);
  });

  it('a listen not claiming the 2026-07-28 revision is never judged: it goes on without its resources', () => {
    const { wire, subscriptions, delivered } = setUp();
    const unclaimed: JSONRPCMessage = { jsonrpc: '2.0', id: 1, method: 'subscriptions/listen', params: { notifications: { resourceSubscriptions: ['ok://a'], toolsListChanged: true } } };
    const other: JSONRPCMessage = { jsonrpc: '2.0', id: 2, method: 'subscriptions/listen', params: { notifications: { resourceSubscriptions: ['ok://a'] }, _meta: { 'io.modelcontextprotocol/protocolVersion': '2099-01-01' } } };
    wire.onmessage?.(unclaimed);
    wire.onmessage?.(other);
    assert.equal(subscriptions.asked.length, 0);
    assert.deepEqual(delivered, [
      { jsonrpc: '2.0', id: 1, method: 'subscriptions/listen', params: { notifications: { toolsListChanged: true } } },
      { jsonrpc: '2.0', id: 2, method: 'subscriptions/listen', params: { notifications: {}, _meta: { 'io.modelcontextprotocol/protocolVersion': '2099-01-01' } } },
    ]);
  });

  it('the connection closing ends every stream, then tells the entry', async () => {
    const { wire, subscriptions, closed } = setUp();
    wire.onmessage?.(listen(1, { resourceSubscriptions: ['ok://a'] }));
    wire.onmessage?.(listen(2, { resourceSubscriptions: ['ok://b'] }));
    await tick();
    await wire.close();
    assert.equal(subscriptions.dropped.length, 2);
    assert.equal(closed(), 1);
  });

  it('a hostile resource list is passed to the subscriptions to refuse, never to the entry', async () => {
    const { wire, subscriptions, delivered } = setUp();
    subscriptions.grant = (uris) => (Array.isArray(uris) ? [] : new SurfaceRefusal('WARDEN_ARGUMENTS_INVALID', 'not a list', 'corr-2'));
    for (const hostile of ['ok://a', { length: 1 }, null, 7]) wire.onmessage?.(listen(`h-${String(hostile)}`, { resourceSubscriptions: hostile }));
    await tick();
    assert.deepEqual(delivered, []);
    assert.deepEqual(wire.written.map((message) => [(message as { id: unknown }).id, (message as { error: { code: number } }).error.code]), [
      ['h-ok://a', -32602],
      ['h-[object Object]', -32602],
      ['h-null', -32602],
      ['h-7', -32602],
    ]);
  });
});

describe('withResources', () => {
  it('replaces the list, keeps the rest of the request, and does not change the original', () => {
    const original = listen(1, { resourceSubscriptions: ['a', 'b'], toolsListChanged: true });
    const copy = structuredClone(original);
    assert.deepEqual(withResources(original as never, ['a']), listen(1, { resourceSubscriptions: ['a'], toolsListChanged: true }));
    assert.deepEqual(original, copy);
  });
});

describe('ListenBus (HTTP)', () => {
  it('a stream opened in scope gets its listener recorded; list changes go to every stream, resource updates published to all go nowhere', () => {
    const errors: Error[] = [];
    const bus = new ListenBus((error) => void errors.push(error));
    const seen: string[] = [];
    const stream: ListenStream = {};
    const unsubscribe = bus.open(stream, () => bus.subscribe((event) => void seen.push(`mine:${event.kind}`)));
    bus.subscribe((event) => void seen.push(`other:${event.kind}`));
    bus.subscribe(() => {
      throw new Error('a broken listener');
    });
    assert.equal(typeof stream.listener, 'function');
    bus.publish({ kind: 'tools_list_changed' });
    bus.publish({ kind: 'resource_updated', uri: 'ok://a' });
    assert.deepEqual(seen, ['mine:tools_list_changed', 'other:tools_list_changed']);
    assert.equal(errors.length, 1);
    unsubscribe();
    assert.equal(stream.listener, undefined);
    bus.publish({ kind: 'prompts_list_changed' });
    assert.deepEqual(seen.slice(2), ['other:prompts_list_changed']);
  });
});
