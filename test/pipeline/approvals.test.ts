import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { WardenConfig } from '../../src/config/types.ts';
import { WardenError } from '../../src/errors.ts';
import { MAX_PENDING_PER_AGENT } from '../../src/pipeline/stages/approve.ts';
import type { CallOutcome, PipelineDeps, UserInput } from '../../src/pipeline/types.ts';
import type { StateStore } from '../../src/state/store.ts';
import type { KillSwitchState } from '../../src/state/switches.ts';
import { NOTES_SERVER, NOTES_TOOLS, stdioManifest, tempDir, waitFor, writeManifest } from '../helpers.ts';
import { type Behaviour, codeOf, configIn, harness as pipelineHarness, type HarnessOptions, ok, stateStoresIn } from './harness.ts';

const { dir, cleanup } = tempDir('warden-approvals-');
after(cleanup);
writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
const { freshDir: freshStateDir, open: openStore } = stateStoresIn(dir);

/** Decides approval `id` as an operator does: on another connection to the store in `folder`, closed again at once. */
function decideElsewhere(folder: string, id: string, verdict: 'approved' | 'denied', by: string, reason = '') {
  const operator = openStore(folder);
  try {
    return operator.approvals.decide(id, verdict, by, reason, Date.now());
  } finally {
    operator.close();
  }
}

const approvalRequired = { tools: ['notes__echo', 'notes__add_note'], access: ['read', 'write'], approval: 'required' };
const AGENTS = {
  alice: { allow: [{ tools: ['notes__*'] }, approvalRequired] },
  bob: { allow: [{ tools: ['notes__*'] }, approvalRequired] },
  // approval: user, with the default fallback (refuse) and with fallback required
  asker: { allow: [{ tools: ['notes__*'] }, { tools: ['notes__echo'], approval: 'user' }] },
  fallback: { allow: [{ tools: ['notes__*'] }, { tools: ['notes__echo'], approval: 'user', fallback: 'required' }] },
  // the strictest approval wins, whatever the order of the grants
  strictfirst: { allow: [{ tools: ['notes__echo'], approval: 'required' }, { tools: ['notes__*'] }] },
  strictlast: { allow: [{ tools: ['notes__*'] }, { tools: ['notes__echo'], approval: 'required' }] },
  userthenrequired: { allow: [{ tools: ['notes__echo'], approval: 'user' }, { tools: ['notes__*'], approval: 'required' }] },
};

function configWith(name: string, extra: Record<string, unknown>): WardenConfig {
  return configIn(dir, name, { servers: { notes: { manifest: 'notes.json' } }, agents: AGENTS, ...extra });
}

/** Calls are held for a decision (up to 30 s, never reached: the tests decide or cancel first). */
const held = configWith('held', {});
/** Calls are answered at once with WARDEN_APPROVAL_PENDING. */
const quick = configWith('quick', { approvals: { waitSeconds: 0 } });
/** Approvals expire after 10 s (the minimum); the clock is faked by expiring with a later now. */
const shortExpiry = configWith('short-expiry', { approvals: { expireSeconds: 10 } });
const quickShortExpiry = configWith('quick-short-expiry', { approvals: { waitSeconds: 0, expireSeconds: 10 } });

/** The shared harness, plus the ids of the approvals its pipeline asked for, in order. */
function harness(config: WardenConfig, state: StateStore, behaviour: Behaviour = ok, options: HarnessOptions = {}) {
  const h = pipelineHarness(config, state, behaviour, options);
  const requested = () => h.audit.records.filter((record) => record.event === 'approval.requested').map((record) => String(record['id']));
  return { ...h, requested };
}

function messageOf(outcome: CallOutcome): string {
  return outcome.kind === 'refused' ? outcome.message : '';
}

function approvalIdOf(outcome: CallOutcome): string | undefined {
  return outcome.kind === 'refused' ? outcome.hints?.approvalId : outcome.kind === 'ask-user' ? outcome.state.approvalId : undefined;
}

/** Tracks whether a promise has settled, without awaiting it. */
function track<T>(promise: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  promise.then(
    () => (done = true),
    () => (done = true),
  );
  return { promise, settled: () => done };
}

/** Waits (bounded) until the pipeline holds `count` calls for approval. */
async function untilHeld(deps: PipelineDeps, count = 1): Promise<void> {
  assert.ok(await waitFor(() => deps.approvals.held === count, 400, 5), `expected ${count} held call(s), found ${deps.approvals.held}`);
}

/** What the broker does when the store changes: check(), polled (bounded) until the held call ends. */
async function pollUntilSettled(deps: PipelineDeps, pending: { promise: Promise<CallOutcome>; settled: () => boolean }): Promise<CallOutcome> {
  const settled = await waitFor(
    () => {
      deps.approvals.check(Date.now());
      return pending.settled();
    },
    400,
    5,
  );
  assert.ok(settled, 'the held call was released');
  return pending.promise;
}

