import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Client } from '@modelcontextprotocol/client';
import { connectStdio, refusalCode, tempDir, textOf, writeConfig, writeManifest } from '../helpers.ts';
import { everythingManifest } from '../fixtures/repo-manifests.ts';

const { dir, cleanup } = tempDir();
let agent: Client;

before(async () => {
  // Two names: serve refuses one serial of a name signed with two different contents.
  writeManifest(join(dir, 'manifests/everything.json'), everythingManifest('everything'));
  writeManifest(join(dir, 'manifests/capped.json'), everythingManifest('everything-capped', { toolExtras: { 'trigger-long-running-operation': { timeoutMs: 700 } } }));
  const config = writeConfig(join(dir, 'warden.yaml'), {
    version: 1,
    servers: { everything: { manifest: 'everything.json' }, capped: { manifest: 'capped.json' } },
    agents: { a: { allow: [{ tools: ['*'] }] } },
  });
  agent = await connectStdio(config, 'a');
});

after(async () => {
  await agent?.close();
  cleanup();
});

describe('progress', () => {
  it("the downstream's progress reaches an agent that asked for it", async () => {
    const seen: { progress: number; total?: number }[] = [];
    const result = await agent.callTool({ name: 'everything__trigger-long-running-operation', arguments: { duration: 1, steps: 3 } }, { onprogress: (p) => seen.push(p) });
    assert.equal(result.isError, undefined, textOf(result));
    assert.ok(seen.length >= 2, `progress notifications: ${JSON.stringify(seen)}`);
    assert.ok(seen.every((p) => p.total === 3));
  });

  it('progress never extends a call past its timeout', async () => {
    const seen: unknown[] = [];
    const result = await agent.callTool({ name: 'capped__trigger-long-running-operation', arguments: { duration: 3, steps: 10 } }, { onprogress: (p) => seen.push(p) });
    assert.equal(refusalCode(result), 'WARDEN_DOWNSTREAM_TIMEOUT');
    assert.ok(seen.length >= 1, 'progress arrived before the timeout');
  });
});
