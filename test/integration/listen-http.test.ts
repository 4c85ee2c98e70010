// Resource subscriptions over HTTP, through the broker's HTTP front: 2026-07-28 agents name
// their URIs in subscriptions/listen (each stream judged, fed and ended on its own), 2025-era
// sessions use resources/subscribe. The downstream is the conformance fixture on the 2025
// handshake, whose write tool reports how many subscribed connections it told of a change.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { Client, ProtocolError, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { parse } from 'yaml';
import type { AuditRecord } from '../../src/audit/trail.ts';
import type { Broker } from '../../src/broker.ts';
import { loadConfig, sha256Hex } from '../../src/config/load.ts';
import { startHttpFront, type HttpFront } from '../../src/front/http.ts';
import { IDEMPOTENCY_META_KEY } from '../../src/pipeline/stages/deduplicate.ts';
import { ROOT, startBroker, stdioManifest, tempDir, textOf, waitFor, writeConfig, writeManifest } from '../helpers.ts';

const { dir, cleanup } = tempDir('warden-listen-http-');
const FIXTURE = join(ROOT, 'examples/conformance-server/server.ts');
const SOURCE = parse(readFileSync(join(ROOT, 'examples/conformance-server/conformance.manifest.yaml'), 'utf8')) as { description: string; tools: unknown[]; prompts: unknown[] };
const TOKENS = { alice: 'alice-token-0123456789', bob: 'bob-token-0123456789', carol: 'carol-token-0123456789' };
const WATCHED = 'test://watched-resource';
const CONFIG = join(dir, 'warden.yaml');

/** alice and bob may read the watched resource (bob unless told otherwise); carol may read nothing. Everyone may call the tools. */
function policy(options: { bobReads?: boolean; bobToken?: boolean } = {}) {
  const tools = { tools: ['*'], access: ['read', 'write'] };
  return loadConfig(
    writeConfig(CONFIG, {
      version: 1,
      servers: { conformance: { manifest: 'conformance.json', prefix: false } },
      agents: {
        alice: { tokenSha256: sha256Hex(TOKENS.alice), allow: [tools, { resources: [WATCHED, 'test://static-text'], server: 'conformance' }] },
        bob: { ...(options.bobToken === false ? {} : { tokenSha256: sha256Hex(TOKENS.bob) }), allow: [tools, ...(options.bobReads === false ? [] : [{ resources: [WATCHED], server: 'conformance' }])] },
        carol: { tokenSha256: sha256Hex(TOKENS.carol), allow: [tools] },
      },
    }),
  );
}

let broker: Broker;
let front: HttpFront;
const clients: Client[] = [];

before(async () => {
  writeManifest(join(dir, 'manifests/conformance.json'), { ...stdioManifest('conformance', FIXTURE, SOURCE.tools, { era: 'legacy' }), description: SOURCE.description, prompts: SOURCE.prompts });
  const config = policy();
  assert.equal(config.rejected.size, 0, [...config.rejected.values()].map((r) => r.message).join('\n'));
  broker = await startBroker(config);
  front = await startHttpFront(broker, { host: '127.0.0.1', port: 0 });
});

after(async () => {
  await Promise.all(clients.map((client) => client.close().catch(() => undefined)));
  await front?.close();
  await broker?.close();
  cleanup();
});

const records = (): AuditRecord[] => (broker.audit as unknown as { records: AuditRecord[] }).records;
let since = 0;
beforeEach(() => {
  since = records().length;
});
const fresh = (predicate: (record: AuditRecord) => boolean): AuditRecord[] => records().slice(since).filter(predicate);

async function connect(agent: keyof typeof TOKENS, era: 'legacy' | 'modern') {
  const client = new Client({ name: `${agent}-host`, version: '1.0.0' }, { versionNegotiation: { mode: era === 'modern' ? { pin: '2026-07-28' } : 'legacy' } });
  const updates: string[] = [];
  client.setNotificationHandler('notifications/resources/updated', (notification) => void updates.push(notification.params.uri));
  await client.connect(new StreamableHTTPClientTransport(new URL(front.url), { requestInit: { headers: { Authorization: `Bearer ${TOKENS[agent]}` } } }));
  assert.equal(client.getProtocolEra(), era);
  clients.push(client);
  return { client, updates };
}

/** Changes the watched resource; the fixture answers with how many subscribed connections it told. */
async function updateWatched(client: Client): Promise<number> {
  const result = await client.callTool({ name: 'test_update_watched_resource', arguments: {}, _meta: { [IDEMPOTENCY_META_KEY]: randomUUID() } });
  const told = /; (\d+) subscribed connection\(s\) notified$/.exec(textOf(result));
  assert.ok(told, textOf(result));
  return Number(told[1]);
}

/** A request after a change: an update the broker passes on is written before it answers this. */
async function barrier(client: Client): Promise<void> {
  assert.equal(textOf(await client.callTool({ name: 'test_simple_text', arguments: {} })), 'This is a simple text response for testing.');
}

