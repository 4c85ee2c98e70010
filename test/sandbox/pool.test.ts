import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import { WardenError } from '../../src/errors.ts';
import { createLogger } from '../../src/log.ts';
import { SandboxPool, type SandboxPoolOptions } from '../../src/sandbox/pool.ts';
import type { CodeJob, FailureReason, ModuleJob, RunOutcome, SandboxLimits } from '../../src/sandbox/protocol.ts';

const LIMITS: SandboxLimits = { memoryMb: 64, cpuMs: 500, wallMs: 5000, outputBytes: 65536, consoleBytes: 65536 };
const POOL: Omit<SandboxPoolOptions, 'logger'> = { workers: 2, warmIsolates: 1, warmMemoryMb: 64, workerMemoryMb: 512 };
const GOOD_SOURCE = 'export function run(i){ return { n: i.n + 1 } }';
const LOG_LEVEL = 'silent';

function newPool(overrides: Partial<SandboxPoolOptions> = {}): SandboxPool {
  return new SandboxPool({ ...POOL, logger: createLogger(LOG_LEVEL), ...overrides });
}

function moduleJob(source: string, limits: Partial<SandboxLimits> = {}, input = '{"n":1}', exportName = 'run', filename = 'guest.js'): ModuleJob {
  return { kind: 'module', source, filename, exportName, input, limits: { ...LIMITS, ...limits } };
}

function codeJob(code: string, tools: readonly string[], limits: Partial<SandboxLimits> = {}, maxCalls = 1000): CodeJob {
  return { kind: 'code', code, tools, maxCalls, limits: { ...LIMITS, ...limits } };
}

/** The trivial run that must succeed after anything: the pool is healthy. */
async function assertHealthy(pool: SandboxPool, after: string): Promise<void> {
  const outcome = await pool.run(moduleJob(GOOD_SOURCE));
  assert.deepEqual(outcome.ok ? { ok: true, output: outcome.output } : outcome, { ok: true, output: '{"n":2}' }, `a good run after ${after}`);
  assert.equal(pool.stats().queued, 0);
}

