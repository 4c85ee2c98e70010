import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { WardenConfig } from '../../src/config/types.ts';
import type { KillSwitchState } from '../../src/state/switches.ts';
import { NOTES_SERVER, NOTES_TOOLS, stdioManifest, tempDir, waitFor, writeManifest } from '../helpers.ts';
import { type Behaviour, codeOf, configIn, harness as pipelineHarness, ok, stateStoresIn, WIPE_TOOL } from './harness.ts';

const { dir, cleanup } = tempDir('warden-limits-');
after(cleanup);

writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
writeManifest(join(dir, 'manifests/ops.json'), stdioManifest('ops', NOTES_SERVER, [WIPE_TOOL]));

const everything = { tools: ['notes__*', 'ops__*'], access: ['read', 'write', 'destructive'] };
const AGENTS = {
  alice: { allow: [everything] },
  bob: { allow: [everything] },
  // reads only: the write tools are not granted
  reader: { allow: [{ tools: ['notes__*', 'ops__*'] }] },
  capped: { allow: [everything], rateLimit: { perMinute: 2 } },
  single: { allow: [everything], rateLimit: { concurrent: 1 } },
  gated: { allow: [{ tools: ['notes__*'], access: ['read', 'write'], approval: 'required' }] },
  // approval required, and one call at a time for this agent
  gatedsingle: { allow: [{ tools: ['notes__*'], access: ['read', 'write'], approval: 'required' }], rateLimit: { concurrent: 1 } },
};

function configWith(name: string, extra: Record<string, unknown>): WardenConfig {
  return configIn(dir, name, {
    servers: { notes: { manifest: 'notes.json' }, ops: { manifest: 'ops.json' } },
    agents: AGENTS,
    ...extra,
  });
}

const config = configWith('default', {});
const echoLimited = configWith('echo-limited', { rateLimits: { tools: [{ tools: ['notes__echo'], perMinute: 1 }] } });
const oneAtATime = configWith('one-at-a-time', { rateLimits: { concurrent: 1 } });
/** add_note one call at a time (all agents together); approvals answered at once. */
const addNoteSingle = configWith('add-note-single', { approvals: { waitSeconds: 0 }, rateLimits: { tools: [{ tools: ['notes__add_note'], concurrent: 1 }] } });
/** The same files reloaded: a new config object that grants the same. */
const reloadedSame = configWith('default-reloaded', {});
/** Reloaded without gated's write grant (echo only), or without the agent gated at all. */
const withoutGrant = configWith('without-grant', { agents: { ...AGENTS, gated: { allow: [{ tools: ['notes__echo'], approval: 'required' }] } } });
const withoutAgent = configWith('without-agent', { agents: Object.fromEntries(Object.entries(AGENTS).filter(([name]) => name !== 'gated')) });

const { open: openStore } = stateStoresIn(dir);

/** The shared harness on a state store of its own; `calls` are the tools sent, by name. */
function harness(cfg: WardenConfig, options: { behaviour?: Behaviour; killSwitch?: () => KillSwitchState; liveConfig?: () => WardenConfig } = {}) {
  const { behaviour, ...overrides } = options;
  const state = openStore();
  const { audit, tools, deps, call } = pipelineHarness(cfg, state, behaviour, overrides);
  /** The audit record of each tools/call, in the order they ended. */
  const callRecords = () => audit.records.filter((record) => record.event === 'tools/call');
  return { audit, calls: tools, deps, state, call, callRecords };
}

/**
 * Starts `agent`'s call and waits (bounded) until it is held for approval. `approve()` then
 * approves it as carol, polls check() until the call has ended, and returns how it ended.
 */
async function holdForApproval(h: ReturnType<typeof harness>, agent: string, tool: string, args: Record<string, unknown>) {
  let done = false;
  const held = h.call(agent, tool, args);
  void held.then(() => (done = true));
  assert.ok(await waitFor(() => h.deps.approvals.held === 1, 400, 5), 'the call is held for approval');
  return {
    async approve() {
      const [approval] = h.state.approvals.list({ statuses: ['pending'], limit: 1 });
      assert.ok(approval);
      h.state.approvals.decide(approval.id, 'approved', 'carol', '', Date.now());
      assert.ok(
        await waitFor(
          () => {
            h.deps.approvals.check(Date.now());
            return done;
          },
          400,
          5,
        ),
        'the held call was released',
      );
      return { outcome: await held, approvalId: approval.id };
    },
  };
}

