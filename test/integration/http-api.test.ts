import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import diagnosticsChannel from 'node:diagnostics_channel';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import type { Broker } from '../../src/broker.ts';
import type { Resolver } from '../../src/backends/egress-agent.ts';
import { loadConfig } from '../../src/config/load.ts';
import type { WardenConfig } from '../../src/config/types.ts';
import { NOTES_SERVER, NOTES_TOOLS, refusalCode, startBroker, tempDir, textOf, waitFor, writeConfig, writeManifest } from '../helpers.ts';

// Native HTTP tools end to end: a signed http-api manifest, the broker's egress policy, and
// two loopback APIs that record every request they get, so each test can say both what the
// agent saw and what actually went over the wire.

const CANARY = 'canary-api-key-5e1f9a3c7d20b4';
const GITHUB_TOKEN = 'ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8';
const ARG_CANARY = 'argument-canary-93b1d7';
const MAX_RESPONSE_BYTES = 64 * 1024;
const HUGE_BYTES = 16 * 1024 * 1024;
const MAX_REDIRECTS = 3;

const { dir, cleanup } = tempDir();

interface Received {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

/** What each API received, in order. */
const received: Received[] = [];
const receivedOther: Received[] = [];
/** Streaming routes: how far each got before the client went away. */
const streamed = new Map<string, { bytes: number; finished: boolean; closedEarly: boolean }>();
/** Responses of the slow route, never answered until the end. */
const pending: ServerResponse[] = [];
/** Host names the injected resolver was asked for. */
const lookups: string[] = [];
/** Host names undici opened a connection to (none may be a refused destination). */
const connected: string[] = [];
const onConnected = (message: unknown): void => {
  connected.push(String((message as { connectParams?: { hostname?: string } }).connectParams?.hostname));
};

let api: Server;
let other: Server;
let apiPort = 0;
let otherPort = 0;
let notes: ChildProcess | undefined;
const brokers: Broker[] = [];
let broker: Broker;

/** 127.0.0.1 literals never reach a resolver; internal.test is a name that resolves to a private address. */
const resolve: Resolver = async (hostname) => {
  lookups.push(hostname);
  if (hostname === 'internal.test') return ['10.0.0.1'];
  if (hostname === 'api.test' || hostname === 'private.test') return ['127.0.0.1'];
  throw Object.assign(new Error(`no such host ${hostname}`), { code: 'ENOTFOUND' });
};

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolveBody) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => resolveBody(body));
    req.on('error', () => resolveBody(body));
  });
}

function json(res: ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
}

function redirect(res: ServerResponse, status: number, location: string): void {
  res.writeHead(status, { location, 'content-type': 'text/plain' });
  res.end('moved');
}

/** Writes `total` bytes in 64 KiB chunks, waiting for the client to read; stops when it goes away. Bounded. */
async function stream(route: string, res: ServerResponse, declared: boolean): Promise<void> {
  const state = { bytes: 0, finished: false, closedEarly: false };
  streamed.set(route, state);
  res.on('error', () => undefined);
  const closed = once(res, 'close').then(
    () => void (state.closedEarly = !state.finished),
    () => void (state.closedEarly = !state.finished),
  );
  res.writeHead(200, { 'content-type': 'text/plain', ...(declared ? { 'content-length': String(HUGE_BYTES) } : {}) });
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  for (let i = 0; i < HUGE_BYTES / chunk.length && !state.closedEarly; i++) {
    state.bytes += chunk.length;
    if (!res.write(chunk)) await Promise.race([once(res, 'drain').catch(() => undefined), closed]);
  }
  if (!state.closedEarly) {
    state.finished = true;
    res.end();
  }
}