const approved: UserInput['responses'] = { approval: { action: 'accept', content: { approve: true } } };

describe('approvals: out of band (approval: required)', () => {
  it('holds the call until a decision written by another connection is seen by check(); the tool then runs once', async () => {
    const folder = freshStateDir();
    const state = openStore(folder);
    const { deps, calls, call, requested, audit } = harness(held, state);
    const pending = track(call('alice', 'notes__echo', { text: 'ship it' }));
    await untilHeld(deps);
    const [id] = requested();
    assert.ok(id, 'the approval request is in the audit trail');
    assert.equal(state.approvals.get(id)?.status, 'pending');

    const decided = decideElsewhere(folder, id, 'approved', 'alice');
    assert.equal(decided.status, 'approved');
    // The decision alone does not release the call: the broker must notice it (check()).
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(pending.settled(), false, 'still held until check() runs');
    assert.deepEqual(calls, []);

    const outcome = await pollUntilSettled(deps, pending);
    assert.equal(codeOf(outcome), 'result');
    assert.deepEqual(calls, [{ tool: 'echo', args: { text: 'ship it' } }]);
    assert.equal(state.approvals.get(id)?.status, 'used', 'an approval is used once');
    const record = audit.records.find((r) => r.event === 'tools/call');
    assert.equal(record?.decision, 'allow');
    assert.deepEqual(record?.['approval'], { id, kind: 'out-of-band', status: 'approved', decidedBy: 'alice', outcome: 'used' });
    // An out-of-band decision is audited once, by the broker when it sees the store change
    // (test/integration/live-policy.test.ts), not again by each call it releases.
    assert.deepEqual(audit.records.filter((r) => r.event === 'approval.decided'), []);
  });

  it('a denial releases the held call with WARDEN_APPROVAL_DENIED and the reason; the tool never runs', async () => {
    const folder = freshStateDir();
    const state = openStore(folder);
    const { deps, calls, call, requested, audit } = harness(held, state);
    const pending = track(call('alice', 'notes__add_note', { title: 'drop', body: 'prod' }));
    await untilHeld(deps);
    const [id] = requested();
    assert.ok(id);
    decideElsewhere(folder, id, 'denied', 'carol', 'not on a Friday');
    const outcome = await pollUntilSettled(deps, pending);
    assert.equal(codeOf(outcome), 'WARDEN_APPROVAL_DENIED');
    assert.match(messageOf(outcome), /not on a Friday/);
    assert.equal(approvalIdOf(outcome), id);
    assert.deepEqual(calls, []);
    // The call's own record names the decision and who made it (the broker audits the decision itself).
    const record = audit.records.find((r) => r.event === 'tools/call');
    assert.equal(record?.decision, 'deny');
    assert.deepEqual(record?.['approval'], { id, kind: 'out-of-band', status: 'denied', decidedBy: 'carol', outcome: 'refused' });
    assert.deepEqual(audit.records.filter((r) => r.event === 'approval.decided'), []);
    // Denied is final: the same call again asks anew rather than running.
    const again = await harness(quick, state).call('alice', 'notes__add_note', { title: 'drop', body: 'prod' });
    assert.equal(codeOf(again), 'WARDEN_APPROVAL_PENDING');
    assert.notEqual(approvalIdOf(again), id);
  });

  it('with waitSeconds 0 answers WARDEN_APPROVAL_PENDING at once, naming the approval', async () => {
    const state = openStore(freshStateDir());
    const { calls, call, requested, deps } = harness(quick, state);
    const outcome = await call('alice', 'notes__echo', { text: 'x' });
    assert.equal(codeOf(outcome), 'WARDEN_APPROVAL_PENDING');
    const id = approvalIdOf(outcome);
    assert.ok(id, 'hints.approvalId is set');
    assert.deepEqual(requested(), [id]);
    assert.match(messageOf(outcome), new RegExp(id));
    assert.equal(state.approvals.get(id)?.status, 'pending');
    assert.equal(deps.approvals.held, 0, 'nothing is left held');
    assert.deepEqual(calls, []);
    // Asking again before anyone decided waits on the same approval, not a new one.
    const again = await call('alice', 'notes__echo', { text: 'x' });
    assert.equal(codeOf(again), 'WARDEN_APPROVAL_PENDING');
    assert.equal(approvalIdOf(again), id);
  });

  it('an approval is used by the next identical call, once; a third identical call needs a new approval', async () => {
    const folder = freshStateDir();
    const state = openStore(folder);
    const { calls, call } = harness(quick, state);
    const first = await call('alice', 'notes__echo', { text: 'once' });
    const id = approvalIdOf(first);
    assert.ok(id);
    decideElsewhere(folder, id, 'approved', 'alice');

    const second = await call('alice', 'notes__echo', { text: 'once' });
    assert.equal(codeOf(second), 'result');
    assert.equal(calls.length, 1);
    assert.equal(state.approvals.get(id)?.status, 'used');

    const third = await call('alice', 'notes__echo', { text: 'once' });
    assert.equal(codeOf(third), 'WARDEN_APPROVAL_PENDING');
    const newId = approvalIdOf(third);
    assert.ok(newId);
    assert.notEqual(newId, id, 'a used approval is not reused');
    assert.equal(calls.length, 1, 'the third call did not run');
  });

  it('an approval binds the arguments: other arguments need their own approval', async () => {
    const folder = freshStateDir();
    const state = openStore(folder);
    const { calls, call } = harness(quick, state);
    const id = approvalIdOf(await call('alice', 'notes__echo', { text: 'a' }));
    assert.ok(id);
    state.approvals.decide(id, 'approved', 'alice', '', Date.now());
    const other = await call('alice', 'notes__echo', { text: 'b' });
    assert.equal(codeOf(other), 'WARDEN_APPROVAL_PENDING');
    assert.ok(approvalIdOf(other));
    assert.notEqual(approvalIdOf(other), id);
    assert.deepEqual(calls, []);
    // The approved call itself still runs.
    assert.equal(codeOf(await call('alice', 'notes__echo', { text: 'a' })), 'result');
    assert.deepEqual(calls, [{ tool: 'echo', args: { text: 'a' } }]);
  });

  it('an approval binds the agent: another agent\'s identical call neither uses nor spends it', async () => {
    const state = openStore(freshStateDir());
    const { calls, call } = harness(quick, state);
    const id = approvalIdOf(await call('alice', 'notes__echo', { text: 'same' }));
    assert.ok(id);
    state.approvals.decide(id, 'approved', 'alice', '', Date.now());
    const bobs = await call('bob', 'notes__echo', { text: 'same' });
    assert.equal(codeOf(bobs), 'WARDEN_APPROVAL_PENDING');
    assert.notEqual(approvalIdOf(bobs), id);
    assert.deepEqual(calls, []);
    assert.equal(state.approvals.get(id)?.status, 'approved', 'bob did not spend alice\'s approval');
    assert.equal(codeOf(await call('alice', 'notes__echo', { text: 'same' })), 'result');
    assert.equal(calls.length, 1);
  });

  it('an approval nobody decides expires: the held call gets WARDEN_APPROVAL_EXPIRED, a retry asks anew', async () => {
    const folder = freshStateDir();
    const state = openStore(folder);
    const { deps, calls, call, requested } = harness(shortExpiry, state);
    const pending = track(call('alice', 'notes__echo', { text: 'late' }));
    await untilHeld(deps);
    const [id] = requested();
    assert.ok(id);
    // Fake the clock: another connection expires everything as if 11 s had passed.
    const operator = openStore(folder);
    assert.equal(operator.approvals.expire(Date.now() + 11_000), 1);
    const outcome = await pollUntilSettled(deps, pending);
    assert.equal(codeOf(outcome), 'WARDEN_APPROVAL_EXPIRED');
    assert.equal(approvalIdOf(outcome), id);
    assert.deepEqual(calls, []);
    assert.equal(state.approvals.get(id)?.status, 'expired');
    // An expired approval can no longer be decided, nor used.
    assert.throws(() => operator.approvals.decide(id, 'approved', 'alice', '', Date.now()), { code: 'WARDEN_APPROVAL_NOT_PENDING' });
    operator.close();
  });

  it('a retry after expiry gets a new approval, never the expired one', async () => {
    const state = openStore(freshStateDir());
    const { calls, call } = harness(quickShortExpiry, state);
    const id = approvalIdOf(await call('alice', 'notes__echo', { text: 'late' }));
    assert.ok(id);
    state.approvals.expire(Date.now() + 11_000);
    const retry = await call('alice', 'notes__echo', { text: 'late' });
    assert.equal(codeOf(retry), 'WARDEN_APPROVAL_PENDING');
    assert.notEqual(approvalIdOf(retry), id);
    assert.deepEqual(calls, []);
  });

  it('the waiter also expires on check(now) with a later now', async () => {
    const state = openStore(freshStateDir());
    const { deps, calls, call, requested } = harness(shortExpiry, state);
    const pending = track(call('alice', 'notes__echo', { text: 'clock' }));
    await untilHeld(deps);
    deps.approvals.check(Date.now() + 11_000);
    assert.ok(await waitFor(() => pending.settled(), 400, 5));
    const outcome = await pending.promise;
    assert.equal(codeOf(outcome), 'WARDEN_APPROVAL_EXPIRED');
    assert.equal(state.approvals.get(requested()[0] ?? '')?.status, 'expired');
    assert.deepEqual(calls, []);
  });

  it('a held call cancelled by its agent ends WARDEN_CALL_CANCELLED; the approval stays pending and can still be used', async () => {
    const folder = freshStateDir();
    const state = openStore(folder);
    const { deps, calls, call, requested } = harness(held, state);
    const controller = new AbortController();
    const pending = track(call('alice', 'notes__echo', { text: 'cancel me' }, { signal: controller.signal }));
    await untilHeld(deps);
    const [id] = requested();
    assert.ok(id);
    controller.abort();
    assert.ok(await waitFor(() => pending.settled(), 400, 5));
    const outcome = await pending.promise;
    assert.equal(codeOf(outcome), 'WARDEN_CALL_CANCELLED');
    assert.equal(deps.approvals.held, 0);
    assert.deepEqual(calls, []);
    assert.equal(state.approvals.get(id)?.status, 'pending', 'cancelling the call does not decide the approval');

    // Approved later, the same call runs, once, on that approval.
    decideElsewhere(folder, id, 'approved', 'alice');
    const retry = await call('alice', 'notes__echo', { text: 'cancel me' });
    assert.equal(codeOf(retry), 'result');
    assert.equal(calls.length, 1);
    assert.equal(state.approvals.get(id)?.status, 'used');
  });

  it(`refuses a ${MAX_PENDING_PER_AGENT + 1}th pending approval for one agent with WARDEN_RATE_LIMITED`, async () => {
    const state = openStore(freshStateDir());
    const { calls, call } = harness(quick, state);
    const ids = new Set<string>();
    for (let i = 0; i < MAX_PENDING_PER_AGENT; i++) {
      const outcome = await call('alice', 'notes__echo', { text: `request ${i}` });
      assert.equal(codeOf(outcome), 'WARDEN_APPROVAL_PENDING', `request ${i}`);
      ids.add(approvalIdOf(outcome) ?? '');
    }
    assert.equal(ids.size, MAX_PENDING_PER_AGENT, 'each call has its own approval');
    const over = await call('alice', 'notes__echo', { text: 'one too many' });
    assert.equal(codeOf(over), 'WARDEN_RATE_LIMITED');
    assert.equal(state.approvals.list({ statuses: ['pending'], limit: 1000 }).length, MAX_PENDING_PER_AGENT, 'no approval was opened for it');
    // A repeat of a call already waiting is not a new request.
    const repeat = await call('alice', 'notes__echo', { text: 'request 0' });
    assert.equal(codeOf(repeat), 'WARDEN_APPROVAL_PENDING');
    assert.ok(ids.has(approvalIdOf(repeat) ?? ''));
    // The backlog is per agent.
    assert.equal(codeOf(await call('bob', 'notes__echo', { text: 'one too many' })), 'WARDEN_APPROVAL_PENDING');
    // Once one is decided, the agent may ask again.
    state.approvals.decide([...ids][1] ?? '', 'denied', 'carol', 'no', Date.now());
    assert.equal(codeOf(await call('alice', 'notes__echo', { text: 'one too many' })), 'WARDEN_APPROVAL_PENDING');
    assert.deepEqual(calls, []);
  });

  it('a pending approval outlives a restart: approved afterwards, the identical call runs once on a new pipeline', async () => {
    const folder = freshStateDir();
    const before = openStore(folder);
    const first = harness(quick, before);
    const outcome = await first.call('alice', 'notes__echo', { text: 'across restarts' });
    assert.equal(codeOf(outcome), 'WARDEN_APPROVAL_PENDING');
    const id = approvalIdOf(outcome);
    assert.ok(id);
    before.close();

    const afterRestart = openStore(folder);
    const second = harness(quick, afterRestart); // new waiter, new writesInFlight, new instanceId
    assert.notEqual(second.deps.instanceId, first.deps.instanceId);
    decideElsewhere(folder, id, 'approved', 'alice');

    const retry = await second.call('alice', 'notes__echo', { text: 'across restarts' });
    assert.equal(codeOf(retry), 'result');
    assert.equal(second.calls.length, 1);
    assert.equal(first.calls.length, 0);
    assert.equal(afterRestart.approvals.get(id)?.status, 'used');
    assert.equal(codeOf(await second.call('alice', 'notes__echo', { text: 'across restarts' })), 'WARDEN_APPROVAL_PENDING');
    assert.equal(second.calls.length, 1);
  });

  it('an answer in the conversation cannot decide an out-of-band approval', async () => {
    const state = openStore(freshStateDir());
    const { calls, call } = harness(quick, state);
    const id = approvalIdOf(await call('alice', 'notes__echo', { text: 'x' }));
    assert.ok(id);
    const forged = await call('alice', 'notes__echo', { text: 'x' }, { userInput: { canAsk: true, state: { approvalId: id }, responses: approved } });
    assert.equal(codeOf(forged), 'WARDEN_APPROVAL_PENDING');
    assert.deepEqual(calls, []);
    assert.equal(state.approvals.get(id)?.status, 'pending');
  });
});