const note = { title: 't', body: 'b' };
const READ = ['notes__echo', { text: 'hi' }] as const;
const WRITE = ['notes__add_note', note] as const;
const DESTRUCTIVE = ['ops__wipe', { target: 'cache' }] as const;

describe('kill switch', () => {
  it('on refuses every call, read, write and destructive, with WARDEN_KILL_SWITCH', async () => {
    const { calls, call, callRecords } = harness(config, { killSwitch: () => 'on' });
    for (const [tool, args] of [READ, WRITE, DESTRUCTIVE]) {
      const outcome = await call('alice', tool, args);
      assert.equal(codeOf(outcome), 'WARDEN_KILL_SWITCH', tool);
    }
    assert.deepEqual(calls, []);
    assert.deepEqual(callRecords().map((r) => [r.decision, r.reason, r['killSwitch']]), Array(3).fill(['deny', 'WARDEN_KILL_SWITCH', 'on']));
  });

  it('readonly refuses write and destructive tools with WARDEN_READ_ONLY_MODE and lets read tools through', async () => {
    const { calls, call } = harness(config, { killSwitch: () => 'readonly' });
    assert.equal(codeOf(await call('alice', ...WRITE)), 'WARDEN_READ_ONLY_MODE');
    assert.equal(codeOf(await call('alice', ...DESTRUCTIVE)), 'WARDEN_READ_ONLY_MODE');
    assert.equal(codeOf(await call('alice', ...READ)), 'result');
    assert.equal(codeOf(await call('alice', 'notes__list_notes', {})), 'result');
    assert.deepEqual(calls, ['echo', 'list_notes']);
  });

  it('an ungranted or unknown tool is still WARDEN_TOOL_NOT_FOUND under the switch, so it cannot be used to probe', async () => {
    const off = harness(config);
    const expected = await off.call('reader', ...WRITE);
    assert.equal(codeOf(expected), 'WARDEN_TOOL_NOT_FOUND');
    for (const state of ['readonly', 'on'] as const) {
      const { calls, call } = harness(config, { killSwitch: () => state });
      const ungranted = await call('reader', ...WRITE);
      assert.deepEqual(ungranted, expected, `${state}: the same answer as with the switch off`);
      assert.equal(codeOf(await call('reader', ...DESTRUCTIVE)), 'WARDEN_TOOL_NOT_FOUND', state);
      assert.equal(codeOf(await call('alice', 'notes__nope', {})), 'WARDEN_TOOL_NOT_FOUND', state);
      assert.deepEqual(calls, []);
    }
  });

  it('is read on every call: turning it on and off takes effect without rebuilding the pipeline', async () => {
    let state: KillSwitchState = 'off';
    const { calls, call } = harness(config, { killSwitch: () => state });
    assert.equal(codeOf(await call('alice', ...READ)), 'result');
    state = 'on';
    assert.equal(codeOf(await call('alice', ...READ)), 'WARDEN_KILL_SWITCH');
    state = 'readonly';
    assert.equal(codeOf(await call('alice', ...READ)), 'result');
    assert.equal(codeOf(await call('alice', 'notes__add_note', { title: 'a', body: 'b' })), 'WARDEN_READ_ONLY_MODE');
    state = 'off';
    assert.equal(codeOf(await call('alice', 'notes__add_note', { title: 'a', body: 'b' })), 'result');
    assert.deepEqual(calls, ['echo', 'echo', 'add_note']);
  });

  it('a write already recorded is not replayed while the switch is on', async () => {
    let state: KillSwitchState = 'off';
    const { calls, call } = harness(config, { killSwitch: () => state });
    assert.equal(codeOf(await call('alice', ...WRITE)), 'result');
    state = 'on';
    assert.equal(codeOf(await call('alice', ...WRITE)), 'WARDEN_KILL_SWITCH');
    assert.equal(calls.length, 1);
  });

  it('calls refused by the switch use none of the agent\'s rate', async () => {
    let state: KillSwitchState = 'on';
    const { call } = harness(config, { killSwitch: () => state });
    for (let i = 0; i < 5; i++) assert.equal(codeOf(await call('capped', ...READ)), 'WARDEN_KILL_SWITCH');
    state = 'off';
    assert.equal(codeOf(await call('capped', ...READ)), 'result');
    assert.equal(codeOf(await call('capped', ...READ)), 'result');
    assert.equal(codeOf(await call('capped', ...READ)), 'WARDEN_RATE_LIMITED');
  });

  it('a write held for approval when the switch goes on (or readonly) does not run once approved', async () => {
    for (const switched of ['on', 'readonly'] as const) {
      let state: KillSwitchState = 'off';
      const h = harness(config, { killSwitch: () => state });
      const held = await holdForApproval(h, 'gated', 'notes__add_note', { title: switched, body: 'b' });
      state = switched;
      const { outcome, approvalId } = await held.approve();
      assert.deepEqual(h.calls, [], `kill switch ${switched}: the approved write must not run (got ${codeOf(outcome)})`);
      assert.equal(codeOf(outcome), switched === 'on' ? 'WARDEN_KILL_SWITCH' : 'WARDEN_READ_ONLY_MODE');
      assert.equal(h.callRecords()[0]?.['killSwitch'], switched, 'the audit record says the switch refused it');
      assert.equal(h.callRecords()[0]?.decision, 'deny');
      assert.equal(h.state.approvals.get(approvalId)?.status, 'approved', 'the approval was not used: the call was never sent');
    }
  });
});

