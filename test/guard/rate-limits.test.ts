import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { admitCall, DEFAULT_MAX_BUCKETS, memoryLimitStore, type Admission, type LimitStore, type RateLimit } from '../../src/guard/rate-limits.ts';

interface Call {
  agent: string;
  tool: string;
  agentLimit: RateLimit;
  toolLimit: RateLimit;
  globalConcurrent?: number;
}

function call(overrides: Partial<Call> = {}): Call {
  return { agent: 'alice', tool: 'read_file', agentLimit: {}, toolLimit: {}, ...overrides };
}

function admitted(admission: Admission): () => void {
  assert.ok(admission.ok, `expected admission, got ${JSON.stringify(admission)}`);
  return admission.release;
}

function refusal(admission: Admission): Omit<Extract<Admission, { ok: false }>, 'ok'> {
  assert.ok(!admission.ok, 'expected a refusal');
  const { scope, kind, limit, retryAfterMs } = admission;
  return { scope, kind, limit, retryAfterMs };
}

describe('admitCall: rate', () => {
  it('allows a burst, then refuses with the scope, the limit and the wait until a token is back', () => {
    const store = memoryLimitStore();
    const c = call({ agentLimit: { perMinute: 6, burst: 3 } }); // one token every 10 s
    for (let i = 0; i < 3; i++) admitted(admitCall(store, c, 0))();
    assert.deepEqual(refusal(admitCall(store, c, 0)), { scope: 'agent', kind: 'rate', limit: 6, retryAfterMs: 10_000 });
    assert.equal(refusal(admitCall(store, c, 2500)).retryAfterMs, 7500);
    assert.equal(refusal(admitCall(store, c, 9999)).retryAfterMs, 1);
    admitted(admitCall(store, c, 10_000));
    assert.equal(refusal(admitCall(store, c, 10_000)).retryAfterMs, 10_000);
  });

  it('without a burst, allows a full minute of calls at once', () => {
    const store = memoryLimitStore();
    const c = call({ toolLimit: { perMinute: 5 } });
    for (let i = 0; i < 5; i++) admitted(admitCall(store, c, 0));
    assert.deepEqual(refusal(admitCall(store, c, 0)), { scope: 'tool', kind: 'rate', limit: 5, retryAfterMs: 12_000 });
  });

  it('refills continuously, never past the burst', () => {
    const store = memoryLimitStore();
    const c = call({ agentLimit: { perMinute: 60, burst: 2 } }); // one token a second
    admitted(admitCall(store, c, 0));
    admitted(admitCall(store, c, 0));
    assert.equal(refusal(admitCall(store, c, 500)).retryAfterMs, 500);
    admitted(admitCall(store, c, 1000)); // the half token at 500 was not spent by the refusal
    assert.equal(refusal(admitCall(store, c, 1250)).retryAfterMs, 750);
    const hourLater = 3_600_000;
    admitted(admitCall(store, c, hourLater));
    admitted(admitCall(store, c, hourLater));
    assert.equal(refusal(admitCall(store, c, hourLater)).retryAfterMs, 1000);
  });

  it('keeps agents and tools in separate buckets, whatever their names', () => {
    const store = memoryLimitStore();
    const limit = { perMinute: 60, burst: 1 };
    for (const name of ['__proto__', 'constructor', 'toString', 'global', 'agent:x']) {
      admitted(admitCall(store, call({ agent: name, tool: name, agentLimit: limit, toolLimit: limit }), 0));
      assert.equal(refusal(admitCall(store, call({ agent: name, tool: 'other', agentLimit: limit }), 0)).scope, 'agent');
      assert.equal(refusal(admitCall(store, call({ agent: 'other', tool: name, toolLimit: limit }), 0)).scope, 'tool');
    }
  });

  it('refuses everything when perMinute is 0, with a finite wait', () => {
    const store = memoryLimitStore();
    for (const agentLimit of [{ perMinute: 0 }, { perMinute: 0, burst: 5 }]) {
      assert.deepEqual(refusal(admitCall(store, call({ agentLimit }), 0)), { scope: 'agent', kind: 'rate', limit: 0, retryAfterMs: 60_000 });
      assert.deepEqual(refusal(admitCall(store, call({ agentLimit }), 3_600_000)), { scope: 'agent', kind: 'rate', limit: 0, retryAfterMs: 60_000 });
    }
    assert.deepEqual(store.take('k', 0, 0, 0), { ok: false, retryAfterMs: 60_000 });
  });

  it('never yields NaN from values the config schema would refuse', () => {
    const store = memoryLimitStore();
    for (const [perMinute, burst, now] of [[NaN, 1, 0], [60, NaN, 0], [60, 0.5, 0], [-5, 1, 0], [60, 1, NaN]] as const) {
      const result = store.take(`k${perMinute}/${burst}/${now}`, perMinute, burst, now);
      assert.equal(result.ok, false);
      if (!result.ok) assert.ok(Number.isFinite(result.retryAfterMs) && result.retryAfterMs > 0);
    }
    // A rate so small that the wait overflows to Infinity still reports a finite one.
    assert.ok(store.take('tiny', Number.MIN_VALUE, 1, 0).ok);
    assert.deepEqual(store.take('tiny', Number.MIN_VALUE, 1, 0), { ok: false, retryAfterMs: 60_000 });
    assert.equal(refusal(admitCall(store, call({ agentLimit: { concurrent: 0 } }), 0)).kind, 'concurrency');
  });
});