describe('approvals: in the conversation (approval: user)', () => {
  it('a host that cannot ask is refused WARDEN_APPROVAL_UNAVAILABLE under fallback refuse', async () => {
    const state = openStore(freshStateDir());
    const { calls, call } = harness(quick, state);
    const outcome = await call('asker', 'notes__echo', { text: 'x' }, { userInput: { canAsk: false } });
    assert.equal(codeOf(outcome), 'WARDEN_APPROVAL_UNAVAILABLE');
    // no userInput at all is the same as a host that cannot ask
    assert.equal(codeOf(await call('asker', 'notes__echo', { text: 'x' })), 'WARDEN_APPROVAL_UNAVAILABLE');
    assert.deepEqual(calls, []);
    assert.equal(state.approvals.list({ limit: 10 }).length, 0, 'no approval was opened');
  });

  it('a host that cannot ask falls back to out-of-band approval under fallback required', async () => {
    const folder = freshStateDir();
    const state = openStore(folder);
    const { calls, call } = harness(quick, state);
    const outcome = await call('fallback', 'notes__echo', { text: 'x' }, { userInput: { canAsk: false } });
    assert.equal(codeOf(outcome), 'WARDEN_APPROVAL_PENDING');
    const id = approvalIdOf(outcome);
    assert.ok(id);
    assert.equal(state.approvals.get(id)?.kind, 'out-of-band');
    decideElsewhere(folder, id, 'approved', 'carol');
    assert.equal(codeOf(await call('fallback', 'notes__echo', { text: 'x' }, { userInput: { canAsk: false } })), 'result');
    assert.equal(calls.length, 1);
  });

  it('a host that can ask gets a question; the answer "approve" runs the tool once, and cannot be replayed', async () => {
    const state = openStore(freshStateDir());
    const { calls, call, audit } = harness(quick, state);
    const asked = await call('asker', 'notes__echo', { text: 'hello' }, { userInput: { canAsk: true } });
    assert.equal(asked.kind, 'ask-user');
    const id = approvalIdOf(asked);
    assert.ok(id);
    assert.ok(asked.kind === 'ask-user' && asked.message.includes('"text":"hello"'), 'the question shows the arguments');
    assert.equal(state.approvals.get(id)?.kind, 'user');
    assert.deepEqual(calls, []);

    const answer = { canAsk: true, state: { approvalId: id }, responses: approved };
    const outcome = await call('asker', 'notes__echo', { text: 'hello' }, { userInput: answer });
    assert.equal(codeOf(outcome), 'result');
    assert.deepEqual(calls, [{ tool: 'echo', args: { text: 'hello' } }]);
    assert.equal(state.approvals.get(id)?.status, 'used');
    assert.ok(audit.records.some((r) => r.event === 'approval.decided' && r['id'] === id && r['verdict'] === 'approved'));

    const replayed = await call('asker', 'notes__echo', { text: 'hello' }, { userInput: answer });
    assert.notEqual(codeOf(replayed), 'result', 'a used answer does not approve again');
    assert.equal(calls.length, 1);
  });

  it('"decline" and an accepted form without approve: true deny the call', async () => {
    const state = openStore(freshStateDir());
    const { calls, call } = harness(quick, state);
    const answers: unknown[] = [{ action: 'decline' }, { action: 'cancel' }, { action: 'accept', content: { approve: false } }, { action: 'accept', content: { approve: 'true' } }, { action: 'accept' }];
    for (const [i, response] of answers.entries()) {
      const args = { text: `answer ${i}` };
      const asked = await call('asker', 'notes__echo', args, { userInput: { canAsk: true } });
      const id = approvalIdOf(asked);
      assert.ok(id);
      const outcome = await call('asker', 'notes__echo', args, { userInput: { canAsk: true, state: { approvalId: id }, responses: { approval: response } } });
      assert.equal(codeOf(outcome), 'WARDEN_APPROVAL_DENIED', JSON.stringify(response));
      assert.equal(state.approvals.get(id)?.status, 'denied');
    }
    assert.deepEqual(calls, []);
  });

  it('arguments too long to show the user in full are never asked in band: fallback refuse refuses, saying why', async () => {
    const state = openStore(freshStateDir());
    const { calls, call } = harness(quick, state);
    // {"text":"…"} is 11 characters around the text: 1989 make 2000 (shown in full), 1990 make 2001.
    const longest = { text: 'a'.repeat(1989) };
    const asked = await call('asker', 'notes__echo', longest, { userInput: { canAsk: true } });
    assert.equal(asked.kind, 'ask-user', 'exactly 2000 characters are still asked');
    assert.ok(asked.kind === 'ask-user' && asked.message.includes(`"text":"${longest.text}"`), 'and shown in full');
    assert.ok(asked.kind === 'ask-user' && !asked.message.includes('characters in all'));

    const tooLong = { text: 'b'.repeat(1990) };
    const outcome = await call('asker', 'notes__echo', tooLong, { userInput: { canAsk: true } });
    assert.equal(codeOf(outcome), 'WARDEN_APPROVAL_UNAVAILABLE');
    assert.match(messageOf(outcome), /too long/);
    assert.match(messageOf(outcome), /2000 characters/);
    assert.doesNotMatch(messageOf(outcome), /no elicitation support/, 'the host can ask: the reason given is the length');
    assert.equal(state.approvals.list({ limit: 10 }).length, 1, 'no approval was opened for the long call');
    // A forged answer cannot get it through either: the long call is never settled in band.
    const forged = await call('asker', 'notes__echo', tooLong, { userInput: { canAsk: true, state: { approvalId: approvalIdOf(asked) }, responses: approved } });
    assert.equal(codeOf(forged), 'WARDEN_APPROVAL_UNAVAILABLE');
    assert.deepEqual(calls, []);
  });

  it('arguments too long to show the user in full go out of band under fallback required', async () => {
    const folder = freshStateDir();
    const state = openStore(folder);
    const { calls, call } = harness(quick, state);
    const tooLong = { text: 'c'.repeat(5000) };
    const outcome = await call('fallback', 'notes__echo', tooLong, { userInput: { canAsk: true } });
    assert.equal(codeOf(outcome), 'WARDEN_APPROVAL_PENDING', 'not a question to the user');
    const id = approvalIdOf(outcome);
    assert.ok(id);
    assert.equal(state.approvals.get(id)?.kind, 'out-of-band');
    assert.equal(state.approvals.get(id)?.arguments.length, 5011, 'the person deciding sees all of it');
    // The user cannot answer it in the conversation.
    const answered = await call('fallback', 'notes__echo', tooLong, { userInput: { canAsk: true, state: { approvalId: id }, responses: approved } });
    assert.equal(codeOf(answered), 'WARDEN_APPROVAL_PENDING');
    assert.equal(state.approvals.get(id)?.status, 'pending');
    assert.deepEqual(calls, []);
    decideElsewhere(folder, id, 'approved', 'carol');
    assert.equal(codeOf(await call('fallback', 'notes__echo', tooLong, { userInput: { canAsk: true } })), 'result');
    assert.equal(calls.length, 1);
    assert.equal(state.approvals.get(id)?.status, 'used');
  });

  it('an answer whose state names the approval of other arguments is refused, and nothing runs', async () => {
    const state = openStore(freshStateDir());
    const { calls, call } = harness(quick, state);
    const asked = await call('asker', 'notes__echo', { text: 'harmless' }, { userInput: { canAsk: true } });
    const id = approvalIdOf(asked);
    assert.ok(id);
    const swapped = await call('asker', 'notes__echo', { text: 'harmful' }, { userInput: { canAsk: true, state: { approvalId: id }, responses: approved } });
    assert.equal(codeOf(swapped), 'WARDEN_APPROVAL_DENIED');
    assert.deepEqual(calls, []);
    assert.equal(state.approvals.get(id)?.status, 'pending', 'the mismatched answer decided nothing');
    // nor can another agent use it
    const other = await call('fallback', 'notes__echo', { text: 'harmless' }, { userInput: { canAsk: true, state: { approvalId: id }, responses: approved } });
    assert.equal(codeOf(other), 'WARDEN_APPROVAL_DENIED');
    assert.deepEqual(calls, []);
    assert.equal(state.approvals.get(id)?.status, 'pending');
  });

  it('an answer naming an out-of-band approval is refused: the user cannot decide it', async () => {
    const state = openStore(freshStateDir());
    const { calls, call } = harness(quick, state);
    const oob = approvalIdOf(await call('fallback', 'notes__echo', { text: 'x' }, { userInput: { canAsk: false } }));
    assert.ok(oob);
    const outcome = await call('fallback', 'notes__echo', { text: 'x' }, { userInput: { canAsk: true, state: { approvalId: oob }, responses: approved } });
    assert.equal(codeOf(outcome), 'WARDEN_APPROVAL_DENIED');
    assert.equal(state.approvals.get(oob)?.status, 'pending');
    assert.deepEqual(calls, []);
  });

  it('a forged state with an unknown approval id is refused', async () => {
    const state = openStore(freshStateDir());
    const { calls, call } = harness(quick, state);
    for (const approvalId of ['ap_aaaaaaaaaa', '', "' OR 1=1 --", 'x'.repeat(10_000)]) {
      const outcome = await call('asker', 'notes__echo', { text: 'x' }, { userInput: { canAsk: true, state: { approvalId }, responses: approved } });
      assert.equal(codeOf(outcome), 'WARDEN_APPROVAL_DENIED', approvalId.slice(0, 20));
    }
    assert.deepEqual(calls, []);
    assert.equal(state.approvals.list({ limit: 10 }).length, 0);
  });

  it('an "approve" answer without state (a first round) only asks; it never approves', async () => {
    const state = openStore(freshStateDir());
    const { calls, call } = harness(quick, state);
    for (const userState of [undefined, null, 'ap_aaaaaaaaaa', { approvalId: 42 }]) {
      const outcome = await call('asker', 'notes__echo', { text: 'eager' }, { userInput: { canAsk: true, state: userState, responses: approved } });
      assert.equal(outcome.kind, 'ask-user', String(userState));
    }
    assert.deepEqual(calls, []);
    const records = state.approvals.list({ limit: 10 });
    assert.equal(records.length, 1, 'one question, asked again');
    assert.equal(records[0]?.status, 'pending');
  });
});

