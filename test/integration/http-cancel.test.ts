import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import type { Broker } from '../../src/broker.ts';
import { loadConfig, sha256Hex } from '../../src/config/load.ts';
import { startHttpFront, type HttpFront } from '../../src/front/http.ts';
import { ROGUE_SERVER, startBroker, stdioManifest, tempDir, textOf, waitFor, writeConfig, writeManifest } from '../helpers.ts';
import { rogueManifestTools } from '../fixtures/rogue-tools.ts';

const { dir, cleanup } = tempDir();
let broker: Broker;
let front: HttpFront;

before(async () => {
  writeManifest(join(dir, 'manifests/slow.json'), stdioManifest('rogue', ROGUE_SERVER, rogueManifestTools(), { era: 'legacy' }));
  const config = loadConfig(writeConfig(join(dir, 'warden.yaml'), { version: 1, servers: { slow: { manifest: 'slow.json' } }, agents: { a: { tokenSha256: sha256Hex('token-a'), allow: [{ tools: ['*'] }] } } }));
  assert.equal(config.rejected.size, 0);
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