describe('subscriptions/listen over HTTP (2026-07-28 agents)', () => {
  it('the acknowledgement names only the URIs the agent may read; each refusal and grant is audited', async () => {
    const alice = await connect('alice', 'modern');
    assert.equal(alice.client.getServerCapabilities()?.resources?.subscribe, true);
    const stream = await alice.client.listen({ resourceSubscriptions: [WATCHED, 'test://static-binary', 'file:///etc/passwd'], toolsListChanged: true });
    try {
      assert.deepEqual(stream.honoredFilter, { toolsListChanged: true, resourceSubscriptions: [WATCHED] });
      const subscribes = fresh((r) => r.event === 'resources/subscribe' && r['agent'] === 'alice');
      assert.deepEqual(subscribes.map((r) => [r['uri'], r.decision, r.reason]), [
        [WATCHED, 'allow', null],
        ['test://static-binary', 'deny', 'WARDEN_RESOURCE_NOT_FOUND'],
        ['file:///etc/passwd', 'deny', 'WARDEN_RESOURCE_NOT_FOUND'],
      ]);
      assert.equal(await updateWatched(alice.client), 1);
      assert.ok(await waitFor(() => alice.updates.length >= 1, 100, 20), 'the update reached the stream');
      await barrier(alice.client);
      assert.deepEqual(alice.updates, [WATCHED]);
    } finally {
      await stream.close();
    }
    // The stream's end ends the broker's subscription downstream.
    assert.ok(await waitFor(async () => (await updateWatched(alice.client)) === 0, 40, 50), 'the downstream subscription ended with the stream');
    await barrier(alice.client);
    assert.deepEqual(alice.updates, [WATCHED]);
  });

  it('each stream gets only its own agent\'s updates, and only while the agent may read the URI', async () => {
    const alice = await connect('alice', 'modern');
    const bob = await connect('bob', 'modern');
    const carol = await connect('carol', 'modern');
    const streams = await Promise.all([
      alice.client.listen({ resourceSubscriptions: [WATCHED] }),
      bob.client.listen({ resourceSubscriptions: [WATCHED] }),
      carol.client.listen({ resourceSubscriptions: [WATCHED], resourcesListChanged: true }),
    ]);
    try {
      assert.deepEqual(streams.map((stream) => stream.honoredFilter), [{ resourceSubscriptions: [WATCHED] }, { resourceSubscriptions: [WATCHED] }, { resourcesListChanged: true }]);
      // One subscription downstream, however many streams asked.
      assert.equal(await updateWatched(carol.client), 1);
      assert.ok(await waitFor(() => alice.updates.length >= 1 && bob.updates.length >= 1, 100, 20), 'both granted streams were told');
      await Promise.all([barrier(alice.client), barrier(bob.client), barrier(carol.client)]);
      assert.deepEqual([alice.updates, bob.updates, carol.updates], [[WATCHED], [WATCHED], []]);

      // A reload takes bob's grant away: his stream is open still, but told nothing more.
      await broker.applyConfig(policy({ bobReads: false }));
      assert.equal(await updateWatched(carol.client), 1);
      assert.ok(await waitFor(() => alice.updates.length >= 2, 100, 20), 'alice was told again');
      await Promise.all([barrier(alice.client), barrier(bob.client)]);
      assert.deepEqual([alice.updates, bob.updates, carol.updates], [[WATCHED, WATCHED], [WATCHED], []]);
    } finally {
      await Promise.all(streams.map((stream) => stream.close()));
      await broker.applyConfig(policy());
    }
  });

  it('a stream whose client goes away ends its subscriptions', async () => {
    const alice = await connect('alice', 'modern');
    const controller = new AbortController();
    const stream = await alice.client.listen({ resourceSubscriptions: [WATCHED] }, { signal: controller.signal });
    assert.equal(await updateWatched(alice.client), 1);
    controller.abort();
    assert.equal(await stream.closed, 'local');
    assert.ok(await waitFor(async () => (await updateWatched(alice.client)) === 0, 40, 50), 'the downstream subscription ended');
  });

  it('a reload that takes the agent\'s token away ends its streams, and their subscriptions', async () => {
    const alice = await connect('alice', 'modern');
    const bob = await connect('bob', 'modern');
    const stream = await bob.client.listen({ resourceSubscriptions: [WATCHED] });
    try {
      assert.equal(await updateWatched(alice.client), 1);
      assert.ok(await waitFor(() => bob.updates.length >= 1, 100, 20), 'bob was told while his token held');
      await broker.applyConfig(policy({ bobToken: false }));
      assert.equal(await stream.closed, 'remote');
      assert.ok(await waitFor(async () => (await updateWatched(alice.client)) === 0, 40, 50), 'the downstream subscription ended with the stream');
      assert.deepEqual(bob.updates, [WATCHED]);
    } finally {
      await broker.applyConfig(policy());
    }
  });

  it('an agent may hold 32 listen streams at once: the next is refused with WARDEN_RATE_LIMITED, and audited; closing one makes room', async () => {
    const carol = await connect('carol', 'modern');
    const streams = [];
    try {
      for (let index = 0; index < 32; index++) streams.push(await carol.client.listen({ toolsListChanged: true }));
      await assert.rejects(carol.client.listen({ toolsListChanged: true }), (error: unknown) => {
        assert.ok(error instanceof ProtocolError, String(error));
        assert.equal((error.data as { code?: string }).code, 'WARDEN_RATE_LIMITED');
        return true;
      });
      const [record] = fresh((r) => r.event === 'subscriptions/listen' && r['agent'] === 'carol');
      assert.equal(record?.reason, 'WARDEN_RATE_LIMITED');
      assert.equal(record?.['open'], 32);
      // Another agent's streams are not counted against carol's.
      const alice = await connect('alice', 'modern');
      await (await alice.client.listen({ toolsListChanged: true })).close();
      await streams.pop()!.close();
      assert.ok(await waitFor(async () => carol.client.listen({ toolsListChanged: true }).then((stream) => (streams.push(stream), true), () => false), 20, 50), 'room again after a close');
    } finally {
      await Promise.all(streams.map((stream) => stream.close()));
    }
  });

  it('a listen claiming a revision the broker does not judge is never judged: its resources are dropped and the protocol layer refuses it', async () => {
    const body = {
      jsonrpc: '2.0',
      id: 9,
      method: 'subscriptions/listen',
      params: { notifications: { resourceSubscriptions: [WATCHED] }, _meta: { 'io.modelcontextprotocol/protocolVersion': '2099-01-01', 'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' }, 'io.modelcontextprotocol/clientCapabilities': {} } },
    };
    const answer = await post(body, TOKENS.alice);
    assert.match(answer.body, /"error"/);
    assert.equal(fresh((r) => r.event === 'resources/subscribe').length, 0);
  });

  it('a listen naming more than 100 resources is refused whole with WARDEN_ARGUMENTS_INVALID, and audited; nothing is subscribed', async () => {
    const alice = await connect('alice', 'modern');
    const uris = Array.from({ length: 101 }, (_, index) => `test://many/${index}`);
    await assert.rejects(alice.client.listen({ resourceSubscriptions: uris }), (error: unknown) => {
      assert.ok(error instanceof ProtocolError, String(error));
      assert.equal(error.code, -32602);
      assert.equal((error.data as { code?: string }).code, 'WARDEN_ARGUMENTS_INVALID');
      return true;
    });
    const [record] = fresh((r) => r.event === 'subscriptions/listen');
    assert.equal(record?.decision, 'deny');
    assert.equal(record?.['resources'], 101);
    assert.equal(fresh((r) => r.event === 'resources/subscribe').length, 0);
  });

  it('a listen of list changes only is served as before, with no resource subscriptions', async () => {
    const carol = await connect('carol', 'modern');
    const stream = await carol.client.listen({ promptsListChanged: true });
    try {
      assert.deepEqual(stream.honoredFilter, { promptsListChanged: true });
    } finally {
      await stream.close();
    }
    assert.equal(fresh((r) => r.event === 'resources/subscribe' || r.event === 'subscriptions/listen').length, 0);
  });

  it('a resource list that is not a list of URIs is refused whole with WARDEN_ARGUMENTS_INVALID, and audited', async () => {
    const body = {
      jsonrpc: '2.0',
      id: 7,
      method: 'subscriptions/listen',
      params: { notifications: { resourceSubscriptions: WATCHED }, _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1' }, 'io.modelcontextprotocol/clientCapabilities': {} } },
    };
    const answer = await post(body, TOKENS.alice);
    assert.equal(answer.status, 200);
    const { id, error } = JSON.parse(answer.body) as { id: number; error: { code: number; data: { code: string; correlationId: string } } };
    assert.equal(id, 7);
    assert.equal(error.code, -32602);
    assert.equal(error.data.code, 'WARDEN_ARGUMENTS_INVALID');
    const [record] = fresh((r) => r.event === 'subscriptions/listen');
    assert.equal(record?.correlationId, error.data.correlationId);
    assert.equal(record?.['resources'], null);
    assert.equal(fresh((r) => r.event === 'resources/subscribe').length, 0);
  });
});

describe('resources/subscribe over HTTP (2025-era sessions)', () => {
  it('a session subscribes, is told of the change on its own stream, and unsubscribes', async () => {
    const alice = await connect('alice', 'legacy');
    assert.deepEqual(await alice.client.subscribeResource({ uri: WATCHED }), {});
    assert.equal(await updateWatched(alice.client), 1);
    assert.ok(await waitFor(() => alice.updates.length >= 1, 100, 20), 'the update reached the session');
    assert.deepEqual(await alice.client.unsubscribeResource({ uri: WATCHED }), {});
    assert.equal(await updateWatched(alice.client), 0);
    assert.deepEqual(alice.updates, [WATCHED]);
  });
});

/** One raw POST to the MCP endpoint. */
function post(body: unknown, token: string): Promise<{ status: number; body: string }> {
  const url = new URL(front.url);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}`, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'subscriptions/listen' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}