describe('approvals: used at the moment the call is sent', () => {
  it('an approved write stopped by the kill switch before it is sent leaves its approval for the identical retry', async () => {
    const folder = freshStateDir();
    const state = openStore(folder);
    let switchState: KillSwitchState = 'off';
    const { deps, calls, call, requested, audit } = harness(held, state, ok, { killSwitch: () => switchState });
    const args = { title: 'release', body: 'v2' };
    const pending = track(call('alice', 'notes__add_note', args));
    await untilHeld(deps);
    const [id] = requested();
    assert.ok(id);
    decideElsewhere(folder, id, 'approved', 'carol');
    switchState = 'on'; // while the call is still held
    const outcome = await pollUntilSettled(deps, pending);
    assert.equal(codeOf(outcome), 'WARDEN_KILL_SWITCH');
    assert.deepEqual(calls, [], 'not sent');
    assert.equal(state.approvals.get(id)?.status, 'approved', 'an approval is not used by a call that was never sent');
    const refused = audit.records.filter((r) => r.event === 'tools/call')[0];
    assert.equal(refused?.decision, 'deny');
    assert.equal(refused?.['killSwitch'], 'on');
    assert.equal(refused?.['dispatched'], undefined);
    assert.deepEqual(refused?.['approval'], { id, kind: 'out-of-band', status: 'approved', decidedBy: 'carol', outcome: 'approved' });

    // Switched off again, the identical call runs on that same approval, without asking anyone.
    switchState = 'off';
    const retry = await call('alice', 'notes__add_note', args);
    assert.equal(codeOf(retry), 'result', 'not WARDEN_OUTCOME_UNKNOWN: the stopped write was never in flight');
    assert.deepEqual(calls, [{ tool: 'add_note', args }]);
    assert.deepEqual(requested(), [id], 'no new approval was asked for');
    assert.equal(state.approvals.get(id)?.status, 'used');
    const ran = audit.records.filter((r) => r.event === 'tools/call')[1];
    assert.deepEqual(ran?.['approval'], { id, kind: 'out-of-band', status: 'approved', decidedBy: 'carol', outcome: 'used' });
  });

  it('a read tool held for approval still runs when the switch went readonly meanwhile', async () => {
    const folder = freshStateDir();
    const state = openStore(folder);
    let switchState: KillSwitchState = 'off';
    const { deps, calls, call, requested } = harness(held, state, ok, { killSwitch: () => switchState });
    const pending = track(call('alice', 'notes__echo', { text: 'read' }));
    await untilHeld(deps);
    const [id] = requested();
    assert.ok(id);
    state.approvals.decide(id, 'approved', 'carol', '', Date.now());
    switchState = 'readonly';
    assert.equal(codeOf(await pollUntilSettled(deps, pending)), 'result');
    assert.equal(calls.length, 1);
    assert.equal(state.approvals.get(id)?.status, 'used');
  });

  it('a backend that refuses before sending (server unavailable) uses no approval: the identical retry runs on it', async () => {
    const state = openStore(freshStateDir());
    let down = true;
    const attempts: string[] = [];
    const { calls, call, requested } = harness(quick, state, ok, {
      beforeSend: (tool) => {
        attempts.push(tool);
        if (down) throw new WardenError('WARDEN_SERVER_UNAVAILABLE', 'server "notes" is not connected (restarting); retry later', { server: 'notes' });
      },
    });
    const args = { title: 'retry', body: 'me' };
    const id = approvalIdOf(await call('alice', 'notes__add_note', args));
    assert.ok(id);
    state.approvals.decide(id, 'approved', 'carol', '', Date.now());
    const unavailable = await call('alice', 'notes__add_note', args);
    assert.equal(codeOf(unavailable), 'WARDEN_SERVER_UNAVAILABLE');
    assert.equal(attempts.length, 1, 'the backend was reached');
    assert.deepEqual(calls, [], 'but nothing was sent');
    assert.equal(state.approvals.get(id)?.status, 'approved');

    down = false;
    const retry = await call('alice', 'notes__add_note', args);
    assert.equal(codeOf(retry), 'result');
    assert.equal(calls.length, 1);
    assert.equal(state.approvals.get(id)?.status, 'used');
    assert.deepEqual(requested(), [id]);
  });

  it('a call that failed after it was sent (timeout) has used its approval: the retry needs a new one', async () => {
    const state = openStore(freshStateDir());
    const { calls, call } = harness(quick, state, async () => {
      throw new WardenError('WARDEN_DOWNSTREAM_TIMEOUT', 'server "notes" did not answer within 5 ms');
    });
    const id = approvalIdOf(await call('alice', 'notes__echo', { text: 'slow' }));
    assert.ok(id);
    state.approvals.decide(id, 'approved', 'carol', '', Date.now());
    assert.equal(codeOf(await call('alice', 'notes__echo', { text: 'slow' })), 'WARDEN_DOWNSTREAM_TIMEOUT');
    assert.equal(calls.length, 1);
    assert.equal(state.approvals.get(id)?.status, 'used', 'the request went out: the approval is spent');
    const retry = await call('alice', 'notes__echo', { text: 'slow' });
    assert.equal(codeOf(retry), 'WARDEN_APPROVAL_PENDING');
    assert.notEqual(approvalIdOf(retry), id);
    assert.equal(calls.length, 1);
  });

  it('two identical calls held on one approval: the first sent uses it, the other is refused and never sent', async () => {
    const folder = freshStateDir();
    const state = openStore(folder);
    const { deps, calls, call, requested, audit } = harness(held, state);
    const first = track(call('alice', 'notes__echo', { text: 'twice' }));
    const second = track(call('alice', 'notes__echo', { text: 'twice' }));
    await untilHeld(deps, 2);
    const ids = requested();
    assert.equal(ids.length, 1, 'both wait on the same approval');
    const [id] = ids;
    assert.ok(id);
    decideElsewhere(folder, id, 'approved', 'carol');
    await pollUntilSettled(deps, first);
    assert.ok(await waitFor(() => second.settled(), 400, 5));
    const codes = [codeOf(await first.promise), codeOf(await second.promise)].sort();
    assert.deepEqual(codes, ['WARDEN_APPROVAL_PENDING', 'result']);
    const loser = [await first.promise, await second.promise].find((o) => o.kind === 'refused');
    assert.ok(loser);
    assert.match(messageOf(loser), /used by another identical call/);
    assert.equal(approvalIdOf(loser), id);
    assert.equal(calls.length, 1, 'one approval, one run');
    assert.equal(state.approvals.get(id)?.status, 'used');
    const outcomes = audit.records.filter((r) => r.event === 'tools/call').map((r) => (r['approval'] as { outcome?: string } | undefined)?.outcome).sort();
    assert.deepEqual(outcomes, ['already-used', 'used']);
  });
});

