import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createEgressAgent } from '../../src/backends/egress-agent.ts';
import { egressFetch } from '../../src/backends/egress-fetch.ts';
import { compileEgressRule, EgressRefusal, type EgressPolicy } from '../../src/guard/egress-rules.ts';

// The fetch a Streamable HTTP server's transport uses: through the egress dispatcher, a
// POST or DELETE bounded however the server behaves, every refusal reported.

let server: Server;
let origin = '';
const closed: string[] = [];
const policy = (): EgressPolicy => ({
  source: '',
  rules: [compileEgressRule({ destination: origin, addresses: ['127.0.0.1'], methods: ['GET', 'POST', 'DELETE'] }, '/egress/allow/0')],
  connectTimeoutMs: 5000,
  maxResponseBytes: 65536,
  maxHeaderBytes: 16384,
  maxRedirects: 0,
});

before(async () => {
  // Never answers: each request is held until the client gives up.
  server = createServer((req: IncomingMessage) => {
    req.resume();
    req.socket.once('close', () => closed.push(req.method ?? ''));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe('egressFetch', () => {
  it('a POST and a DELETE to a server that never answers are abandoned at the limit, and the connection closed', async () => {
    const dispatcher = createEgressAgent(policy());
    const fetch = egressFetch({ dispatcher: () => dispatcher, requestLimitMs: () => 200, onRefused: () => assert.fail('nothing is refused') });
    for (const method of ['POST', 'DELETE']) {
      await assert.rejects(fetch(`${origin}/mcp`, { method, body: method === 'POST' ? '{}' : null }), (error: unknown) => error instanceof Error && /TimeoutError|aborted/i.test(`${error.name} ${error.message}`), method);
    }
    await dispatcher.destroy();
    // Bounded wait for the server to see both sockets close (they are destroyed above at the latest).
    for (let i = 0; i < 100 && closed.length < 2; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual([...closed].sort(), ['DELETE', 'POST']);
  });

  it("the event stream (GET) gets no limit of its own: only the caller's signal ends it", async () => {
    const dispatcher = createEgressAgent(policy());
    const fetch = egressFetch({ dispatcher: () => dispatcher, requestLimitMs: () => 1, onRefused: () => assert.fail('nothing is refused') });
    const controller = new AbortController();
    const pending = fetch(`${origin}/mcp`, { method: 'GET', signal: controller.signal });
    // With a 1 ms limit a POST would already have failed; the GET is still waiting for its answer.
    const early = await Promise.race([pending.then(() => 'answered', () => 'failed'), new Promise((resolve) => setTimeout(() => resolve('waiting'), 100))]);
    assert.equal(early, 'waiting');
    controller.abort();
    await assert.rejects(pending);
    await dispatcher.destroy();
  });

  it('a refused request is reported and thrown as the refusal itself; nothing reaches the server', async () => {
    const dispatcher = createEgressAgent({ ...policy(), rules: [] });
    const refused: EgressRefusal[] = [];
    const fetch = egressFetch({ dispatcher: () => dispatcher, requestLimitMs: () => 1000, onRefused: (refusal) => refused.push(refusal) });
    const before = closed.length;
    await assert.rejects(fetch(`${origin}/mcp`, { method: 'POST', body: '{}' }), (error: unknown) => error instanceof EgressRefusal && error.reason === 'not-allowlisted');
    assert.deepEqual(refused.map((refusal) => refusal.reason), ['not-allowlisted']);
    assert.equal(closed.length, before);
    await dispatcher.close();
  });
});