describe('a grant revoked while the call is held', () => {
  /** Holds gated's call for approval, swaps the live config, approves, and returns how the held call ended. */
  async function heldThenReloaded(tool: string, args: Record<string, unknown>, next: WardenConfig) {
    let live = config;
    const h = harness(config, { liveConfig: () => live });
    const held = await holdForApproval(h, 'gated', tool, args);
    live = next; // a reload while the call waits
    return { h, ...(await held.approve()) };
  }

  for (const [what, next] of [
    ['the grant', withoutGrant],
    ['the agent', withoutAgent],
  ] as const) {
    it(`a new config without ${what} refuses the approved write with WARDEN_TOOL_NOT_FOUND; it does not run`, async () => {
      const { h, outcome, approvalId } = await heldThenReloaded(WRITE[0], WRITE[1], next);
      assert.deepEqual(h.calls, [], `the revoked write ran (got ${codeOf(outcome)})`);
      assert.equal(codeOf(outcome), 'WARDEN_TOOL_NOT_FOUND');
      // The same answer as a call the new config never granted: nothing tells the agent it was revoked.
      assert.deepEqual(outcome, await harness(next).call('reader', ...WRITE));
      const record = h.callRecords()[0];
      assert.equal(record?.decision, 'deny');
      assert.equal(record?.reason, 'WARDEN_TOOL_NOT_FOUND');
      assert.equal(record?.['cause'], 'revoked-during-call');
      assert.equal(record?.['dispatched'], undefined);
      assert.equal(h.state.approvals.get(approvalId)?.status, 'approved', 'a call never sent does not use its approval');
    });
  }

  it('a read tool whose grant was revoked while held does not run either', async () => {
    const { h, outcome } = await heldThenReloaded('notes__list_notes', {}, withoutGrant);
    assert.equal(codeOf(outcome), 'WARDEN_TOOL_NOT_FOUND');
    assert.deepEqual(h.calls, []);
    assert.equal(h.callRecords()[0]?.['cause'], 'revoked-during-call');
  });

  it('a new config that still grants the call lets it run once approved', async () => {
    const { h, outcome, approvalId } = await heldThenReloaded(WRITE[0], WRITE[1], reloadedSame);
    assert.equal(codeOf(outcome), 'result');
    assert.deepEqual(h.calls, ['add_note']);
    assert.equal(h.callRecords()[0]?.['cause'], undefined);
    assert.equal(h.state.approvals.get(approvalId)?.status, 'used');
    // withoutGrant keeps echo for gated: that call still runs after the reload.
    const kept = await heldThenReloaded(...READ, withoutGrant);
    assert.equal(codeOf(kept.outcome), 'result');
    assert.deepEqual(kept.h.calls, ['echo']);
  });
});

