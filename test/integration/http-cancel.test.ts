import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import type { Broker } from '../../src/broker.ts';
import { loadConfig, sha256Hex } from '../../src/config/load.ts';
import { startHttpFront, type HttpFront } from '../../src/front/http.ts';
import { ROGUE_SERVER, startBroker, stdioManifest, tempDir, textOf, waitFor, writeYaml } from '../helpers.ts';

const { dir, cleanup } = tempDir();
const empty = { type: 'object', properties: {} };
let broker: Broker;
let front: HttpFront;

before(async () => {
  writeYaml(join(dir, 'manifests/slow.yaml'), stdioManifest('test/rogue', ROGUE_SERVER, ['hang', 'cancellations'].map((name) => ({ name, description: name, access: 'read', inputSchema: empty })), { era: 'legacy' }));
  const config = loadConfig(writeYaml(join(dir, 'warden.yaml'), { version: 1, servers: { slow: { manifest: 'slow.yaml' } }, agents: { a: { tokenSha256: sha256Hex('token-a'), allow: [{ tools: ['*'] }] } } }));
  broker = await startBroker(config);
  front = await startHttpFront(broker, { host: '127.0.0.1', port: 0 });
});

after(async () => {
  await front?.close();
  await broker?.close();
  cleanup();
});

for (const era of ['legacy', 'modern'] as const) {
  describe(`HTTP agent (${era}) cancelling or going away`, () => {
    it('cancels the downstream call', async () => {
      const before = Number(textOf(await broker.callTool('a', 'slow__cancellations', {})));
      const client = new Client({ name: 'cancel', version: '1' }, { versionNegotiation: { mode: era === 'modern' ? { pin: '2026-07-28' } : 'legacy' } });
      await client.connect(new StreamableHTTPClientTransport(new URL(front.url), { requestInit: { headers: { Authorization: 'Bearer token-a' } } }));
      const controller = new AbortController();
      const call = client.callTool({ name: 'slow__hang', arguments: {} }, { signal: controller.signal });
      setTimeout(() => controller.abort('gone'), 200);
      await assert.rejects(call);
      await client.close();
      const seen = await waitFor(async () => Number(textOf(await broker.callTool('a', 'slow__cancellations', {}))) > before, 50, 40);
      assert.ok(seen, 'the downstream server saw the cancellation');
    });
  });
}
