import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { Broker } from '../../src/broker.ts';
import { loadConfig } from '../../src/config/load.ts';
import { WardenError } from '../../src/errors.ts';
import { NOTES_SERVER, NOTES_TOOLS, refusalCode, ROOT, stdioManifest, tempDir, textOf, writeConfig, writeManifest } from '../helpers.ts';

const CONFIG_CASES = join(ROOT, 'test/attacks/config');

/** Corpus shorthands: "REPEAT:c:n" is c repeated n times; "NEST:n" is n nested arrays. */
function expand(value: unknown): unknown {
  if (typeof value === 'string') {
    const repeat = /^REPEAT:(.):(\d+)$/.exec(value);
    if (repeat) return repeat[1]!.repeat(Number(repeat[2]));
    const nest = /^NEST:(\d+)$/.exec(value);
    if (nest) {
      let inner: unknown = 1;
      for (let i = 0; i < Number(nest[1]); i++) inner = [inner];
      return inner;
    }
    return value;
  }
  if (Array.isArray(value)) return value.map(expand);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, child] of Object.entries(value)) Object.defineProperty(out, key, { value: expand(child), enumerable: true, writable: true, configurable: true });
    return out;
  }
  return value;
}

describe('hostile config files (test/attacks/config)', () => {
  for (const file of readdirSync(CONFIG_CASES).filter((name) => name.endsWith('.yaml')).sort()) {
    const expected = /^# expect: (\S+)/.exec(readFileSync(join(CONFIG_CASES, file), 'utf8'))?.[1];
    it(`${file}: ${expected}`, () => {
      assert.ok(expected, `${file} must start with "# expect: CODE|ok|rejected:REASON"`);
      let outcome = 'ok';
      try {
        // A refused manifest is not an error: the config loads without that server.
        const config = loadConfig(join(CONFIG_CASES, file));
        if (config.rejected.size > 0) {
          outcome = `rejected:${[...config.rejected.values()].map((rejection) => rejection.reason).join(',')}`;
          for (const server of config.rejected.keys()) {
            assert.ok(![...config.catalog.values()].some((tool) => tool.server === server), `${file}: a refused server has no tools`);
          }
        }
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
    // Every tool the live notes server offers is signed (get_note, delete_note and
    // debug_dump included); the agent is granted the read tools except debug_dump.
    writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
    const granted = ['list_notes', 'get_note', 'search_notes', 'echo', 'server_info'].map((tool) => `notes__${tool}`);
    const config = loadConfig(writeConfig(join(dir, 'warden.yaml'), { version: 1, servers: { notes: { manifest: 'notes.json' } }, agents: { a: { allow: [{ tools: granted }] } } }));
    assert.equal(config.rejected.size, 0);
    broker = new Broker(config, { logger: pino({ level: 'silent' }), audit: 'memory' });
    await broker.start();
    const backend = broker.backends.get('notes');
    assert.ok(backend);
    assert.equal(backend.state, 'ready');
    assert.equal(backend.quarantine, undefined, 'refusals below come from policy, not from a quarantine');
    const original = backend.callTool.bind(backend);
    backend.callTool = (call) => {
      downstreamCalls.push(call.tool);
      return original(call);
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

  const argumentCorpus = JSON.parse(readFileSync(join(ROOT, 'test/attacks/arguments.json'), 'utf8')) as {
    expect: string;
    cases: { why: string; tool: string; args: Record<string, unknown>; path: string; rule: string }[];
  };
  for (const { why, tool, args, path, rule } of argumentCorpus.cases) {
    it(`arguments, ${why}: refused with ${argumentCorpus.expect} (${rule})`, async () => {
      const result = await broker.callTool('a', tool, expand(args) as Record<string, unknown>);
      assert.equal(refusalCode(result), argumentCorpus.expect);
      assert.match(textOf(result), new RegExp(`\\(rule: ${rule}\\)`));
      if (path !== 'DEEP') assert.ok(textOf(result).includes(`Argument ${path} `), textOf(result));
    });
  }

  it('every refused call has its audit record, even when the arguments cannot be serialised', () => {
    const records = (broker.audit as unknown as { records: Record<string, unknown>[] }).records.filter((r) => r['event'] === 'tools/call');
    assert.equal(records.length, corpus.cases.length + argumentCorpus.cases.length);
    assert.ok(records.every((r) => r['decision'] === 'deny'));
    assert.ok(records.some((r) => r['argsSha256'] === null), 'the 100 000-deep case has no digest but has a record');
  });

  it('none of them reached the downstream, and the broker still serves', async () => {
    assert.deepEqual(downstreamCalls, []);
    assert.equal(textOf(await broker.callTool('a', 'notes__echo', { text: 'alive' })), 'alive');
  });
});
