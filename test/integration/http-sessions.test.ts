// 2025-era agents over HTTP get a Streamable HTTP session: what the server sends on its own
// (list_changed, elicitation) reaches them, and the session belongs to whoever opened it.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { connect as connectSocket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client, StreamableHTTPClientTransport, type ElicitResult } from '@modelcontextprotocol/client';
import type { AuditRecord } from '../../src/audit/trail.ts';
import type { Broker } from '../../src/broker.ts';
import { loadConfig, sha256Hex } from '../../src/config/load.ts';
import { startHttpFront, type HttpFront, type HttpFrontOptions } from '../../src/front/http.ts';
import { startIdp, type TestIdp } from '../fixtures/oauth-idp.ts';
import { NOTES_SERVER, NOTES_TOOLS, refusalCode, startBroker, stdioManifest, tempDir, textOf, waitFor, writeConfig, writeManifest } from '../helpers.ts';

const { dir, cleanup } = tempDir();
const TOKENS = { alice: 'alice-token-0123456789', bob: 'bob-token-0123456789', carol: 'carol-token-0123456789' };
const SUBJECT = 'svc-crm-0001';
const RESOURCE = 'https://warden.example.test/mcp';
const READS = ['notes__echo', 'notes__get_note', 'notes__list_notes', 'notes__search_notes'];
const CONFIG = join(dir, 'warden.yaml');
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let idp: TestIdp;
let broker: Broker;
let front: HttpFront;
const fronts: HttpFront[] = [];

/** The config, with alice's reads and the agents given (all three unless told). */
function policy(options: { aliceReads?: string[]; without?: string[] } = {}) {
  const agents: Record<string, unknown> = {
    alice: { tokenSha256: sha256Hex(TOKENS.alice), allow: [{ tools: options.aliceReads ?? READS }, { tools: ['notes__add_note'], access: ['write'], approval: 'user' }] },
    bob: { tokenSha256: sha256Hex(TOKENS.bob), allow: [{ tools: ['notes__echo'] }] },
    carol: { tokenSha256: sha256Hex(TOKENS.carol), allow: [{ tools: ['notes__echo'] }] },
    'crm-bot': { oauthSubject: SUBJECT, allow: [{ tools: ['notes__echo'] }, { tools: ['notes__list_notes'], scopes: ['notes.read'] }] },
  };
  for (const name of options.without ?? []) delete agents[name];
  return loadConfig(
    writeConfig(CONFIG, {
      version: 1,
      servers: { notes: { manifest: 'notes.json' } },
      agents,
      state: { dir: 'state' },
      http: { maxBodyBytes: 4096, oauth: { issuer: idp.issuer, resource: RESOURCE, jwksUrl: idp.jwksUrl } },
    }),
  );
}

async function reload(options: Parameters<typeof policy>[0] = {}): Promise<void> {
  await broker.applyConfig(policy(options));
}

before(async () => {
  idp = await startIdp();
  writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
  const config = policy();
  assert.equal(config.rejected.size, 0);
  broker = await startBroker(config);
  front = await startHttpFront(broker, { host: '127.0.0.1', port: 0 });
});

after(async () => {
  for (const extra of fronts) await extra.close();
  await front?.close();
  await broker?.close();
  await idp?.close();
  cleanup();
});

async function startFront(options: HttpFrontOptions): Promise<HttpFront> {
  const started = await startHttpFront(broker, { host: '127.0.0.1', port: 0 }, options);
  fronts.push(started);
  return started;
}

const records = (): AuditRecord[] => (broker.audit as unknown as { records: AuditRecord[] }).records;
const mismatches = (): AuditRecord[] => records().filter((record) => record.event === 'auth.failure' && record.reason === 'session-identity-mismatch');