async function handleApi(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const body = await readBody(req);
  received.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
  const path = new URL(req.url ?? '/', 'http://api.invalid').pathname;
  if (path.startsWith('/api/items')) {
    json(res, 200, { method: req.method, url: req.url, kind: req.headers['x-kind'] ?? null, body: body === '' ? null : JSON.parse(body) });
    return;
  }
  switch (path) {
    case '/api/r/json':
      return json(res, 200, { id: 1, name: 'widget', tags: ['a', 'b'] });
    case '/api/r/array':
      return json(res, 200, [1, 'two', { three: 3 }]);
    case '/api/r/text':
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
      return void res.end('plain words');
    case '/api/r/empty':
      res.writeHead(204);
      return void res.end();
    case '/api/r/missing':
      res.writeHead(404, { 'content-type': 'text/plain' });
      return void res.end(`not found: ${'n'.repeat(5000)}TAIL-MARKER`);
    case '/api/r/fail':
      return json(res, 500, { error: 'boom' });
    case '/api/r/binary':
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      return void res.end(Buffer.from([0, 1, 2, 0xff, 0xfe]));
    case '/api/r/badjson':
      res.writeHead(200, { 'content-type': 'application/json' });
      return void res.end('{"unterminated": ');
    case '/api/r/gzip':
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
      return void res.end(gzipSync('{"zipped":true}'));
    case '/api/r/huge-chunked':
      return stream('huge-chunked', res, false);
    case '/api/r/huge-declared':
      return stream('huge-declared', res, true);
    case '/api/r/big-headers':
      res.writeHead(200, { 'content-type': 'application/json', 'x-big': 'h'.repeat(64 * 1024) });
      return void res.end('{}');
    case '/api/slow':
      pending.push(res);
      return;
    case '/api/r/hop':
      return redirect(res, 302, '/api/r/text');
    case '/api/r/chain1':
      return redirect(res, 302, '/api/r/chain2');
    case '/api/r/chain2':
      return redirect(res, 301, 'http://169.254.169.254/latest/meta-data/iam/security-credentials/');
    case '/api/r/internal':
      return redirect(res, 302, 'http://internal.test/admin');
    case '/api/r/outside':
      return redirect(res, 302, '/admin');
    case '/api/r/loop':
      return redirect(res, 302, '/api/r/loop');
    case '/api/redirect-post':
      return redirect(res, 307, '/api/items');
    case '/api/r/cross':
      return redirect(res, 302, `http://127.0.0.1:${otherPort}/landing`);
    case '/api/r/whoami':
      return json(res, 200, { authorization: req.headers['authorization'] ?? null });
    case '/api/r/leak':
      return json(res, 200, { note: 'here is a token', token: GITHUB_TOKEN });
    case '/api/scoped':
      return json(res, 200, { id: 9, name: 'kept', ssn: '078-05-1120', nested: { secret: 'dropped' } });
    case '/api/typed':
      return json(res, 200, { id: 7, label: 'seven' });
    case '/api/typed-bad':
      return json(res, 200, { id: 'seven' });
    default:
      return json(res, 404, { error: 'no such route' });
  }
}

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => Promise<void>): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => void handler(req, res).catch(() => res.destroy()));
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return { server, port: (server.address() as AddressInfo).port };
}

/** Starts the example notes server over Streamable HTTP on an ephemeral loopback port. */
async function startNotesOverHttp(): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [NOTES_SERVER, '--http', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const lines = createInterface({ input: child.stderr! });
  const url = await new Promise<string>((done, fail) => {
    const timer = setTimeout(() => fail(new Error('notes server did not start')), 15_000);
    lines.on('line', (line) => {
      const match = /(http:\/\/127\.0\.0\.1:\d+\/mcp)/.exec(line);
      if (match?.[1]) {
        clearTimeout(timer);
        done(match[1]);
      }
    });
  });
  return { child, url };
}

const str = { type: 'string' };
function tool(name: string, access: 'read' | 'write' | 'destructive', http: Record<string, unknown>, properties: Record<string, unknown> = {}, required: string[] = [], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name, description: `The ${name} tool.`, access, inputSchema: { type: 'object', properties, required, additionalProperties: false }, http, ...extra };
}

function apiManifest(): Record<string, unknown> {
  return {
    manifestVersion: 1,
    name: 'test.api',
    version: '1.0.0',
    serial: 1,
    transport: { type: 'http-api', baseUrl: `http://127.0.0.1:${apiPort}/api` },
    credentials: [{ name: 'API_KEY', header: 'Authorization', prefix: 'Bearer ' }],
    tools: [
      tool('fetch', 'read', { method: 'GET', path: '/r/{name}' }, { name: str }, ['name']),
      tool(
        'get_item',
        'read',
        { method: 'GET', path: '/items/{id}', query: { q: '{q}', tag: '{tags}' }, headers: { 'X-Kind': '{kind}' } },
        { id: str, q: str, tags: { type: 'array', items: str }, kind: str },
        ['id'],
      ),
      tool('create_item', 'write', { method: 'POST', path: '/items', body: { title: '{title}', count: '{count}', meta: '{meta}', kind: 'note' } }, { title: str, count: { type: 'integer' }, meta: { type: 'object' } }, ['title']),
      tool('put_item', 'write', { method: 'PUT', path: '/items/{id}', body: { title: '{title}' } }, { id: str, title: str }, ['id', 'title'], { idempotent: true }),
      tool('patch_item', 'write', { method: 'PATCH', path: '/items/{id}', body: '{changes}' }, { id: str, changes: { type: 'object' } }, ['id', 'changes']),
      tool('delete_item', 'destructive', { method: 'DELETE', path: '/items/{id}' }, { id: str }, ['id']),
      tool('scoped', 'read', { method: 'GET', path: '/scoped' }, {}, [], { outputFields: ['/id', '/name'] }),
      tool('typed', 'read', { method: 'GET', path: '/typed' }, {}, [], { outputSchema: { type: 'object', properties: { id: { type: 'integer' } }, required: ['id'] } }),
      tool('typed_bad', 'read', { method: 'GET', path: '/typed-bad' }, {}, [], { outputSchema: { type: 'object', properties: { id: { type: 'integer' } }, required: ['id'] } }),
      tool('slow', 'read', { method: 'GET', path: '/slow' }, {}, [], { timeoutMs: 300 }),
      tool('post_redirect', 'write', { method: 'POST', path: '/redirect-post', body: { x: '{x}' } }, { x: str }, ['x']),
    ],
  };
}