describe('approvals: the strictest grant decides', () => {
  it('approval: required wins over a grant without approval, in either order', async () => {
    const state = openStore(freshStateDir());
    const { calls, call } = harness(quick, state);
    for (const agent of ['strictfirst', 'strictlast']) {
      assert.equal(codeOf(await call(agent, 'notes__echo', { text: agent })), 'WARDEN_APPROVAL_PENDING', agent);
      assert.equal(codeOf(await call(agent, 'notes__list_notes')), 'result', `${agent}: a tool only the broad grant covers needs no approval`);
    }
    assert.deepEqual(calls.map((c) => c.tool), ['list_notes', 'list_notes']);
  });

  it('approval: required wins over approval: user, so the user cannot answer it', async () => {
    const state = openStore(freshStateDir());
    const { calls, call } = harness(quick, state);
    const outcome = await call('userthenrequired', 'notes__echo', { text: 'x' }, { userInput: { canAsk: true } });
    assert.equal(codeOf(outcome), 'WARDEN_APPROVAL_PENDING');
    assert.equal(state.approvals.get(approvalIdOf(outcome) ?? '')?.kind, 'out-of-band');
    assert.deepEqual(calls, []);
  });
});

describe('approvals: failing closed', () => {
  it('a state store that cannot be used refuses the call (fail closed) without showing the agent where the store is', async () => {
    const folder = freshStateDir();
    const state = openStore(folder);
    const { calls, call, audit } = harness(quick, state);
    state.close();
    for (const [agent, userInput] of [['alice', undefined], ['asker', { canAsk: true }]] as const) {
      const outcome = await call(agent, 'notes__echo', { text: 'x' }, userInput ? { userInput } : {});
      assert.equal(outcome.kind, 'refused', agent);
      assert.equal(codeOf(outcome), 'WARDEN_STATE_UNAVAILABLE', agent);
      // DESIGN, "Failing closed": no internal path reaches the agent (the audit trail has the detail).
      const message = outcome.kind === 'refused' ? outcome.message : '';
      assert.ok(!message.includes(folder) && !message.includes('warden.db'), `${agent}: the refusal shows the agent the state store's path: ${message}`);
    }
    assert.deepEqual(calls, [], 'nothing ran without an approval');
    // The operator still finds where: the audit record keeps the store's own message.
    const records = audit.records.filter((r) => r.event === 'tools/call');
    assert.equal(records.length, 2);
    for (const record of records) {
      assert.equal(record.decision, 'deny');
      const error = record['error'] as { code?: string; message?: string } | undefined;
      assert.equal(error?.code, 'WARDEN_STATE_UNAVAILABLE');
      assert.ok(String(error?.message).includes(folder), `the audit record names the store: ${String(error?.message)}`);
    }
  });
});
