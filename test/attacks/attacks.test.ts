import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { Broker } from '../../src/broker.ts';
import { loadConfig } from '../../src/config/load.ts';
import { WardenError } from '../../src/errors.ts';
import { NOTES_SERVER, NOTES_TOOLS, refusalCode, ROOT, stdioManifest, tempDir, textOf, writeYaml } from '../helpers.ts';

const CONFIG_CASES = join(ROOT, 'test/attacks/config');

describe('hostile config files (test/attacks/config)', () => {
  for (const file of readdirSync(CONFIG_CASES).filter((name) => name.endsWith('.yaml')).sort()) {
    const expected = /^# expect: (\S+)/.exec(readFileSync(join(CONFIG_CASES, file), 'utf8'))?.[1];
    it(`${file}: ${expected}`, () => {
      assert.ok(expected, `${file} must start with "# expect: CODE|ok"`);
      let outcome = 'ok';
      try {
        loadConfig(join(CONFIG_CASES, file));
      } catch (error) {
        assert.ok(error instanceof WardenError, `${file}: threw a non-WardenError: ${String(error)}`);
        outcome = error.code;
      }
      assert.equal(outcome, expected);
    });
  }
});

describe('hostile tool names (test/attacks/tool-names.json)', () => {
  const corpus = JSON.parse(readFileSync(join(ROOT, 'test/attacks/tool-names.json'), 'utf8')) as { expect: string; cases: { name: string; why: string }[] };
  const { dir, cleanup } = tempDir();
  let broker: Broker;
  const downstreamCalls: string[] = [];

  before(async () => {
    writeYaml(join(dir, 'manifests/notes.yaml'), stdioManifest('example/notes', NOTES_SERVER, [...NOTES_TOOLS, { name: 'delete_note', description: 'd', access: 'write', inputSchema: { type: 'object' } }]));
    const config = loadConfig(writeYaml(join(dir, 'warden.yaml'), { version: 1, servers: { notes: { manifest: 'notes.yaml' } }, agents: { a: { allow: [{ tools: ['notes__*'] }] } } }));
    broker = new Broker(config, { logger: pino({ level: 'silent' }), audit: 'memory' });
    await broker.start();
    const backend = broker.backends.get('notes');
    assert.ok(backend);
    const original = backend.callTool.bind(backend);
    backend.callTool = (tool, args, timeout) => {
      downstreamCalls.push(tool);
      return original(tool, args, timeout);
    };
  });
  after(async () => {
    await broker?.close();
    cleanup();
  });

  for (const { name, why } of corpus.cases) {
    it(`${why}: refused with ${corpus.expect}`, async () => {
      const toolName = name === 'LONG' ? 'n'.repeat(100_000) : name;
      const result = await broker.callTool('a', toolName, {});
      assert.equal(result.isError, true);
      assert.equal(refusalCode(result), corpus.expect);
      assert.ok(textOf(result).length < 400, 'the echoed name is truncated');
    });
  }

  it('none of them reached the downstream, and the broker still serves', async () => {
    assert.deepEqual(downstreamCalls, []);
    assert.equal(textOf(await broker.callTool('a', 'notes__echo', { text: 'alive' })), 'alive');
  });
});