const AGENTS = { a: { allow: [{ tools: ['*'], access: ['read', 'write', 'destructive'] }] } };
const RATE_LIMITS = { perAgent: { perMinute: 100_000, burst: 10_000 }, perTool: { perMinute: 100_000, burst: 10_000 } };
const apiRule = () => ({ destination: `http://127.0.0.1:${apiPort}`, addresses: ['127.0.0.1'] });

/** A config in its own folder (own state store), sharing the signed manifests and the key file. */
function config(name: string, data: Record<string, unknown>): WardenConfig {
  return loadConfig(
    writeConfig(join(dir, name, 'warden.yaml'), {
      version: 1,
      manifestsDir: '../manifests',
      agents: AGENTS,
      rateLimits: RATE_LIMITS,
      ...data,
    }),
  );
}

function records(b: Broker): Record<string, unknown>[] {
  return (b.audit as unknown as { records: Record<string, unknown>[] }).records;
}

/** Runs fn and returns the egress.refused records it caused. */
async function egressRefusals<T>(b: Broker, fn: () => Promise<T>): Promise<{ value: T; refused: Record<string, unknown>[] }> {
  const before = records(b).length;
  const value = await fn();
  return { value, refused: records(b).slice(before).filter((r) => r['event'] === 'egress.refused') };
}

function correlationOf(result: unknown): unknown {
  return (result as { _meta?: Record<string, { correlationId?: string }> })._meta?.['mcp-warden/refusal']?.correlationId;
}

/** Nothing of the call's arguments or of the credential is in an audit record. */
function assertClean(record: Record<string, unknown>, ...values: string[]): void {
  const text = JSON.stringify(record);
  for (const value of [CANARY, ...values]) assert.ok(!text.includes(value), `${value} in ${text}`);
}

/** After any refusal the broker still serves: an allowed call goes through. */
async function assertStillServing(b: Broker = broker): Promise<void> {
  const result = await b.callTool('a', 'api__fetch', { name: 'json' });
  assert.equal(refusalCode(result), undefined, textOf(result));
  assert.deepEqual(result.structuredContent, { id: 1, name: 'widget', tags: ['a', 'b'] });
}

/** Requests the API got while fn ran. */
async function receivedDuring<T>(fn: () => Promise<T>, log: Received[] = received): Promise<{ value: T; got: Received[] }> {
  const before = log.length;
  const value = await fn();
  return { value, got: log.slice(before) };
}

before(async () => {
  diagnosticsChannel.subscribe('undici:client:connected', onConnected);
  ({ server: api, port: apiPort } = await listen(handleApi));
  ({ server: other, port: otherPort } = await listen(async (req, res) => {
    const body = await readBody(req);
    receivedOther.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
    json(res, 200, { landed: true, authorization: req.headers['authorization'] ?? null, identity: req.headers['mcp-warden-identity'] ?? null });
  }));
  writeManifest(join(dir, 'manifests/api.json'), apiManifest());
  // The same API under host names: one whose rule lists the loopback address it resolves to, one whose rule does not.
  for (const name of ['named', 'private']) {
    writeManifest(join(dir, `manifests/${name}.json`), {
      manifestVersion: 1,
      name: `test.${name}`,
      version: '1.0.0',
      serial: 1,
      transport: { type: 'http-api', baseUrl: `http://${name === 'named' ? 'api' : 'private'}.test:${apiPort}/api` },
      tools: [tool('fetch', 'read', { method: 'GET', path: '/r/{name}' }, { name: str }, ['name'])],
    });
  }
  writeFileSync(join(dir, 'api-key'), `${CANARY}\n`);

  const main = config('main', {
    servers: { api: { manifest: 'api.json' }, named: { manifest: 'named.json' }, private: { manifest: 'private.json' } },
    credentials: { api: { API_KEY: { file: '../api-key' } } },
    egress: {
      allow: [
        apiRule(),
        { destination: `http://127.0.0.1:${otherPort}`, addresses: ['127.0.0.1'] },
        { destination: 'http://internal.test' },
        { destination: `http://api.test:${apiPort}`, addresses: ['127.0.0.1'] },
        { destination: `http://private.test:${apiPort}` },
      ],
      maxResponseBytes: MAX_RESPONSE_BYTES,
      maxRedirects: MAX_REDIRECTS,
    },
  });
  assert.equal(main.rejected.size, 0, JSON.stringify([...main.rejected]));
  assert.deepEqual(main.warnings, []);
  broker = await startBroker(main, { resolve });
  brokers.push(broker);
  assert.equal(broker.backends.get('api')?.state, 'ready');
});

after(async () => {
  for (const res of pending) res.destroy();
  await Promise.all(brokers.map((b) => b.close()));
  notes?.kill();
  for (const server of [api, other]) {
    server?.closeAllConnections();
    await new Promise<void>((done) => (server ? server.close(() => done()) : done()));
  }
  diagnosticsChannel.unsubscribe('undici:client:connected', onConnected);
  cleanup();
});