async function connect(token: string, options: { mode?: 'legacy' | 'auto' | { pin: string }; on?: HttpFront; answer?: () => ElicitResult } = {}) {
  const client = new Client({ name: 'session-agent', version: '1.0.0' }, { versionNegotiation: { mode: options.mode ?? 'legacy' }, capabilities: options.answer ? { elicitation: { form: {} } } : {} });
  const seen = { toolsChanged: 0, asked: [] as string[] };
  client.setNotificationHandler('notifications/tools/list_changed', async () => {
    seen.toolsChanged++;
  });
  if (options.answer) {
    const answer = options.answer;
    client.setRequestHandler('elicitation/create', async (request) => {
      seen.asked.push(String((request.params as { message?: string }).message));
      return answer();
    });
  }
  const transport = new StreamableHTTPClientTransport(new URL((options.on ?? front).url), { requestInit: { headers: { Authorization: `Bearer ${token}` } } });
  await client.connect(transport);
  return { client, transport, seen };
}

interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A raw HTTP request, for what an SDK client would never send. */
function raw(options: { on?: HttpFront; method?: string; headers?: Record<string, string>; body?: string; chunked?: boolean }): Promise<RawResponse> {
  const url = new URL((options.on ?? front).url);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: url.hostname, port: url.port, path: url.pathname, method: options.method ?? 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...options.headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('error', reject);
    if (options.chunked && options.body) {
      const body = Buffer.from(options.body);
      for (let i = 0; i < body.length; i += 1024) req.write(body.subarray(i, i + 1024));
      req.end();
    } else {
      req.end(options.body);
    }
  });
}

/** Raw bytes on a socket; the status line of the answer ('' when the connection just closed). */
function rawBytes(bytes: string): Promise<string> {
  const url = new URL(front.url);
  return new Promise((resolve) => {
    const socket = connectSocket(Number(url.port), url.hostname, () => socket.end(bytes));
    let data = '';
    socket.on('data', (chunk) => (data += chunk.toString()));
    socket.on('close', () => resolve(data.split('\r\n')[0] ?? ''));
    socket.on('error', () => resolve(''));
  });
}

const INIT = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } });
const LIST = JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' });
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const dataCode = (response: RawResponse): unknown => (JSON.parse(response.body) as { error?: { data?: { code?: string } } }).error?.data?.code;

/** Opens a session with a raw initialize; its id. */
async function open(token: string, on: HttpFront = front): Promise<string> {
  const answer = await raw({ on, body: INIT, headers: bearer(token) });
  assert.equal(answer.status, 200, answer.body);
  const id = answer.headers['mcp-session-id'];
  assert.equal(typeof id, 'string');
  return String(id);
}

/** tools/list on a session: the status only. */
async function use(token: string, session: string, on: HttpFront = front): Promise<number> {
  return (await raw({ on, body: LIST, headers: { ...bearer(token), 'mcp-session-id': session, 'mcp-protocol-version': '2025-06-18' } })).status;
}

