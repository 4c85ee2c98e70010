import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CallFlows, MAX_HELD_LOGS, type AskHost, type FlowStep, type HostQuestion, type RoundChannel } from '../../src/front/call-flows.ts';
import type { LogMessage, Progress } from '../../src/pipeline/types.ts';
import { WardenError } from '../../src/errors.ts';
import { waitFor } from '../helpers.ts';

// The continuations of tools/call requests whose server asked the host something
// (src/front/call-flows.ts), driven directly: a run stands in for the broker's call.

const SAMPLING: HostQuestion = { method: 'sampling/createMessage', params: { messages: [{ role: 'user', content: { type: 'text', text: 'hi' } }], maxTokens: 10 } };
const ELICITATION: HostQuestion = { method: 'elicitation/create', params: { mode: 'form', message: 'Who?', requestedSchema: { type: 'object', properties: {} } } };

function flows(limits: { maxPerAgent?: number; maxQuestions?: number; answerTimeoutMs?: number } = {}): CallFlows {
  return new CallFlows({ maxPerAgent: limits.maxPerAgent ?? 16, maxQuestions: limits.maxQuestions ?? 8, answerTimeoutMs: () => limits.answerTimeoutMs ?? 60_000 });
}

/** A round's signal that never aborts. */
const open = () => new AbortController().signal;

/** A run controlled from the test: it asks what it is told to and finishes when told. */
interface Script<T> {
  readonly run: (ask: AskHost, signal: AbortSignal) => Promise<T>;
  ask: AskHost;
  signal: AbortSignal;
  finish(value: T): void;
  fail(error: unknown): void;
  readonly started: Promise<void>;
}

function script<T>(): Script<T> {
  let finish!: (value: T) => void;
  let fail!: (error: unknown) => void;
  let started!: () => void;
  const handle = {
    started: new Promise<void>((resolve) => (started = resolve)),
    finish: (value: T) => finish(value),
    fail: (error: unknown) => fail(error),
  } as Script<T>;
  (handle as { run: Script<T>['run'] }).run = (ask, signal) => {
    handle.ask = ask;
    handle.signal = signal;
    started();
    return new Promise<T>((resolve, reject) => {
      finish = resolve;
      fail = reject;
    });
  };
  return handle;
}

function expectExpired(fn: () => unknown): void {
  assert.throws(fn, (error: unknown) => error instanceof WardenError && error.code === 'WARDEN_CALL_EXPIRED');
}

function asked<T>(step: FlowStep<T>): Extract<FlowStep<T>, { kind: 'ask' }> {
  assert.equal(step.kind, 'ask');
  return step as Extract<FlowStep<T>, { kind: 'ask' }>;
}

/** A call that asks once, answers nobody, then runs as the returned script says. */
async function parkedCall(calls: CallFlows, question: HostQuestion, inline = false): Promise<{ step: Extract<FlowStep<string>, { kind: 'ask' }>; run: Script<string> }> {
  const run = script<string>();
  const step = asked(
    await calls.begin<string>('alice', 'tool', async (ask, signal) => {
      void ask(question, open()).catch(() => undefined);
      return run.run(ask, signal);
    }, open(), {}, inline),
  );
  await run.started;
  return { step, run };
}