describe('admitCall: clock', () => {
  it('mints no tokens when the clock goes backwards, and reports a positive wait', () => {
    const store = memoryLimitStore();
    const c = call({ agentLimit: { perMinute: 60, burst: 1 } });
    admitted(admitCall(store, c, 10_000));
    // The bucket holds its latest reading: the token is back at 11 000 on this clock.
    assert.equal(refusal(admitCall(store, c, 0)).retryAfterMs, 11_000);
    assert.equal(refusal(admitCall(store, c, 5000)).retryAfterMs, 6000);
    // 10 000 -> 0 -> 10 999 is not 10 999 ms of refill.
    assert.equal(refusal(admitCall(store, c, 10_999)).retryAfterMs, 1);
    admitted(admitCall(store, c, 11_000));
  });

  it('promises a wait that is exactly enough, for awkward rates (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 100_000 }), fc.integer({ min: 1, max: 20 }), fc.integer({ min: 0, max: 1e9 }), (perMinute, burst, start) => {
        const store = memoryLimitStore();
        for (let i = 0; i < burst; i++) assert.ok(store.take('k', perMinute, burst, start).ok);
        const refused = store.take('k', perMinute, burst, start);
        assert.ok(!refused.ok);
        assert.ok(Number.isInteger(refused.retryAfterMs) && refused.retryAfterMs >= 1);
        if (refused.retryAfterMs > 1) assert.equal(store.take('k', perMinute, burst, start + refused.retryAfterMs - 1).ok, false);
        assert.equal(store.take('k', perMinute, burst, start + refused.retryAfterMs).ok, true);
      }),
      { numRuns: 500 },
    );
  });
});

describe('admitCall: concurrency', () => {
  it('holds a slot until release(), and a second release() frees nothing', () => {
    const store = memoryLimitStore();
    const c = call({ agentLimit: { concurrent: 2 } });
    const first = admitted(admitCall(store, c, 0));
    admitted(admitCall(store, c, 0));
    assert.deepEqual(refusal(admitCall(store, c, 0)), { scope: 'agent', kind: 'concurrency', limit: 2, retryAfterMs: 1000 });
    first();
    first();
    const third = admitted(admitCall(store, c, 0));
    assert.equal(refusal(admitCall(store, c, 0)).kind, 'concurrency');
    third();
    assert.equal(store.size().counters, 1); // the second call is still in flight
  });

  it('deletes counters that reach zero', () => {
    const store = memoryLimitStore();
    const releases = [0, 1, 2].map((i) => admitted(admitCall(store, call({ agent: `a${i}`, tool: `t${i}`, agentLimit: { concurrent: 1 }, toolLimit: { concurrent: 1 }, globalConcurrent: 5 }), 0)));
    assert.equal(store.size().counters, 7);
    for (const release of releases) release();
    assert.equal(store.size().counters, 0);
    store.leave('never-entered');
    assert.equal(store.size().counters, 0);
  });

  it('caps calls in flight across all agents and tools', () => {
    const store = memoryLimitStore();
    const release = admitted(admitCall(store, call({ agent: 'a', tool: 'x', globalConcurrent: 1 }), 0));
    assert.deepEqual(refusal(admitCall(store, call({ agent: 'b', tool: 'y', globalConcurrent: 1 }), 0)), { scope: 'global', kind: 'concurrency', limit: 1, retryAfterMs: 1000 });
    release();
    admitted(admitCall(store, call({ agent: 'b', tool: 'y', globalConcurrent: 1 }), 0));
  });
});