describe('native HTTP tools: requests', () => {
  it('GET with path and query: each argument encoded for its place, the credential injected', async () => {
    const { value: result, got } = await receivedDuring(() => broker.callTool('a', 'api__get_item', { id: 'a/b?c#d@e', q: 'x y&z=1', tags: ['t1', 't&2'], kind: 'widget' }));
    assert.equal(refusalCode(result), undefined, textOf(result));
    assert.equal(got.length, 1);
    const request = got[0]!;
    assert.equal(request.method, 'GET');
    assert.equal(request.url, '/api/items/a%2Fb%3Fc%23d%40e?q=x+y%26z%3D1&tag=t1&tag=t%262');
    assert.equal(request.headers['x-kind'], 'widget');
    assert.equal(request.headers['authorization'], `Bearer ${CANARY}`, 'the API got the credential');
    assert.equal(request.body, '');
    assert.ok(!JSON.stringify(result).includes(CANARY));
  });

  it('absent optional arguments leave out their query parameter and header', async () => {
    const { got } = await receivedDuring(() => broker.callTool('a', 'api__get_item', { id: 'plain' }));
    assert.equal(got.length, 1);
    assert.equal(got[0]!.url, '/api/items/plain');
    assert.equal(got[0]!.headers['x-kind'], undefined);
  });

  it('path arguments cannot climb out: encoded dots and unicode stay one segment; ., .. and dot segments between slashes are refused unsent', async () => {
    const cases: [string, string][] = [
      ['%2e%2e', '/api/items/%252e%252e'],
      ['%2f..%2fadmin', '/api/items/%252f..%252fadmin'],
      ['group/project', '/api/items/group%2Fproject'],
      ['日本', '/api/items/%E6%97%A5%E6%9C%AC'],
      ['...', '/api/items/...'],
    ];
    for (const [id, url] of cases) {
      const { value: result, got } = await receivedDuring(() => broker.callTool('a', 'api__get_item', { id }));
      assert.equal(refusalCode(result), undefined, textOf(result));
      assert.deepEqual(got.map((r) => r.url), [url], id);
    }
    // Also what would climb once a server decodes %2F or reads \\ as a separator.
    for (const id of ['..', '.', '', '../../secret.txt', '..\\..\\etc', 'a/../admin']) {
      const { value: result, got } = await receivedDuring(() => broker.callTool('a', 'api__get_item', { id }));
      assert.equal(refusalCode(result), 'WARDEN_ARGUMENTS_INVALID', JSON.stringify(id));
      assert.equal(got.length, 0, 'a refused request never arrives');
    }
    await assertStillServing();
  });

  it('a path argument with a lone surrogate is refused as invalid arguments and never sent', async () => {
    const { value: result, got } = await receivedDuring(() => broker.callTool('a', 'api__get_item', { id: 'x\ud800y' }));
    assert.equal(got.length, 0);
    const record = records(broker).find((r) => r['event'] === 'tools/call' && r['correlationId'] === correlationOf(result));
    assert.equal(refusalCode(result), 'WARDEN_ARGUMENTS_INVALID', JSON.stringify(record));
    await assertStillServing();
  });

  it('a header argument with CR/LF, NUL or non-ASCII is refused and nothing is sent', async () => {
    for (const kind of ['a\r\nX-Injected: yes', 'a\nb', 'nul\u0000', 'café']) {
      const { value: result, got } = await receivedDuring(() => broker.callTool('a', 'api__get_item', { id: 'h', kind }));
      assert.equal(refusalCode(result), 'WARDEN_ARGUMENTS_INVALID', JSON.stringify(kind));
      assert.equal(got.length, 0);
    }
    assert.ok(!received.some((r) => r.headers['x-injected'] !== undefined));
    await assertStillServing();
  });

  it('POST sends the JSON body with typed values; absent members are left out', async () => {
    const { value: result, got } = await receivedDuring(() => broker.callTool('a', 'api__create_item', { title: 'First', count: 3, meta: { a: [1, { b: null }] } }));
    assert.equal(refusalCode(result), undefined, textOf(result));
    assert.equal(got.length, 1);
    assert.equal(got[0]!.method, 'POST');
    assert.equal(got[0]!.url, '/api/items');
    assert.equal(got[0]!.headers['content-type'], 'application/json');
    assert.equal(got[0]!.headers['authorization'], `Bearer ${CANARY}`);
    assert.deepEqual(JSON.parse(got[0]!.body), { title: 'First', count: 3, meta: { a: [1, { b: null }] }, kind: 'note' });
    assert.deepEqual((result.structuredContent as { body: unknown }).body, { title: 'First', count: 3, meta: { a: [1, { b: null }] }, kind: 'note' });

    const { got: sparse } = await receivedDuring(() => broker.callTool('a', 'api__create_item', { title: 'Second' }));
    assert.deepEqual(JSON.parse(sparse[0]!.body), { title: 'Second', kind: 'note' });
  });

  it('PUT, PATCH and DELETE go out with their method, path and body', async () => {
    const { got: put } = await receivedDuring(() => broker.callTool('a', 'api__put_item', { id: 'p1', title: 'new title' }));
    assert.deepEqual(put.map((r) => [r.method, r.url, r.body]), [['PUT', '/api/items/p1', '{"title":"new title"}']]);
    const { got: patch } = await receivedDuring(() => broker.callTool('a', 'api__patch_item', { id: 'p1', changes: { done: true } }));
    assert.deepEqual(patch.map((r) => [r.method, r.url, JSON.parse(r.body)]), [['PATCH', '/api/items/p1', { done: true }]]);
    const { value: result, got: del } = await receivedDuring(() => broker.callTool('a', 'api__delete_item', { id: 'd1' }));
    assert.equal(refusalCode(result), undefined, textOf(result));
    assert.deepEqual(del.map((r) => [r.method, r.url, r.body]), [['DELETE', '/api/items/d1', '']]);
  });
});

