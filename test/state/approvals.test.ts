import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { WardenError } from '../../src/errors.ts';
import { APPROVAL_ID, type ApprovalRequest } from '../../src/state/approvals.ts';
import type { StateStore } from '../../src/state/store.ts';
import { tempDir } from '../helpers.ts';
import { stateStoresIn } from '../pipeline/harness.ts';

const { dir, cleanup } = tempDir('warden-ledgers-');
after(cleanup);

const { freshDir: freshStateDir, open: openStore } = stateStoresIn(dir);

const T0 = 1_800_000_000_000; // a fixed clock: the ledgers take `now` from their callers
const MINUTE = 60_000;

function request(overrides: Partial<ApprovalRequest> = {}): ApprovalRequest {
  return {
    agent: 'alice',
    tool: 'notes__add_note',
    argsDigest: 'a'.repeat(64),
    arguments: '{"body":"b","title":"t"}',
    kind: 'out-of-band',
    correlationId: 'corr-1',
    now: T0,
    expireMs: 15 * MINUTE,
    maxPendingPerAgent: 64,
    ...overrides,
  };
}

function opened(result: ReturnType<StateStore['approvals']['open']>) {
  assert.notEqual(result, 'backlog');
  if (result === 'backlog') throw new Error('unreachable');
  return result;
}

function notPending(id: string, status?: string) {
  return (error: unknown) => {
    assert.ok(error instanceof WardenError, 'a WardenError');
    assert.equal(error.code, 'WARDEN_APPROVAL_NOT_PENDING');
    if (status) assert.match(error.message, new RegExp(`is ${status}`));
    assert.equal((error.detail as { id?: string }).id, id);
    return true;
  };
}

/** Names and texts an agent (or anyone who can reach the ledger) might try. */
const HOSTILE = [
  `it's "quoted" \`back\``,
  'nul\u0000inside\u0000',
  "x'); DROP TABLE approvals; --",
  "' OR '1'='1",
  'Robert"); DELETE FROM idempotency WHERE ("1"="1',
  '%_*?\\',
  'line\nbreak\r\ttab',
  '\u202eright-to-left \u200b zero width \ufeff',
  'emoji 🧨 and 中文',
  'L'.repeat(10_000),
];