describe('admitCall: all or nothing', () => {
  it('a tool rate refusal gives back the agent token and holds no slot', () => {
    const store = memoryLimitStore();
    const agentLimit = { perMinute: 60, burst: 2, concurrent: 1 };
    const toolLimit = { perMinute: 60, burst: 1 };
    admitted(admitCall(store, call({ tool: 'x', agentLimit, toolLimit, globalConcurrent: 1 }), 0))();
    assert.equal(refusal(admitCall(store, call({ tool: 'x', agentLimit, toolLimit, globalConcurrent: 1 }), 0)).scope, 'tool');
    // The agent's second token and both slots are still free: another tool gets them.
    const release = admitted(admitCall(store, call({ tool: 'y', agentLimit, toolLimit, globalConcurrent: 1 }), 0));
    assert.equal(store.size().counters, 2);
    release();
    assert.equal(store.size().counters, 0);
    // And the agent's tokens are now really spent.
    assert.equal(refusal(admitCall(store, call({ tool: 'z', agentLimit, toolLimit }), 0)).scope, 'agent');
  });

  it('a tool concurrency refusal gives back both tokens', () => {
    const store = memoryLimitStore();
    const agentLimit = { perMinute: 60, burst: 2 };
    const toolLimit = { perMinute: 60, burst: 2, concurrent: 1 };
    const release = admitted(admitCall(store, call({ agentLimit, toolLimit }), 0));
    assert.equal(refusal(admitCall(store, call({ agentLimit, toolLimit }), 0)).kind, 'concurrency');
    release();
    admitted(admitCall(store, call({ agentLimit, toolLimit }), 0)); // the second token of each bucket
    assert.equal(refusal(admitCall(store, call({ agentLimit, toolLimit }), 0)).kind, 'rate');
  });

  it('a store that throws keeps nothing the call took', () => {
    const inner = memoryLimitStore();
    const failing: LimitStore = { ...inner, take: (key, ...rest) => (key.startsWith('tool:') ? fail() : inner.take(key, ...rest)) };
    const c = call({ agentLimit: { perMinute: 60, burst: 1, concurrent: 1 }, toolLimit: { perMinute: 60 }, globalConcurrent: 1 });
    assert.throws(() => admitCall(failing, c, 0), /store down/);
    assert.equal(inner.size().counters, 0);
    admitted(admitCall(inner, c, 0)); // the agent's only token was given back
  });
});

