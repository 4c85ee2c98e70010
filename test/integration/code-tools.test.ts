import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { CallToolResult } from '@modelcontextprotocol/client';
import type { Broker } from '../../src/broker.ts';
import { loadConfig } from '../../src/config/load.ts';
import { connectStdio, NOTES_SERVER, NOTES_TOOLS, refusalCode, ROOT, startBroker, stdioManifest, tempDir, textOf, writeConfig, writeManifest, textToolsManifest } from '../helpers.ts';

// Code tools (transport: sandbox) end to end through the broker: the example text tools,
// hostile guests that must be contained, per-tool limits, output sanitising, the audit
// record, worker crashes, and the module pinned at load. One broker for the file.

const FIXTURES = join(ROOT, 'test/fixtures/sandbox');
const CANARY = 'canary-sandbox-5b1e9d7c3a';
const CANARY_ENV = 'WARDEN_TEST_SANDBOX_CANARY';
const { dir, cleanup } = tempDir();
let broker: Broker;
let configFile: string;

type AuditRecord = Record<string, unknown>;
const records = (): AuditRecord[] => (broker.audit as unknown as { records: AuditRecord[] }).records;
/** The audit record of the last tools/call of this tool. */
const lastCall = (tool: string): AuditRecord | undefined => records().filter((r) => r['event'] === 'tools/call' && r['tool'] === tool).at(-1);

const OBJECT = { type: 'object' };
const tool = (name: string, extra: Record<string, unknown> = {}) => ({ name, description: `Hostile test tool ${name}.`, access: 'read', inputSchema: OBJECT, ...extra });
const sandboxManifest = (name: string, module: string, tools: unknown[]) => ({ manifestVersion: 1, name: `test.${name}`, version: '1.0.0', serial: 1, transport: { type: 'sandbox', module }, tools });

const HOSTILE_TOOLS = [
  ...['ok', 'spin', 'spin_async', 'redos', 'grow_object', 'grow_string', 'grow_map', 'array_from', 'array_fill', 'buffers', 'typed_arrays', 'missing_globals', 'recurse', 'escapes', 'huge', 'fails', 'leak_detected', 'leak_aws_secret', 'absent'].map((name) => tool(name)),
  // Per-tool limits: 50 ms asked; 5000 ms asked but capped by maxLimits (400); the call timeout caps wallMs.
  tool('spin_small', { sandbox: { cpuMs: 50 } }),
  tool('spin_greedy', { sandbox: { cpuMs: 5000 } }),
  tool('never_short', { timeoutMs: 300 }),
  tool('grow_chunks', { sandbox: { memoryMb: 16, cpuMs: 400 } }),
  // Grows an array in a built-in that does not check for termination: the worker's watchdog ends the process.
  tool('crash', { sandbox: { cpuMs: 10 } }),
  // Many small objects in a small heap: V8 may give up on the isolate, and then the worker aborts.
  tool('oom', { sandbox: { memoryMb: 16, cpuMs: 400 } }),
];

