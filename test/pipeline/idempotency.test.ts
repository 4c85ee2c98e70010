import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { WardenConfig } from '../../src/config/types.ts';
import { WardenError } from '../../src/errors.ts';
import { REPLAY_META_KEY } from '../../src/pipeline/stages/deduplicate.ts';
import type { CallOutcome } from '../../src/pipeline/types.ts';
import type { StateStore } from '../../src/state/store.ts';
import { NOTES_SERVER, NOTES_TOOLS, stdioManifest, tempDir, waitFor, writeManifest } from '../helpers.ts';
import { type Behaviour, codeOf, configIn, harness as pipelineHarness, type HarnessOptions, stateStoresIn, WIPE_TOOL } from './harness.ts';

const { dir, cleanup } = tempDir('warden-idempotency-');
after(cleanup);

/** A destructive tool (deduplicated) and a write tool its manifest signs idempotent (not deduplicated). */
const OPS_TOOLS = [
  WIPE_TOOL,
  {
    name: 'set_flag',
    description: 'Set a flag to a value; the same call twice has the same effect.',
    access: 'write',
    idempotent: true,
    inputSchema: { type: 'object', properties: { flag: { type: 'string' }, value: { type: 'boolean' } }, required: ['flag', 'value'], additionalProperties: false },
  },
];
writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
writeManifest(join(dir, 'manifests/ops.json'), stdioManifest('ops', NOTES_SERVER, OPS_TOOLS));

const everything = { tools: ['notes__*', 'ops__*'], access: ['read', 'write', 'destructive'] };
const AGENTS = {
  alice: { allow: [everything] },
  bob: { allow: [everything] },
  gated: { allow: [{ tools: ['notes__*'], access: ['read', 'write'], approval: 'required' }] },
};

function configWith(name: string, extra: Record<string, unknown>): WardenConfig {
  return configIn(dir, name, {
    servers: { notes: { manifest: 'notes.json' }, ops: { manifest: 'ops.json' } },
    agents: AGENTS,
    approvals: { waitSeconds: 0 },
    ...extra,
  });
}

const config = configWith('default', {});
const shortWindow = configWith('short-window', { idempotency: { windowSeconds: 1 } });
/** Calls needing approval are held (up to 30 s, never reached: the tests decide or cancel first). */
const holding = configWith('holding', { approvals: { waitSeconds: 30 } });

const { freshDir: freshStateDir, open: openStore } = stateStoresIn(dir);

let served = 0;
/** Answers with a text no other call gets, so a replay is told apart from a second run. */
const unique: Behaviour = async (tool) => ({ content: [{ type: 'text', text: `${tool} #${++served}` }] });

/** The shared harness, answering with `unique` unless told otherwise. */
function harness(cfg: WardenConfig, state: StateStore, behaviour: Behaviour = unique, options: HarnessOptions = {}) {
  return pipelineHarness(cfg, state, behaviour, options);
}

/** A harness on a state store of its own (in a fresh folder). */
function onFreshStore(cfg: WardenConfig = config, behaviour: Behaviour = unique, options: HarnessOptions = {}) {
  const state = openStore();
  return { ...harness(cfg, state, behaviour, options), state };
}

function textOfOutcome(outcome: CallOutcome): string {
  if (outcome.kind !== 'result') return '';
  const block = (outcome.result.content as { type: string; text?: string }[])[0];
  return block?.text ?? '';
}

function replayOf(outcome: CallOutcome): { correlationId?: string; at?: string } | undefined {
  if (outcome.kind !== 'result') return undefined;
  return outcome.result._meta?.[REPLAY_META_KEY] as { correlationId?: string; at?: string } | undefined;
}

const note = { title: 'groceries', body: 'milk' };