describe('ApprovalLedger', () => {
  it('opens one approval per call: the same binding again is the same approval, any difference another', () => {
    const { approvals } = openStore();
    const first = opened(approvals.open(request()));
    assert.equal(first.created, true);
    assert.match(first.record.id, APPROVAL_ID);
    assert.deepEqual(first.record, {
      id: first.record.id,
      agent: 'alice',
      tool: 'notes__add_note',
      argsDigest: 'a'.repeat(64),
      arguments: '{"body":"b","title":"t"}',
      kind: 'out-of-band',
      status: 'pending',
      correlationId: 'corr-1',
      requestedAt: T0,
      expiresAt: T0 + 15 * MINUTE,
    });
    const again = opened(approvals.open(request({ now: T0 + 1000, correlationId: 'corr-2' })));
    assert.equal(again.created, false);
    assert.equal(again.record.id, first.record.id);
    const ids = new Set([first.record.id]);
    for (const other of [{ agent: 'bob' }, { tool: 'notes__delete_note' }, { argsDigest: 'b'.repeat(64) }, { kind: 'user' as const }]) {
      const result = opened(approvals.open(request(other)));
      assert.equal(result.created, true, JSON.stringify(other));
      ids.add(result.record.id);
    }
    assert.equal(ids.size, 5);
  });

  it('decide sets the decision once; deciding anything not pending is WARDEN_APPROVAL_NOT_PENDING', () => {
    const { approvals } = openStore();
    const a = opened(approvals.open(request({ argsDigest: '1' }))).record;
    const decided = approvals.decide(a.id, 'approved', 'carol', 'fine', T0 + 5);
    assert.deepEqual({ status: decided.status, decidedBy: decided.decidedBy, reason: decided.reason, decidedAt: decided.decidedAt }, { status: 'approved', decidedBy: 'carol', reason: 'fine', decidedAt: T0 + 5 });
    assert.throws(() => approvals.decide(a.id, 'denied', 'mallory', '', T0 + 6), notPending(a.id, 'approved'));
    assert.equal(approvals.get(a.id)?.status, 'approved', 'the failed decision changed nothing');
    assert.equal(approvals.get(a.id)?.decidedBy, 'carol');

    const d = opened(approvals.open(request({ argsDigest: '2' }))).record;
    approvals.decide(d.id, 'denied', 'carol', 'no', T0 + 5);
    assert.throws(() => approvals.decide(d.id, 'approved', 'carol', '', T0 + 6), notPending(d.id, 'denied'));

    assert.equal(approvals.consume(a.id), true);
    assert.throws(() => approvals.decide(a.id, 'approved', 'carol', '', T0 + 7), notPending(a.id, 'used'));

    const e = opened(approvals.open(request({ argsDigest: '3', expireMs: 10_000 }))).record;
    assert.equal(approvals.expire(T0 + 10_000), 1);
    assert.throws(() => approvals.decide(e.id, 'approved', 'carol', '', T0 + 10_001), notPending(e.id, 'expired'));
  });

  it('an unknown id is WARDEN_APPROVAL_NOT_PENDING too, whatever it looks like', () => {
    const { approvals } = openStore();
    opened(approvals.open(request()));
    for (const id of ['ap_aaaaaaaaaa', '', "' OR 1=1 --", '%', 'nul\u0000', 'x'.repeat(10_000)]) {
      assert.throws(() => approvals.decide(id, 'approved', 'carol', '', T0), notPending(id));
      assert.equal(approvals.get(id), undefined);
      assert.equal(approvals.consume(id), false);
    }
    assert.equal(approvals.list({ statuses: ['pending'], limit: 10 }).length, 1, 'the real one is untouched');
  });

  it('a pending approval past its expiry cannot be decided, and is marked expired by the attempt', () => {
    const { approvals } = openStore();
    const record = opened(approvals.open(request({ expireMs: 10_000 }))).record;
    assert.throws(() => approvals.decide(record.id, 'approved', 'carol', '', T0 + 10_000), notPending(record.id, 'expired'));
    assert.notEqual(approvals.get(record.id)?.status, 'approved');
    assert.equal(approvals.consume(record.id), false);
    // The expiry found by decide() stands although deciding failed: lists show it expired.
    assert.equal(approvals.get(record.id)?.status, 'expired');
    assert.equal(approvals.get(record.id)?.decidedBy, 'mcp-warden');
    assert.equal(approvals.expire(T0 + 10_000), 0);
  });

  it('consume uses an approved approval once; anything else is false', () => {
    const { approvals } = openStore();
    const record = opened(approvals.open(request())).record;
    assert.equal(approvals.consume(record.id), false, 'pending is not approved');
    approvals.decide(record.id, 'approved', 'carol', '', T0 + 1);
    assert.equal(approvals.consume(record.id), true);
    assert.equal(approvals.consume(record.id), false, 'the second consume fails');
    assert.equal(approvals.get(record.id)?.status, 'used');
    const denied = opened(approvals.open(request({ argsDigest: 'other' }))).record;
    approvals.decide(denied.id, 'denied', 'carol', '', T0 + 1);
    assert.equal(approvals.consume(denied.id), false);
    // A used approval is not open any more: the same call gets a new one.
    const next = opened(approvals.open(request({ now: T0 + 2 })));
    assert.equal(next.created, true);
    assert.notEqual(next.record.id, record.id);
  });

  it('an approved approval is open for its call until used, then not', () => {
    const { approvals } = openStore();
    const record = opened(approvals.open(request())).record;
    approvals.decide(record.id, 'approved', 'carol', '', T0 + 1);
    const found = opened(approvals.open(request({ now: T0 + 2 })));
    assert.equal(found.created, false);
    assert.equal(found.record.id, record.id);
    assert.equal(found.record.status, 'approved');
  });

  it('expire marks only pending approvals past their time, and returns how many', () => {
    const { approvals } = openStore();
    const short = opened(approvals.open(request({ argsDigest: 's', expireMs: 10_000 }))).record;
    const long = opened(approvals.open(request({ argsDigest: 'l', expireMs: 60_000 }))).record;
    const approvedShort = opened(approvals.open(request({ argsDigest: 'a', expireMs: 10_000 }))).record;
    approvals.decide(approvedShort.id, 'approved', 'carol', '', T0 + 1);
    assert.equal(approvals.expire(T0 + 9_999), 0);
    assert.equal(approvals.expire(T0 + 10_000), 1);
    assert.equal(approvals.get(short.id)?.status, 'expired');
    assert.equal(approvals.get(short.id)?.reason, 'unanswered in time');
    assert.equal(approvals.get(long.id)?.status, 'pending');
    assert.equal(approvals.get(approvedShort.id)?.status, 'approved', 'a decision is not undone by expiry');
    assert.equal(approvals.expire(T0 + 10_000), 0, 'expiring again changes nothing');
    // An approved approval past its time is no longer offered for its call.
    const reopened = opened(approvals.open(request({ argsDigest: 'a', now: T0 + 10_000 })));
    assert.equal(reopened.created, true);
  });

  it('open after the expiry replaces an expired request with a new one (small expireMs)', () => {
    const { approvals } = openStore();
    const old = opened(approvals.open(request({ expireMs: 1000 }))).record;
    const fresh = opened(approvals.open(request({ now: T0 + 1000, expireMs: 1000 })));
    assert.equal(fresh.created, true);
    assert.notEqual(fresh.record.id, old.id);
    assert.equal(approvals.get(old.id)?.status, 'expired');
  });

  it('refuses a request past maxPendingPerAgent with backlog, per agent; expired ones do not count', () => {
    const { approvals } = openStore();
    for (let i = 0; i < 3; i++) opened(approvals.open(request({ argsDigest: `d${i}`, maxPendingPerAgent: 3, expireMs: 10_000 })));
    assert.equal(approvals.open(request({ argsDigest: 'd3', maxPendingPerAgent: 3 })), 'backlog');
    assert.equal(opened(approvals.open(request({ argsDigest: 'd0', maxPendingPerAgent: 3 }))).created, false, 'an open one is still found');
    assert.equal(opened(approvals.open(request({ agent: 'bob', argsDigest: 'd3', maxPendingPerAgent: 3 }))).created, true);
    assert.equal(opened(approvals.open(request({ argsDigest: 'd3', maxPendingPerAgent: 3, now: T0 + 10_000 }))).created, true);
  });

  it('stores hostile names and texts and reads them back verbatim, in this and another connection', () => {
    const folder = freshStateDir();
    const { approvals } = openStore(folder);
    const ids: string[] = [];
    for (const [i, text] of HOSTILE.entries()) {
      const record = opened(approvals.open(request({ agent: text, tool: text, argsDigest: text, arguments: text, correlationId: text, maxPendingPerAgent: 1 }))).record;
      assert.equal(record.agent, text, `agent ${i}`);
      assert.equal(record.tool, text, `tool ${i}`);
      assert.equal(record.argsDigest, text, `digest ${i}`);
      assert.equal(record.arguments, text, `arguments ${i}`);
      assert.equal(record.correlationId, text, `correlation id ${i}`);
      const decided = approvals.decide(record.id, i % 2 === 0 ? 'approved' : 'denied', text, text, T0 + 1);
      assert.equal(decided.decidedBy, text, `decidedBy ${i}`);
      assert.equal(decided.reason, text, `reason ${i}`);
      // Each hostile agent is its own agent: one pending each (limit 1) never hit another's backlog.
      ids.push(record.id);
    }
    const other = openStore(folder);
    for (const [i, text] of HOSTILE.entries()) {
      const record = other.approvals.get(ids[i] ?? '');
      assert.deepEqual(
        [record?.agent, record?.tool, record?.argsDigest, record?.arguments, record?.correlationId, record?.decidedBy, record?.reason],
        Array(7).fill(text),
        `record ${i} in another connection`,
      );
    }
    const listed = other.approvals.list({ limit: 100 });
    assert.equal(listed.length, HOSTILE.length, 'nothing was dropped or injected');
    assert.deepEqual(new Set(listed.map((r) => r.agent)), new Set(HOSTILE));
    // Names that differ only after a NUL are different names.
    const a = opened(other.approvals.open(request({ agent: 'eve\u0000a' }))).record;
    const b = opened(other.approvals.open(request({ agent: 'eve\u0000b' }))).record;
    assert.notEqual(a.id, b.id);
  });

  it('a decision made by another connection is seen by the first', () => {
    const folder = freshStateDir();
    const broker = openStore(folder);
    const operator = openStore(folder);
    const record = opened(broker.approvals.open(request())).record;
    assert.equal(operator.approvals.get(record.id)?.status, 'pending');
    operator.approvals.decide(record.id, 'approved', 'carol', '', T0 + 1);
    assert.equal(broker.approvals.get(record.id)?.status, 'approved');
    assert.equal(broker.approvals.consume(record.id), true);
    assert.equal(operator.approvals.consume(record.id), false, 'used once across connections');
  });

  it('prune deletes approvals that ended (denied, expired, used) before the given time; pending and approved ones stay', () => {
    const { approvals } = openStore();
    const make = (digest: string, expireMs = 15 * MINUTE) => opened(approvals.open(request({ argsDigest: digest, expireMs }))).record;
    const pending = make('pending', 60 * MINUTE);
    const approved = make('approved', 10_000);
    approvals.decide(approved.id, 'approved', 'carol', '', T0 + 1);
    const used = make('used');
    approvals.decide(used.id, 'approved', 'carol', '', T0 + 2);
    assert.equal(approvals.consume(used.id), true);
    const denied = make('denied');
    approvals.decide(denied.id, 'denied', 'carol', 'no', T0 + 3);
    const expired = make('expired', 10_000);
    assert.equal(approvals.expire(T0 + 10_000), 1);
    assert.equal(approvals.get(expired.id)?.status, 'expired');

    assert.equal(approvals.prune(T0 + 2), 0, 'nothing ended before T0 + 2');
    assert.equal(approvals.prune(T0 + 3), 1, 'the used one (decided at T0 + 2)');
    assert.equal(approvals.get(used.id), undefined);
    assert.equal(approvals.prune(T0 + 3), 0, 'pruning again changes nothing');
    assert.equal(approvals.prune(T0 + 4), 1, 'the denied one (T0 + 3)');
    assert.equal(approvals.get(denied.id), undefined);
    assert.equal(approvals.prune(T0 + 10_000), 0, 'the expired one ended at T0 + 10 000, not before');
    assert.equal(approvals.prune(T0 + 10_001), 1);
    assert.equal(approvals.get(expired.id), undefined);
    // However late: approvals still open are kept, decided or not.
    assert.equal(approvals.prune(T0 + 365 * 24 * 60 * MINUTE), 0);
    assert.equal(approvals.get(pending.id)?.status, 'pending');
    assert.equal(approvals.get(approved.id)?.status, 'approved');
    assert.deepEqual(new Set(approvals.list({ limit: 10 }).map((r) => r.id)), new Set([pending.id, approved.id]));
  });

  it('prune keeps a pending approval past its expiry that was not yet marked expired', () => {
    const { approvals } = openStore();
    const record = opened(approvals.open(request({ expireMs: 10_000 }))).record;
    assert.equal(approvals.prune(T0 + 60 * MINUTE), 0);
    assert.equal(approvals.get(record.id)?.status, 'pending');
    assert.equal(approvals.expire(T0 + 60 * MINUTE), 1);
    assert.equal(approvals.prune(T0 + 60 * MINUTE), 0, 'it ended when it was marked expired');
    assert.equal(approvals.prune(T0 + 60 * MINUTE + 1), 1);
  });

  it('lists newest first, filtered by status, up to the limit', () => {
    const { approvals } = openStore();
    const records = [0, 1, 2].map((i) => opened(approvals.open(request({ argsDigest: `d${i}`, now: T0 + i }))).record);
    approvals.decide(records[1]?.id ?? '', 'denied', 'carol', '', T0 + 5);
    assert.deepEqual(approvals.list({ limit: 10 }).map((r) => r.id), records.map((r) => r.id).reverse());
    assert.deepEqual(approvals.list({ statuses: ['pending'], limit: 10 }).map((r) => r.id), [records[2]?.id, records[0]?.id]);
    assert.deepEqual(approvals.list({ statuses: ['denied'], limit: 10 }).map((r) => r.id), [records[1]?.id]);
    assert.equal(approvals.list({ limit: 1 }).length, 1);
  });
});