before(async () => {
  writeManifest(join(dir, 'manifests/text.json'), textToolsManifest('text'));
  // The same module under a stricter outputSchema than word_stats returns (words must be a string).
  const strict = textToolsManifest('strict') as { tools: Record<string, unknown>[] };
  const wordStats = strict.tools.find((entry) => entry['name'] === 'word_stats') as { outputSchema: { properties: Record<string, unknown> } };
  writeManifest(join(dir, 'manifests/strict.json'), { ...strict, tools: [{ ...wordStats, outputSchema: { ...wordStats.outputSchema, properties: { ...wordStats.outputSchema.properties, words: { type: 'string' } } } }] });
  writeManifest(join(dir, 'manifests/hostile.json'), sandboxManifest('hostile', join(FIXTURES, 'hostile.js'), HOSTILE_TOOLS));
  writeManifest(join(dir, 'manifests/tamper.json'), sandboxManifest('tamper', join(FIXTURES, 'tamper.js'), [tool('echo'), tool('spin'), tool('grow')]));
  writeManifest(join(dir, 'manifests/imports.json'), sandboxManifest('imports', join(FIXTURES, 'imports.js'), [tool('read')]));
  // A code tool that answers with the value of a credential the broker injects into another server.
  writeFileSync(join(dir, 'leak.js'), `export function leak() {\n  return ${JSON.stringify(`the notes token is ${CANARY}`)};\n}\n`);
  writeManifest(join(dir, 'manifests/leak.json'), sandboxManifest('leak', join(dir, 'leak.js'), [tool('leak')]));
  // A module that the test changes on disk after the broker loaded it.
  writeFileSync(join(dir, 'mutable.js'), "export function version() {\n  return 'v1';\n}\n");
  writeManifest(join(dir, 'manifests/mutable.json'), sandboxManifest('mutable', join(dir, 'mutable.js'), [tool('version')]));
  writeManifest(join(dir, 'manifests/notes.json'), { ...stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS, { era: 'legacy' }), credentials: [{ name: 'NOTES_API_TOKEN' }] });
  configFile = writeConfig(join(dir, 'warden.yaml'), {
    version: 1,
    servers: Object.fromEntries(['text', 'strict', 'hostile', 'tamper', 'imports', 'leak', 'mutable', 'notes'].map((name) => [name, { manifest: `${name}.json` }])),
    credentials: { notes: { NOTES_API_TOKEN: { env: CANARY_ENV } } },
    agents: { a: { allow: [{ tools: ['*'] }] } },
    // Generous: the crash loop below makes a hundred calls of one tool.
    rateLimits: { perAgent: { perMinute: 100000, burst: 10000 }, perTool: { perMinute: 100000, burst: 10000 } },
    sandbox: { workers: 1, warmIsolates: 1, codeMode: { workers: 1 }, limits: { cpuMs: 250 }, maxLimits: { cpuMs: 400 } },
  });
  process.env[CANARY_ENV] = CANARY;
  const config = loadConfig(configFile);
  assert.deepEqual([...config.rejected.entries()], []);
  broker = await startBroker(config);
});

after(async () => {
  await broker?.close();
  delete process.env[CANARY_ENV];
  cleanup();
});

/** The broker still answers a normal code tool call. */
async function assertHealthy(): Promise<void> {
  const result = await broker.callTool('a', 'hostile__ok', { text: 'still fine' });
  assert.equal(result.isError, undefined, textOf(result));
  assert.deepEqual(result.structuredContent, { text: 'still fine' });
}

function assertRefused(result: CallToolResult, code: string): void {
  assert.equal(refusalCode(result), code, textOf(result));
  assert.equal(result.isError, true);
}

describe('the example code tools (manifests/text.manifest.yaml)', () => {
  it('word_stats returns structured content and the same JSON as text', async () => {
    const result = await broker.callTool('a', 'text__word_stats', { text: 'the cat and the hat\nthe end', top: 2 });
    assert.equal(result.isError, undefined, textOf(result));
    const expected = { words: 7, lines: 2, characters: 27, top: [{ word: 'the', count: 3 }, { word: 'and', count: 1 }] };
    assert.deepEqual(result.structuredContent, expected);
    assert.deepEqual(JSON.parse(textOf(result)), expected);
  });

  it('a string result is the text itself; csv_to_json parses quoted fields', async () => {
    const slug = await broker.callTool('a', 'text__slugify', { text: 'Héllo, Wörld!' });
    assert.deepEqual(slug.content, [{ type: 'text', text: 'hello-world' }]);
    assert.equal(slug.structuredContent, undefined);
    const csv = await broker.callTool('a', 'text__csv_to_json', { csv: 'name,note\n"Smith, J","said ""hi"""\n' });
    assert.deepEqual(csv.structuredContent, { columns: ['name', 'note'], rows: [{ name: 'Smith, J', note: 'said "hi"' }] });
  });

  it("a guest's own error is a tool error (isError) with its message, not a refusal", async () => {
    const result = await broker.callTool('a', 'text__csv_to_json', { csv: 'a,"b' });
    assert.equal(result.isError, true);
    assert.equal(refusalCode(result), undefined);
    assert.match(textOf(result), /the CSV ends inside a quoted field/);
    assert.equal(lastCall('text__csv_to_json')?.['outcome'], 'tool_error');
  });

  it('arguments are checked against the signed inputSchema before any sandbox runs', async () => {
    for (const [name, args] of [
      ['text__word_stats', {}],
      ['text__word_stats', { text: 42 }],
      ['text__word_stats', { text: 'x', top: 0 }],
      ['text__slugify', { text: 'x', maxLength: 1000 }],
      ['text__csv_to_json', { csv: 'a', delimiter: ';;' }],
    ] as const) {
      const result = await broker.callTool('a', name, args);
      assertRefused(result, 'WARDEN_ARGUMENTS_INVALID');
      const record = lastCall(name);
      assert.equal(record?.['reason'], 'WARDEN_ARGUMENTS_INVALID');
      assert.equal(record?.['sandbox'], undefined, 'no sandbox ran');
      assert.equal(record?.['dispatched'], undefined, 'nothing was dispatched');
    }
  });

  it("the tool's outputSchema is enforced on what the guest returns", async () => {
    const result = await broker.callTool('a', 'strict__word_stats', { text: 'a b' });
    assertRefused(result, 'WARDEN_DOWNSTREAM_ERROR');
    assert.deepEqual(lastCall('strict__word_stats')?.['outputError'], { path: '/words', rule: 'type' });
  });

  it("a code tool call's audit record carries sandbox.cpuMs", async () => {
    await broker.callTool('a', 'text__word_stats', { text: 'audited' });
    const record = lastCall('text__word_stats');
    assert.equal(record?.['outcome'], 'ok');
    const sandbox = record?.['sandbox'] as { cpuMs?: unknown; reason?: unknown };
    assert.equal(typeof sandbox?.cpuMs, 'number');
    assert.ok((sandbox.cpuMs as number) >= 0);
    assert.equal(sandbox.reason, undefined);
  });
});