describe('idempotency: a repeated write runs once', () => {
  it('20 concurrent identical calls run the tool once and all get its result; 5 later retries are replayed', async () => {
    const gate = Promise.withResolvers<unknown>();
    const { calls, call, contexts } = onFreshStore(config, () => gate.promise);
    const N = 20;
    const outcomes = Array.from({ length: N }, () => call('alice', 'notes__add_note', note));
    // All but the first join the one in flight (bounded wait); only then does the tool answer.
    const allJoined = await waitFor(() => contexts.filter((ctx) => (ctx.facts['idempotency'] as { joined?: boolean } | undefined)?.joined === true).length === N - 1, 400, 5);
    assert.ok(allJoined, 'every repeat waits for the call in flight');
    assert.equal(calls.length, 1, 'the tool was called once');
    gate.resolve({ content: [{ type: 'text', text: 'note 7 created' }] });
    const results = await Promise.all(outcomes);
    assert.equal(calls.length, 1);
    for (const outcome of results) {
      assert.equal(codeOf(outcome), 'result');
      assert.deepEqual(outcome, results[0], 'every caller gets the same result');
    }
    assert.equal(textOfOutcome(results[0] as CallOutcome), 'note 7 created');

    const first = contexts.find((ctx) => ctx.facts['dispatched'] === true);
    assert.ok(first, 'one call dispatched');
    assert.equal(contexts.filter((ctx) => ctx.facts['dispatched'] === true).length, 1);

    const M = 5;
    for (let i = 0; i < M; i++) {
      const retry = await call('alice', 'notes__add_note', note);
      assert.equal(codeOf(retry), 'result');
      assert.equal(textOfOutcome(retry), 'note 7 created');
      assert.equal(replayOf(retry)?.correlationId, first.correlationId, 'the replay names the call it replays');
      assert.match(String(replayOf(retry)?.at), /^\d{4}-\d\d-\d\dT/);
    }
    assert.equal(calls.length, 1, 'still once after the retries');
  });

  it('arguments are compared canonically: the same object with its keys in another order is the same call', async () => {
    const { calls, call } = onFreshStore();
    assert.equal(codeOf(await call('alice', 'notes__add_note', { title: 't', body: 'b' })), 'result');
    const retry = await call('alice', 'notes__add_note', { body: 'b', title: 't' });
    assert.ok(replayOf(retry), 'replayed');
    assert.equal(calls.length, 1);
    // other arguments are another call
    assert.equal(codeOf(await call('alice', 'notes__add_note', { title: 't', body: 'c' })), 'result');
    assert.equal(calls.length, 2);
  });

  it('deduplicates destructive tools too', async () => {
    const { calls, call } = onFreshStore();
    const first = await call('alice', 'ops__wipe', { target: 'cache' });
    const second = await call('alice', 'ops__wipe', { target: 'cache' });
    assert.equal(codeOf(first), 'result');
    assert.equal(textOfOutcome(second), textOfOutcome(first));
    assert.ok(replayOf(second));
    assert.equal(calls.length, 1);
  });

  it('does not deduplicate read tools, nor write tools signed idempotent', async () => {
    const { calls, call } = onFreshStore();
    const reads = [await call('alice', 'notes__echo', { text: 'hi' }), await call('alice', 'notes__echo', { text: 'hi' })];
    const flags = [await call('alice', 'ops__set_flag', { flag: 'f', value: true }), await call('alice', 'ops__set_flag', { flag: 'f', value: true })];
    for (const outcome of [...reads, ...flags]) {
      assert.equal(codeOf(outcome), 'result');
      assert.equal(replayOf(outcome), undefined);
    }
    assert.deepEqual(calls.map((c) => c.tool), ['echo', 'echo', 'set_flag', 'set_flag']);
    assert.notEqual(textOfOutcome(reads[0] as CallOutcome), textOfOutcome(reads[1] as CallOutcome));
  });

  it('keys are per agent: another agent\'s identical write runs', async () => {
    const { calls, call } = onFreshStore();
    assert.equal(codeOf(await call('alice', 'notes__add_note', note)), 'result');
    const bobs = await call('bob', 'notes__add_note', note);
    assert.equal(codeOf(bobs), 'result');
    assert.equal(replayOf(bobs), undefined);
    assert.equal(calls.length, 2);
  });

  it('a call refused before it reached the tool (approval pending) is not recorded: the retry proceeds', async () => {
    const { calls, call, state } = onFreshStore();
    const pending = await call('gated', 'notes__add_note', note);
    assert.equal(codeOf(pending), 'WARDEN_APPROVAL_PENDING');
    const id = pending.kind === 'refused' ? pending.hints?.approvalId : undefined;
    assert.ok(id);
    // A retry before any decision is not answered from a record: it asks again (same approval).
    const stillPending = await call('gated', 'notes__add_note', note);
    assert.equal(codeOf(stillPending), 'WARDEN_APPROVAL_PENDING');
    assert.equal(stillPending.kind === 'refused' && stillPending.message.includes('identical call made at'), false, 'not a replayed refusal');
    state.approvals.decide(id, 'approved', 'carol', '', Date.now());
    const approved = await call('gated', 'notes__add_note', note);
    assert.equal(codeOf(approved), 'result');
    assert.equal(replayOf(approved), undefined);
    assert.equal(calls.length, 1);
    // Now it ran: the next identical call gets its result, and asks nobody.
    const repeat = await call('gated', 'notes__add_note', note);
    assert.equal(textOfOutcome(repeat), textOfOutcome(approved));
    assert.ok(replayOf(repeat));
    assert.equal(calls.length, 1);
  });

  it('a call the backend refused before sending it (server unavailable) is not recorded: the retry runs', async () => {
    let down = true;
    const attempts: string[] = [];
    const { calls, call, contexts } = onFreshStore(config, unique, {
      beforeSend: (tool) => {
        attempts.push(tool);
        if (down) throw new WardenError('WARDEN_SERVER_UNAVAILABLE', 'server "notes" is not connected (restarting); retry later', { server: 'notes' });
      },
    });
    const first = await call('alice', 'notes__add_note', note);
    assert.equal(codeOf(first), 'WARDEN_SERVER_UNAVAILABLE');
    assert.equal(attempts.length, 1, 'the backend was reached');
    assert.deepEqual(calls, [], 'but nothing was sent');
    assert.equal(contexts[0]?.facts['dispatched'], undefined);
    // While still down, the retry is refused by the backend again, not from a record.
    const stillDown = await call('alice', 'notes__add_note', note);
    assert.equal(codeOf(stillDown), 'WARDEN_SERVER_UNAVAILABLE');
    assert.equal(stillDown.kind === 'refused' && stillDown.message.includes('identical call'), false, 'not a replayed refusal');
    assert.equal(attempts.length, 2);
    down = false;
    const retry = await call('alice', 'notes__add_note', note);
    assert.equal(codeOf(retry), 'result');
    assert.equal(replayOf(retry), undefined, 'run, not replayed');
    assert.equal(calls.length, 1);
    // Now it was sent: the next identical call is replayed.
    assert.ok(replayOf(await call('alice', 'notes__add_note', note)));
    assert.equal(calls.length, 1);
  });

  it('a call that timed out downstream is recorded: the retry gets the same refusal and the tool is not run again', async () => {
    const { calls, call } = onFreshStore(config, async () => {
      throw new WardenError('WARDEN_DOWNSTREAM_TIMEOUT', 'server "notes" did not answer within 5 ms');
    });
    const first = await call('alice', 'notes__add_note', note);
    assert.equal(codeOf(first), 'WARDEN_DOWNSTREAM_TIMEOUT');
    const retry = await call('alice', 'notes__add_note', note);
    assert.equal(codeOf(retry), 'WARDEN_DOWNSTREAM_TIMEOUT');
    assert.match(retry.kind === 'refused' ? retry.message : '', /identical call/);
    assert.equal(calls.length, 1);
  });

  it('a tool error after dispatch is recorded and replayed too', async () => {
    const { calls, call } = onFreshStore(config, async () => ({ content: [{ type: 'text', text: 'disk full' }], isError: true }));
    const first = await call('alice', 'notes__add_note', note);
    assert.ok(first.kind === 'result' && first.result.isError === true);
    const retry = await call('alice', 'notes__add_note', note);
    assert.ok(retry.kind === 'result' && retry.result.isError === true);
    assert.ok(replayOf(retry));
    assert.equal(calls.length, 1);
  });

  it('a repeat that waits for a call in flight can be cancelled; the first call goes on and runs once', async () => {
    const gate = Promise.withResolvers<unknown>();
    const { calls, call, contexts } = onFreshStore(config, () => gate.promise);
    const first = call('alice', 'notes__add_note', note);
    assert.ok(await waitFor(() => calls.length === 1, 400, 5));
    const controller = new AbortController();
    const repeat = call('alice', 'notes__add_note', note, { signal: controller.signal });
    assert.ok(await waitFor(() => (contexts[1]?.facts['idempotency'] as { joined?: boolean } | undefined)?.joined === true, 400, 5));
    controller.abort();
    assert.equal(codeOf(await repeat), 'WARDEN_CALL_CANCELLED');
    gate.resolve({ content: [{ type: 'text', text: 'done' }] });
    assert.equal(codeOf(await first), 'result');
    assert.equal(calls.length, 1);
  });
});

