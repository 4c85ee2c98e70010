import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { pino } from 'pino';
import { Broker } from '../../src/broker.ts';
import { loadConfig, sha256Hex } from '../../src/config/load.ts';
import { startHttpFront, type HttpFront } from '../../src/front/http.ts';
import { NOTES_SERVER, NOTES_TOOLS, refusalCode, stdioManifest, tempDir, textOf, writeConfig, writeManifest } from '../helpers.ts';
import { everythingManifest } from '../fixtures/repo-manifests.ts';

const { dir, cleanup } = tempDir();
const TOKENS = { alice: 'alice-token-0123456789', bob: 'bob-token-0123456789' };
let notesHttp: ChildProcess;
let broker: Broker;
let front: HttpFront;

/** Starts the example notes server on an ephemeral loopback port; resolves its URL. */
async function startNotesOverHttp(): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [NOTES_SERVER, '--http', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const lines = createInterface({ input: child.stderr! });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('notes server did not start')), 15_000);
    lines.on('line', (line) => {
      const match = /(http:\/\/127\.0\.0\.1:\d+\/mcp)/.exec(line);
      if (match?.[1]) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
  });
  return { child, url };
}

before(async () => {
  const notes = await startNotesOverHttp();
  notesHttp = notes.child;
  writeManifest(join(dir, 'manifests/notes-stdio.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
  writeManifest(join(dir, 'manifests/everything.json'), everythingManifest('everything'));
  writeManifest(join(dir, 'manifests/notes-http.json'), { manifestVersion: 1, name: 'test.notes-http', version: '1.0.0', serial: 1, transport: { type: 'http', url: notes.url }, tools: NOTES_TOOLS });
  const config = loadConfig(
    writeConfig(join(dir, 'warden.yaml'), {
      version: 1,
      servers: { local: { manifest: 'notes-stdio.json' }, remote: { manifest: 'notes-http.json', allowPlainHttp: true }, everything: { manifest: 'everything.json' } },
      agents: {
        alice: { tokenSha256: sha256Hex(TOKENS.alice), allow: [{ tools: ['local__*', 'remote__*', 'everything__get-sum'] }] },
        bob: { tokenSha256: sha256Hex(TOKENS.bob), allow: [{ tools: ['remote__echo'] }] },
        stdioonly: { allow: [{ tools: ['*'] }] },
      },
      http: { maxBodyBytes: 4096, allowedOrigins: ['http://allowed.example:3000'] },
      // The notes server listens on loopback: the egress rule must name that address.
      egress: { allow: [{ destination: new URL(notes.url).origin, addresses: ['127.0.0.1'] }] },
    }),
  );
  assert.equal(config.rejected.size, 0);
  broker = new Broker(config, { logger: pino({ level: 'silent' }) });
  await broker.start();
  for (const [server, backend] of broker.backends) assert.equal(backend.quarantine, undefined, `${server} matches its signed manifest`);
  front = await startHttpFront(broker, { host: '127.0.0.1', port: 0 });
});

after(async () => {
  await front?.close();
  await broker?.close();
  notesHttp?.kill();
  cleanup();
});

async function connect(token: string, mode: 'legacy' | 'auto' = 'legacy'): Promise<Client> {
  const client = new Client({ name: 'http-agent', version: '1.0.0' }, { versionNegotiation: { mode } });
  await client.connect(new StreamableHTTPClientTransport(new URL(front.url), { requestInit: { headers: { Authorization: `Bearer ${token}` } } }));
  return client;
}

interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A raw HTTP request, for the cases an SDK client would never send. */
function raw(options: { path?: string; headers?: Record<string, string>; body?: string | Buffer; method?: string; chunked?: boolean }): Promise<RawResponse> {
  const url = new URL(front.url);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path: options.path ?? url.pathname,
        method: options.method ?? 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...options.headers },
      },
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

const INIT = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } });
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

