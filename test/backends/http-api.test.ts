import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import type { Dispatcher } from 'undici';
import { memoryAuditTrail } from '../../src/audit/trail.ts';
import { createEgressAgent } from '../../src/backends/egress-agent.ts';
import { HttpApiBackend } from '../../src/backends/http-api.ts';
import { WardenError } from '../../src/errors.ts';
import { compileEgressRule, type EgressPolicy } from '../../src/guard/egress-rules.ts';
import { buildManifest } from '../../src/manifest/load.ts';

// HttpApiBackend on its own, with the egress policy swapped under it the way a config
// reload swaps it: each hop of a call obeys the policy in force when the hop starts.

let home: Server;
let other: Server;
let homeOrigin = '';
let otherOrigin = '';
const otherRequests: string[] = [];
const dispatchers: Dispatcher[] = [];

function listen(handler: Parameters<typeof createServer>[1]): Promise<Server> {
  const server = createServer(handler);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}
const originOf = (server: Server) => `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

before(async () => {
  other = await listen((req, res) => {
    otherRequests.push(req.url ?? '');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ reached: 'other' }));
  });
  otherOrigin = originOf(other);
  home = await listen((req, res) => {
    if (req.url === '/api/away') {
      res.writeHead(302, { location: `${otherOrigin}/landing` });
      res.end();
    } else if (req.url === '/api/big-after-redirect') {
      res.writeHead(302, { location: '/api/big' });
      res.end();
    } else if (req.url === '/api/big') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('x'.repeat(4096));
    } else if (req.url === '/api/gone') {
      // A successful DELETE that claims JSON but has no body.
      res.writeHead(204, { 'content-type': 'application/json' });
      res.end();
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  homeOrigin = originOf(home);
});

after(async () => {
  for (const dispatcher of dispatchers) await dispatcher.close();
  await new Promise<void>((resolve) => home.close(() => resolve()));
  await new Promise<void>((resolve) => other.close(() => resolve()));
});

function policy(origins: readonly string[], maxResponseBytes = 65536): { dispatcher: Dispatcher; policy: EgressPolicy } {
  const compiled: EgressPolicy = {
    source: origins.join(','),
    rules: origins.map((origin, index) => compileEgressRule({ destination: origin, addresses: ['127.0.0.1'] }, `/egress/allow/${index}`)),
    connectTimeoutMs: 5000,
    maxResponseBytes,
    maxHeaderBytes: 16384,
    maxRedirects: 3,
  };
  const dispatcher = createEgressAgent(compiled);
  dispatchers.push(dispatcher);
  return { dispatcher, policy: compiled };
}

function backend(egress: () => { dispatcher: Dispatcher; policy: EgressPolicy }) {
  const audit = memoryAuditTrail();
  const tool = (name: string, method: string, path: string) => ({ name, description: name, access: method === 'GET' ? 'read' : 'write', inputSchema: { type: 'object' }, http: { method, path } });
  const manifest = buildManifest(
    {
      manifestVersion: 1,
      name: 'test.api',
      version: '1',
      serial: 1,
      issuedAt: new Date().toISOString(),
      expiresAt: new Date(Date.now() + 86_400_000).toISOString(),
      transport: { type: 'http-api', baseUrl: `${homeOrigin}/api` },
      tools: [tool('away', 'GET', '/away'), tool('big', 'GET', '/big-after-redirect'), tool('gone', 'DELETE', '/gone')],
    },
    'api.json',
    { resolveCommand: false },
  );
  return { audit, api: new HttpApiBackend({ server: 'api', manifest, logger: pino({ level: 'silent' }), audit, egress }) };
}

describe('HttpApiBackend', () => {
  it('a redirect answered after the egress policy changed is judged by the new policy', async () => {
    const before = policy([homeOrigin, otherOrigin]);
    const afterReload = policy([homeOrigin]);
    let looks = 0;
    // The first two looks (the check before sending, the first hop) see the old policy; the redirect's hop sees the new one.
    const { api, audit } = backend(() => (++looks <= 2 ? before : afterReload));
    await api.start();
    await assert.rejects(api.callTool({ tool: 'away', args: {}, timeoutMs: 5000 }), (error: unknown) => error instanceof WardenError && error.code === 'WARDEN_EGRESS_DENIED');
    assert.deepEqual(otherRequests, []);
    const record = audit.records.find((entry) => entry.event === 'egress.refused');
    assert.equal(record?.['reason'], 'redirect-denied');
    assert.equal(record?.['hop'], 1);

    // Under the old policy throughout, the same call reaches the other origin.
    const { api: unchanged } = backend(() => before);
    await unchanged.start();
    const result = await unchanged.callTool({ tool: 'away', args: {}, timeoutMs: 5000 });
    assert.deepEqual(result.structuredContent, { reached: 'other' });
    assert.deepEqual(otherRequests, ['/landing']);
  });

  it('a response over the cap after a redirect is recorded at the hop it came from', async () => {
    const small = policy([homeOrigin], 1024);
    const { api, audit } = backend(() => small);
    await api.start();
    await assert.rejects(api.callTool({ tool: 'big', args: {}, timeoutMs: 5000 }), (error: unknown) => error instanceof WardenError && error.code === 'WARDEN_RESPONSE_TOO_LARGE');
    const record = audit.records.find((entry) => entry.event === 'egress.refused');
    assert.equal(record?.['reason'], 'too-large');
    assert.equal(record?.['hop'], 1);
    assert.equal(record?.['origin'], homeOrigin);
  });

  it('a 204 that claims JSON is an empty, successful result, not an invalid-JSON error', async () => {
    const open = policy([homeOrigin]);
    const { api } = backend(() => open);
    await api.start();
    const result = await api.callTool({ tool: 'gone', args: {}, timeoutMs: 5000 });
    assert.equal(result.isError, undefined);
    assert.deepEqual(result.content, [{ type: 'text', text: '' }]);
  });
});
