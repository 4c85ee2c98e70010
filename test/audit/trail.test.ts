import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { openAuditTrail } from '../../src/audit/trail.ts';
import { Broker } from '../../src/broker.ts';
import { loadConfig } from '../../src/config/load.ts';
import { NOTES_SERVER, NOTES_TOOLS, refusalCode, stdioManifest, tempDir, writeConfig, writeManifest } from '../helpers.ts';

const { dir, cleanup } = tempDir();
after(cleanup);

describe('audit trail', () => {
  it('writes one JSON object per line to a file only its owner can read', () => {
    const file = join(dir, 'nested/audit.jsonl');
    const trail = openAuditTrail(file);
    trail.write({ event: 'tools/call', agent: 'a', tool: 't', decision: 'deny', reason: 'WARDEN_TOOL_NOT_FOUND' });
    trail.write({ event: 'broker.stop' });
    trail.close();
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    assert.equal(lines.length, 2);
    assert.equal(lines[0].event, 'tools/call');
    assert.equal(lines[0].service, 'mcp-warden');
    assert.match(lines[0].time, /^\d{4}-\d\d-\d\dT/);
    assert.equal(statSync(file).mode & 0o777, 0o600);
  });

  it('a write that fails throws and marks the trail unhealthy', { skip: !existsSync('/dev/full') && 'needs /dev/full' }, () => {
    const trail = openAuditTrail('/dev/full');
    assert.throws(() => trail.write({ event: 'broker.start' }));
    assert.equal(trail.healthy, false);
  });

  it('a broker whose audit trail cannot be written refuses every call (fail closed)', { skip: !existsSync('/dev/full') && 'needs /dev/full' }, async () => {
    writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
    const config = loadConfig(writeConfig(join(dir, 'warden.yaml'), { version: 1, servers: { notes: { manifest: 'notes.json' } }, agents: { a: { allow: [{ tools: ['*'] }] } } }));
    assert.equal(config.rejected.size, 0);
    const broker = new Broker(config, { logger: pino({ level: 'silent' }), audit: openAuditTrail('/dev/full') });
    try {
      await broker.start(); // the failed broker.start record is logged, not thrown
      assert.equal(broker.backends.get('notes')?.state, 'ready');
      assert.equal(broker.backends.get('notes')?.quarantine, undefined, 'the live server matches its signed manifest');
      const result = await broker.callTool('a', 'notes__echo', { text: 'x' });
      assert.equal(refusalCode(result), 'WARDEN_INTERNAL');
      assert.throws(() => broker.listTools('a'));
    } finally {
      await broker.close();
    }
  });
});