describe('HTTP front', () => {
  it('each agent sees only its own grants, identified by its token', async () => {
    const alice = await connect(TOKENS.alice);
    const bob = await connect(TOKENS.bob);
    try {
      // local__* and remote__* cover each notes server's read tools (a grant covers reads unless it says otherwise).
      const reads = ['debug_dump', 'echo', 'get_note', 'list_notes', 'search_notes', 'server_info'];
      const expected = ['everything__get-sum', ...reads.map((tool) => `local__${tool}`), ...reads.map((tool) => `remote__${tool}`)];
      assert.deepEqual((await alice.listTools()).tools.map((t) => t.name).sort(), expected);
      assert.deepEqual((await bob.listTools()).tools.map((t) => t.name), ['remote__echo']);
      assert.equal(refusalCode(await bob.callTool({ name: 'remote__list_notes', arguments: {} })), 'WARDEN_TOOL_NOT_FOUND');
      assert.equal(refusalCode(await alice.callTool({ name: 'local__add_note', arguments: { title: 'x', body: 'y' } })), 'WARDEN_TOOL_NOT_FOUND');
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  it('calls a stdio downstream, a Streamable HTTP downstream and server-everything', async () => {
    const alice = await connect(TOKENS.alice);
    try {
      assert.match(textOf(await alice.callTool({ name: 'everything__get-sum', arguments: { a: 40, b: 2 } })), /42/);
      assert.equal(textOf(await alice.callTool({ name: 'local__echo', arguments: { text: 'via stdio' } })), 'via stdio');
      assert.equal(textOf(await alice.callTool({ name: 'remote__echo', arguments: { text: 'via http' } })), 'via http');
      assert.match(textOf(await alice.callTool({ name: 'remote__list_notes', arguments: {} })), /Welcome/);
    } finally {
      await alice.close();
    }
  });

  it('serves both protocol eras', async () => {
    const modern = await connect(TOKENS.alice, 'auto');
    const legacy = await connect(TOKENS.alice, 'legacy');
    try {
      assert.equal(modern.getProtocolEra(), 'modern');
      assert.equal(legacy.getProtocolEra(), 'legacy');
      for (const client of [modern, legacy]) {
        assert.equal(textOf(await client.callTool({ name: 'remote__echo', arguments: { text: 'era' } })), 'era');
      }
    } finally {
      await modern.close();
      await legacy.close();
    }
  });

  it('401 with a challenge without a token, and with error=invalid_token for a wrong one', async () => {
    const none = await raw({ body: INIT });
    assert.equal(none.status, 401);
    assert.equal(none.headers['www-authenticate'], 'Bearer realm="mcp-warden"');
    const wrong = await raw({ body: INIT, headers: bearer('not-a-token') });
    assert.equal(wrong.status, 401);
    assert.match(String(wrong.headers['www-authenticate']), /error="invalid_token"/);
    assert.equal(JSON.parse(wrong.body).error.data.code, 'WARDEN_UNAUTHENTICATED');
  });

  it('an SDK client with a wrong token is refused at connect', async () => {
    await assert.rejects(connect('wrong-token'));
  });

  it('refuses a foreign Host (DNS rebinding) and a foreign Origin', async () => {
    const host = await raw({ body: INIT, headers: { ...bearer(TOKENS.alice), host: 'evil.example' } });
    assert.equal(host.status, 403);
    assert.equal(JSON.parse(host.body).error.data.code, 'host_not_allowed');
    const origin = await raw({ body: INIT, headers: { ...bearer(TOKENS.alice), origin: 'http://evil.example' } });
    assert.equal(origin.status, 403);
    assert.equal(JSON.parse(origin.body).error.data.code, 'origin_not_allowed');
    const allowed = await raw({ body: INIT, headers: { ...bearer(TOKENS.alice), origin: 'http://allowed.example:3000' } });
    assert.equal(allowed.status, 200);
  });

  it('refuses oversized bodies, declared or streamed', async () => {
    const big = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: { pad: 'x'.repeat(10_000) } });
    assert.equal((await raw({ body: big, headers: bearer(TOKENS.alice) })).status, 413);
    assert.equal((await raw({ body: big, headers: bearer(TOKENS.alice), chunked: true })).status, 413);
  });

  it('answers malformed JSON, non-JSON-RPC and unknown methods with errors', async () => {
    const malformed = await raw({ body: '{"jsonrpc": "2.0", "id": 1, "method": ', headers: bearer(TOKENS.alice) });
    assert.equal(malformed.status, 400);
    assert.equal(JSON.parse(malformed.body).error.code, -32700);
    const notRpc = await raw({ body: '{"hello":"world"}', headers: bearer(TOKENS.alice) });
    assert.equal(notRpc.status, 400);
    // A 2025-era request other than initialize names the session initialize opened.
    const session = (await raw({ body: INIT, headers: bearer(TOKENS.alice) })).headers['mcp-session-id'];
    assert.equal(typeof session, 'string');
    const unknown = await raw({ body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'no/such/method' }), headers: { ...bearer(TOKENS.alice), 'mcp-protocol-version': '2025-06-18', 'mcp-session-id': String(session) } });
    assert.match(unknown.body, /-32601/);
  });

  it('404 outside the MCP path, without revealing anything', async () => {
    const res = await raw({ path: '/admin', body: INIT, headers: bearer(TOKENS.alice) });
    assert.equal(res.status, 404);
  });

  it('keeps serving after all of the above', async () => {
    const alice = await connect(TOKENS.alice);
    try {
      assert.equal(textOf(await alice.callTool({ name: 'local__echo', arguments: { text: 'alive' } })), 'alive');
    } finally {
      await alice.close();
    }
    const records = readFileSync(join(dir, 'audit/audit.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    const failures = records.filter((record) => record.event === 'auth.failure');
    assert.deepEqual(failures.map((f) => f.reason).sort(), ['invalid-token', 'invalid-token', 'missing-token']);
    assert.ok(!JSON.stringify(records).includes('not-a-token'), 'a presented token never reaches the audit trail');
  });
});

describe('HTTP front: hostile requests', () => {
  /** Sends raw bytes and returns the status line (or '' if the connection just closed). */
  async function rawRequest(bytes: string): Promise<string> {
    const { connect } = await import('node:net');
    const url = new URL(front.url);
    return new Promise((resolve) => {
      const socket = connect(Number(url.port), url.hostname, () => socket.end(bytes));
      let data = '';
      socket.on('data', (chunk) => (data += chunk.toString()));
      socket.on('close', () => resolve(data.split('\r\n')[0] ?? ''));
      socket.on('error', () => resolve(''));
    });
  }

  it('a request target no URL parser accepts is refused, and the broker keeps serving', async () => {
    for (const target of ['//[', '//[::1', 'http://[', '/mcp/../..', '*']) {
      const status = await rawRequest(`GET ${target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
      assert.match(status, /^HTTP\/1\.1 (400|404)/, target);
    }
    const alice = await connect(TOKENS.alice);
    assert.equal(textOf(await alice.callTool({ name: 'local__echo', arguments: { text: 'still here' } })), 'still here');
    await alice.close();
  });

  it('duplicate Host or Authorization headers are refused', async () => {
    const init = INIT;
    const dupHost = await rawRequest(`POST /mcp HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nAuthorization: Bearer ${TOKENS.alice}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: ${init.length}\r\nConnection: close\r\n\r\n${init}`);
    assert.match(dupHost, /^HTTP\/1\.1 400/);
    const dupAuth = await rawRequest(`POST /mcp HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${TOKENS.bob}\r\nAuthorization: Bearer ${TOKENS.alice}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: ${init.length}\r\nConnection: close\r\n\r\n${init}`);
    assert.match(dupAuth, /^HTTP\/1\.1 400/);
  });

  it('Host values are compared as written: no numeric or userinfo tricks', async () => {
    for (const host of ['127.1', '0x7f.0.0.1', 'localhost\\@evil', 'localhost/x', 'localhost.', 'evil.example']) {
      const res = await raw({ body: INIT, headers: { ...bearer(TOKENS.alice), host } });
      assert.equal(res.status, 403, host);
    }
    for (const host of ['localhost:1234', '127.0.0.1', '[::1]:80', 'LOCALHOST']) {
      const res = await raw({ body: INIT, headers: { ...bearer(TOKENS.alice), host } });
      assert.equal(res.status, 200, host);
    }
  });
});