describe('native HTTP tools: responses', () => {
  it('a JSON object becomes structured content and JSON text', async () => {
    const result = await broker.callTool('a', 'api__fetch', { name: 'json' });
    assert.equal(result.isError, undefined);
    assert.deepEqual(result.structuredContent, { id: 1, name: 'widget', tags: ['a', 'b'] });
    assert.deepEqual(JSON.parse(textOf(result)), { id: 1, name: 'widget', tags: ['a', 'b'] });
  });

  it('a JSON array is text only (structured content is an object)', async () => {
    const result = await broker.callTool('a', 'api__fetch', { name: 'array' });
    assert.equal(result.isError, undefined);
    assert.equal(result.structuredContent, undefined);
    assert.deepEqual(JSON.parse(textOf(result)), [1, 'two', { three: 3 }]);
  });

  it('text/plain is passed as text; 204 is an empty, successful result', async () => {
    const text = await broker.callTool('a', 'api__fetch', { name: 'text' });
    assert.equal(text.isError, undefined);
    assert.equal(textOf(text), 'plain words');
    const empty = await broker.callTool('a', 'api__fetch', { name: 'empty' });
    assert.equal(empty.isError, undefined, textOf(empty));
    assert.equal(refusalCode(empty), undefined);
    assert.equal(textOf(empty), '');
  });

  it('a 404 is a tool error with a capped excerpt of the body; a 500 is a tool error', async () => {
    const missing = await broker.callTool('a', 'api__fetch', { name: 'missing' });
    assert.equal(missing.isError, true);
    assert.equal(refusalCode(missing), undefined, 'the API answered: not a broker refusal');
    const text = textOf(missing);
    assert.match(text, /^HTTP 404: not found: n+/);
    assert.ok(!text.includes('TAIL-MARKER'), 'the excerpt is capped');
    assert.ok(text.length < 1200, `excerpt of ${text.length} characters`);
    const fail = await broker.callTool('a', 'api__fetch', { name: 'fail' });
    assert.equal(fail.isError, true);
    assert.equal(refusalCode(fail), undefined);
    assert.match(textOf(fail), /^HTTP 500/);
  });

  it('binary, invalid JSON and an encoded body are downstream errors', async () => {
    for (const name of ['binary', 'badjson', 'gzip']) {
      const result = await broker.callTool('a', 'api__fetch', { name });
      assert.equal(refusalCode(result), 'WARDEN_DOWNSTREAM_ERROR', name);
    }
    await assertStillServing();
  });

  it('a huge chunked body is refused at the cap and reading stops there', async () => {
    const { value: result, refused } = await egressRefusals(broker, () => broker.callTool('a', 'api__fetch', { name: 'huge-chunked' }));
    assert.equal(refusalCode(result), 'WARDEN_RESPONSE_TOO_LARGE');
    assert.equal(refused.length, 1);
    assert.equal(refused[0]!['reason'], 'too-large');
    // The broker closed the connection: the API could not write all 16 MiB.
    assert.ok(await waitFor(() => streamed.get('huge-chunked')?.closedEarly === true), JSON.stringify(streamed.get('huge-chunked')));
    assert.equal(streamed.get('huge-chunked')!.finished, false);
    assert.ok(streamed.get('huge-chunked')!.bytes < HUGE_BYTES);
    await assertStillServing();
  });

  it('a body whose declared length is over the cap is refused before it is read', async () => {
    const { value: result, refused } = await egressRefusals(broker, () => broker.callTool('a', 'api__fetch', { name: 'huge-declared' }));
    assert.equal(refusalCode(result), 'WARDEN_RESPONSE_TOO_LARGE');
    assert.equal(refused.length, 1);
    assert.equal(refused[0]!['reason'], 'too-large');
    assert.ok(await waitFor(() => streamed.get('huge-declared')?.closedEarly === true), JSON.stringify(streamed.get('huge-declared')));
    assert.equal(streamed.get('huge-declared')!.finished, false);
    assert.ok(streamed.get('huge-declared')!.bytes < HUGE_BYTES);
    await assertStillServing();
  });

  it('response headers over the cap are refused as too large', async () => {
    const { value: result, refused } = await egressRefusals(broker, () => broker.callTool('a', 'api__fetch', { name: 'big-headers' }));
    assert.equal(refusalCode(result), 'WARDEN_RESPONSE_TOO_LARGE');
    assert.equal(refused.length, 1);
    assert.equal(refused[0]!['reason'], 'too-large');
    await assertStillServing();
  });

  it('an API that does not answer within the tool\'s timeout is a downstream timeout', async () => {
    const result = await broker.callTool('a', 'api__slow', {});
    assert.equal(refusalCode(result), 'WARDEN_DOWNSTREAM_TIMEOUT');
    await assertStillServing();
  });

  it('an outputFields scope keeps only the declared fields', async () => {
    const result = await broker.callTool('a', 'api__scoped', {});
    assert.equal(refusalCode(result), undefined, textOf(result));
    assert.deepEqual(result.structuredContent, { id: 9, name: 'kept' });
    assert.deepEqual(JSON.parse(textOf(result)), { id: 9, name: 'kept' });
    assert.ok(!JSON.stringify(result).includes('078-05-1120'));
    assert.ok(!JSON.stringify(result).includes('dropped'));
  });

  it('an outputSchema is enforced on the structured content', async () => {
    const good = await broker.callTool('a', 'api__typed', {});
    assert.equal(refusalCode(good), undefined, textOf(good));
    assert.deepEqual(good.structuredContent, { id: 7, label: 'seven' });
    const bad = await broker.callTool('a', 'api__typed_bad', {});
    assert.equal(refusalCode(bad), 'WARDEN_DOWNSTREAM_ERROR');
    await assertStillServing();
  });

  it('the credential the API echoes back is redacted; the agent never sees its value', async () => {
    const { value: result, got } = await receivedDuring(() => broker.callTool('a', 'api__fetch', { name: 'whoami' }));
    assert.equal(got[0]!.headers['authorization'], `Bearer ${CANARY}`);
    assert.ok(!JSON.stringify(result).includes(CANARY));
    assert.deepEqual(result.structuredContent, { authorization: 'Bearer [redacted: credential]' });
    assert.equal(JSON.parse(textOf(result)).authorization, 'Bearer [redacted: credential]');
  });

  it('a secret-looking value in a response is redacted', async () => {
    const result = await broker.callTool('a', 'api__fetch', { name: 'leak' });
    assert.equal(refusalCode(result), undefined, textOf(result));
    assert.ok(!JSON.stringify(result).includes(GITHUB_TOKEN));
    assert.match(textOf(result), /\[redacted: secret\]/);
  });
});