/** Resolves with the promise, or rejects when it has not settled in time (a hung run fails instead of hanging the suite). */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Each promise's value, or 'pending' for those still unsettled after ms (so a hung run shows up in the assertion). */
async function settledWithin<T>(promises: readonly Promise<T>[], ms: number): Promise<(T | 'pending')[]> {
  const results: (T | 'pending')[] = promises.map(() => 'pending');
  const all = Promise.all(promises.map((promise, index) => promise.then((value) => (results[index] = value))));
  await within(all, ms, 'runs').catch(() => undefined);
  return results;
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// --- The corpus -------------------------------------------------------------------------

interface Expectation {
  readonly ok?: boolean;
  readonly reason?: FailureReason;
  readonly reasonOneOf?: readonly FailureReason[];
  /** Exact JSON text of the output. */
  readonly output?: string;
  /** Size of the output, UTF-8 bytes. */
  readonly outputBytes?: number;
  readonly messageIncludes?: string;
  readonly consoleIncludes?: string;
  readonly consoleMaxBytes?: number;
}

interface AttackCase {
  readonly name: string;
  readonly kind: 'module' | 'code';
  readonly source?: string | readonly string[];
  readonly code?: string | readonly string[];
  readonly exportName?: string;
  readonly input?: string;
  readonly filename?: string;
  readonly tools?: readonly string[];
  readonly maxCalls?: number;
  readonly limits?: Partial<SandboxLimits>;
  readonly expect: Expectation;
  readonly why: string;
  readonly todo?: string;
}

const CORPUS = JSON.parse(readFileSync(new URL('../attacks/sandbox.json', import.meta.url), 'utf8')) as { readonly cases: readonly AttackCase[] };
/** Code cases get these tools: echo answers with its arguments, fail with an error, never not at all. */
const CORPUS_TOOLS = ['s.echo', 's.fail', 's.never'];

function text(value: string | readonly string[] | undefined): string {
  return typeof value === 'string' ? value : (value ?? []).join('\n');
}

async function corpusOnCall(tool: string, args: string): Promise<{ ok: boolean; json: string }> {
  if (tool === 's.echo') return { ok: true, json: args };
  if (tool === 's.fail') return { ok: false, json: JSON.stringify({ code: 'E_TEST', message: 'refused' }) };
  return new Promise(() => undefined);
}

function checkExpectation(outcome: RunOutcome, expected: Expectation, name: string): void {
  const shown = JSON.stringify({ ...outcome, ...(outcome.ok ? { output: outcome.output.slice(0, 300) } : {}), console: outcome.console.slice(0, 300) });
  if (expected.ok !== undefined) assert.equal(outcome.ok, expected.ok, `${name}: ok (outcome ${shown})`);
  if (expected.reason !== undefined) assert.equal(outcome.ok ? 'ok' : outcome.reason, expected.reason, `${name}: reason (outcome ${shown})`);
  if (expected.reasonOneOf !== undefined) {
    assert.ok(!outcome.ok && expected.reasonOneOf.includes(outcome.reason), `${name}: reason one of ${expected.reasonOneOf.join(', ')} (outcome ${shown})`);
  }
  if (expected.output !== undefined) assert.equal(outcome.ok ? outcome.output : `(failed: ${shown})`, expected.output, `${name}: output`);
  if (expected.outputBytes !== undefined) assert.equal(outcome.ok ? Buffer.byteLength(outcome.output) : -1, expected.outputBytes, `${name}: output bytes (outcome ${shown})`);
  if (expected.messageIncludes !== undefined) {
    assert.ok(!outcome.ok && outcome.message?.includes(expected.messageIncludes), `${name}: message includes ${JSON.stringify(expected.messageIncludes)} (outcome ${shown})`);
  }
  if (expected.consoleIncludes !== undefined) assert.ok(outcome.console.includes(expected.consoleIncludes), `${name}: console includes ${JSON.stringify(expected.consoleIncludes)} (outcome ${shown})`);
  if (expected.consoleMaxBytes !== undefined) assert.ok(Buffer.byteLength(outcome.console) <= expected.consoleMaxBytes, `${name}: console at most ${expected.consoleMaxBytes} bytes, got ${Buffer.byteLength(outcome.console)}`);
}

describe('sandbox attack corpus (test/attacks/sandbox.json)', { timeout: 600_000 }, () => {
  let pool: SandboxPool;
  before(async () => {
    pool = newPool();
    await pool.start();
    assert.equal(pool.unavailable, undefined, 'the sandbox workers start');
  });
  after(() => pool.close());

  it('the corpus is well formed', () => {
    assert.ok(CORPUS.cases.length >= 40);
    const names = new Set<string>();
    for (const entry of CORPUS.cases) {
      assert.ok(!names.has(entry.name), `duplicate case name ${entry.name}`);
      names.add(entry.name);
      assert.ok(entry.kind === 'module' ? text(entry.source).length > 0 : text(entry.code).length > 0, `${entry.name}: has its program`);
      assert.ok(entry.why && entry.why.length > 0, `${entry.name}: says why`);
      const expected = entry.expect;
      assert.ok(expected.ok !== undefined || expected.reason !== undefined || expected.reasonOneOf !== undefined, `${entry.name}: expects an outcome`);
    }
  });

  for (const entry of CORPUS.cases) {
    it(`${entry.kind}: ${entry.name}`, { timeout: 60_000, ...(entry.todo ? { todo: entry.todo } : {}) }, async () => {
      const job =
        entry.kind === 'module'
          ? moduleJob(text(entry.source), entry.limits, entry.input, entry.exportName, entry.filename)
          : codeJob(text(entry.code), entry.tools ?? CORPUS_TOOLS, entry.limits, entry.maxCalls);
      const outcome = await pool.run(job, { onCall: corpusOnCall });
      if (process.env['SANDBOX_CORPUS_LOG']) console.log(`${entry.name}: ${JSON.stringify({ ...outcome, ...(outcome.ok ? { output: outcome.output.slice(0, 200) } : {}), console: outcome.console.slice(0, 100) })}`);
      // Containment first, so that a wrong outcome still leaves the pool checked.
      await assertHealthy(pool, entry.name);
      checkExpectation(outcome, entry.expect, entry.name);
    });
  }
});

// --- Behaviours of the pool --------------------------------------------------------------

describe('sandbox pool', { timeout: 300_000 }, () => {
  it('survives a hundred consecutive worker crashes without leaking', { timeout: 120_000 }, async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const pool = newPool();
    try {
      await pool.start();
      // A built-in that does not check for termination: the worker can only be ended.
      const bomb = moduleJob('export function run() { return new Array(2 ** 27).fill(0).length; }', { cpuMs: 50 });
      const reasons = new Map<string, number>();
      let heapAt10 = 0;
      for (let i = 1; i <= 100; i++) {
        const crashedBefore = pool.stats().crashed;
        const outcome = await pool.run(bomb);
        assert.equal(outcome.ok, false, `run ${i}`);
        if (!outcome.ok) reasons.set(outcome.reason, (reasons.get(outcome.reason) ?? 0) + 1);
        assert.ok(!outcome.ok && (outcome.reason === 'cpu' || outcome.reason === 'memory'), `run ${i}: ${JSON.stringify(outcome)}`);
        assert.equal(pool.stats().crashed, crashedBefore + 1, `run ${i} ended its worker`);
        if (i === 10) {
          gc();
          heapAt10 = process.memoryUsage().heapUsed;
        }
      }
      gc();
      const heapAt100 = process.memoryUsage().heapUsed;
      const stats = pool.stats();
      console.log(`hundred crashes: reasons ${JSON.stringify(Object.fromEntries(reasons))}, heap after run 10 ${(heapAt10 / 2 ** 20).toFixed(2)} MB, after run 100 ${(heapAt100 / 2 ** 20).toFixed(2)} MB (grew ${((heapAt100 - heapAt10) / 2 ** 20).toFixed(2)} MB), stats ${JSON.stringify(stats)}`);
      assert.ok(heapAt100 - heapAt10 < 20 * 2 ** 20, `heap grew ${heapAt100 - heapAt10} bytes between run 10 and run 100`);
      assert.ok(stats.crashed >= 100);
      assert.ok(stats.spawned >= 102);
      assert.equal(stats.workers, 2);
      assert.equal(stats.queued, 0);
      await assertHealthy(pool, 'a hundred crashes');
      assert.equal(pool.stats().workers, 2);
    } finally {
      await pool.close();
    }
  });

  describe('with a shared pool', () => {
    let pool: SandboxPool;
    before(async () => {
      pool = newPool();
      await pool.start();
    });
    after(() => pool.close());

    it('nothing a run leaves behind reaches the next runs (a fresh isolate each time)', { timeout: 60_000 }, async () => {
      const polluter = moduleJob(
        [
          'globalThis.leak = "left behind"; Object.prototype.polluted = true; JSON.stringify = () => "\\"forged\\""; Array.prototype.map = () => ["forged"];',
          'Object.defineProperty(globalThis, "sticky", { value: 1, configurable: false });',
          'export function run() { return 1; }',
        ].join('\n'),
      );
      const checker = moduleJob('export function run() { return [typeof globalThis.leak, ({}).polluted === undefined, [1].map((x) => x + 1), typeof globalThis.sticky]; }');
      for (let round = 0; round < 3; round++) {
        // Both workers, twice each.
        const first = await pool.run(polluter);
        assert.equal(first.ok, true, JSON.stringify(first));
        for (let i = 0; i < 2; i++) {
          const outcome = await pool.run(checker);
          assert.equal(outcome.ok ? outcome.output : JSON.stringify(outcome), '["undefined",true,[2],"undefined"]');
        }
      }
    });

    it('cancels a looping run through its signal', { timeout: 60_000 }, async () => {
      const controller = new AbortController();
      const running = pool.run(moduleJob('export function run() { for (;;) {} }', { cpuMs: 30_000, wallMs: 60_000 }), { signal: controller.signal });
      await sleep(200);
      controller.abort();
      const outcome = await within(running, 30_000, 'the cancelled run');
      assert.equal(outcome.ok, false);
      assert.equal(!outcome.ok && outcome.reason, 'cancelled');
      await assertHealthy(pool, 'a cancelled run');
    });

    it('cancels a code-mode run waiting on a tool call', { timeout: 60_000 }, async () => {
      const controller = new AbortController();
      let called!: () => void;
      const reached = new Promise<void>((resolve) => (called = resolve));
      const running = pool.run(codeJob('await tools.s.slow({}); return 1;', ['s.slow'], { wallMs: 60_000 }), {
        signal: controller.signal,
        onCall: () => {
          called();
          return new Promise(() => undefined);
        },
      });
      await within(reached, 30_000, 'the tool call');
      controller.abort();
      const outcome = await within(running, 30_000, 'the cancelled run');
      assert.equal(!outcome.ok && outcome.reason, 'cancelled');
      await assertHealthy(pool, 'a cancelled code run');
    });

    it('a signal aborted before the run never runs it', async () => {
      const controller = new AbortController();
      controller.abort();
      let calls = 0;
      const outcome = await pool.run(codeJob('await tools.s.mark({}); return 1;', ['s.mark']), {
        signal: controller.signal,
        onCall: async () => {
          calls++;
          return { ok: true, json: '{}' };
        },
      });
      assert.equal(!outcome.ok && outcome.reason, 'cancelled');
      assert.equal(calls, 0);
    });

    it('code mode: onCall gets the guest\'s tool paths and arguments, in order; unbound paths never reach it', { timeout: 60_000 }, async () => {
      const calls: [string, string][] = [];
      const code = [
        "const a = await tools.s.echo({ first: 1 });",
        "const b = await tools.t.other({ second: [1, 2, { deep: 'x', u: '\\u00e9\\u{1F600}' }], n: null });",
        'const refused = [];',
        "for (const f of [() => tools.s.absent({}), () => tools.u.any({}), () => tools.s['constructor']({}), () => tools['__proto__'].echo({})]) { try { await f(); refused.push('called'); } catch (e) { refused.push(e.name); } }",
        'const all = await Promise.all(Array.from({ length: 25 }, (_, i) => tools.s.echo({ i })));',
        "let failure; try { await tools.s.fail({ why: 'x' }); } catch (e) { failure = { code: e.code, message: e.message, isError: e instanceof Error }; }",
        'return { a, b, refused, order: all.map((r) => r.i), failure };',
      ].join('\n');
      const outcome = await pool.run(codeJob(code, ['s.echo', 't.other', 's.fail'], { wallMs: 30_000 }), {
        onCall: async (tool, args) => {
          calls.push([tool, args]);
          // Answered out of order.
          await sleep(Math.floor(Math.random() * 20));
          if (tool === 's.fail') return { ok: false, json: JSON.stringify({ code: 'E_NOPE', message: 'no' }) };
          return { ok: true, json: args };
        },
      });
      assert.equal(outcome.ok, true, JSON.stringify(outcome));
      assert.deepEqual(JSON.parse(outcome.ok ? outcome.output : 'null'), {
        a: { first: 1 },
        b: { second: [1, 2, { deep: 'x', u: 'é😀' }], n: null },
        refused: ['TypeError', 'TypeError', 'TypeError', 'TypeError'],
        order: Array.from({ length: 25 }, (_, i) => i),
        failure: { code: 'E_NOPE', message: 'no', isError: true },
      });
      assert.deepEqual(calls, [
        ['s.echo', '{"first":1}'],
        ['t.other', JSON.stringify({ second: [1, 2, { deep: 'x', u: 'é😀' }], n: null })],
        ...Array.from({ length: 25 }, (_, i): [string, string] => ['s.echo', `{"i":${i}}`]),
        ['s.fail', '{"why":"x"}'],
      ]);
    });

    it('code mode: a tool path not in job.tools is not bound, whatever its spelling', { timeout: 60_000 }, async () => {
      const calls: string[] = [];
      const code = [
        'const names = [];',
        "for (const path of ['s.echo', 's.hidden', 'x.y', '__proto__.echo', 'constructor.constructor', 's.__proto__', 's.toString', 's.hasOwnProperty']) {",
        "  const [server, tool] = path.split('.');",
        "  const binding = tools[server] === undefined || tools[server] === null ? undefined : tools[server][tool];",
        "  if (typeof binding !== 'function') { names.push(path + ':unbound'); continue; }",
        "  try { await binding({}); names.push(path + ':called'); } catch (e) { names.push(path + ':' + e.name); }",
        '}',
        'return names;',
      ].join('\n');
      const outcome = await pool.run(codeJob(code, ['s.echo']), {
        onCall: async (tool, args) => {
          calls.push(tool);
          return { ok: true, json: args };
        },
      });
      assert.equal(outcome.ok ? outcome.output : JSON.stringify(outcome), JSON.stringify(['s.echo:called', 's.hidden:unbound', 'x.y:unbound', '__proto__.echo:unbound', 'constructor.constructor:unbound', 's.__proto__:unbound', 's.toString:unbound', 's.hasOwnProperty:unbound']));
      assert.deepEqual(calls, ['s.echo']);
    });

    it('code mode: calls past maxCalls fail in the worker without reaching onCall', { timeout: 60_000 }, async () => {
      const calls: string[] = [];
      const code = [
        'const out = [];',
        "for (let i = 0; i < 5; i++) { try { out.push((await tools.s.echo({ i })).i); } catch (e) { out.push(e.code); } }",
        "const late = await Promise.allSettled([tools.s.echo({ late: 1 }), tools.s.echo({ late: 2 })]);",
        "return { out, late: late.map((r) => r.status === 'rejected' ? r.reason.code : 'answered') };",
      ].join('\n');
      const outcome = await pool.run(codeJob(code, ['s.echo'], {}, 3), {
        onCall: async (_tool, args) => {
          calls.push(args);
          return { ok: true, json: args };
        },
      });
      assert.equal(outcome.ok ? outcome.output : JSON.stringify(outcome), JSON.stringify({ out: [0, 1, 2, 'WARDEN_SANDBOX_LIMIT', 'WARDEN_SANDBOX_LIMIT'], late: ['WARDEN_SANDBOX_LIMIT', 'WARDEN_SANDBOX_LIMIT'] }));
      assert.deepEqual(calls, ['{"i":0}', '{"i":1}', '{"i":2}']);
    });

    it('code mode: a run without onCall gets every call refused', { timeout: 60_000 }, async () => {
      const outcome = await pool.run(codeJob("try { await tools.s.echo({}); return 'answered'; } catch (e) { return e.code; }", ['s.echo']));
      assert.equal(outcome.ok ? outcome.output : JSON.stringify(outcome), '"WARDEN_TOOL_NOT_FOUND"');
    });

    it('code mode: an onCall that throws becomes a tool error, not a broken run', { timeout: 60_000 }, async () => {
      const outcome = await pool.run(codeJob("try { await tools.s.echo({}); return 'answered'; } catch (e) { return e.code; }", ['s.echo']), {
        onCall: async () => {
          throw new Error('broker failure');
        },
      });
      assert.equal(outcome.ok ? outcome.output : JSON.stringify(outcome), '"WARDEN_INTERNAL"');
    });

    it('code mode: many concurrent tool calls from Promise.all all settle', { timeout: 60_000 }, async () => {
      let inFlight = 0;
      let maxInFlight = 0;
      const outcome = await pool.run(codeJob('const r = await Promise.allSettled(Array.from({ length: 300 }, (_, i) => i % 3 === 2 ? tools.s.fail({ i }) : tools.s.echo({ i }))); return r.map((x) => x.status === \'fulfilled\' ? x.value.i : x.reason.code);', ['s.echo', 's.fail'], { wallMs: 30_000 }), {
        onCall: async (tool, args) => {
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          await sleep(Math.floor(Math.random() * 10));
          inFlight--;
          return tool === 's.fail' ? { ok: false, json: '{"code":"E_FAIL","message":"no"}' } : { ok: true, json: args };
        },
      });
      assert.equal(outcome.ok, true, JSON.stringify(outcome));
      assert.deepEqual(JSON.parse(outcome.ok ? outcome.output : 'null'), Array.from({ length: 300 }, (_, i) => (i % 3 === 2 ? 'E_FAIL' : i)));
      assert.ok(maxInFlight > 1, 'the calls were in flight together');
    });

    it('runs one job per worker in parallel when started on separate ticks', { timeout: 60_000 }, async () => {
      const busy = 'export function run(i) { const end = Date.now() + 1000; while (Date.now() < end) {} return { n: i.n + 1 }; }';
      const first = pool.run(moduleJob(busy, { cpuMs: 20_000, wallMs: 30_000 }));
      await tick();
      const second = pool.run(moduleJob(busy, { cpuMs: 20_000, wallMs: 30_000 }, '{"n":10}'));
      await tick();
      const during = pool.stats();
      const outcomes = await within(Promise.all([first, second]), 30_000, 'two parallel runs');
      assert.deepEqual(outcomes.map((outcome) => (outcome.ok ? outcome.output : JSON.stringify(outcome))), ['{"n":2}', '{"n":11}']);
      assert.equal(during.busy, 2, `both workers were busy: ${JSON.stringify(during)}`);
      await assertHealthy(pool, 'two parallel runs');
    });
  });

  it('a queued run is cancelled by its signal without ever running', { timeout: 60_000 }, async () => {
    const pool = newPool({ workers: 1 });
    try {
      await pool.start();
      const blocking = pool.run(moduleJob('export function run() { for (;;) {} }', { cpuMs: 1500 }));
      await tick();
      const controller = new AbortController();
      let calls = 0;
      const queued = pool.run(codeJob('await tools.s.mark({}); return 1;', ['s.mark']), {
        signal: controller.signal,
        onCall: async () => {
          calls++;
          return { ok: true, json: '{}' };
        },
      });
      await tick();
      assert.equal(pool.stats().queued, 1, 'the second run waits');
      controller.abort();
      const outcome = await within(queued, 5_000, 'the cancelled queued run');
      assert.equal(!outcome.ok && outcome.reason, 'cancelled');
      assert.equal(pool.stats().queued, 0);
      const first = await within(blocking, 30_000, 'the blocking run');
      assert.equal(!first.ok && first.reason, 'cpu');
      await assertHealthy(pool, 'a cancelled queued run');
      assert.equal(calls, 0, 'the cancelled run never ran');
    } finally {
      await pool.close();
    }
  });

  it('close() ends every worker, settles the run in progress, and refuses later runs', { timeout: 60_000 }, async () => {
    const pool = newPool();
    await pool.start();
    assert.equal(pool.stats().workers, 2);
    const running = pool.run(moduleJob('export function run() { for (;;) {} }', { cpuMs: 30_000, wallMs: 60_000 }));
    await sleep(100);
    await pool.close();
    const outcome = await within(running, 5_000, 'the run in progress at close');
    assert.equal(outcome.ok, false);
    assert.deepEqual(pool.stats(), { ...pool.stats(), workers: 0, idle: 0, busy: 0, queued: 0 });
    await assert.rejects(
      () => pool.run(moduleJob(GOOD_SOURCE)),
      (error: unknown) => error instanceof WardenError && error.code === 'WARDEN_SERVER_UNAVAILABLE',
    );
    await sleep(300);
    assert.equal(pool.stats().workers, 0, 'no worker is started after close');
  });

  it('runs started in the same tick go to different workers', { timeout: 60_000 }, async () => {
    // Regression: the pool once marked a worker busy only after an await, so two run() calls in
    // one tick took the same worker (one failed "the worker is busy", the other never settled).
    const pool = newPool();
    try {
      await pool.start();
      const busy = 'export function run(i) { const end = Date.now() + 300; while (Date.now() < end) {} return { n: i.n + 1 }; }';
      const runs = [pool.run(moduleJob(busy, { cpuMs: 20_000, wallMs: 30_000 })), pool.run(moduleJob(busy, { cpuMs: 20_000, wallMs: 30_000 }, '{"n":10}'))];
      const during = pool.stats();
      const outcomes = await settledWithin(runs, 20_000);
      assert.deepEqual(outcomes.map((outcome) => (outcome === 'pending' ? outcome : outcome.ok ? outcome.output : JSON.stringify(outcome))), ['{"n":2}', '{"n":11}']);
      assert.equal(during.busy, 2, `one worker each: ${JSON.stringify(during)}`);
      assert.equal(pool.stats().crashed, 0);
      await assertHealthy(pool, 'two runs started together');
    } finally {
      await pool.close();
    }
  });

  it('a queued run handed a freed worker is not overtaken by a run started at that moment', { timeout: 60_000 }, async () => {
    // Regression: the freed worker stayed idle until the waiter resumed, and a run started in
    // between (here, in the continuation of the run that just ended) took it too.
    const pool = newPool({ workers: 1 });
    try {
      await pool.start();
      const first = pool.run(moduleJob('export function run(i) { const end = Date.now() + 300; while (Date.now() < end) {} return { n: i.n + 1 }; }'));
      await tick();
      const queued = pool.run(moduleJob(GOOD_SOURCE, {}, '{"n":10}'));
      await first;
      const third = pool.run(moduleJob(GOOD_SOURCE, {}, '{"n":100}'));
      const outcomes = await settledWithin([queued, third], 20_000);
      assert.deepEqual(outcomes.map((outcome) => (outcome === 'pending' ? outcome : outcome.ok ? outcome.output : JSON.stringify(outcome))), ['{"n":11}', '{"n":101}']);
      assert.equal(pool.stats().crashed, 0);
    } finally {
      await pool.close();
    }
  });
});