describe('containment: each attack is stopped and the broker answers the next call', () => {
  const limited: [string, string][] = [
    ['spin', 'an infinite loop'],
    ['spin_async', 'an infinite loop after await null'],
    ['redos', 'a catastrophically backtracking regular expression'],
    ['grow_object', 'object growth'],
    ['grow_string', 'string growth'],
    ['grow_map', 'Map growth'],
    ['array_from', 'Array.from({ length: 2 ** 26 })'],
    ['array_fill', 'new Array(2 ** 27).fill(0)'],
    ['huge', 'a result over outputBytes'],
  ];
  for (const [name, what] of limited) {
    it(`${what} (${name}) -> WARDEN_SANDBOX_LIMIT`, async () => {
      assertRefused(await broker.callTool('a', `hostile__${name}`, {}), 'WARDEN_SANDBOX_LIMIT');
      assert.equal(lastCall(`hostile__${name}`)?.['reason'], 'WARDEN_SANDBOX_LIMIT');
      await assertHealthy();
    });
  }

  for (const name of ['buffers', 'typed_arrays']) {
    it(`ArrayBuffer allocation (${name}) is refused inside the isolate or stopped`, async () => {
      const result = await broker.callTool('a', `hostile__${name}`, {});
      assert.equal(result.isError, true);
      // Seen: the isolate refuses the allocation (a RangeError the guest could catch), a tool error.
      const code = refusalCode(result);
      assert.ok(code === undefined ? /RangeError/.test(textOf(result)) : code === 'WARDEN_SANDBOX_LIMIT', textOf(result));
      await assertHealthy();
    });
  }

  it('WebAssembly, SharedArrayBuffer, Atomics, FinalizationRegistry and WeakRef are not there', async () => {
    const result = await broker.callTool('a', 'hostile__missing_globals', {});
    assert.deepEqual(result.structuredContent, { WebAssembly: 'undefined', SharedArrayBuffer: 'undefined', Atomics: 'undefined', FinalizationRegistry: 'undefined', WeakRef: 'undefined', viaGlobal: 'undefined' });
    await assertHealthy();
  });

  it("deep recursion is the guest's own RangeError (a tool error)", async () => {
    const result = await broker.callTool('a', 'hostile__recurse', {});
    assert.equal(result.isError, true);
    assert.equal(refusalCode(result), undefined);
    assert.match(textOf(result), /RangeError/);
    await assertHealthy();
  });

  it('the classic escapes find no process, require, module loader or host global', async () => {
    const result = await broker.callTool('a', 'hostile__escapes', {});
    assert.equal(result.isError, undefined, textOf(result));
    const found = result.structuredContent as Record<string, string>;
    assert.deepEqual(Object.keys(found).sort(), ['consoleConstructor', 'dynamicImport', 'functionGlobal', 'global', 'globalConstructor', 'process', 'require', 'thisConstructor']);
    for (const [name, value] of Object.entries(found)) {
      assert.ok(value === 'undefined' || value.startsWith('threw:'), `${name}: ${value}`);
    }
    // The Function constructor reached from the guest's own objects is the isolate's: no process there.
    for (const name of ['globalConstructor', 'thisConstructor', 'consoleConstructor', 'process', 'require']) assert.equal(found[name], 'threw:ReferenceError', name);
    await assertHealthy();
  });

  it("prototype tampering aimed at the host's option objects changes neither the result nor the limits", async () => {
    const echo = await broker.callTool('a', 'tamper__echo', { text: 'untouched' });
    assert.equal(echo.isError, undefined, textOf(echo));
    assert.deepEqual(echo.structuredContent, { text: 'untouched' });
    assert.deepEqual(JSON.parse(textOf(echo)), { text: 'untouched' });
    assertRefused(await broker.callTool('a', 'tamper__spin', {}), 'WARDEN_SANDBOX_LIMIT');
    assert.equal((lastCall('tamper__spin')?.['sandbox'] as { reason?: string })?.reason, 'cpu');
    assertRefused(await broker.callTool('a', 'tamper__grow', {}), 'WARDEN_SANDBOX_LIMIT');
    await assertHealthy();
  });

  it('a module with a static import cannot be run (WARDEN_DOWNSTREAM_ERROR)', async () => {
    assertRefused(await broker.callTool('a', 'imports__read', {}), 'WARDEN_DOWNSTREAM_ERROR');
    await assertHealthy();
  });

  it('a declared tool the module does not export (WARDEN_DOWNSTREAM_ERROR)', async () => {
    const result = await broker.callTool('a', 'hostile__absent', {});
    assertRefused(result, 'WARDEN_DOWNSTREAM_ERROR');
    assert.match(textOf(result), /absent/, 'the message names the missing export');
    await assertHealthy();
  });
});

