import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { Broker } from '../../src/broker.ts';
import { loadConfig } from '../../src/config/load.ts';
import { NOTES_SERVER, NOTES_TOOLS, refusalCode, ROGUE_SERVER, stdioManifest, tempDir, textOf, waitFor, writeConfig, writeManifest } from '../helpers.ts';
import { rogueManifestTools } from '../fixtures/rogue-tools.ts';

const { dir, cleanup } = tempDir();
let broker: Broker;

before(async () => {
  writeManifest(join(dir, 'manifests/rogue.json'), stdioManifest('rogue', ROGUE_SERVER, rogueManifestTools(), { era: 'legacy' }));
  writeManifest(join(dir, 'manifests/dead.json'), stdioManifest('dead', ROGUE_SERVER, rogueManifestTools(), { era: 'legacy', env: { ROGUE_FAIL_START: '1' } }));
  writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
  const config = loadConfig(
    writeConfig(join(dir, 'warden.yaml'), {
      version: 1,
      servers: { rogue: { manifest: 'rogue.json' }, dead: { manifest: 'dead.json' }, notes: { manifest: 'notes.json' } },
      agents: { a: { allow: [{ tools: ['*'] }] } },
      limits: { callTimeoutMs: 1000, connectTimeoutMs: 10000 },
      // 40 calls at once below: above the default per-agent concurrency, which is not under test here.
      rateLimits: { perAgent: { concurrent: 100 }, perTool: { concurrent: 100 } },
    }),
  );
  assert.equal(config.rejected.size, 0);
  // Short backoff so a restart happens within the test; the bounded waits below still cap it.
  broker = new Broker(config, { logger: pino({ level: 'silent' }), backoff: { initialMs: 50, maxMs: 400 } });
  await broker.start();
});

after(async () => {
  await broker?.close();
  cleanup();
});

const call = (name: string, args: Record<string, unknown> = {}) => broker.callTool('a', name, args);

describe('misbehaving downstream servers', () => {
  it('a server that crashes mid-call: a clear error, then a restart, others unaffected', async () => {
    assert.equal(textOf(await call('rogue__ok')), 'ok');
    const crashed = await call('rogue__crash');
    assert.equal(crashed.isError, true);
    assert.equal(refusalCode(crashed), 'WARDEN_SERVER_UNAVAILABLE');
    // while it restarts, the other server answers normally
    assert.equal(textOf(await call('notes__echo', { text: 'unaffected' })), 'unaffected');
    const back = await waitFor(() => broker.backends.get('rogue')?.state === 'ready', 200, 50);
    assert.ok(back, 'the crashed server was restarted');
    assert.equal(broker.backends.get('rogue')?.quarantine, undefined, 'the restarted server is pinned again and still matches');
    assert.equal(textOf(await call('rogue__ok')), 'ok');
  });

  it('a server that hangs: a timeout error, and other calls proceed meanwhile', async () => {
    const hung = call('rogue__hang');
    assert.equal(textOf(await call('rogue__ok')), 'ok');
    const result = await hung;
    assert.equal(refusalCode(result), 'WARDEN_DOWNSTREAM_TIMEOUT');
    assert.equal(textOf(await call('rogue__ok')), 'ok');
  });

  it('a server that writes garbage on stdout: the broker keeps talking to it', async () => {
    assert.equal(textOf(await call('rogue__garbage')), 'ok');
    assert.equal(textOf(await call('rogue__ok')), 'ok');
  });

  it('a server that never starts: calls fail at once with a clear code, never hang', async () => {
    assert.notEqual(broker.backends.get('dead')?.state, 'ready');
    // Refused from the backend's state, not after a timeout: the code would be
    // WARDEN_DOWNSTREAM_TIMEOUT if the call had been sent and waited for.
    const result = await call('dead__ok');
    assert.equal(refusalCode(result), 'WARDEN_SERVER_UNAVAILABLE');
    assert.match(textOf(result), /dead/);
  });

  it('many concurrent calls during crashes all settle', async () => {
    const calls = Array.from({ length: 40 }, (_, i) => call(i === 5 ? 'rogue__crash' : 'rogue__ok'));
    const results = await Promise.all(calls);
    assert.equal(results.length, 40);
    for (const result of results) {
      assert.ok(textOf(result) === 'ok' || refusalCode(result) === 'WARDEN_SERVER_UNAVAILABLE', JSON.stringify(result));
    }
    assert.ok(await waitFor(() => broker.backends.get('rogue')?.state === 'ready', 200, 50));
  });
});