describe('rate limits', () => {
  it('an agent\'s perMinute refuses its third call with WARDEN_RATE_LIMITED, when to retry, and the agent scope in the audit', async () => {
    const { calls, call, callRecords } = harness(config);
    assert.equal(codeOf(await call('capped', ...READ)), 'result');
    assert.equal(codeOf(await call('capped', 'notes__list_notes', {})), 'result');
    const third = await call('capped', ...READ);
    assert.equal(codeOf(third), 'WARDEN_RATE_LIMITED');
    assert.ok(third.kind === 'refused');
    assert.ok((third.hints?.retryAfterMs ?? 0) > 0, 'hints.retryAfterMs > 0');
    assert.match(third.message, /this agent \(2 calls per minute\)/);
    const record = callRecords()[2];
    assert.equal(record?.decision, 'deny');
    assert.equal(record?.reason, 'WARDEN_RATE_LIMITED');
    assert.deepEqual(record?.['limit'], { scope: 'agent', kind: 'rate', limit: 2, retryAfterMs: third.hints?.retryAfterMs });
    assert.deepEqual(calls, ['echo', 'list_notes']);
    // Other agents have their own allowance.
    assert.equal(codeOf(await call('alice', ...READ)), 'result');
  });

  it('a rateLimits.tools entry limits that tool only, for all agents together', async () => {
    const { calls, call, callRecords } = harness(echoLimited);
    assert.equal(codeOf(await call('alice', ...READ)), 'result');
    const again = await call('alice', ...READ);
    assert.equal(codeOf(again), 'WARDEN_RATE_LIMITED');
    assert.ok(again.kind === 'refused' && (again.hints?.retryAfterMs ?? 0) > 0);
    assert.equal((callRecords()[1]?.['limit'] as { scope?: string } | undefined)?.scope, 'tool');
    assert.equal(codeOf(await call('bob', ...READ)), 'WARDEN_RATE_LIMITED', 'the tool limit counts every agent');
    for (let i = 0; i < 3; i++) assert.equal(codeOf(await call('alice', 'notes__list_notes', {})), 'result', 'other tools are not limited by it');
    assert.deepEqual(calls, ['echo', 'list_notes', 'list_notes', 'list_notes']);
  });

  it('a refused call uses no token: the agent\'s allowance is untouched by a call the tool limit refused', async () => {
    // capped: 2 per minute for the agent; echo: 1 per minute for the tool.
    const { calls, call, callRecords } = harness(echoLimited);
    assert.equal(codeOf(await call('capped', ...READ)), 'result'); // agent 1 left, echo 0 left
    assert.equal(codeOf(await call('capped', ...READ)), 'WARDEN_RATE_LIMITED'); // refused by the tool limit
    assert.equal((callRecords()[1]?.['limit'] as { scope?: string } | undefined)?.scope, 'tool');
    assert.equal(codeOf(await call('capped', 'notes__list_notes', {})), 'result', 'the refused call gave its agent token back');
    const fourth = await call('capped', 'notes__list_notes', {});
    assert.equal(codeOf(fourth), 'WARDEN_RATE_LIMITED');
    assert.equal((callRecords()[3]?.['limit'] as { scope?: string } | undefined)?.scope, 'agent');
    assert.deepEqual(calls, ['echo', 'list_notes']);
  });

  it('concurrent: 1 refuses a second call while the first is in flight, and admits one after it ends', async () => {
    const gate = Promise.withResolvers<unknown>();
    let slow = true;
    const { calls, call, callRecords } = harness(oneAtATime, { behaviour: (tool) => (slow ? gate.promise : ok(tool, {})) });
    const first = call('alice', ...READ);
    assert.ok(await waitFor(() => calls.length === 1, 400, 5), 'the first call is in flight');
    const second = await call('bob', 'notes__list_notes', {});
    assert.equal(codeOf(second), 'WARDEN_RATE_LIMITED');
    assert.ok(second.kind === 'refused' && (second.hints?.retryAfterMs ?? 0) > 0);
    assert.deepEqual(callRecords()[0]?.['limit'], { scope: 'global', kind: 'concurrency', limit: 1, retryAfterMs: second.kind === 'refused' ? second.hints?.retryAfterMs : undefined });
    assert.equal(calls.length, 1);
    slow = false;
    gate.resolve({ content: [{ type: 'text', text: 'first' }] });
    assert.equal(codeOf(await first), 'result');
    assert.equal(codeOf(await call('bob', 'notes__list_notes', {})), 'result', 'the slot is free again');
    assert.deepEqual(calls, ['echo', 'list_notes']);
  });

  it('an agent\'s concurrent limit holds that agent only', async () => {
    const gate = Promise.withResolvers<unknown>();
    const { calls, call, callRecords } = harness(config, { behaviour: (tool) => (tool === 'echo' ? gate.promise : ok(tool, {})) });
    const first = call('single', ...READ);
    assert.ok(await waitFor(() => calls.length === 1, 400, 5));
    assert.equal(codeOf(await call('single', 'notes__list_notes', {})), 'WARDEN_RATE_LIMITED');
    assert.deepEqual(callRecords()[0]?.['limit'], { scope: 'agent', kind: 'concurrency', limit: 1, retryAfterMs: 1000 });
    assert.equal(codeOf(await call('alice', 'notes__list_notes', {})), 'result');
    gate.resolve({ content: [{ type: 'text', text: 'x' }] });
    assert.equal(codeOf(await first), 'result');
    assert.equal(codeOf(await call('single', 'notes__list_notes', {})), 'result');
  });

  it('a call refused after admission (bad arguments, tool error) frees its slot', async () => {
    const { calls, call } = harness(oneAtATime, {
      behaviour: async () => {
        throw new Error('downstream exploded');
      },
    });
    assert.equal(codeOf(await call('alice', 'notes__echo', { text: 42 })), 'WARDEN_ARGUMENTS_INVALID');
    assert.equal(codeOf(await call('alice', ...READ)), 'WARDEN_INTERNAL');
    assert.equal(calls.length, 1);
    assert.equal(codeOf(await call('alice', 'notes__echo', { text: 'again' })), 'WARDEN_INTERNAL', 'not WARDEN_RATE_LIMITED: the slot was freed');
    assert.equal(calls.length, 2);
  });

  it('a call held for approval holds its agent\'s slot until it ends (here: cancelled), but none of the broker\'s', async () => {
    const { calls, call, deps, callRecords } = harness(oneAtATime);
    const controller = new AbortController();
    const held = call('gatedsingle', 'notes__add_note', note, { signal: controller.signal });
    assert.ok(await waitFor(() => deps.approvals.held === 1, 400, 5));
    // The broker's one slot is not taken by a call waiting for a person: other agents still run.
    assert.equal(codeOf(await call('alice', ...READ)), 'result');
    // Its agent's is: a second call of that agent is refused while the first waits.
    assert.equal(codeOf(await call('gatedsingle', 'notes__list_notes', {})), 'WARDEN_RATE_LIMITED');
    assert.deepEqual(callRecords()[1]?.['limit'], { scope: 'agent', kind: 'concurrency', limit: 1, retryAfterMs: 1000 });
    controller.abort();
    assert.equal(codeOf(await held), 'WARDEN_CALL_CANCELLED');
    // Ended, it frees its agent's slot (the next call asks for approval: not a rate limit).
    assert.equal(codeOf(await call('gatedsingle', 'notes__list_notes', {}, { signal: AbortSignal.timeout(50) })), 'WARDEN_CALL_CANCELLED');
    assert.deepEqual(calls, ['echo']);
  });

  it('an approved call refused by the tool\'s limit before it is sent keeps its approval: the identical retry runs on it', async () => {
    const gate = Promise.withResolvers<unknown>();
    const { calls, call, state, callRecords } = harness(addNoteSingle, { behaviour: (tool, args) => (args['title'] === 'slow' ? gate.promise : ok(tool, args)) });
    // alice's add_note holds the tool's one slot.
    const busy = call('alice', 'notes__add_note', { title: 'slow', body: 'b' });
    assert.ok(await waitFor(() => calls.length === 1, 400, 5));
    const pending = await call('gated', ...WRITE);
    assert.equal(codeOf(pending), 'WARDEN_APPROVAL_PENDING', 'waiting for a person takes no tool slot');
    const id = pending.kind === 'refused' ? pending.hints?.approvalId : undefined;
    assert.ok(id);
    state.approvals.decide(id, 'approved', 'carol', '', Date.now());
    const limited = await call('gated', ...WRITE);
    assert.equal(codeOf(limited), 'WARDEN_RATE_LIMITED');
    assert.equal((callRecords().at(-1)?.['limit'] as { scope?: string } | undefined)?.scope, 'tool');
    assert.equal(state.approvals.get(id)?.status, 'approved', 'refused on the way: the approval is left for the retry');
    assert.equal(calls.length, 1);
    gate.resolve({ content: [{ type: 'text', text: 'slow done' }] });
    assert.equal(codeOf(await busy), 'result');
    const retry = await call('gated', ...WRITE);
    assert.equal(codeOf(retry), 'result', 'not WARDEN_OUTCOME_UNKNOWN, not a new approval');
    assert.deepEqual(calls, ['add_note', 'add_note']);
    assert.equal(state.approvals.get(id)?.status, 'used');
  });
});