describe('native HTTP tools: redirects', () => {
  it('a GET redirect to another path of the same API is followed, with the credential', async () => {
    const { value: result, got } = await receivedDuring(() => broker.callTool('a', 'api__fetch', { name: 'hop' }));
    assert.equal(refusalCode(result), undefined, textOf(result));
    assert.equal(textOf(result), 'plain words');
    assert.deepEqual(got.map((r) => r.url), ['/api/r/hop', '/api/r/text']);
    assert.ok(got.every((r) => r.headers['authorization'] === `Bearer ${CANARY}`));
  });

  it('a redirect chain ending at the metadata address is refused (redirect-denied) and not followed', async () => {
    const lookupsBefore = lookups.length;
    const { value: { value: result, got }, refused } = await egressRefusals(broker, () => receivedDuring(() => broker.callTool('a', 'api__fetch', { name: 'chain1' })));
    assert.equal(refusalCode(result), 'WARDEN_EGRESS_DENIED');
    assert.deepEqual(got.map((r) => r.url), ['/api/r/chain1', '/api/r/chain2']);
    assert.equal(refused.length, 1);
    const record = refused[0]!;
    assert.equal(record['reason'], 'redirect-denied');
    assert.equal(record['cause'], 'not-allowlisted');
    assert.equal(record['hop'], 2);
    assert.equal(record['origin'], 'http://169.254.169.254');
    assert.equal(record['server'], 'api');
    assert.equal(record['tool'], 'fetch');
    assert.equal(record['path'], '/r/{name}', 'the template, not the filled path');
    assert.equal(record['correlationId'], correlationOf(result));
    assertClean(record, 'chain1');
    assert.equal(lookups.length, lookupsBefore);
    assert.ok(!connected.includes('169.254.169.254'));
    await assertStillServing();
  });

  it('a redirect to a name that resolves to a private address is refused at connect time and never connected', async () => {
    const { value: result, refused } = await egressRefusals(broker, () => broker.callTool('a', 'api__fetch', { name: 'internal' }));
    assert.equal(refusalCode(result), 'WARDEN_EGRESS_DENIED');
    assert.ok(lookups.includes('internal.test'), 'the name was resolved by the injected resolver');
    assert.ok(connected.includes('127.0.0.1'), 'the diagnostics channel does see the broker\'s connections');
    assert.ok(!connected.includes('internal.test'), 'no connection was opened to it');
    assert.ok(!connected.includes('10.0.0.1'));
    assert.equal(refused.length, 1);
    const record = refused[0]!;
    assert.equal(record['reason'], 'redirect-denied');
    assert.equal(record['cause'], 'private-address');
    assert.equal(record['address'], '10.0.0.1');
    assert.equal(record['hop'], 1);
    assertClean(record);
    await assertStillServing();
  });

  it('a redirect loop is refused after maxRedirects (too-many-redirects)', async () => {
    const { value: { value: result, got }, refused } = await egressRefusals(broker, () => receivedDuring(() => broker.callTool('a', 'api__fetch', { name: 'loop' })));
    assert.equal(refusalCode(result), 'WARDEN_EGRESS_DENIED');
    assert.equal(got.length, MAX_REDIRECTS + 1);
    assert.ok(got.every((r) => r.url === '/api/r/loop'));
    assert.equal(refused.length, 1);
    assert.equal(refused[0]!['reason'], 'too-many-redirects');
    await assertStillServing();
  });

  it('a redirect answering a POST is not followed: the tool reports it as an error', async () => {
    const { value: result, got } = await receivedDuring(() => broker.callTool('a', 'api__post_redirect', { x: 'once' }));
    assert.equal(result.isError, true);
    assert.equal(refusalCode(result), undefined, 'the API answered; the broker refused nothing');
    assert.match(textOf(result), /^HTTP 307/);
    assert.deepEqual(got.map((r) => [r.method, r.url]), [['POST', '/api/redirect-post']], 'the redirect target never got the POST');
    await assertStillServing();
  });

  it('a cross-origin redirect to another allowed API is followed, without the credential', async () => {
    const { value: { value: result, got }, got: gotOther } = await receivedDuring(() => receivedDuring(() => broker.callTool('a', 'api__fetch', { name: 'cross' })), receivedOther);
    assert.equal(refusalCode(result), undefined, textOf(result));
    assert.deepEqual(got.map((r) => r.url), ['/api/r/cross']);
    assert.equal(got[0]!.headers['authorization'], `Bearer ${CANARY}`);
    assert.equal(gotOther.length, 1);
    assert.equal(gotOther[0]!.url, '/landing');
    assert.equal(gotOther[0]!.headers['authorization'], undefined, 'the credential stays with its own origin');
    assert.equal(gotOther[0]!.headers['mcp-warden-identity'], undefined);
    assert.ok(!JSON.stringify(gotOther[0]!.headers).includes(CANARY));
    assert.deepEqual(result.structuredContent, { landed: true, authorization: null, identity: null });
  });
});