describe('per-tool sandbox limits', () => {
  it("a tool's own cpuMs applies", async () => {
    const result = await broker.callTool('a', 'hostile__spin_small', {});
    assertRefused(result, 'WARDEN_SANDBOX_LIMIT');
    assert.match(textOf(result), /more than 50 ms of CPU/);
    assert.equal((lastCall('hostile__spin_small')?.['sandbox'] as { reason?: string })?.reason, 'cpu');
  });

  it('a tool asking for more than sandbox.maxLimits gets the maximum', async () => {
    const result = await broker.callTool('a', 'hostile__spin_greedy', {});
    assertRefused(result, 'WARDEN_SANDBOX_LIMIT');
    assert.match(textOf(result), /more than 400 ms of CPU/);
  });

  it("a tool's own memoryMb applies", async () => {
    const result = await broker.callTool('a', 'hostile__grow_chunks', {});
    assertRefused(result, 'WARDEN_SANDBOX_LIMIT');
    assert.match(textOf(result), /its 16 MB/);
    assert.equal((lastCall('hostile__grow_chunks')?.['sandbox'] as { reason?: string })?.reason, 'memory');
    await assertHealthy();
  });

  it("the tool's call timeout caps wallMs", async () => {
    const result = await broker.callTool('a', 'hostile__never_short', {});
    assertRefused(result, 'WARDEN_SANDBOX_LIMIT');
    assert.match(textOf(result), /within 300 ms/);
    const record = lastCall('hostile__never_short');
    assert.equal(record?.['timeoutMs'], 300);
    assert.equal((record?.['sandbox'] as { reason?: string })?.reason, 'wall');
    await assertHealthy();
  });
});

describe('what a code tool returns is sanitised like any result', () => {
  it("the value of a credential injected into another server reaches the agent masked", async () => {
    const result = await broker.callTool('a', 'leak__leak', {});
    assert.equal(result.isError, undefined, textOf(result));
    assert.equal(textOf(result), 'the notes token is [redacted: credential]');
    assert.ok(!JSON.stringify(result).includes(CANARY));
    assert.deepEqual((lastCall('leak__leak')?.['redactions'] as { credential?: number })?.credential, 1);
  });

  it('a GitHub token and a PEM private key are masked as detected secrets', async () => {
    const result = await broker.callTool('a', 'hostile__leak_detected', {});
    const serialized = JSON.stringify(result);
    assert.ok(!serialized.includes('A1b2C3d4E5f6G7h8I9j0'));
    assert.ok(!serialized.includes('b3BlbnNzaC1rZXktdjEAAAAABG5vbmU'));
    assert.deepEqual(result.structuredContent, { github: '[redacted: secret]', pem: '[redacted: secret]' });
    assert.ok(((lastCall('hostile__leak_detected')?.['redactions'] as { detected?: number })?.detected ?? 0) >= 2);
  });

  it(
    'an AWS secret access key is masked whole',
    async () => {
      const secret = 'Xq2ZP7kM9vLw3RtY8bNc4HdF6gJe1SaU0iOpQwEr';
      const text = textOf(await broker.callTool('a', 'hostile__leak_aws_secret', {}));
      assert.match(text, /\[redacted: secret\]/);
      for (let i = 0; i + 8 <= secret.length; i++) assert.ok(!text.includes(secret.slice(i, i + 8)), `part of the secret is visible: ${text}`);
    },
  );
});

