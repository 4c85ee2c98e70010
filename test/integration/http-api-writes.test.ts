import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfig } from '../../src/config/load.ts';
import type { Broker } from '../../src/broker.ts';
import { refusalCode, startBroker, tempDir, textOf, writeConfig, writeManifest } from '../helpers.ts';

// A write to an HTTP API that could not be reached was never sent: the same call made again
// once the API is back runs (it is not answered with the recorded failure), and a call that
// did run is never run a second time.

const { dir, cleanup } = tempDir();
let api: Server | undefined;
let broker: Broker | undefined;
const received: string[] = [];

function listen(port: number): Promise<Server> {
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
    req.on('end', () => {
      received.push(`${req.method} ${req.url} ${body}`);
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: received.length }));
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

after(async () => {
  await broker?.close();
  await new Promise<void>((resolve) => (api ? api.close(() => resolve()) : resolve()));
  cleanup();
});

describe('native HTTP writes and retries', () => {
  it('a write refused because the API cannot be reached is not recorded as done; the retry runs once the API is back', async () => {
    // A free loopback port, closed again: the first call finds nobody listening.
    const probe = await listen(0);
    const { port } = probe.address() as AddressInfo;
    await new Promise<void>((resolve) => probe.close(() => resolve()));

    writeManifest(join(dir, 'manifests/api.json'), {
      manifestVersion: 1,
      name: 'test.api',
      version: '1',
      serial: 1,
      transport: { type: 'http-api', baseUrl: `http://127.0.0.1:${port}/v1` },
      tools: [
        {
          name: 'create',
          description: 'Create an item.',
          access: 'write',
          inputSchema: { type: 'object', properties: { title: { type: 'string' } }, required: ['title'], additionalProperties: false },
          http: { method: 'POST', path: '/items', body: { title: '{title}' } },
        },
      ],
    });
    const config = loadConfig(
      writeConfig(join(dir, 'warden.yaml'), {
        version: 1,
        servers: { api: { manifest: 'api.json' } },
        egress: { allow: [{ destination: `http://127.0.0.1:${port}`, addresses: ['127.0.0.1'] }] },
        agents: { a: { allow: [{ tools: ['api__create'], access: ['write'] }] } },
      }),
    );
    assert.deepEqual(config.warnings, []);
    broker = await startBroker(config);

    const first = await broker.callTool('a', 'api__create', { title: 'one' });
    assert.equal(refusalCode(first), 'WARDEN_SERVER_UNAVAILABLE');
    assert.equal(received.length, 0);

    api = await listen(port);
    const second = await broker.callTool('a', 'api__create', { title: 'one' });
    assert.equal(refusalCode(second), undefined, textOf(second));
    assert.deepEqual(JSON.parse(textOf(second)), { id: 1 });
    assert.deepEqual(received, ['POST /v1/items {"title":"one"}']);

    // Now it ran: the same write again gets the recorded result, and the API sees nothing new.
    const third = await broker.callTool('a', 'api__create', { title: 'one' });
    assert.deepEqual(JSON.parse(textOf(third)), { id: 1 });
    assert.ok(third._meta?.['mcp-warden/replay'], 'the result is the recorded one');
    assert.equal(received.length, 1);
  });
});