describe('native HTTP tools: host names', () => {
  it('a base URL host name is resolved by the broker and the socket opened to the checked address; the Host header keeps the name', async () => {
    const lookupsBefore = lookups.length;
    const { value: result, got } = await receivedDuring(() => broker.callTool('a', 'named__fetch', { name: 'json' }));
    assert.equal(refusalCode(result), undefined, textOf(result));
    assert.deepEqual(result.structuredContent, { id: 1, name: 'widget', tags: ['a', 'b'] });
    assert.equal(got.length, 1);
    assert.equal(got[0]!.headers['host'], `api.test:${apiPort}`);
    assert.equal(got[0]!.headers['authorization'], undefined, 'this server declares no credential');
    assert.ok(lookups.slice(lookupsBefore).includes('api.test'), 'the broker resolved the name itself');
  });

  it('a host name that resolves to an address its rule does not list is refused before connecting (private-address)', async () => {
    const { value: { value: result, got }, refused } = await egressRefusals(broker, () => receivedDuring(() => broker.callTool('a', 'private__fetch', { name: 'json' })));
    assert.equal(refusalCode(result), 'WARDEN_EGRESS_DENIED');
    assert.equal(got.length, 0, 'nothing reaches the API');
    assert.ok(lookups.includes('private.test'));
    assert.ok(!connected.includes('private.test'));
    assert.equal(refused.length, 1);
    assert.equal(refused[0]!['reason'], 'private-address');
    assert.equal(refused[0]!['address'], '127.0.0.1');
    assert.equal(refused[0]!['hop'], 0);
    assert.equal(refused[0]!['server'], 'private');
    const call = records(broker).find((r) => r['event'] === 'tools/call' && r['correlationId'] === correlationOf(result));
    assert.equal((call?.['error'] as { notSent?: unknown } | undefined)?.notSent, true, 'recorded as not sent');
    await assertStillServing();
  });
});

describe('native HTTP tools: audit', () => {
  it('no audit record holds the credential', () => {
    for (const record of records(broker)) assertClean(record);
  });
});