describe('admitCall: order of checks', () => {
  it('checks global concurrency, agent rate, agent concurrency, tool rate, tool concurrency', () => {
    const inner = memoryLimitStore();
    const log: string[] = [];
    const recording: LimitStore = {
      take: (key, perMinute, burst, now) => (log.push(`take ${key}`), inner.take(key, perMinute, burst, now)),
      giveBack: (key, burst) => (log.push(`giveBack ${key}`), inner.giveBack(key, burst)),
      enter: (key, max) => (log.push(`enter ${key}`), inner.enter(key, max)),
      leave: (key) => (log.push(`leave ${key}`), inner.leave(key)),
    };
    const limit = { perMinute: 60, burst: 1, concurrent: 1 };
    const c = call({ agent: 'a', tool: 't', agentLimit: limit, toolLimit: limit, globalConcurrent: 1 });
    const release = admitted(admitCall(recording, c, 0));
    assert.deepEqual(log.splice(0), ['enter global', 'take agent:a', 'enter agent:a', 'take tool:t', 'enter tool:t']);
    release();
    assert.deepEqual(log.splice(0), ['leave tool:t', 'leave agent:a', 'leave global']);

    // Every limit is now exhausted or held; each refusal names the first in the order.
    const held = admitted(admitCall(inner, call({ agent: 'other', tool: 'other', globalConcurrent: 1 }), 0));
    assert.equal(refusal(admitCall(recording, c, 0)).scope, 'global');
    assert.deepEqual(log.splice(0), ['enter global']);
    held();
    assert.deepEqual(pick(admitCall(recording, c, 0)), ['agent', 'rate']);
    assert.deepEqual(log.splice(0), ['enter global', 'take agent:a', 'leave global']);

    const d = call({ agent: 'b', tool: 't', agentLimit: limit, toolLimit: limit, globalConcurrent: 1 });
    assert.deepEqual(pick(admitCall(recording, d, 0)), ['tool', 'rate']);
    assert.deepEqual(log.splice(0), ['enter global', 'take agent:b', 'enter agent:b', 'take tool:t', 'leave agent:b', 'leave global', 'giveBack agent:b']);

    const slow = { perMinute: 60, burst: 5, concurrent: 1 };
    const e = call({ agent: 'b', tool: 'v', agentLimit: slow, toolLimit: slow });
    const holdB = admitted(admitCall(inner, e, 1000));
    assert.deepEqual(pick(admitCall(inner, e, 1000)), ['agent', 'concurrency']);
    holdB();
    const holdTool = admitted(admitCall(inner, call({ agent: 'c', tool: 'v', agentLimit: slow, toolLimit: slow }), 1000));
    assert.deepEqual(pick(admitCall(inner, e, 1000)), ['tool', 'concurrency']);
    holdTool();
  });
});

describe('memoryLimitStore: bounded memory', () => {
  it('sweeps full buckets, so 50 000 agents never hold more than the cap', () => {
    const store = memoryLimitStore();
    const agentLimit = { perMinute: 60, burst: 1, concurrent: 1 }; // full again a second after each call
    let most = 0;
    for (let i = 0; i < 50_000; i++) {
      admitted(admitCall(store, call({ agent: `agent-${i}`, agentLimit }), i * 10))();
      most = Math.max(most, store.size().buckets);
    }
    assert.ok(most <= DEFAULT_MAX_BUCKETS, `${most} buckets`);
    assert.equal(store.size().counters, 0);
    // Recent agents' buckets survived the sweeps: they are still empty.
    assert.equal(refusal(admitCall(store, call({ agent: 'agent-49999', agentLimit }), 499_990)).scope, 'agent');
  });

  it('refuses new keys rather than grow or forget a bucket that is not full', () => {
    const store = memoryLimitStore({ maxBuckets: 100 });
    const agentLimit = { perMinute: 60, burst: 1 };
    for (let i = 0; i < 100; i++) admitted(admitCall(store, call({ agent: `a${i}`, agentLimit }), 0));
    for (let i = 100; i < 50_000; i++) {
      assert.deepEqual(refusal(admitCall(store, call({ agent: `a${i}`, agentLimit }), 0)), { scope: 'agent', kind: 'rate', limit: 60, retryAfterMs: 1000 });
    }
    assert.equal(store.size().buckets, 100);
    assert.equal(refusal(admitCall(store, call({ agent: 'a0', agentLimit }), 999)).retryAfterMs, 1);
    // Once the old buckets are full again they can go, and new agents get in.
    admitted(admitCall(store, call({ agent: 'a100', agentLimit }), 1000));
    assert.ok(store.size().buckets <= 100);
  });

  it('gives back nothing to a bucket that was swept', () => {
    const store = memoryLimitStore();
    store.giveBack('agent:gone', 5);
    assert.equal(store.size().buckets, 0);
  });
});