describe('idempotency: client keys', () => {
  it('the same key with other arguments is WARDEN_IDEMPOTENCY_CONFLICT, after the call and while it is in flight', async () => {
    const { calls, call, state } = onFreshStore();
    assert.equal(codeOf(await call('alice', 'notes__add_note', note, { idempotencyKey: 'order-1' })), 'result');
    const conflict = await call('alice', 'notes__add_note', { title: 'other', body: 'x' }, { idempotencyKey: 'order-1' });
    assert.equal(codeOf(conflict), 'WARDEN_IDEMPOTENCY_CONFLICT');
    assert.equal(calls.length, 1);
    // same key, same arguments: replayed
    const same = await call('alice', 'notes__add_note', note, { idempotencyKey: 'order-1' });
    assert.ok(replayOf(same));
    assert.equal(calls.length, 1);

    const gate = Promise.withResolvers<unknown>();
    const slow = harness(config, state, () => gate.promise);
    const inFlight = slow.call('alice', 'notes__add_note', note, { idempotencyKey: 'order-2' });
    assert.ok(await waitFor(() => slow.calls.length === 1, 400, 5));
    const clash = await slow.call('alice', 'notes__add_note', { title: 'other', body: 'x' }, { idempotencyKey: 'order-2' });
    assert.equal(codeOf(clash), 'WARDEN_IDEMPOTENCY_CONFLICT');
    gate.resolve({ content: [{ type: 'text', text: 'ok' }] });
    assert.equal(codeOf(await inFlight), 'result');
    assert.equal(slow.calls.length, 1);
  });

  it('different keys with the same arguments are different calls', async () => {
    const { calls, call } = onFreshStore();
    const a = await call('alice', 'notes__add_note', note, { idempotencyKey: 'k-1' });
    const b = await call('alice', 'notes__add_note', note, { idempotencyKey: 'k-2' });
    assert.equal(codeOf(a), 'result');
    assert.equal(codeOf(b), 'result');
    assert.equal(replayOf(b), undefined);
    assert.equal(calls.length, 2);
  });

  it('a key is per agent: another agent with the same key and other arguments is not a conflict', async () => {
    const { calls, call } = onFreshStore();
    assert.equal(codeOf(await call('alice', 'notes__add_note', note, { idempotencyKey: 'shared' })), 'result');
    assert.equal(codeOf(await call('bob', 'notes__add_note', { title: 'b', body: 'b' }, { idempotencyKey: 'shared' })), 'result');
    assert.equal(calls.length, 2);
  });

  it('a malformed key is WARDEN_ARGUMENTS_INVALID and nothing runs', async () => {
    const { calls, call } = onFreshStore();
    const bad: unknown[] = [42, null, {}, ['k'], '', 'k'.repeat(129), 'has space', 'tab\there', 'nul\u0000', 'new\nline', 'del\u007f', 'caf\u00e9', '\u200bzero-width'];
    for (const key of bad) {
      const outcome = await call('alice', 'notes__add_note', note, { idempotencyKey: key });
      assert.equal(codeOf(outcome), 'WARDEN_ARGUMENTS_INVALID', JSON.stringify(key));
    }
    assert.deepEqual(calls, []);
    // the edges that are allowed
    assert.equal(codeOf(await call('alice', 'notes__add_note', note, { idempotencyKey: 'k'.repeat(128) })), 'result');
    assert.equal(codeOf(await call('alice', 'notes__add_note', note, { idempotencyKey: '!~' })), 'result');
    assert.equal(calls.length, 2);
  });
});

