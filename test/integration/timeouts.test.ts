import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Client } from '@modelcontextprotocol/client';
import type { Broker } from '../../src/broker.ts';
import { loadConfig } from '../../src/config/load.ts';
import { connectStdio, refusalCode, ROGUE_SERVER, startBroker, stdioManifest, tempDir, textOf, waitFor, writeConfig, writeManifest } from '../helpers.ts';
import { rogueManifestTools } from '../fixtures/rogue-tools.ts';

const { dir, cleanup } = tempDir();
let config: string;
let broker: Broker;

before(async () => {
  // Three names: serve records each accepted name and serial, and refuses the same serial
  // with other content (equivocation).
  const tools = rogueManifestTools({ hang: { timeoutMs: 300 } });
  writeManifest(join(dir, 'manifests/rogue.json'), stdioManifest('rogue', ROGUE_SERVER, tools, { era: 'legacy' }));
  writeManifest(join(dir, 'manifests/other.json'), stdioManifest('rogue-other', ROGUE_SERVER, tools, { era: 'legacy' }));
  // No tool timeout here: only the agent's cancellation can end a call.
  writeManifest(join(dir, 'manifests/slow.json'), stdioManifest('rogue-slow', ROGUE_SERVER, rogueManifestTools(), { era: 'legacy' }));
  config = writeConfig(join(dir, 'warden.yaml'), {
    version: 1,
    servers: { rogue: { manifest: 'rogue.json' }, other: { manifest: 'other.json' }, slow: { manifest: 'slow.json' } },
    agents: { a: { allow: [{ tools: ['*'] }] } },
    limits: { callTimeoutMs: 60000, maxCallTimeoutMs: 60000, breaker: { timeouts: 2, cooldownMs: 3600000 } },
  });
  const loaded = loadConfig(config);
  assert.equal(loaded.rejected.size, 0);
  broker = await startBroker(loaded);
});

after(async () => {
  await broker?.close();
  cleanup();
});

describe('timeouts and cancellation', () => {
  it('a tool times out at its own timeout, and the server is told to cancel', async () => {
    const result = await broker.callTool('a', 'other__hang', {});
    assert.equal(refusalCode(result), 'WARDEN_DOWNSTREAM_TIMEOUT');
    assert.match(textOf(result), /within 300 ms/);
    assert.ok(await waitFor(async () => textOf(await broker.callTool('a', 'other__cancellations', {})) === '1', 50, 20), 'the server saw the cancellation');
  });

  it('a manifest cannot raise its timeout above the policy maximum', async () => {
    writeManifest(join(dir, 'manifests/long.json'), stdioManifest('rogue-long', ROGUE_SERVER, rogueManifestTools({ hang: { timeoutMs: 3600000 } }), { era: 'legacy' }));
    const capped = loadConfig(writeConfig(join(dir, 'capped.yaml'), { version: 1, servers: { long: { manifest: 'long.json' } }, agents: { a: { allow: [{ tools: ['*'] }] } }, limits: { maxCallTimeoutMs: 400 } }));
    assert.equal(capped.rejected.size, 0);
    assert.equal(capped.limits.callTimeoutMs, 400, 'the default timeout follows a lower maximum');
    const own = await startBroker(capped);
    try {
      const result = await own.callTool('a', 'long__hang', {});
      assert.equal(refusalCode(result), 'WARDEN_DOWNSTREAM_TIMEOUT');
      assert.match(textOf(result), /within 400 ms/);
    } finally {
      await own.close();
    }
  });

  it('after repeated timeouts the breaker refuses at once; other servers are unaffected', async () => {
    for (let i = 0; i < 2; i++) assert.equal(refusalCode(await broker.callTool('a', 'rogue__hang', {})), 'WARDEN_DOWNSTREAM_TIMEOUT');
    const refused = await broker.callTool('a', 'rogue__ok', {});
    assert.equal(refusalCode(refused), 'WARDEN_SERVER_UNAVAILABLE');
    assert.match(textOf(refused), /not answering \(2 calls in a row timed out\)/);
    assert.equal(textOf(await broker.callTool('a', 'other__ok', {})), 'ok');
    const records = (broker.audit as unknown as { records: Record<string, unknown>[] }).records;
    assert.ok(records.some((r) => r['event'] === 'server.state' && r['state'] === 'breaker-open' && r['server'] === 'rogue'));
  });

  it('when the agent cancels, the downstream call is cancelled too', async () => {
    const agent: Client = await connectStdio(config, 'a');
    try {
      const controller = new AbortController();
      const call = agent.callTool({ name: 'slow__hang', arguments: {} }, { signal: controller.signal });
      setTimeout(() => controller.abort('changed my mind'), 100);
      await assert.rejects(call);
      const seen = await waitFor(async () => textOf(await agent.callTool({ name: 'slow__cancellations', arguments: {} })) === '1', 50, 20);
      assert.ok(seen, 'the downstream server saw the cancellation');
      const audit = readFileSync(join(dir, 'audit/audit.jsonl'), 'utf8');
      assert.ok(await waitFor(() => readFileSync(join(dir, 'audit/audit.jsonl'), 'utf8').includes('"reason":"WARDEN_CALL_CANCELLED"'), 50, 20), audit.slice(-500));
    } finally {
      await agent.close();
    }
  });

  it('a call the agent cancels in flight ends as cancelled, not as a timeout, and the server is told', async () => {
    const before = Number(textOf(await broker.callTool('a', 'slow__cancellations', {})));
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('changed my mind')), 100);
    const result = await broker.callTool('a', 'slow__hang', {}, { signal: controller.signal });
    assert.equal(refusalCode(result), 'WARDEN_CALL_CANCELLED');
    assert.ok(await waitFor(async () => Number(textOf(await broker.callTool('a', 'slow__cancellations', {}))) === before + 1, 50, 20), 'the server saw the cancellation');
  });

  it('a call whose agent has already cancelled is refused as cancelled', async () => {
    const controller = new AbortController();
    controller.abort(new Error('gone'));
    const result = await broker.callTool('a', 'slow__ok', {}, { signal: controller.signal });
    assert.equal(refusalCode(result), 'WARDEN_CALL_CANCELLED');
  });
});