describe('admitCall: invariants (property)', () => {
  const limitArb: fc.Arbitrary<RateLimit> = fc.record(
    {
      perMinute: fc.integer({ min: 1, max: 600 }),
      burst: fc.integer({ min: 1, max: 8 }),
      concurrent: fc.integer({ min: 1, max: 3 }),
    },
    { requiredKeys: [] },
  );
  const opArb = fc.oneof(
    fc.record({ op: fc.constant('admit' as const), agent: fc.integer({ min: 0, max: 2 }), tool: fc.integer({ min: 0, max: 1 }), dt: fc.integer({ min: 0, max: 3000 }) }),
    fc.record({ op: fc.constant('release' as const), pick: fc.nat(), dt: fc.integer({ min: 0, max: 3000 }) }),
  );

  it('admits no more than burst + rate x window in any window, and no more than the caps in flight', () => {
    fc.assert(
      fc.property(
        fc.array(limitArb, { minLength: 3, maxLength: 3 }),
        fc.array(limitArb, { minLength: 2, maxLength: 2 }),
        fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined }),
        fc.array(opArb, { maxLength: 200 }),
        (agentLimits, toolLimits, globalConcurrent, ops) => {
          const store = memoryLimitStore();
          const admittedAt = new Map<string, number[]>();
          const inFlight: { keys: string[]; release: () => void }[] = [];
          const counts = new Map<string, number>();
          let now = 0;
          for (const step of ops) {
            now += step.dt;
            if (step.op === 'release') {
              if (inFlight.length === 0) continue;
              const [held] = inFlight.splice(step.pick % inFlight.length, 1);
              held!.release();
              held!.release();
              for (const key of held!.keys) counts.set(key, counts.get(key)! - 1);
              continue;
            }
            const agentLimit = agentLimits[step.agent]!;
            const toolLimit = toolLimits[step.tool]!;
            const result = admitCall(store, { agent: `a${step.agent}`, tool: `t${step.tool}`, agentLimit, toolLimit, globalConcurrent }, now);
            if (!result.ok) {
              assert.ok(Number.isInteger(result.retryAfterMs) && result.retryAfterMs > 0);
              continue;
            }
            const keys = ['global', `agent:a${step.agent}`, `tool:t${step.tool}`];
            for (const key of keys) counts.set(key, (counts.get(key) ?? 0) + 1);
            assert.ok(globalConcurrent === undefined || counts.get('global')! <= globalConcurrent);
            assert.ok(agentLimit.concurrent === undefined || counts.get(keys[1]!)! <= agentLimit.concurrent);
            assert.ok(toolLimit.concurrent === undefined || counts.get(keys[2]!)! <= toolLimit.concurrent);
            inFlight.push({ keys, release: result.release });
            for (const key of keys.slice(1)) admittedAt.set(key, [...(admittedAt.get(key) ?? []), now]);
          }
          for (const [key, times] of admittedAt) {
            const index = Number(key.slice(-1));
            const limit = key.startsWith('agent:') ? agentLimits[index]! : toolLimits[index]!;
            if (limit.perMinute === undefined) continue;
            const burst = limit.burst ?? limit.perMinute;
            // The tightest windows start and end on admissions.
            for (let i = 0; i < times.length; i++) {
              for (let j = i; j < times.length; j++) {
                const allowed = burst + (limit.perMinute / 60_000) * (times[j]! - times[i]!);
                assert.ok(j - i + 1 <= allowed + 1e-9, `${key}: ${j - i + 1} calls in ${times[j]! - times[i]!} ms, allowed ${allowed}`);
              }
            }
          }
          for (const held of inFlight) held.release();
          assert.equal(store.size().counters, 0);
        },
      ),
      { numRuns: 300, seed: 20_240_601 },
    );
  });
});

function pick(admission: Admission): [string, string] | undefined {
  return admission.ok ? undefined : [admission.scope, admission.kind];
}

function fail(): never {
  throw new Error('store down');
}