describe('IdempotencyLedger', () => {
  const WINDOW = 10 * MINUTE;
  const begin = (store: StateStore, overrides: Partial<{ agent: string; tool: string; key: string; argsDigest: string; owner: string; now: number; windowMs: number }> = {}) =>
    store.idempotency.begin({ agent: 'alice', tool: 'notes__add_note', key: 'args:d', argsDigest: 'd', owner: 'broker-1', now: T0, windowMs: WINDOW, ...overrides });
  const sending = (store: StateStore, key = 'args:d', until = 0, owner = 'broker-1') => store.idempotency.sending({ agent: 'alice', tool: 'notes__add_note', key, argsDigest: 'd', owner, now: T0, until });
  const finish = (store: StateStore, outcome: string, now: number, windowMs = WINDOW, key = 'args:d') => store.idempotency.finish('alice', 'notes__add_note', key, 'broker-1', outcome, now, windowMs);

  it('first, then held, then in flight once sent, then done with the recorded outcome', () => {
    const store = openStore();
    assert.deepEqual(begin(store), { kind: 'first' });
    // Held (not yet sent): the same broker sees its own call as unfinished.
    assert.deepEqual(begin(store, { now: T0 + 1 }), { kind: 'in-flight', owner: 'broker-1', argsDigest: 'd', expiresAt: T0 + WINDOW });
    sending(store);
    assert.deepEqual(begin(store, { owner: 'broker-2', now: T0 + 1 }), { kind: 'in-flight', owner: 'broker-1', argsDigest: 'd', expiresAt: T0 + WINDOW });
    finish(store, '{"outcome":1}', T0 + 2);
    // The window runs from the finish.
    assert.deepEqual(begin(store, { now: T0 + 3 }), { kind: 'done', argsDigest: 'd', outcome: '{"outcome":1}', expiresAt: T0 + 2 + WINDOW });
    assert.deepEqual(begin(store, { owner: 'broker-2', now: T0 + 3 }), { kind: 'done', argsDigest: 'd', outcome: '{"outcome":1}', expiresAt: T0 + 2 + WINDOW });
    // Finishing again does not overwrite the recorded outcome, nor move the window.
    finish(store, '{"outcome":2}', T0 + 5 * MINUTE);
    assert.deepEqual(begin(store, { now: T0 + 4 }), { kind: 'done', argsDigest: 'd', outcome: '{"outcome":1}', expiresAt: T0 + 2 + WINDOW });
    // Nor does a late sending(): a done record stays done.
    sending(store);
    assert.equal(begin(store, { owner: 'broker-2', now: T0 + 5 }).kind, 'done');
  });

  it('a held record of another broker never reached the tool: it is replaced, even within its window', () => {
    const store = openStore();
    assert.equal(begin(store).kind, 'first');
    assert.deepEqual(begin(store, { owner: 'broker-2', now: T0 + 1, argsDigest: 'e' }), { kind: 'first' });
    // The record is now broker-2's, still held: a third broker replaces it in turn,
    assert.deepEqual(begin(store, { owner: 'broker-3', now: T0 + 2 }), { kind: 'first' });
    // and the one who replaced it last owns it, with its own digest and window.
    assert.deepEqual(begin(store, { owner: 'broker-3', now: T0 + 3 }), { kind: 'in-flight', owner: 'broker-3', argsDigest: 'd', expiresAt: T0 + 2 + WINDOW });
  });

  it('an in-flight (sent) record of another broker is in flight until its window has passed, then replaced', () => {
    const store = openStore();
    begin(store);
    sending(store);
    assert.deepEqual(begin(store, { owner: 'broker-2', now: T0 + WINDOW - 1 }), { kind: 'in-flight', owner: 'broker-1', argsDigest: 'd', expiresAt: T0 + WINDOW });
    // A stopped broker's sent write ages out with its window (the refusal said when).
    assert.deepEqual(begin(store, { owner: 'broker-2', now: T0 + WINDOW }), { kind: 'first' });
    assert.deepEqual(begin(store, { owner: 'broker-2', now: T0 + WINDOW + 1 }), { kind: 'in-flight', owner: 'broker-2', argsDigest: 'd', expiresAt: T0 + 2 * WINDOW });
  });

  it('an unfinished record of the same broker stays live past its expiry: its call is still running', () => {
    const store = openStore();
    begin(store);
    assert.deepEqual(begin(store, { now: T0 + 10 * WINDOW }), { kind: 'in-flight', owner: 'broker-1', argsDigest: 'd', expiresAt: T0 + WINDOW }, 'held');
    sending(store);
    assert.deepEqual(begin(store, { now: T0 + 10 * WINDOW }), { kind: 'in-flight', owner: 'broker-1', argsDigest: 'd', expiresAt: T0 + WINDOW }, 'in flight');
    // Finished late, it is protected for a whole window from then.
    finish(store, '"late"', T0 + 10 * WINDOW);
    assert.deepEqual(begin(store, { owner: 'broker-2', now: T0 + 11 * WINDOW - 1 }), { kind: 'done', argsDigest: 'd', outcome: '"late"', expiresAt: T0 + 11 * WINDOW });
    assert.deepEqual(begin(store, { now: T0 + 11 * WINDOW }), { kind: 'first' });
  });

  it('the window runs from the finish: a slow call is protected for a whole window after it ends', () => {
    const store = openStore();
    begin(store, { windowMs: 1000 });
    sending(store);
    finish(store, '"slow"', T0 + 1200, 1000);
    assert.deepEqual(begin(store, { owner: 'broker-2', now: T0 + 1200 }), { kind: 'done', argsDigest: 'd', outcome: '"slow"', expiresAt: T0 + 2200 });
    assert.equal(begin(store, { owner: 'broker-2', now: T0 + 2199 }).kind, 'done');
    assert.deepEqual(begin(store, { owner: 'broker-2', now: T0 + 2200 }), { kind: 'first' });
    // A call finished while still held (refused with its outcome known) is recorded too.
    begin(store, { key: 'held-done' });
    finish(store, '"h"', T0 + 5, WINDOW, 'held-done');
    assert.deepEqual(begin(store, { key: 'held-done', owner: 'broker-2', now: T0 + 6 }), { kind: 'done', argsDigest: 'd', outcome: '"h"', expiresAt: T0 + 5 + WINDOW });
  });

  it('keys are per agent and tool', () => {
    const store = openStore();
    assert.equal(begin(store).kind, 'first');
    assert.equal(begin(store, { agent: 'bob' }).kind, 'first');
    assert.equal(begin(store, { tool: 'notes__delete_note' }).kind, 'first');
    assert.equal(begin(store, { key: 'args:e' }).kind, 'first');
    assert.equal(begin(store).kind, 'in-flight');
    sending(store, 'args:e');
    assert.equal(begin(store, { key: 'args:e', owner: 'broker-2' }).kind, 'in-flight');
    assert.equal(begin(store, { owner: 'broker-2' }).kind, 'first', 'sending() marked only its own key');
  });

  it('abandon forgets a held call; a call sent after all is recorded again, so its outcome is kept', () => {
    const store = openStore();
    begin(store);
    store.idempotency.abandon('alice', 'notes__add_note', 'args:d', 'broker-1');
    assert.deepEqual(begin(store, { now: T0 + 1, owner: 'broker-2' }), { kind: 'first' }, 'forgotten');
    store.idempotency.abandon('alice', 'notes__add_note', 'args:d', 'broker-2');
    // A send with no record left (another broker abandoned its own hold of it) records it anew.
    sending(store);
    finish(store, '{"late":true}', T0 + 1);
    assert.equal(begin(store, { now: T0 + 2, owner: 'broker-2' }).kind, 'done');
  });

  it('only the broker that made a record can abandon, send or finish it; sending keeps it for the call\'s longest run', () => {
    const store = openStore();
    begin(store);
    store.idempotency.abandon('alice', 'notes__add_note', 'args:d', 'broker-2');
    store.idempotency.finish('alice', 'notes__add_note', 'args:d', 'broker-2', '"theirs"', T0, WINDOW);
    assert.deepEqual(begin(store, { now: T0 + 1 }), { kind: 'in-flight', owner: 'broker-1', argsDigest: 'd', expiresAt: T0 + WINDOW }, 'still broker-1\'s, still held');
    sending(store, 'args:d', T0 + 3 * WINDOW);
    // Once in flight, another broker sending the same call does not take it over, and is told so.
    assert.equal(sending(store, 'args:d', T0 + 9 * WINDOW, 'broker-2'), 'taken');
    assert.equal(sending(store, 'args:d', T0 + 3 * WINDOW, 'broker-1'), 'mine', 'the owner sending again (a retry inside the backend) keeps it');
    assert.equal((begin(store, { now: T0 + 1, owner: 'broker-3' }) as { owner?: string }).owner, 'broker-1');
    // In flight past its window: another broker does not take it for dead until the call's longest run is over.
    assert.equal(begin(store, { now: T0 + 2 * WINDOW, owner: 'broker-2' }).kind, 'in-flight');
    finish(store, '"mine"', T0 + 2 * WINDOW);
    store.idempotency.abandon('alice', 'notes__add_note', 'args:d', 'broker-1');
    assert.deepEqual(begin(store, { now: T0 + 2 * WINDOW + 1, owner: 'broker-2' }), { kind: 'done', argsDigest: 'd', outcome: '"mine"', expiresAt: T0 + 3 * WINDOW }, 'abandon never deletes a finished record');
  });

  it('a record past its window is replaced: the call is first again', () => {
    const store = openStore();
    begin(store);
    sending(store);
    finish(store, '"x"', T0);
    assert.equal(begin(store, { now: T0 + WINDOW - 1 }).kind, 'done');
    assert.deepEqual(begin(store, { now: T0 + WINDOW, argsDigest: 'new' }), { kind: 'first' });
    assert.deepEqual(begin(store, { now: T0 + WINDOW + 1 }), { kind: 'in-flight', owner: 'broker-1', argsDigest: 'new', expiresAt: T0 + 2 * WINDOW });
    // an in-flight record left by a stopped broker is replaced after its window too
    sending(store);
    assert.equal(begin(store, { now: T0 + 2 * WINDOW - 1, owner: 'broker-3' }).kind, 'in-flight');
    assert.equal(begin(store, { now: T0 + 3 * WINDOW, owner: 'broker-3' }).kind, 'first');
  });

  it('prune removes expired rows, done and unfinished, except the unfinished ones of the given broker; returns how many', () => {
    const store = openStore();
    const setUp = () => {
      begin(store, { key: 'done-old', windowMs: 1000 });
      finish(store, '"a"', T0, 1000, 'done-old');
      begin(store, { key: 'flight-old', windowMs: 1000 });
      sending(store, 'flight-old');
      begin(store, { key: 'held-old', windowMs: 1000 });
      begin(store, { key: 'done-new', windowMs: 5000 });
      finish(store, '"c"', T0, 5000, 'done-new');
      begin(store, { key: 'flight-new', windowMs: 5000 });
      sending(store, 'flight-new');
    };
    setUp();
    // Another broker prunes: broker-1's expired rows are all gone, finished or not.
    assert.equal(store.idempotency.prune(T0 + 999, 'broker-2'), 0);
    assert.equal(store.idempotency.prune(T0 + 1000, 'broker-2'), 3);
    assert.equal(store.idempotency.prune(T0 + 1000, 'broker-2'), 0);
    // Read back with a `now` at which every row would still be live: only the expired ones are gone.
    assert.deepEqual(begin(store, { key: 'done-new', owner: 'broker-9', now: T0 }), { kind: 'done', argsDigest: 'd', outcome: '"c"', expiresAt: T0 + 5000 });
    assert.deepEqual(begin(store, { key: 'flight-new', owner: 'broker-9', now: T0 }), { kind: 'in-flight', owner: 'broker-1', argsDigest: 'd', expiresAt: T0 + 5000 });
    for (const key of ['done-old', 'flight-old', 'held-old']) assert.deepEqual(begin(store, { key, owner: 'broker-9', now: T0 }), { kind: 'first' }, key);

    // The broker that owns them keeps its unfinished rows (their calls still run), not its finished ones.
    const own = openStore();
    const ownBegin = (key: string, windowMs: number) => own.idempotency.begin({ agent: 'alice', tool: 'notes__add_note', key, argsDigest: 'd', owner: 'broker-1', now: T0, windowMs });
    ownBegin('done-old', 1000);
    own.idempotency.finish('alice', 'notes__add_note', 'done-old', 'broker-1', '"a"', T0, 1000);
    ownBegin('flight-old', 1000);
    own.idempotency.sending({ agent: 'alice', tool: 'notes__add_note', key: 'flight-old', argsDigest: 'd', owner: 'broker-1', now: T0, until: 0 });
    ownBegin('held-old', 1000);
    assert.equal(own.idempotency.prune(T0 + 10 * WINDOW, 'broker-1'), 1, 'only the finished one');
    assert.deepEqual(ownBegin('flight-old', 1000), { kind: 'in-flight', owner: 'broker-1', argsDigest: 'd', expiresAt: T0 + 1000 });
    assert.deepEqual(ownBegin('held-old', 1000), { kind: 'in-flight', owner: 'broker-1', argsDigest: 'd', expiresAt: T0 + 1000 });
    assert.deepEqual(ownBegin('done-old', 1000), { kind: 'first' });
    // Once finished, they expire a window after their finish and are pruned like any other.
    own.idempotency.finish('alice', 'notes__add_note', 'flight-old', 'broker-1', '"f"', T0 + 10 * WINDOW, 1000);
    assert.equal(own.idempotency.prune(T0 + 10 * WINDOW + 999, 'broker-1'), 0);
    assert.equal(own.idempotency.prune(T0 + 10 * WINDOW + 1000, 'broker-1'), 1);
  });

  it('stores hostile keys, names and outcomes verbatim, and keeps them apart', () => {
    const folder = freshStateDir();
    const store = openStore(folder);
    for (const text of HOSTILE) {
      assert.equal(begin(store, { agent: text, tool: text, key: text, argsDigest: text }).kind, 'first');
      store.idempotency.sending({ agent: text, tool: text, key: text, argsDigest: text, owner: 'broker-1', now: T0, until: 0 });
      store.idempotency.finish(text, text, text, 'broker-1', text, T0, WINDOW);
    }
    const other = openStore(folder);
    for (const [i, text] of HOSTILE.entries()) {
      assert.deepEqual(begin(other, { agent: text, tool: text, key: text, now: T0 + 1 }), { kind: 'done', argsDigest: text, outcome: text, expiresAt: T0 + WINDOW }, `entry ${i}`);
    }
    // Names that only differ after a NUL, or by where the separator falls, are different.
    assert.equal(begin(other, { agent: 'a\u0000b', tool: 'c' }).kind, 'first');
    assert.equal(begin(other, { agent: 'a', tool: 'b\u0000c' }).kind, 'first');
    assert.equal(begin(other, { agent: 'nul\u0000inside', tool: 'nul\u0000inside\u0000', key: 'nul\u0000inside\u0000' }).kind, 'first');
  });
});