describe('egress policy around HTTP servers', () => {
  it('without an egress rule for the API every call is refused unsent (not-allowlisted), with a load warning naming the server', async () => {
    const closed = config('closed', {
      servers: { api: { manifest: 'api.json' } },
      credentials: { api: { API_KEY: { file: '../api-key' } } },
      egress: { allow: [{ destination: `http://127.0.0.1:${otherPort}`, addresses: ['127.0.0.1'] }] },
    });
    assert.ok(closed.warnings.some((warning) => warning.includes('/servers/api')), JSON.stringify(closed.warnings));
    const b = await startBroker(closed, { resolve });
    brokers.push(b);
    for (const [name, args] of [
      ['api__get_item', { id: ARG_CANARY, q: ARG_CANARY }],
      ['api__create_item', { title: ARG_CANARY }],
      ['api__fetch', { name: 'json' }],
    ] as const) {
      const { value: { value: result, got }, refused } = await egressRefusals(b, () => receivedDuring(() => b.callTool('a', name, { ...args })));
      assert.equal(refusalCode(result), 'WARDEN_EGRESS_DENIED', name);
      assert.equal(got.length, 0, 'nothing reaches the API');
      assert.equal(refused.length, 1);
      assert.equal(refused[0]!['reason'], 'not-allowlisted');
      assert.equal(refused[0]!['server'], 'api');
      assert.equal(refused[0]!['correlationId'], correlationOf(result));
      assertClean(refused[0]!, ARG_CANARY);
    }
    for (const record of records(b)) assertClean(record, ARG_CANARY);
    // The other broker, whose rules allow the API, still serves.
    await assertStillServing();
  });

  it('a rule that allows only GET refuses the POST tool and lets the GET tool through', async () => {
    const getOnly = config('get-only', {
      servers: { api: { manifest: 'api.json' } },
      credentials: { api: { API_KEY: { file: '../api-key' } } },
      egress: { allow: [{ ...apiRule(), methods: ['GET'], paths: ['/api/'] }] },
    });
    const b = await startBroker(getOnly, { resolve });
    brokers.push(b);
    for (const [name, args] of [
      ['api__create_item', { title: 'refused' }],
      ['api__put_item', { id: 'x', title: 'refused' }],
      ['api__delete_item', { id: 'x' }],
    ] as const) {
      const { value: { value: result, got }, refused } = await egressRefusals(b, () => receivedDuring(() => b.callTool('a', name, { ...args })));
      assert.equal(refusalCode(result), 'WARDEN_EGRESS_DENIED', name);
      assert.equal(got.length, 0);
      assert.equal(refused[0]?.['reason'], 'not-allowlisted');
    }
    // Redirects are checked against the same rule: a path outside its prefixes is refused.
    const { value: { value: result, got }, refused } = await egressRefusals(b, () => receivedDuring(() => b.callTool('a', 'api__fetch', { name: 'outside' })));
    assert.equal(refusalCode(result), 'WARDEN_EGRESS_DENIED');
    assert.deepEqual(got.map((r) => r.url), ['/api/r/outside']);
    assert.equal(refused[0]?.['reason'], 'redirect-denied');
    assert.equal(refused[0]?.['cause'], 'not-allowlisted');
    await assertStillServing(b);
  });

  it('a Streamable HTTP MCP server without an egress rule is never connected, and the refusal is audited', async () => {
    const started = await startNotesOverHttp();
    notes = started.child;
    writeManifest(join(dir, 'manifests/notes-http.json'), { manifestVersion: 1, name: 'test.notes-http', version: '1.0.0', serial: 1, transport: { type: 'http', url: started.url }, tools: NOTES_TOOLS });
    // A second one aimed at the recording API, so that "never connected" can be seen on the wire.
    writeManifest(join(dir, 'manifests/mcp-on-api.json'), { manifestVersion: 1, name: 'test.mcp-on-api', version: '1.0.0', serial: 1, transport: { type: 'http', url: `http://127.0.0.1:${apiPort}/mcp` }, tools: NOTES_TOOLS });
    const closed = config('mcp-closed', {
      servers: { notes: { manifest: 'notes-http.json', allowPlainHttp: true }, recorded: { manifest: 'mcp-on-api.json', allowPlainHttp: true } },
      egress: { allow: [{ destination: `http://127.0.0.1:${otherPort}`, addresses: ['127.0.0.1'] }] },
    });
    assert.equal(closed.rejected.size, 0);
    assert.ok(closed.warnings.some((warning) => warning.includes('/servers/notes')), JSON.stringify(closed.warnings));
    const { value: b, got } = await receivedDuring(() => startBroker(closed, { resolve, backoff: { initialMs: 60_000, maxMs: 60_000 } }));
    brokers.push(b);
    for (const server of ['notes', 'recorded']) {
      assert.notEqual(b.backends.get(server)?.state, 'ready', server);
      const refused = records(b).filter((r) => r['event'] === 'egress.refused' && r['server'] === server);
      assert.ok(refused.length >= 1, `no egress.refused record for ${server}`);
      assert.equal(refused[0]!['reason'], 'not-allowlisted');
    }
    assert.equal(got.length, 0, 'the MCP transport sent nothing to the recording API');
    const result = await b.callTool('a', 'notes__list_notes', {});
    assert.equal(refusalCode(result), 'WARDEN_SERVER_UNAVAILABLE');
    // The broker whose rules allow the API still serves.
    await assertStillServing();
  });
});
