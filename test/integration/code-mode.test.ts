import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CallToolResult } from '@modelcontextprotocol/client';
import type { Broker } from '../../src/broker.ts';
import { loadConfig } from '../../src/config/load.ts';
import { openStateStore } from '../../src/state/store.ts';
import type { KillSwitchState } from '../../src/state/switches.ts';
import { NOTES_SERVER, NOTES_TOOLS, refusalCode, startBroker, stdioManifest, tempDir, textOf, waitFor, writeConfig, writeManifest, textToolsManifest } from '../helpers.ts';

// Code mode (warden__run_code) end to end: who sees it, what its description lists, and
// every inner call going through the whole pipeline (grants, validation, approval,
// idempotency, rate limits, kill switch, credentials, audit), with the run's own caps.
// One broker for the file: the example notes server (stdio) and the example code tools.

const CANARY = 'canary-codemode-8c2f4e6a1d';
const CANARY_ENV = 'WARDEN_TEST_CODEMODE_CANARY';
const RUN = 'warden__run_code';
const { dir, cleanup } = tempDir();
let broker: Broker;
let configFile: string;

const READS = ['notes__list_notes', 'notes__get_note', 'notes__search_notes', 'notes__echo', 'notes__server_info'];

/** The config; `coderReads` are the read tools granted to the code-mode agent. */
function policy(coderReads: readonly string[] = READS): Record<string, unknown> {
  return {
    version: 1,
    servers: { notes: { manifest: 'notes.json' }, text: { manifest: 'text.json' } },
    credentials: { notes: { NOTES_API_TOKEN: { env: CANARY_ENV } } },
    agents: {
      coder: {
        allow: [
          { tools: [RUN, ...coderReads, 'text__*'] },
          { tools: ['notes__add_note'], access: ['write'] },
          { tools: ['notes__delete_note'], access: ['destructive'], approval: 'required' },
        ],
      },
      // Wildcards never grant code mode.
      star: { allow: [{ tools: ['*'], access: ['read', 'write', 'destructive'] }] },
      wild: { allow: [{ tools: ['warden__*', 'warden__run_cod?', 'text__slugify'] }] },
      other: { allow: [{ tools: [RUN, 'text__slugify'] }] },
    },
    approvals: { waitSeconds: 1 },
    rateLimits: { tools: [{ tools: ['notes__search_notes'], perMinute: 1, burst: 2 }] },
    sandbox: { workers: 1, warmIsolates: 1, limits: { cpuMs: 300, consoleBytes: 1024, inputBytes: 8192 }, codeMode: { workers: 1, maxCalls: 3, concurrency: 2 } },
  };
}