describe('idempotency: window and restarts', () => {
  it('after the window has passed, the same call runs again', async () => {
    const { calls, call } = onFreshStore(shortWindow);
    assert.equal(codeOf(await call('alice', 'notes__add_note', note)), 'result');
    const finishedAt = Date.now();
    assert.ok(replayOf(await call('alice', 'notes__add_note', note)), 'within the window: replayed');
    assert.equal(calls.length, 1);
    // windowSeconds 1: wait until the record is past it (bounded: at most 60 x 50 ms).
    assert.ok(await waitFor(() => Date.now() > finishedAt + 1000, 60, 50));
    const later = await call('alice', 'notes__add_note', note);
    assert.equal(codeOf(later), 'result');
    assert.equal(replayOf(later), undefined);
    assert.equal(calls.length, 2);
  });

  it('a finished call is still replayed after a restart (records are in the state store)', async () => {
    const folder = freshStateDir();
    const before = openStore(folder);
    const first = harness(config, before);
    const original = await first.call('alice', 'notes__add_note', note);
    assert.equal(codeOf(original), 'result');
    const correlationId = first.contexts[0]?.correlationId;
    before.close();

    const second = harness(config, openStore(folder)); // new writesInFlight, new instanceId
    assert.notEqual(second.deps.instanceId, first.deps.instanceId);
    const retry = await second.call('alice', 'notes__add_note', note);
    assert.equal(textOfOutcome(retry), textOfOutcome(original));
    assert.equal(replayOf(retry)?.correlationId, correlationId);
    assert.equal(second.calls.length, 0);
    assert.equal(first.calls.length, 1);
  });

  it('a call in flight when the broker stopped is never run again: WARDEN_OUTCOME_UNKNOWN', async () => {
    const folder = freshStateDir();
    const before = openStore(folder);
    const gate = Promise.withResolvers<unknown>();
    const first = harness(config, before, () => gate.promise);
    const lost = first.call('alice', 'notes__add_note', note);
    assert.ok(await waitFor(() => first.calls.length === 1, 400, 5), 'the first call reached the tool');
    before.close(); // the broker stops with the call in flight

    const second = harness(config, openStore(folder));
    const retry = await second.call('alice', 'notes__add_note', note);
    assert.equal(codeOf(retry), 'WARDEN_OUTCOME_UNKNOWN');
    assert.ok(retry.kind === 'refused' && (retry.hints?.retryAfterMs ?? 0) > 0, 'says when the same call may be made again');
    assert.equal(second.calls.length, 0, 'the tool is not called again');
    assert.equal(first.calls.length, 1);

    // The old process's call ends after its store is gone: it cannot record, and must not throw.
    gate.resolve({ content: [{ type: 'text', text: 'late' }] });
    await lost;
    assert.equal(codeOf(await second.call('alice', 'notes__add_note', note)), 'WARDEN_OUTCOME_UNKNOWN');
    assert.equal(second.calls.length, 0);
  });
});