describe('CallFlows', () => {
  it('a call that asks once: the question goes out, the answer comes back to the run, the result ends the flow', async () => {
    const calls = flows();
    const step = await calls.begin('alice', 'tool', async (ask) => {
      const answer = await ask(SAMPLING, open());
      return { echoed: answer };
    }, open());
    const question = asked(step);
    assert.equal(question.round, 1);
    assert.deepEqual(question.questions, { 'server-1': SAMPLING });
    assert.equal(calls.size, 1);
    const done = await calls.resume<{ echoed: unknown }>('alice', 'tool', { flowId: question.flowId, round: 1 }, { 'server-1': { answer: 42 } }, open());
    assert.deepEqual(done, { kind: 'done', value: { echoed: { answer: 42 } } });
    assert.equal(calls.size, 0);
  });

  it('a call that never asks is done in its first round and holds nothing', async () => {
    const calls = flows();
    assert.deepEqual(await calls.begin('alice', 'tool', async () => 'plain', open()), { kind: 'done', value: 'plain' });
    assert.equal(calls.size, 0);
  });

  it('two questions asked together go out in one step; each answer goes to its own question', async () => {
    const calls = flows();
    const step = asked(
      await calls.begin('alice', 'tool', async (ask) => {
        const [first, second] = await Promise.all([ask(SAMPLING, open()), ask(ELICITATION, open())]);
        return [first, second];
      }, open()),
    );
    assert.deepEqual(step.questions, { 'server-1': SAMPLING, 'server-2': ELICITATION });
    const done = await calls.resume('alice', 'tool', step, { 'server-2': 'two', 'server-1': 'one' }, open());
    assert.deepEqual(done, { kind: 'done', value: ['one', 'two'] });
  });

  it('questions in sequence: a new round each, keys never reused', async () => {
    const calls = flows();
    const first = asked(
      await calls.begin('alice', 'tool', async (ask) => {
        const a = await ask(SAMPLING, open());
        const b = await ask(ELICITATION, open());
        return `${String(a)}+${String(b)}`;
      }, open()),
    );
    assert.deepEqual(Object.keys(first.questions), ['server-1']);
    const second = asked(await calls.resume('alice', 'tool', first, { 'server-1': 'a' }, open()));
    assert.equal(second.round, 2);
    assert.equal(second.flowId, first.flowId);
    assert.deepEqual(second.questions, { 'server-2': ELICITATION });
    assert.deepEqual(await calls.resume('alice', 'tool', second, { 'server-2': 'b' }, open()), { kind: 'done', value: 'a+b' });
  });

  it('a resume that names another agent, another tool, another round or no known flow is refused (WARDEN_CALL_EXPIRED), and leaves the flow alone', async () => {
    const calls = flows();
    const step = asked(await calls.begin('alice', 'tool', async (ask) => ask(SAMPLING, open()), open()));
    expectExpired(() => calls.resume('mallory', 'tool', step, { 'server-1': 'x' }, open()));
    expectExpired(() => calls.resume('alice', 'other-tool', step, { 'server-1': 'x' }, open()));
    expectExpired(() => calls.resume('alice', 'tool', { flowId: step.flowId, round: 2 }, { 'server-1': 'x' }, open()));
    expectExpired(() => calls.resume('alice', 'tool', { flowId: step.flowId, round: 0 }, { 'server-1': 'x' }, open()));
    expectExpired(() => calls.resume('alice', 'tool', { flowId: 'no-such-flow', round: 1 }, { 'server-1': 'x' }, open()));
    // The rightful answer still works.
    assert.deepEqual(await calls.resume('alice', 'tool', step, { 'server-1': 'ok' }, open()), { kind: 'done', value: 'ok' });
  });

  it('replaying the same round: the second is refused (finished flow, and flow moved to its next round)', async () => {
    const calls = flows();
    const once = asked(await calls.begin('alice', 'tool', async (ask) => ask(SAMPLING, open()), open()));
    await calls.resume('alice', 'tool', once, { 'server-1': 'first' }, open());
    expectExpired(() => calls.resume('alice', 'tool', once, { 'server-1': 'replayed' }, open()));

    const twice = asked(
      await calls.begin('alice', 'tool', async (ask) => {
        const a = await ask(SAMPLING, open());
        const b = await ask(SAMPLING, open());
        return [a, b];
      }, open()),
    );
    const next = asked(await calls.resume('alice', 'tool', twice, { 'server-1': 'a' }, open()));
    // The answer to round 1 again, while round 2 waits: refused, round 2 unaffected.
    expectExpired(() => calls.resume('alice', 'tool', twice, { 'server-1': 'again', 'server-2': 'forged' }, open()));
    assert.deepEqual(await calls.resume('alice', 'tool', next, { 'server-2': 'b' }, open()), { kind: 'done', value: ['a', 'b'] });
  });

  it('a resume while the flow is busy with a round is refused', async () => {
    const calls = flows();
    const run = script<string>();
    const step = asked(
      await calls.begin('alice', 'tool', async (ask, signal) => {
        await ask(SAMPLING, open());
        return run.run(ask, signal);
      }, open()),
    );
    const pending = calls.resume<string>('alice', 'tool', step, { 'server-1': 'a' }, open());
    await run.started;
    // Same flow, same round: the first resume is still waiting for the call.
    expectExpired(() => calls.resume('alice', 'tool', step, { 'server-1': 'b' }, open()));
    run.finish('finished');
    assert.deepEqual(await pending, { kind: 'done', value: 'finished' });
    assert.equal(calls.size, 0);
  });

  it('a question the retry carries no answer for is rejected; the run sees it', async () => {
    const calls = flows();
    const step = asked(
      await calls.begin('alice', 'tool', async (ask) => {
        try {
          await ask(SAMPLING, open());
          return 'answered';
        } catch (error) {
          return `rejected: ${(error as Error).message}`;
        }
      }, open()),
    );
    assert.deepEqual(await calls.resume('alice', 'tool', step, {}, open()), { kind: 'done', value: 'rejected: the host sent no answer' });
    const again = asked(await calls.begin('alice', 'tool', async (ask) => ask(SAMPLING, open()).then(() => 'answered', () => 'rejected'), open()));
    assert.deepEqual(await calls.resume('alice', 'tool', again, undefined, open()), { kind: 'done', value: 'rejected' });
  });

  it('nobody comes back: after answerTimeoutMs the question is rejected, the run\'s signal aborts, the flow is dropped', async () => {
    const calls = flows({ answerTimeoutMs: 20 });
    let questionError: Error | undefined;
    let runSignal: AbortSignal | undefined;
    const step = asked(
      await calls.begin('alice', 'tool', async (ask, signal) => {
        runSignal = signal;
        try {
          return await ask(SAMPLING, open());
        } catch (error) {
          questionError = error as Error;
          throw error;
        }
      }, open()),
    );
    assert.equal(calls.size, 1);
    assert.ok(await waitFor(() => calls.size === 0, 200, 10), 'the flow expired');
    assert.equal(runSignal?.aborted, true);
    assert.ok(await waitFor(() => questionError !== undefined, 100, 10));
    assert.match(questionError!.message, /did not answer in time/);
    expectExpired(() => calls.resume('alice', 'tool', step, { 'server-1': 'late' }, open()));
  });

  it('a call that finishes while its question waits (the server withdrew it) is collected by the retry, which gets the result', async () => {
    const calls = flows();
    const question = new AbortController();
    const step = asked(await calls.begin('alice', 'tool', async (ask) => ask(SAMPLING, question.signal).catch((error: Error) => error.message), open()));
    question.abort();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(calls.size, 1, 'held for the retry');
    assert.deepEqual(await calls.resume('alice', 'tool', step, { 'server-1': 'too late' }, open()), { kind: 'done', value: 'the question was withdrawn' });
    assert.equal(calls.size, 0);
  });

  it('... or, when no retry comes, by expiry', async () => {
    const calls = flows({ answerTimeoutMs: 20 });
    const question = new AbortController();
    const step = asked(await calls.begin('alice', 'tool', async (ask) => ask(SAMPLING, question.signal).catch((error: Error) => error.message), open()));
    question.abort();
    assert.ok(await waitFor(() => calls.size === 0, 200, 10), 'collected by expiry');
    expectExpired(() => calls.resume('alice', 'tool', step, { 'server-1': 'late' }, open()));
  });

  it('the agent cancelling its request (round signal) cancels the call', async () => {
    const calls = flows();
    const round = new AbortController();
    let runSignal: AbortSignal | undefined;
    const pending = calls.begin(
      'alice',
      'tool',
      (_ask, signal) =>
        new Promise<string>((resolve) => {
          runSignal = signal;
          signal.addEventListener('abort', () => resolve('cancelled'), { once: true });
        }),
      round.signal,
    );
    assert.equal(runSignal?.aborted, false);
    round.abort(new Error('client went away'));
    assert.deepEqual(await pending, { kind: 'done', value: 'cancelled' });
    assert.equal(runSignal?.aborted, true);
    assert.equal(calls.size, 0);
  });

  it('cancelling the retry that carries the answer cancels the call too', async () => {
    const calls = flows();
    let runSignal: AbortSignal | undefined;
    const step = asked(
      await calls.begin('alice', 'tool', async (ask, signal) => {
        runSignal = signal;
        await ask(SAMPLING, open());
        // The abort may come before this runs again.
        if (signal.aborted) return 'cancelled';
        return new Promise<string>((resolve) => signal.addEventListener('abort', () => resolve('cancelled'), { once: true }));
      }, open()),
    );
    const round = new AbortController();
    const pending = calls.resume('alice', 'tool', step, { 'server-1': 'a' }, round.signal);
    round.abort();
    assert.deepEqual(await pending, { kind: 'done', value: 'cancelled' });
    assert.equal(runSignal?.aborted, true);
  });

  it('a call cancelled as it starts: a question tied to the call\'s signal is withdrawn, one asked later is rejected at once', async () => {
    const calls = flows();
    const round = new AbortController();
    round.abort();
    // The broker's call hands its own signal down to the server's request, so a cancel withdraws the question.
    const withdrawn = await calls.begin('alice', 'tool', async (ask, signal) => ask(SAMPLING, signal).then(() => 'asked', (error: Error) => error.message), round.signal);
    assert.deepEqual(withdrawn, { kind: 'done', value: 'the question was withdrawn' });
    const later = await calls.begin(
      'alice',
      'tool',
      async (ask) => {
        await new Promise((resolve) => setImmediate(resolve));
        return ask(SAMPLING, open()).then(() => 'asked', (error: Error) => error.message);
      },
      round.signal,
    );
    assert.deepEqual(later, { kind: 'done', value: 'the call has ended' });
    assert.equal(calls.size, 0);
  });

  it('per agent: a call past maxPerAgent waiting calls has its question rejected; another agent is not affected', async () => {
    const calls = flows({ maxPerAgent: 2 });
    const asking = async (ask: AskHost) => ask(SAMPLING, open()).then((answer) => `answered ${String(answer)}`, (error: Error) => `rejected: ${error.message}`);
    const first = asked(await calls.begin('alice', 'tool', asking, open()));
    const second = asked(await calls.begin('alice', 'tool', asking, open()));
    const third = await calls.begin('alice', 'tool', asking, open());
    assert.equal(third.kind, 'done');
    assert.match(String((third as { value: string }).value), /^rejected: 2 calls of this agent already wait/);
    // Another agent has its own allowance.
    const bob = asked(await calls.begin('bob', 'tool', asking, open()));
    assert.equal(calls.size, 3);
    // Once one of alice's calls is answered, she may park another.
    assert.deepEqual(await calls.resume('alice', 'tool', first, { 'server-1': 1 }, open()), { kind: 'done', value: 'answered 1' });
    const fourth = asked(await calls.begin('alice', 'tool', asking, open()));
    for (const [agent, step] of [['alice', second], ['bob', bob], ['alice', fourth]] as const) await calls.resume(agent, 'tool', step, { 'server-1': 0 }, open());
    assert.equal(calls.size, 0);
  });

  it('per call: questions past maxQuestions open at once are rejected; the ones within go out', async () => {
    const calls = flows({ maxQuestions: 2 });
    const step = asked(
      await calls.begin('alice', 'tool', async (ask) => {
        const answers = await Promise.allSettled([ask(SAMPLING, open()), ask(ELICITATION, open()), ask(SAMPLING, open())]);
        return answers.map((answer) => (answer.status === 'fulfilled' ? answer.value : `rejected: ${(answer.reason as Error).message}`));
      }, open()),
    );
    assert.deepEqual(Object.keys(step.questions), ['server-1', 'server-2']);
    const done = await calls.resume('alice', 'tool', step, { 'server-1': 'a', 'server-2': 'b', 'server-3': 'forged' }, open());
    assert.deepEqual(done, { kind: 'done', value: ['a', 'b', 'rejected: the call already has 2 questions open'] });
  });

  it('a run that rejects: the round rejects with its error (no unhandled rejection), the flow is dropped', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const calls = flows();
      const boom = new Error('broker call failed');
      await assert.rejects(calls.begin('alice', 'tool', async () => Promise.reject(boom), open()), (error) => error === boom);
      assert.equal(calls.size, 0);
      // Rejecting after a question was asked and while nobody waits: kept until the retry, which gets the error.
      const run = script<string>();
      const step = asked(
        await calls.begin('alice', 'tool', async (ask, signal) => {
          await ask(SAMPLING, open());
          return run.run(ask, signal);
        }, open()),
      );
      const pending = calls.resume('alice', 'tool', step, { 'server-1': 'a' }, open());
      await run.started;
      run.fail(boom);
      await assert.rejects(pending, (error) => error === boom);
      assert.equal(calls.size, 0);
      // Rejecting while the flow is parked (nobody waiting): no unhandled rejection, and expiry collects it.
      const short = flows({ answerTimeoutMs: 20 });
      const parked = (await parkedCall(short, SAMPLING)).run;
      parked.fail(boom);
      assert.ok(await waitFor(() => short.size === 0, 200, 10));
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
  it('an answer that is an Error fails its question with that error; the call goes on and ends normally', async () => {
    const calls = flows();
    const step = asked(
      await calls.begin('alice', 'tool', async (ask) => {
        const [first, second] = await Promise.allSettled([ask(SAMPLING, open()), ask(ELICITATION, open())]);
        return [first.status === 'fulfilled' ? first.value : `failed: ${(first.reason as Error).message}`, second.status === 'fulfilled' ? second.value : 'failed'];
      }, open()),
    );
    const done = await calls.resume('alice', 'tool', step, { 'server-1': new Error('the host answered with an error'), 'server-2': { action: 'decline' } }, open());
    assert.deepEqual(done, { kind: 'done', value: ['failed: the host answered with an error', { action: 'decline' }] });
    assert.equal(calls.size, 0);
  });

  it('progress and log messages go to the channel of the round in progress; between rounds logs are held (bounded) and progress dropped', async () => {
    const calls = flows();
    const seen: string[] = [];
    const channelOf = (name: string): RoundChannel => ({
      progress: (progress: Progress) => void seen.push(`${name} progress ${progress.progress}`),
      log: (message: LogMessage) => void seen.push(`${name} log ${String(message.data)}`),
    });
    const run = script<string>();
    let report!: Required<RoundChannel>;
    const first = asked(
      await calls.begin(
        'alice',
        'tool',
        async (ask, signal, channel) => {
          report = channel;
          channel.progress({ progress: 1 });
          channel.log({ level: 'info', data: 'one' });
          await ask(SAMPLING, open());
          return run.run(ask, signal);
        },
        open(),
        channelOf('round1'),
      ),
    );
    assert.equal(first.round, 1);
    // Between rounds: nobody to report to.
    report.progress({ progress: 2 });
    for (let i = 0; i < MAX_HELD_LOGS + 5; i++) report.log({ level: 'debug', data: `held ${i}` });
    const pending = calls.resume('alice', 'tool', first, { 'server-1': 'a' }, open(), channelOf('round2'));
    await run.started;
    report.progress({ progress: 3 });
    report.log({ level: 'info', data: 'three' });
    run.finish('done');
    assert.deepEqual(await pending, { kind: 'done', value: 'done' });
    const held = Array.from({ length: MAX_HELD_LOGS }, (_, i) => `round2 log held ${i}`);
    assert.deepEqual(seen, ['round1 progress 1', 'round1 log one', ...held, 'round2 progress 3', 'round2 log three']);
  });

  it('a round whose request asked for neither progress nor logs gets neither, though the first round asked for progress', async () => {
    const calls = flows();
    const seen: string[] = [];
    const run = script<string>();
    let report!: Required<RoundChannel>;
    const first = asked(
      await calls.begin('alice', 'tool', async (ask, signal, channel) => {
        report = channel;
        await ask(SAMPLING, open());
        return run.run(ask, signal);
      }, open(), { progress: (progress) => void seen.push(`first ${progress.progress}`) }),
    );
    const pending = calls.resume('alice', 'tool', first, { 'server-1': 'a' }, open(), {});
    await run.started;
    report.progress({ progress: 5 });
    report.log({ level: 'info', data: 'nobody' });
    run.finish('ok');
    await pending;
    assert.deepEqual(seen, []);
  });
  it('inline (the agent\'s request stays open): no expiry; a call that ends while its host is asked keeps its result, and the round says the answer is no longer needed', async () => {
    const calls = flows({ answerTimeoutMs: 20 });
    const { step, run } = await parkedCall(calls, ELICITATION, true);
    assert.equal(step.unneeded.aborted, false);
    // Longer than answerTimeoutMs: inline, nothing expires.
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.equal(calls.size, 1);
    run.finish('written once');
    assert.ok(await waitFor(() => step.unneeded.aborted, 200, 5), 'the question is no longer needed');
    // The inline request comes back (with whatever the host said) and gets the call's own result.
    assert.deepEqual(await calls.resume('alice', 'tool', step, { 'server-1': new Error('withdrawn') }, open(), {}, true), { kind: 'done', value: 'written once' });
    assert.equal(calls.size, 0);
  });

  it('inline: the round is no longer needed once the server withdraws all its questions; the call goes on', async () => {
    const calls = flows();
    const withdraw = new AbortController();
    const run = script<string>();
    const step = asked(
      await calls.begin('alice', 'tool', async (ask, signal) => {
        const answer = await ask(SAMPLING, withdraw.signal).catch((error: Error) => `failed: ${error.message}`);
        return `${String(answer)}; ${await run.run(ask, signal)}`;
      }, open(), {}, true),
    );
    withdraw.abort();
    assert.equal(step.unneeded.aborted, true);
    const pending = calls.resume('alice', 'tool', step, { 'server-1': 'too late' }, open(), {}, true);
    await run.started;
    run.finish('done');
    assert.deepEqual(await pending, { kind: 'done', value: 'failed: the question was withdrawn; done' });
  });

  it('not inline: a call that ends while nobody holds its round is kept for the retry until expiry, then dropped', async () => {
    const calls = flows({ answerTimeoutMs: 30 });
    const { run } = await parkedCall(calls, SAMPLING);
    run.finish('late');
    assert.equal(calls.size, 1);
    assert.ok(await waitFor(() => calls.size === 0, 200, 10));
  });
  it('a question withdrawn before it goes out leaves no empty round: the wait goes on to the result', async () => {
    const calls = flows();
    const run = script<string>();
    const pending = calls.begin('alice', 'tool', async (ask, signal) => {
      const withdraw = new AbortController();
      const answer = ask(SAMPLING, withdraw.signal).catch((error: Error) => `withdrawn: ${error.message}`);
      queueMicrotask(() => withdraw.abort());
      return `${await answer}; ${await run.run(ask, signal)}`;
    }, open());
    await run.started;
    // Past the turn the round waits before its questions go out.
    await new Promise((resolve) => setTimeout(resolve, 20));
    run.finish('then done');
    assert.deepEqual(await pending, { kind: 'done', value: 'withdrawn: the question was withdrawn; then done' });
    assert.equal(calls.size, 0);
  });
});
