import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Client } from '@modelcontextprotocol/client';
import { connectStdio, EVERYTHING_SERVER, refusalCode, ROOT, tempDir, textOf, writeYaml } from '../helpers.ts';

const { dir, cleanup } = tempDir();
let agent: Client;

const longRunning = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  description: 'Demonstrates a long running operation with progress updates.',
  access: 'read',
  inputSchema: {
    $schema: 'http://json-schema.org/draft-07/schema#',
    type: 'object',
    properties: {
      duration: { default: 10, description: 'Duration of the operation in seconds', type: 'number' },
      steps: { default: 5, description: 'Number of steps in the operation', type: 'number' },
    },
  },
  ...extra,
});

before(async () => {
  const transport = { type: 'stdio', command: process.execPath, args: [EVERYTHING_SERVER, 'stdio'], cwd: ROOT, era: 'legacy' };
  writeYaml(join(dir, 'manifests/everything.yaml'), { manifestVersion: 1, name: 'modelcontextprotocol/server-everything', version: '1', transport, tools: [longRunning('trigger-long-running-operation')] });
  writeYaml(join(dir, 'manifests/capped.yaml'), { manifestVersion: 1, name: 'modelcontextprotocol/server-everything', version: '1', transport, tools: [longRunning('trigger-long-running-operation', { timeoutMs: 700 })] });
  const config = writeYaml(join(dir, 'warden.yaml'), {
    version: 1,
    servers: { everything: { manifest: 'everything.yaml' }, capped: { manifest: 'capped.yaml' } },
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