describe('idempotency: held, sent, finished', () => {
  it('a write sent by another broker on the same store and still running is WARDEN_OUTCOME_UNKNOWN there, never run twice', async () => {
    const folder = freshStateDir();
    const gate = Promise.withResolvers<unknown>();
    const first = harness(config, openStore(folder), () => gate.promise);
    const running = first.call('alice', 'notes__add_note', note);
    assert.ok(await waitFor(() => first.calls.length === 1, 400, 5), 'the first call was sent');
    // A second broker, alive at the same time, on its own connection to the same store.
    const second = harness(config, openStore(folder));
    const repeat = await second.call('alice', 'notes__add_note', note);
    assert.equal(codeOf(repeat), 'WARDEN_OUTCOME_UNKNOWN', 'a sent write is in flight, not merely held');
    assert.equal(second.calls.length, 0);
    gate.resolve({ content: [{ type: 'text', text: 'note 9 created' }] });
    assert.equal(codeOf(await running), 'result');
    // Finished: the other broker now replays it.
    const replayed = await second.call('alice', 'notes__add_note', note);
    assert.equal(textOfOutcome(replayed), 'note 9 created');
    assert.ok(replayOf(replayed));
    assert.equal(second.calls.length, 0);
    assert.equal(first.calls.length, 1);
  });

  it('a write held for approval when the broker stopped never reached the tool: after a restart the identical call asks, then runs once', async () => {
    const folder = freshStateDir();
    const before = openStore(folder);
    const first = harness(holding, before);
    const controller = new AbortController();
    const held = first.call('gated', 'notes__add_note', note, { signal: controller.signal });
    assert.ok(await waitFor(() => first.deps.approvals.held === 1, 400, 5), 'the write is held for approval');
    const [approval] = before.approvals.list({ statuses: ['pending'], limit: 1 });
    assert.ok(approval);
    before.close(); // the broker stops while the write waits for a person

    const afterRestart = openStore(folder);
    const second = harness(config, afterRestart); // new connection, new pipeline, new instanceId
    assert.notEqual(second.deps.instanceId, first.deps.instanceId);
    const retry = await second.call('gated', 'notes__add_note', note);
    assert.equal(codeOf(retry), 'WARDEN_APPROVAL_PENDING', `not WARDEN_OUTCOME_UNKNOWN: the held write was never sent (got ${codeOf(retry)})`);
    assert.equal(retry.kind === 'refused' ? retry.hints?.approvalId : undefined, approval.id, 'it waits for the same approval');
    const operator = openStore(folder);
    operator.approvals.decide(approval.id, 'approved', 'carol', '', Date.now());
    operator.close();
    const approved = await second.call('gated', 'notes__add_note', note);
    assert.equal(codeOf(approved), 'result');
    assert.equal(replayOf(approved), undefined);
    assert.equal(second.calls.length, 1);
    assert.equal(first.calls.length, 0);
    assert.equal(afterRestart.approvals.get(approval.id)?.status, 'used');
    // It ran: the next identical call is replayed, and asks nobody.
    const repeat = await second.call('gated', 'notes__add_note', note);
    assert.ok(replayOf(repeat));
    assert.equal(second.calls.length, 1);

    // The stopped broker's held call ends without a store: it cannot record, and must not throw.
    controller.abort();
    assert.equal(codeOf(await held), 'WARDEN_CALL_CANCELLED');
    assert.equal(first.calls.length, 0);
    assert.ok(replayOf(await second.call('gated', 'notes__add_note', note)), 'the record of the write that ran is intact');
  });

  it('two live brokers on one store holding the same write for one approval: it runs once, and its record survives the other\'s refusal', async () => {
    const folder = freshStateDir();
    const a = harness(holding, openStore(folder));
    const b = harness(holding, openStore(folder));
    const heldA = a.call('gated', 'notes__add_note', note);
    assert.ok(await waitFor(() => a.deps.approvals.held === 1, 400, 5));
    // A held write of another broker is replaced (it never reached the tool): b holds it too.
    const heldB = b.call('gated', 'notes__add_note', note);
    assert.ok(await waitFor(() => b.deps.approvals.held === 1, 400, 5));
    const operator = openStore(folder);
    const pendingApprovals = operator.approvals.list({ statuses: ['pending'], limit: 5 });
    assert.equal(pendingApprovals.length, 1, 'one approval for the identical call');
    const id = pendingApprovals[0]?.id ?? '';
    operator.approvals.decide(id, 'approved', 'carol', '', Date.now());
    let ended = 0;
    void heldA.then(() => ended++);
    void heldB.then(() => ended++);
    assert.ok(
      await waitFor(
        () => {
          a.deps.approvals.check(Date.now());
          b.deps.approvals.check(Date.now());
          return ended === 2;
        },
        400,
        5,
      ),
    );
    const outcomes = [await heldA, await heldB];
    assert.deepEqual(outcomes.map(codeOf).sort(), ['WARDEN_APPROVAL_PENDING', 'result'], 'the approval is used once');
    assert.equal(a.calls.length + b.calls.length, 1, 'the write ran once');
    const ran = outcomes.find((outcome) => outcome.kind === 'result') as CallOutcome;
    // Within the window, the identical call gets the recorded result: the refused broker
    // must not have forgotten (abandoned) the record of the write the other one sent.
    const third = harness(config, openStore(folder));
    const repeat = await third.call('gated', 'notes__add_note', note);
    assert.equal(codeOf(repeat), 'result', `the write that ran was forgotten: the repeat got ${codeOf(repeat)} (a new approval) instead of its result`);
    assert.ok(replayOf(repeat));
    assert.equal(textOfOutcome(repeat), textOfOutcome(ran));
    assert.equal(third.calls.length, 0);
  });

  it('the window runs from when the call finished: a write slower than the window is replayed right after it ends', async () => {
    // windowSeconds 1, and a tool that takes 1.2 s (a bounded timer).
    const { calls, call } = onFreshStore(shortWindow, (tool) => new Promise((resolve) => setTimeout(() => resolve({ content: [{ type: 'text', text: `${tool} slow` }] }), 1200)));
    const started = Date.now();
    const first = await call('alice', 'notes__add_note', note);
    assert.equal(codeOf(first), 'result');
    assert.ok(Date.now() - started >= 1000, 'the call outlasted the window');
    const retry = await call('alice', 'notes__add_note', note);
    assert.equal(codeOf(retry), 'result');
    assert.ok(replayOf(retry), 'replayed, not run again: the window starts when the write finished');
    assert.equal(textOfOutcome(retry), textOfOutcome(first));
    assert.equal(calls.length, 1);
  });
});