before(async () => {
  writeManifest(join(dir, 'manifests/notes.json'), { ...stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS, { era: 'legacy' }), credentials: [{ name: 'NOTES_API_TOKEN' }] });
  writeManifest(join(dir, 'manifests/text.json'), textToolsManifest());
  configFile = writeConfig(join(dir, 'warden.yaml'), policy());
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

type AuditRecord = Record<string, unknown>;
const records = (): AuditRecord[] => (broker.audit as unknown as { records: AuditRecord[] }).records;
const calls = (): AuditRecord[] => records().filter((r) => r['event'] === 'tools/call');
/** The audit record of the last run. */
const lastRun = (): AuditRecord | undefined => calls().filter((r) => r['tool'] === RUN).at(-1);
const innerCallsOf = (run: AuditRecord | undefined): AuditRecord[] => calls().filter((r) => r['parentCorrelationId'] !== undefined && r['parentCorrelationId'] === run?.['correlationId']);

function run(code: string, options: { agent?: string; signal?: AbortSignal } = {}): Promise<CallToolResult> {
  return broker.callTool(options.agent ?? 'coder', RUN, { code }, options.signal ? { signal: options.signal } : {});
}

/** A run that must succeed: its result value. */
async function resultOf(code: string): Promise<unknown> {
  const result = await run(code);
  assert.equal(result.isError, undefined, textOf(result));
  const structured = result.structuredContent as { result: unknown; console: string };
  assert.deepEqual(JSON.parse(textOf(result)), structured);
  return structured.result;
}

function setKillSwitch(state: KillSwitchState): void {
  const store = openStateStore(broker.config.state.dir, 'read-write');
  try {
    store.killSwitch.set(state, 'test', Date.now());
  } finally {
    store.close();
  }
  broker.refreshState();
}

/** server.tool paths declared in a run_code description's `declare const tools`. */
function declaredTools(description: string): string[] {
  const declared: string[] = [];
  let server = '';
  for (const line of description.slice(description.indexOf('declare const tools')).split('\n')) {
    const opened = /^ {2}(\w+): \{$/.exec(line);
    if (opened) server = opened[1]!;
    const method = /^ {4}(\w+)\(args/.exec(line);
    if (method) declared.push(`${server}.${method[1]}`);
  }
  return declared.sort();
}

describe('who gets code mode', () => {
  it('tools/list shows warden__run_code only to agents granted it by its exact name', () => {
    const names = (agent: string) => broker.listTools(agent).tools.map((tool) => tool.name);
    assert.ok(names('coder').includes(RUN));
    assert.ok(names('other').includes(RUN));
    assert.ok(!names('star').includes(RUN), 'tools: ["*"] does not grant it');
    assert.ok(names('star').includes('notes__debug_dump'), 'but grants everything else');
    assert.deepEqual(names('wild'), ['text__slugify'], 'nor do warden__* or warden__run_cod?');
  });

  it('an agent not granted it by name is refused with WARDEN_TOOL_NOT_FOUND, and nothing runs', async () => {
    for (const agent of ['star', 'wild']) {
      const result = await run('return 1', { agent });
      assert.equal(refusalCode(result), 'WARDEN_TOOL_NOT_FOUND', agent);
      assert.equal(lastRun()?.['sandbox'], undefined);
    }
  });

  it("its description lists exactly the agent's own tools: not other agents', not itself", () => {
    const description = (agent: string) => broker.listTools(agent).tools.find((tool) => tool.name === RUN)?.description ?? '';
    assert.deepEqual(declaredTools(description('other')), ['text.slugify']);
    assert.doesNotMatch(description('other'), /notes|word_stats|run_code\(/);
    const coderTools = broker
      .listTools('coder')
      .tools.map((tool) => tool.name)
      .filter((name) => name !== RUN)
      .map((name) => name.replace('__', '.'))
      .sort();
    assert.equal(coderTools.length, 10);
    assert.deepEqual(declaredTools(description('coder')), coderTools);
    assert.ok(!declaredTools(description('coder')).includes('notes.debug_dump'));
  });
});

describe('a run', () => {
  it('makes several calls (notes and code tools) and returns {result, console}', async () => {
    const result = await run(`
      const notes = JSON.parse(await tools.notes.list_notes({}));
      const stats = await tools.text.word_stats({ text: notes.map((note) => note.title).join(' ') });
      const slug = await tools.text.slugify({ text: notes[0].title + ' Note' });
      console.log('notes', notes.length);
      console.warn('slug', slug);
      return { titles: notes.map((note) => note.title), words: stats.words, slug };
    `);
    assert.equal(result.isError, undefined, textOf(result));
    assert.deepEqual(result.structuredContent, { result: { titles: ['Welcome', 'Groceries'], words: 2, slug: 'welcome-note' }, console: 'notes 2\n[warn] slug welcome-note\n' });
    assert.deepEqual(JSON.parse(textOf(result)), result.structuredContent);
  });

  it('console output is captured up to sandbox.limits.consoleBytes, then marked', async () => {
    const result = await run("for (let i = 0; i < 200; i++) console.log('line', i, 'x'.repeat(40)); return 'done';");
    const { result: value, console: output } = result.structuredContent as { result: string; console: string };
    assert.equal(value, 'done');
    assert.ok(output.startsWith('line 0 xxxx'));
    assert.ok(output.endsWith('[console output truncated]\n'), output.slice(-80));
    assert.ok(Buffer.byteLength(output) <= 1024 + 64, `${Buffer.byteLength(output)} bytes`);
  });

  it("code that throws is a tool error with the message and the console so far", async () => {
    const result = await run("console.log('before'); throw new Error('nope');");
    assert.equal(result.isError, true);
    assert.equal(refusalCode(result), undefined);
    assert.deepEqual(result.structuredContent, { error: 'Error: nope', console: 'before\n' });
  });

  it('a syntax error is a tool error with the message', async () => {
    const result = await run('return (');
    assert.equal(result.isError, true);
    assert.equal(refusalCode(result), undefined);
    assert.match(String((result.structuredContent as { error: string }).error), /SyntaxError/);
  });

  it('code returning a function is a tool error (the result must be JSON)', async () => {
    const result = await run('return () => 1');
    assert.equal(result.isError, true);
    assert.equal(refusalCode(result), undefined);
  });

  it('code over sandbox.limits.inputBytes is refused before it runs (WARDEN_SANDBOX_LIMIT)', async () => {
    const result = await run(`return 1;${' '.repeat(8192)}`);
    assert.equal(refusalCode(result), 'WARDEN_SANDBOX_LIMIT');
    assert.equal(lastRun()?.['sandbox'], undefined, 'no sandbox ran');
  });

  it('an infinite loop after awaiting a tool call is stopped (WARDEN_SANDBOX_LIMIT); the next run works', async () => {
    const result = await run("await tools.notes.echo({ text: 'then spin' }); for (;;);");
    assert.equal(refusalCode(result), 'WARDEN_SANDBOX_LIMIT');
    assert.equal((lastRun()?.['sandbox'] as { reason?: string; calls?: number })?.reason, 'cpu');
    assert.equal((lastRun()?.['sandbox'] as { calls?: number })?.calls, 1);
    assert.equal(await resultOf('return 1 + 1'), 2);
  });

  it("rewriting JSON, Function and Promise built-ins in the run's code changes neither tool results nor error codes", async () => {
    const found = await resultOf(`
      JSON.stringify = () => '"hijacked"';
      JSON.parse = () => ({ hijacked: true });
      Object.defineProperty(Object.prototype, 'then', { configurable: true, get() { return undefined; } });
      Promise.prototype.then = function () { return this; };
      Function.prototype.call = () => 'hijacked';
      Function.prototype.apply = () => 'hijacked';
      String.prototype.slice = () => 'hijacked';
      const echoed = await tools.notes.echo({ text: 'real' });
      let code;
      try { await tools.notes.echo({ nope: 1 }); } catch (e) { code = e.code; }
      return { echoed, code };
    `);
    assert.deepEqual(found, { echoed: 'real', code: 'WARDEN_ARGUMENTS_INVALID' });
  });

  it('calls still in flight when the run returns are cancelled with it', async () => {
    const result = await run("tools.notes.delete_note({ id: 701 }); return 'returned at once';");
    assert.equal((result.structuredContent as { result: unknown }).result, 'returned at once');
    const runId = lastRun()?.['correlationId'];
    const inner = () => calls().filter((r) => r['parentCorrelationId'] === runId);
    assert.ok(await waitFor(() => inner().length === 1, 200, 10));
    assert.deepEqual([inner()[0]?.['tool'], inner()[0]?.['reason']], ['notes__delete_note', 'WARDEN_CALL_CANCELLED']);
  });

  it('a flood of calls far beyond maxCalls: only maxCalls are made, the rest fail inside the worker, and the next run works', async (t) => {
    const result = await run("for (let i = 0; i < 20000; i++) tools.notes.echo({ text: 'flood' }).catch(() => {}); await tools.notes.list_notes({}).catch(() => {}); return 'flooded';");
    const code = refusalCode(result);
    t.diagnostic(`outcome: ${code ?? textOf(result)}`);
    // The calls over the cap are refused in the worker, so the run either finishes or is
    // stopped by its CPU budget (settling 20 000 refusals costs CPU); it never crashes the worker.
    assert.ok(code === undefined || code === 'WARDEN_SANDBOX_LIMIT', textOf(result));
    if (code === undefined) assert.equal((result.structuredContent as { result?: unknown }).result, 'flooded');
    assert.ok(innerCallsOf(lastRun()).length <= 3, 'no more than maxCalls went through the pipeline');
    assert.equal(await resultOf("return await tools.notes.echo({ text: 'after the flood' })"), 'after the flood');
  });

  it('an agent-side abort of a run in progress -> WARDEN_CALL_CANCELLED; the next run works', async () => {
    const echoes = () => calls().filter((r) => r['tool'] === 'notes__echo' && r['parentCorrelationId'] !== undefined).length;
    const before = echoes();
    const controller = new AbortController();
    const pending = run("await tools.notes.echo({ text: 'started' }); await new Promise(() => {});", { signal: controller.signal });
    assert.ok(await waitFor(() => echoes() > before, 200, 25), 'the run made its first call');
    controller.abort();
    const result = await pending;
    assert.equal(refusalCode(result), 'WARDEN_CALL_CANCELLED', textOf(result));
    assert.equal(lastRun()?.['reason'], 'WARDEN_CALL_CANCELLED');
    assert.deepEqual(await resultOf("return await tools.notes.echo({ text: 'after the cancel' })"), 'after the cancel');
  });
});

describe('inner calls go through the full pipeline', () => {
  it('a tool the agent is not granted has no binding, and one cannot be added', async () => {
    const found = await resultOf(`
      const before = typeof tools.notes.debug_dump;
      try { tools.notes.debug_dump = async () => 'forged'; } catch {}
      try { tools.warden = {}; } catch {}
      let strict;
      try { (() => { 'use strict'; tools.notes.debug_dump = 1; })(); strict = 'assigned'; } catch (e) { strict = e.name; }
      return { before, after: typeof tools.notes.debug_dump, warden: typeof tools.warden, runCode: typeof (tools.warden && tools.warden.run_code), strict };
    `);
    assert.deepEqual(found, { before: 'undefined', after: 'undefined', warden: 'undefined', runCode: 'undefined', strict: 'TypeError' });
  });

  it('forcing a call whose grant was revoked during the run is refused: the await throws WARDEN_TOOL_NOT_FOUND', async () => {
    const requested = () => records().filter((r) => r['event'] === 'approval.requested' && r['tool'] === 'notes__delete_note').length;
    const before = requested();
    const revoked = loadConfig(writeConfig(join(dir, 'revoked.yaml'), policy(READS.filter((name) => name !== 'notes__get_note'))));
    // The delete waits for approval (1 s): meanwhile the config drops get_note from the grant.
    const pending = run(`
      try { await tools.notes.delete_note({ id: 401 }); } catch {}
      try { await tools.notes.get_note({ id: 1 }); return 'called'; } catch (e) { return [e.code, typeof tools.notes.get_note]; }
    `);
    try {
      assert.ok(await waitFor(() => requested() > before, 500, 10), 'the run waits for approval');
      await broker.applyConfig(revoked);
      const result = await pending;
      assert.equal(result.isError, undefined, textOf(result));
      assert.deepEqual((result.structuredContent as { result: unknown }).result, ['WARDEN_TOOL_NOT_FOUND', 'function']);
      const refused = innerCallsOf(lastRun()).find((r) => r['tool'] === 'notes__get_note');
      assert.equal(refused?.['reason'], 'WARDEN_TOOL_NOT_FOUND');
    } finally {
      await pending;
      await broker.applyConfig(loadConfig(configFile));
    }
    assert.ok(broker.listTools('coder').tools.some((tool) => tool.name === 'notes__get_note'), 'the grant is back');
  });

  it('invalid arguments -> WARDEN_ARGUMENTS_INVALID; a tool error -> TOOL_ERROR; a non-object -> TypeError in the guest', async () => {
    const codes = await resultOf(`
      const codes = [];
      for (const attempt of [
        () => tools.text.word_stats({ nope: 1 }),
        () => tools.notes.get_note({ id: 'one' }),
        () => tools.notes.get_note({ id: 999 }),
        () => tools.notes.echo('not an object'),
      ]) {
        try { await attempt(); codes.push('ok'); } catch (e) { codes.push(e.code ?? e.name); }
      }
      return codes;
    `);
    assert.deepEqual(codes, ['WARDEN_ARGUMENTS_INVALID', 'WARDEN_ARGUMENTS_INVALID', 'TOOL_ERROR', 'TypeError']);
    const inner = innerCallsOf(lastRun());
    assert.deepEqual(inner.map((r) => [r['tool'], r['reason'] ?? r['outcome']]), [['text__word_stats', 'WARDEN_ARGUMENTS_INVALID'], ['notes__get_note', 'WARDEN_ARGUMENTS_INVALID'], ['notes__get_note', 'tool_error']]);
  });

  it('a call granted with approval: required -> WARDEN_APPROVAL_PENDING, and it is not made', async () => {
    const answer = await resultOf('try { await tools.notes.delete_note({ id: 2 }); return "deleted"; } catch (e) { return e.code; }');
    assert.equal(answer, 'WARDEN_APPROVAL_PENDING');
    const inner = innerCallsOf(lastRun());
    assert.equal(inner.length, 1);
    assert.equal(inner[0]?.['reason'], 'WARDEN_APPROVAL_PENDING');
    assert.equal((inner[0]?.['approval'] as { outcome?: string })?.outcome, 'pending');
    assert.match(textOf(await broker.callTool('coder', 'notes__get_note', { id: 2 })), /Groceries/, 'note 2 is still there');
  });

  it('the same write twice in one run, and again in another run, runs the tool once', async () => {
    const code = "const first = await tools.notes.add_note({ title: 'written once', body: 'b' }); const second = await tools.notes.add_note({ title: 'written once', body: 'b' }); return [first, second];";
    const [first, second] = (await resultOf(code)) as string[];
    assert.match(String(first), /^\{"id":\d+\}$/);
    assert.equal(second, first);
    const replayed = innerCallsOf(lastRun()).map((r) => (r['idempotency'] as { replayed?: boolean } | undefined)?.replayed === true);
    assert.deepEqual(replayed, [false, true]);
    assert.equal(await resultOf("return await tools.notes.add_note({ title: 'written once', body: 'b' })"), first);
    const notes = JSON.parse(textOf(await broker.callTool('coder', 'notes__list_notes', {}))) as { title: string }[];
    assert.equal(notes.filter((note) => note.title === 'written once').length, 1);
  });

  it('a per-tool rate limit refuses the extra inner calls with WARDEN_RATE_LIMITED', async () => {
    const codes = await resultOf(`
      const codes = [];
      for (let i = 0; i < 3; i++) {
        try { await tools.notes.search_notes({ query: 'note' }); codes.push('ok'); } catch (e) { codes.push(e.code); }
      }
      return codes;
    `);
    assert.deepEqual(codes, ['ok', 'ok', 'WARDEN_RATE_LIMITED']);
  });

  it('the kill switch in readonly mode: writes have no binding and are refused mid-run; reads work', async () => {
    try {
      setKillSwitch('readonly');
      const seen = await resultOf("return [typeof tools.notes.add_note, typeof tools.notes.delete_note, await tools.notes.echo({ text: 'reads work' })];");
      assert.deepEqual(seen, ['undefined', 'undefined', 'reads work']);
      setKillSwitch('off');

      // Turned on while a run waits: the write it then makes is refused by the pipeline.
      const requested = () => records().filter((r) => r['event'] === 'approval.requested' && r['tool'] === 'notes__delete_note').length;
      const before = requested();
      const pending = run(`
        const codes = [];
        try { await tools.notes.delete_note({ id: 501 }); } catch (e) { codes.push(e.code); }
        try { await tools.notes.add_note({ title: 'during readonly', body: 'b' }); codes.push('written'); } catch (e) { codes.push(e.code); }
        codes.push(await tools.notes.echo({ text: 'still reads' }));
        return codes;
      `);
      assert.ok(await waitFor(() => requested() > before, 500, 10), 'the run waits for approval');
      setKillSwitch('readonly');
      const result = await pending;
      assert.equal(result.isError, undefined, textOf(result));
      assert.deepEqual((result.structuredContent as { result: unknown }).result, ['WARDEN_APPROVAL_PENDING', 'WARDEN_READ_ONLY_MODE', 'still reads']);
    } finally {
      setKillSwitch('off');
    }
    const notes = JSON.parse(textOf(await broker.callTool('coder', 'notes__list_notes', {}))) as { title: string }[];
    assert.ok(!notes.some((note) => note.title === 'during readonly'));
  });

  it('credential values returned by an inner call never reach the guest', async () => {
    const info = (await resultOf(`
      const info = await tools.notes.server_info({});
      console.log(JSON.stringify(info));
      return { info, length: info.apiToken.length };
    `)) as { info: Record<string, unknown>; length: number };
    assert.equal(info.info['apiToken'], '[redacted: credential]');
    assert.equal(info.length, '[redacted: credential]'.length, 'the guest itself only ever had the mask');
    assert.equal(info.info['workingFolder'], undefined, 'the output scope applies too');
    const inner = innerCallsOf(lastRun());
    assert.ok(!JSON.stringify(records()).includes(CANARY));
    assert.equal(inner[0]?.['tool'], 'notes__server_info');
    assert.ok(((inner[0]?.['redactions'] as { credential?: number })?.credential ?? 0) >= 1);
  });

  it("each inner call has its own audit record whose parentCorrelationId is the run's; the run's record has sandbox.calls", async () => {
    await resultOf("await tools.notes.echo({ text: 'audited' }); return await tools.text.slugify({ text: 'Audited Run' });");
    const record = lastRun();
    assert.equal(record?.['outcome'], 'ok');
    assert.equal(record?.['agent'], 'coder');
    const sandbox = record?.['sandbox'] as { cpuMs?: unknown; calls?: unknown };
    assert.equal(sandbox?.calls, 2);
    assert.equal(typeof sandbox?.cpuMs, 'number');
    const inner = innerCallsOf(record);
    assert.deepEqual(inner.map((r) => [r['tool'], r['agent'], r['outcome']]), [['notes__echo', 'coder', 'ok'], ['text__slugify', 'coder', 'ok']]);
    assert.equal(new Set([record?.['correlationId'], ...inner.map((r) => r['correlationId'])]).size, 3, 'each call has its own correlation id');
    assert.equal(typeof (inner[1]?.['sandbox'] as { cpuMs?: unknown })?.cpuMs, 'number', 'the code tool ran in its own sandbox');
    assert.equal(record?.['parentCorrelationId'], undefined);
  });
});

describe("the run's caps", () => {
  it('maxCalls (3): the 4th call throws WARDEN_SANDBOX_LIMIT inside the guest; the run still returns', async () => {
    const codes = await resultOf(`
      const codes = [];
      for (let i = 0; i < 5; i++) {
        try { await tools.notes.echo({ text: 'call ' + i }); codes.push('ok'); } catch (e) { codes.push(e.code); }
      }
      return codes;
    `);
    assert.deepEqual(codes, ['ok', 'ok', 'ok', 'WARDEN_SANDBOX_LIMIT', 'WARDEN_SANDBOX_LIMIT']);
    assert.equal((lastRun()?.['sandbox'] as { calls?: number })?.calls, 3);
    assert.equal(innerCallsOf(lastRun()).length, 3, 'the calls over the cap were never made');
  });

  it('concurrency (2): a third call made at once waits until one of the first two has ended', async () => {
    // Each delete waits 1 s for approval (approvals.waitSeconds): long enough that, without
    // the cap, all three would be waiting at the same time. The audit order shows it.
    const codes = await resultOf(`
      const settled = await Promise.allSettled([601, 602, 603].map((id) => tools.notes.delete_note({ id })));
      return settled.map((outcome) => (outcome.status === 'rejected' ? outcome.reason.code : 'deleted'));
    `);
    assert.deepEqual(codes, ['WARDEN_APPROVAL_PENDING', 'WARDEN_APPROVAL_PENDING', 'WARDEN_APPROVAL_PENDING']);
    const inner = new Set(innerCallsOf(lastRun()).map((r) => r['correlationId']));
    assert.equal(inner.size, 3);
    let inFlight = 0;
    let most = 0;
    for (const record of records()) {
      if (!inner.has(record['correlationId'])) continue;
      if (record['event'] === 'approval.requested') most = Math.max(most, ++inFlight);
      if (record['event'] === 'tools/call') inFlight--;
    }
    assert.equal(most, 2);
  });
});