describe('a worker that has to be ended', () => {
  it('a guest the worker watchdog must kill: WARDEN_SANDBOX_LIMIT, a sandbox.worker audit event, and the next call works', async () => {
    const before = records().filter((r) => r['event'] === 'sandbox.worker').length;
    let events: AuditRecord[] = [];
    // Seen: the run is over its CPU budget inside a built-in that ignores termination; the
    // worker tells the pool why and kills itself, so the run fails with its limit, not as a
    // crash. (Once in about a hundred runs the isolate stops in time and the worker lives:
    // hence up to three tries.)
    for (let attempt = 0; attempt < 3 && events.length === 0; attempt++) {
      assertRefused(await broker.callTool('a', 'hostile__crash', {}), 'WARDEN_SANDBOX_LIMIT');
      assert.equal((lastCall('hostile__crash')?.['sandbox'] as { reason?: string })?.reason, 'cpu');
      events = records().filter((r) => r['event'] === 'sandbox.worker').slice(before);
    }
    assert.equal(events.length, 1, JSON.stringify(events));
    assert.deepEqual({ ...events[0], exitCode: undefined }, { event: 'sandbox.worker', pool: 'tools', state: 'crashed', reason: 'cpu', exitCode: undefined, signal: 'SIGKILL' });
    await assertHealthy();
  });

  it('an isolate out of memory that V8 gives up on: the worker process ends, the run fails, the next call works', async (t) => {
    const before = records().filter((r) => r['event'] === 'sandbox.worker').length;
    const result = await broker.callTool('a', 'hostile__oom', {});
    const code = refusalCode(result);
    const events = records().filter((r) => r['event'] === 'sandbox.worker').slice(before);
    t.diagnostic(`outcome: ${code}; worker events: ${JSON.stringify(events)}`);
    // Seen: on an idle machine V8's last-resort GC fails, isolated-vm's catastrophic-error
    // handler aborts the worker (SIGABRT) and the run is WARDEN_SANDBOX_CRASHED. On a loaded
    // machine the CPU budget often runs out first (WARDEN_SANDBOX_LIMIT, the isolate stopped
    // or the worker killed by its watchdog).
    assert.ok(code === 'WARDEN_SANDBOX_CRASHED' || code === 'WARDEN_SANDBOX_LIMIT', textOf(result));
    assert.ok(events.length <= 1, JSON.stringify(events));
    if (code === 'WARDEN_SANDBOX_CRASHED') {
      assert.equal(events.length, 1);
      assert.deepEqual({ ...events[0], exitCode: undefined }, { event: 'sandbox.worker', pool: 'tools', state: 'crashed', reason: 'crashed', exitCode: undefined, signal: 'SIGABRT' });
      assert.equal((lastCall('hostile__oom')?.['sandbox'] as { reason?: string })?.reason, 'crashed');
    }
    await assertHealthy();
  });

  it('a hundred crashing calls in a row: the next call works and the broker heap does not grow with them', async (t) => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const heapUsed = () => {
      gc();
      gc();
      return process.memoryUsage().heapUsed;
    };
    const eventsBefore = records().filter((r) => r['event'] === 'sandbox.worker').length;
    const started = performance.now();
    let at10 = 0;
    const codes = new Map<string, number>();
    for (let i = 1; i <= 100; i++) {
      const code = refusalCode(await broker.callTool('a', 'hostile__crash', {})) ?? 'none';
      codes.set(code, (codes.get(code) ?? 0) + 1);
      if (i === 10) at10 = heapUsed();
    }
    const at100 = heapUsed();
    const workerEvents = records().filter((r) => r['event'] === 'sandbox.worker').length - eventsBefore;
    t.diagnostic(`100 crashing calls in ${Math.round(performance.now() - started)} ms; workers ended: ${workerEvents}; heap after call 10: ${at10} B, after call 100: ${at100} B, growth ${at100 - at10} B`);
    assert.deepEqual([...codes], [['WARDEN_SANDBOX_LIMIT', 100]]);
    assert.ok(workerEvents >= 50, `workers ended: ${workerEvents}`);
    await assertHealthy();
    // Generous: 90 calls with their audit records in memory; a leak of a worker's state per crash would pass it.
    assert.ok(at100 - at10 < 8 * 1024 * 1024, `heap grew by ${at100 - at10} bytes`);
  });
});

