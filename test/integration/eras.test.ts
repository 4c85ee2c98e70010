import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import type { Broker } from '../../src/broker.ts';
import type { McpBackend } from '../../src/backends/mcp.ts';
import { loadConfig, sha256Hex } from '../../src/config/load.ts';
import { startHttpFront, type HttpFront } from '../../src/front/http.ts';
import { NOTES_SERVER, NOTES_TOOLS, startBroker, stdioManifest, tempDir, textOf, writeConfig, writeManifest } from '../helpers.ts';

// Every combination of agent era and downstream era, through the same broker.
const { dir, cleanup } = tempDir();
let broker: Broker;
let front: HttpFront;

before(async () => {
  writeManifest(join(dir, 'manifests/legacy.json'), stdioManifest('notes-legacy', NOTES_SERVER, NOTES_TOOLS, { era: 'legacy' }));
  writeManifest(join(dir, 'manifests/modern.json'), stdioManifest('notes-modern', NOTES_SERVER, NOTES_TOOLS, { era: 'modern' }));
  const config = loadConfig(
    writeConfig(join(dir, 'warden.yaml'), {
      version: 1,
      servers: { old: { manifest: 'legacy.json' }, new: { manifest: 'modern.json' } },
      agents: { a: { tokenSha256: sha256Hex('token-a'), allow: [{ tools: ['*'] }] } },
    }),
  );
  assert.equal(config.rejected.size, 0);
  broker = await startBroker(config);
  front = await startHttpFront(broker, { host: '127.0.0.1', port: 0 });
});

after(async () => {
  await front?.close();
  await broker?.close();
  cleanup();
});

describe('protocol eras', () => {
  it('downstream servers connect in the era their manifest names', () => {
    assert.equal((broker.backends.get('old') as McpBackend | undefined)?.era, 'legacy');
    assert.equal((broker.backends.get('new') as McpBackend | undefined)?.era, 'modern');
    // The live tools match the signed manifest in both eras: neither server is quarantined.
    assert.equal(broker.backends.get('old')?.quarantine, undefined);
    assert.equal(broker.backends.get('new')?.quarantine, undefined);
  });

  for (const agentEra of ['legacy', 'modern'] as const) {
    for (const server of ['old', 'new'] as const) {
      it(`${agentEra} agent -> ${server === 'old' ? 'legacy' : 'modern'} downstream`, async () => {
        const client = new Client({ name: 'era-agent', version: '1.0.0' }, { versionNegotiation: { mode: agentEra === 'modern' ? { pin: '2026-07-28' } : 'legacy' } });
        await client.connect(new StreamableHTTPClientTransport(new URL(front.url), { requestInit: { headers: { Authorization: 'Bearer token-a' } } }));
        try {
          assert.equal(client.getProtocolEra(), agentEra);
          const text = `${agentEra} to ${server}`;
          assert.equal(textOf(await client.callTool({ name: `${server}__echo`, arguments: { text } })), text);
        } finally {
          await client.close();
        }
      });
    }
  }
});