describe('HTTP front: 2025-era sessions', () => {
  it('initialize opens a session with an unguessable id; the client uses it, and setLevel is accepted', async () => {
    const { client, transport } = await connect(TOKENS.alice);
    try {
      assert.equal(client.getProtocolEra(), 'legacy');
      assert.match(transport.sessionId ?? '', UUID);
      await client.setLoggingLevel('debug');
      assert.deepEqual((await client.listTools()).tools.map((tool) => tool.name).sort(), [...READS, 'notes__add_note'].sort());
      assert.match(transport.sessionId ?? '', UUID);
    } finally {
      await client.close();
    }
    const [a, b] = [await open(TOKENS.alice), await open(TOKENS.alice)];
    assert.match(a, UUID);
    assert.notEqual(a, b);
  });

  it('a tools list_changed reaches the 2025 client on its session', async () => {
    const { client, seen } = await connect(TOKENS.alice);
    try {
      // The client opens its GET stream after initialize; a change made before it is open is
      // not replayed, so the list is changed back and forth until one is seen (bounded).
      for (let i = 0; i < 20 && seen.toolsChanged === 0; i++) {
        await reload(i % 2 === 0 ? { aliceReads: ['notes__echo'] } : {});
        await waitFor(() => seen.toolsChanged > 0, 10, 20);
      }
      assert.ok(seen.toolsChanged > 0, 'notifications/tools/list_changed arrived');
      await reload({ aliceReads: ['notes__echo'] });
      assert.deepEqual((await client.listTools()).tools.map((tool) => tool.name).sort(), ['notes__add_note', 'notes__echo']);
    } finally {
      await reload();
      await client.close();
    }
  });

  it('a request from the server (elicitation for an approval) reaches the client and its answer comes back', async () => {
    let answer: ElicitResult = { action: 'accept', content: { approve: true } };
    const { client, seen } = await connect(TOKENS.alice, { answer: () => answer });
    try {
      const yes = await client.callTool({ name: 'notes__add_note', arguments: { title: 'asked over http', body: 'b' } });
      assert.equal(yes.isError, undefined, JSON.stringify(yes));
      assert.equal(seen.asked.length, 1);
      answer = { action: 'decline' };
      assert.equal(refusalCode(await client.callTool({ name: 'notes__add_note', arguments: { title: 'declined over http', body: 'b' } })), 'WARDEN_APPROVAL_DENIED');
      assert.equal(seen.asked.length, 2);
      assert.match(textOf(await client.callTool({ name: 'notes__list_notes', arguments: {} })), /asked over http/);
    } finally {
      await client.close();
    }
  });

  it("another agent presenting a session's id is answered as for an unknown id, and audited", async () => {
    const alices = await open(TOKENS.alice);
    const before = mismatches().length;
    const unknown = await raw({ body: LIST, headers: { ...bearer(TOKENS.bob), 'mcp-session-id': '00000000-0000-4000-8000-000000000000' } });
    assert.equal(unknown.status, 404);
    assert.equal(mismatches().length, before, 'an unknown id is not a mismatch');
    const stolen = await raw({ body: LIST, headers: { ...bearer(TOKENS.bob), 'mcp-session-id': alices } });
    assert.equal(stolen.status, 404);
    assert.equal(stolen.body, unknown.body, 'nothing tells a foreign session from a missing one');
    for (const method of ['GET', 'DELETE']) {
      const answer = await raw({ method, headers: { ...bearer(TOKENS.bob), 'mcp-session-id': alices, accept: 'text/event-stream' } });
      assert.equal(answer.status, 404, method);
    }
    const audited = mismatches().slice(before);
    assert.equal(audited.length, 3);
    for (const record of audited) {
      assert.equal(record.agent, 'bob');
      assert.equal(record['sessionAgent'], 'alice');
      assert.ok(!JSON.stringify(record).includes(alices), 'the session id stays out of the trail');
    }
    // Bob's DELETE did not end it.
    assert.equal(await use(TOKENS.alice, alices), 200);
  });

  it('a 2025 request without a session id is told to initialize; GET and DELETE need one; other methods are refused', async () => {
    const post = await raw({ body: LIST, headers: bearer(TOKENS.alice) });
    assert.equal(post.status, 400);
    assert.equal(dataCode(post), 'session_required');
    assert.match(JSON.parse(post.body).error.message, /initialize/);
    for (const method of ['GET', 'DELETE']) {
      const answer = await raw({ method, headers: { ...bearer(TOKENS.alice), accept: 'text/event-stream' } });
      assert.equal(answer.status, 400, method);
      assert.equal(dataCode(answer), 'session_required', method);
    }
    const put = await raw({ method: 'PUT', body: LIST, headers: bearer(TOKENS.alice) });
    assert.equal(put.status, 405);
    assert.equal(put.headers['allow'], 'GET, POST, DELETE');
  });

  it('unknown, garbage, over-long and duplicated session ids get a clean 4xx', async () => {
    for (const id of ['00000000-0000-4000-8000-000000000000', 'garbage', '../../etc', 'x'.repeat(8000)]) {
      const answer = await raw({ body: LIST, headers: { ...bearer(TOKENS.alice), 'mcp-session-id': id } });
      assert.equal(answer.status, 404, id.slice(0, 20));
      assert.equal(dataCode(answer), 'session_not_found');
      assert.equal(JSON.parse(answer.body).error.code, -32001);
    }
    const session = await open(TOKENS.alice);
    const head = (extra: string) => `POST /mcp HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${TOKENS.alice}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n${extra}Content-Length: ${LIST.length}\r\nConnection: close\r\n\r\n${LIST}`;
    assert.match(await rawBytes(head(`Mcp-Session-Id: ${session}\r\nMcp-Session-Id: ${session}\r\n`)), /^HTTP\/1\.1 400/);
    assert.match(await rawBytes(head(`Mcp-Session-Id: ${session}\r\nmcp-session-id: 00000000-0000-4000-8000-000000000000\r\n`)), /^HTTP\/1\.1 400/);
    assert.match(await rawBytes(head('Mcp-Session-Id: a\x01b\r\n')), /^HTTP\/1\.1 400/);
    assert.equal(await use(TOKENS.alice, session), 200);
  });

  it('DELETE ends the session: its next request is 404', async () => {
    const { client, transport } = await connect(TOKENS.alice);
    const id = transport.sessionId ?? '';
    assert.match(id, UUID);
    assert.equal(await use(TOKENS.alice, id), 200);
    await transport.terminateSession();
    await client.close();
    assert.equal(await use(TOKENS.alice, id), 404);
  });

  it('hostile bodies get a clean 4xx and the front keeps serving', async () => {
    const session = await open(TOKENS.alice);
    const headers = { ...bearer(TOKENS.alice), 'mcp-session-id': session };
    const invalid = await raw({ body: '{"jsonrpc": "2.0", "id": 1, "method": ', headers });
    assert.equal(invalid.status, 400);
    assert.equal(JSON.parse(invalid.body).error.code, -32700);
    assert.equal((await raw({ body: '', headers })).status, 400);
    const text = await raw({ body: LIST, headers: { ...headers, 'content-type': 'text/plain' } });
    assert.equal(text.status, 415);
    // A batch past the SDK's 100 messages, inside the body limit, on a session and without one.
    const batch = JSON.stringify(Array.from({ length: 101 }, () => ({ jsonrpc: '2.0', method: 'x' })));
    assert.ok(batch.length < 4096);
    assert.equal((await raw({ body: batch, headers })).status, 400);
    assert.equal((await raw({ body: batch, headers: bearer(TOKENS.alice) })).status, 400);
    // initialize inside a batch opens nothing.
    assert.equal((await raw({ body: `[${INIT},${LIST}]`, headers: bearer(TOKENS.alice) })).status, 400);
    // Over the limit, with and without Content-Length.
    const big = JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/list', params: { pad: 'x'.repeat(10_000) } });
    assert.equal((await raw({ body: big, headers })).status, 413);
    const chunked = await raw({ body: big, headers, chunked: true });
    assert.equal(chunked.status, 413);
    assert.equal(dataCode(chunked), 'body_too_large');
    assert.equal(await use(TOKENS.alice, session), 200);
    assert.equal(await use(TOKENS.alice, await open(TOKENS.alice)), 200);
  });

  it('an agent over its own limit loses its least recently used session; a full front refuses an agent with none', async () => {
    const small = await startFront({ sessions: { max: 3, maxPerAgent: 2 } });
    const a1 = await open(TOKENS.alice, small);
    const a2 = await open(TOKENS.alice, small);
    assert.equal(await use(TOKENS.alice, a1, small), 200);
    const a3 = await open(TOKENS.alice, small);
    assert.equal(await use(TOKENS.alice, a2, small), 404, 'the least recently used one went');
    assert.equal(await use(TOKENS.alice, a1, small), 200);
    assert.equal(await use(TOKENS.alice, a3, small), 200);
    const b1 = await open(TOKENS.bob, small);
    // Full (3): carol has none to give up.
    const refused = await raw({ on: small, body: INIT, headers: bearer(TOKENS.carol) });
    assert.equal(refused.status, 503);
    assert.equal(dataCode(refused), 'sessions_full');
    assert.equal(refused.headers['mcp-session-id'], undefined);
    // Bob gives up his own, never alice's.
    const b2 = await open(TOKENS.bob, small);
    assert.equal(await use(TOKENS.bob, b1, small), 404);
    assert.equal(await use(TOKENS.bob, b2, small), 200);
    assert.equal(await use(TOKENS.alice, a1, small), 200);
    assert.equal(await use(TOKENS.alice, a3, small), 200);
    // Ending one makes room.
    assert.equal((await raw({ on: small, method: 'DELETE', headers: { ...bearer(TOKENS.bob), 'mcp-session-id': b2 } })).status, 200);
    assert.equal(await use(TOKENS.carol, await open(TOKENS.carol, small), small), 200);
  });

  it('an initialize the transport refuses opens nothing, and the limits take positive numbers only', async () => {
    const single = await startFront({ sessions: { max: 1 } });
    const refused = await raw({ on: single, body: INIT, headers: { ...bearer(TOKENS.alice), accept: 'application/json' } });
    assert.equal(refused.status, 406);
    assert.equal(refused.headers['mcp-session-id'], undefined);
    // Had the refused one been kept, the front would be full and carol would get 503.
    assert.equal(await use(TOKENS.carol, await open(TOKENS.carol, single), single), 200);
    for (const sessions of [{ max: 0 }, { maxPerAgent: -1 }, { idleMs: Number.NaN }]) {
      await assert.rejects(startHttpFront(broker, { host: '127.0.0.1', port: 0 }, { sessions }), RangeError);
    }
  });

  it('an idle session is closed', async () => {
    const idle = await startFront({ sessions: { idleMs: 400 } });
    const session = await open(TOKENS.alice, idle);
    assert.equal(await use(TOKENS.alice, session, idle), 200);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.equal(await use(TOKENS.alice, session, idle), 404);
    assert.equal(await use(TOKENS.alice, await open(TOKENS.alice, idle), idle), 200);
  });

  it('a reload that removes an agent ends its sessions', async () => {
    const session = await open(TOKENS.bob);
    try {
      await reload({ without: ['bob'] });
      assert.equal(await use(TOKENS.bob, session), 401);
    } finally {
      await reload();
    }
    // Back in the config, bob is a new principal: the old session is gone.
    assert.equal(await use(TOKENS.bob, session), 404);
    assert.equal(await use(TOKENS.bob, await open(TOKENS.bob)), 200);
  });

  it("an access token's session is bound to its subject and exact scopes", async () => {
    const read = await idp.sign({ sub: SUBJECT, aud: RESOURCE, scope: 'notes.read' });
    const session = await open(read);
    const before = mismatches().length;
    // Another token with the same subject and scopes (a refresh) keeps the session.
    assert.equal(await use(await idp.sign({ sub: SUBJECT, aud: RESOURCE, scope: 'notes.read' }), session), 200);
    assert.equal(await use(await idp.sign({ sub: SUBJECT, aud: RESOURCE, scope: 'notes.read notes.write' }), session), 404);
    assert.equal(await use(await idp.sign({ sub: SUBJECT, aud: RESOURCE }), session), 404);
    assert.equal(await use(TOKENS.alice, session), 404);
    assert.equal(mismatches().length, before + 3);
    assert.equal(await use(read, session), 200);
  });

  it('close() ends every session, open streams included', async () => {
    const closing = await startFront({});
    const { client } = await connect(TOKENS.alice, { on: closing });
    const session = await open(TOKENS.alice, closing);
    assert.equal(await use(TOKENS.alice, session, closing), 200);
    await closing.close();
    await assert.rejects(raw({ on: closing, body: LIST, headers: { ...bearer(TOKENS.alice), 'mcp-session-id': session } }));
    await client.close();
  });
});

describe('HTTP front: 2026-07-28 clients are served as before', () => {
  for (const mode of ['auto', { pin: '2026-07-28' }] as const) {
    it(`negotiation ${typeof mode === 'string' ? mode : `pinned to ${mode.pin}`}: no session, tools listed and called`, async () => {
      const { client, transport } = await connect(TOKENS.alice, { mode });
      try {
        assert.equal(client.getProtocolEra(), 'modern');
        assert.equal(transport.sessionId, undefined);
        assert.ok((await client.listTools()).tools.some((tool) => tool.name === 'notes__echo'));
        assert.equal(textOf(await client.callTool({ name: 'notes__echo', arguments: { text: 'modern' } })), 'modern');
      } finally {
        await client.close();
      }
    });
  }
});