describe('the module is the one checked at load', () => {
  it('a change on disk is not picked up; a reload refuses the manifest (module-modified) and its tools disappear', async () => {
    assert.equal(textOf(await broker.callTool('a', 'mutable__version', {})), 'v1');
    writeFileSync(join(dir, 'mutable.js'), "export function version() {\n  return 'v2: changed after signing';\n}\n");
    assert.equal(textOf(await broker.callTool('a', 'mutable__version', {})), 'v1', 'the text read at load runs');

    const next = loadConfig(configFile);
    assert.equal(next.rejected.get('mutable')?.reason, 'module-modified');
    assert.deepEqual([...next.rejected.keys()], ['mutable']);
    await broker.applyConfig(next);
    assert.ok(records().some((r) => r['event'] === 'manifest.rejected' && r['server'] === 'mutable' && r['reason'] === 'module-modified'));
    const names = broker.listTools('a').tools.map((entry) => entry.name);
    assert.ok(!names.some((name) => name.startsWith('mutable__')), names.join(', '));
    assert.ok(names.includes('text__word_stats'));
    assertRefused(await broker.callTool('a', 'mutable__version', {}), 'WARDEN_TOOL_NOT_FOUND');
    assert.equal(textOf(await broker.callTool('a', 'text__slugify', { text: 'Other Servers Go On' })), 'other-servers-go-on');
  });
});

describe('over the stdio front', () => {
  it('an SDK client lists and calls code tools; a limit is a coded refusal and the next call works', async () => {
    const config = writeConfig(join(dir, 'stdio.yaml'), {
      version: 1,
      servers: { text: { manifest: 'text.json' }, hostile: { manifest: 'hostile.json' } },
      agents: { a: { allow: [{ tools: ['text__*', 'hostile__spin', 'hostile__ok'] }] } },
      state: { dir: 'state-stdio' },
      audit: { file: 'audit-stdio.jsonl' },
      sandbox: { workers: 1, warmIsolates: 1, codeMode: { workers: 1 }, limits: { cpuMs: 200 } },
    });
    const client = await connectStdio(config, 'a');
    try {
      const names = (await client.listTools()).tools.map((entry) => entry.name).sort();
      assert.deepEqual(names, ['hostile__ok', 'hostile__spin', 'text__csv_to_json', 'text__slugify', 'text__word_stats']);
      const stats = await client.callTool({ name: 'text__word_stats', arguments: { text: 'over stdio over stdio' } });
      assert.equal(stats.isError, undefined, textOf(stats));
      assert.deepEqual(stats.structuredContent, { words: 4, lines: 1, characters: 21, top: [{ word: 'over', count: 2 }, { word: 'stdio', count: 2 }] });
      assert.equal(refusalCode(await client.callTool({ name: 'text__word_stats', arguments: { text: 1 } })), 'WARDEN_ARGUMENTS_INVALID');
      const spin = await client.callTool({ name: 'hostile__spin', arguments: {} });
      assert.equal(refusalCode(spin), 'WARDEN_SANDBOX_LIMIT');
      const guestError = await client.callTool({ name: 'text__csv_to_json', arguments: { csv: '"' } });
      assert.equal(guestError.isError, true);
      assert.equal(refusalCode(guestError), undefined);
      const ok = await client.callTool({ name: 'hostile__ok', arguments: { text: 'after' } });
      assert.deepEqual(ok.structuredContent, { text: 'after' });
    } finally {
      await client.close();
    }
    const audit = readFileSync(join(dir, 'audit-stdio.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as AuditRecord);
    const spun = audit.find((r) => r['event'] === 'tools/call' && r['tool'] === 'hostile__spin');
    assert.equal(spun?.['reason'], 'WARDEN_SANDBOX_LIMIT');
    assert.equal((spun?.['sandbox'] as { reason?: string })?.reason, 'cpu');
  });
});