describe('idempotency: failing closed', () => {
  it('a state store that cannot be used refuses the write (fail closed) without showing the agent where the store is', async () => {
    const folder = freshStateDir();
    const state = openStore(folder);
    const { calls, call, audit } = harness(config, state);
    state.close();
    const outcome = await call('alice', 'notes__add_note', note);
    assert.equal(outcome.kind, 'refused');
    assert.deepEqual(calls, [], 'the write did not run');
    assert.equal(audit.records[0]?.decision, 'deny');
    // DESIGN, "Failing closed": no internal path reaches the agent (the audit trail has the detail).
    const message = outcome.kind === 'refused' ? outcome.message : '';
    assert.ok(!message.includes(folder) && !message.includes('warden.db'), `the refusal shows the agent the state store's path: ${message}`);
    assert.equal(codeOf(outcome), 'WARDEN_STATE_UNAVAILABLE');
    // The operator still finds where: the audit record keeps the store's own message.
    const error = audit.records[0]?.['error'] as { code?: string; message?: string } | undefined;
    assert.equal(error?.code, 'WARDEN_STATE_UNAVAILABLE');
    assert.ok(String(error?.message).includes(folder), `the audit record names the store: ${String(error?.message)}`);
  });

  it('a state store that fails at the moment of sending stops the write before it is sent', async () => {
    const folder = freshStateDir();
    const state = openStore(folder);
    // The record is made (begin), then the store goes away just before the send guard marks it.
    const { calls, call, audit } = harness(config, state, unique, { beforeSend: () => state.close() });
    const outcome = await call('alice', 'notes__add_note', note);
    assert.equal(codeOf(outcome), 'WARDEN_STATE_UNAVAILABLE');
    assert.deepEqual(calls, [], 'the write was not sent');
    const message = outcome.kind === 'refused' ? outcome.message : '';
    assert.ok(!message.includes(folder), message);
    assert.equal(audit.records[0]?.decision, 'deny');
    assert.ok(String((audit.records[0]?.['error'] as { message?: string } | undefined)?.message).includes(folder));
  });
});
