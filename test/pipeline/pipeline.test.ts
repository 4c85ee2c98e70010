import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { memoryAuditTrail } from '../../src/audit/trail.ts';
import { loadConfig } from '../../src/config/load.ts';
import { WardenError } from '../../src/errors.ts';
import { buildCallPipeline, CALL_STAGES } from '../../src/pipeline/pipeline.ts';
import type { StageFactory } from '../../src/pipeline/types.ts';
import { NOTES_SERVER, NOTES_TOOLS, stdioManifest, tempDir, writeConfig, writeManifest } from '../helpers.ts';
import { type Behaviour, fakeBackend, harness, pipelineDeps, stateStoresIn } from './harness.ts';

const { dir, cleanup } = tempDir();
after(cleanup);
writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
const config = loadConfig(
  writeConfig(join(dir, 'warden.yaml'), {
    version: 1,
    servers: { notes: { manifest: 'notes.json' } },
    agents: {
      alice: { allow: [{ tools: ['notes__*'] }] },
      writer: { allow: [{ tools: ['notes__*'], access: ['read', 'write'] }] },
    },
  }),
);
assert.deepEqual([...config.rejected.keys()], [], 'the signed notes manifest is accepted');
const state = stateStoresIn(dir).open();

function setup(behaviour: Behaviour, stages: readonly StageFactory[] = CALL_STAGES) {
  const { audit, tools, call } = harness(config, state, behaviour, { stages, instanceId: 'test' });
  return { audit, calls: tools, call };
}

const ok = async () => ({ content: [{ type: 'text', text: 'done' }] });

describe('call pipeline', () => {
  it('dispatches an allowed read and records it without argument values', async () => {
    const { audit, calls, call } = setup(ok);
    const outcome = await call('alice', 'notes__echo', { text: 'secret value' });
    assert.equal(outcome.kind, 'result');
    assert.deepEqual(calls, ['echo']);
    // The write-ahead record just before sending, then the outcome, with one correlation id.
    assert.deepEqual(audit.records.map((r) => r.event), ['tools/call.dispatch', 'tools/call']);
    assert.equal(audit.records[0]?.correlationId, audit.records[1]?.correlationId);
    assert.equal(audit.records[0]?.argsSha256, audit.records[1]?.argsSha256);
    const record = audit.records[1];
    assert.equal(record?.decision, 'allow');
    assert.equal(record?.outcome, 'ok');
    assert.equal(record?.server, 'notes');
    assert.match(String(record?.argsSha256), /^[0-9a-f]{64}$/);
    assert.ok(!JSON.stringify(audit.records).includes('secret value'));
  });

  it('an unknown tool and an ungranted tool get the same refusal; only the audit tells them apart', async () => {
    const { audit, calls, call } = setup(ok);
    const unknown = await call('alice', 'notes__nope');
    const denied = await call('alice', 'notes__add_note', { title: 't', body: 'b' });
    assert.equal(unknown.kind, 'refused');
    assert.equal(denied.kind, 'refused');
    if (unknown.kind === 'refused' && denied.kind === 'refused') {
      assert.equal(unknown.code, 'WARDEN_TOOL_NOT_FOUND');
      assert.equal(denied.code, 'WARDEN_TOOL_NOT_FOUND');
      assert.equal(unknown.message.replace('notes__nope', 'X'), denied.message.replace('notes__add_note', 'X'));
    }
    assert.deepEqual(calls, []);
    assert.deepEqual(audit.records.map((r) => [r.decision, r['cause']]), [['deny', 'unknown-tool'], ['deny', 'not-granted']]);
  });

  it('a write needs a grant that names write', async () => {
    const { calls, call } = setup(ok);
    assert.equal((await call('writer', 'notes__add_note', { title: 't', body: 'b' })).kind, 'result');
    assert.deepEqual(calls, ['add_note']);
  });

  it('refuses arguments that break the schema, after authorization, without dispatching', async () => {
    const { audit, calls, call } = setup(ok);
    const outcome = await call('alice', 'notes__echo', { text: 42 });
    assert.equal(outcome.kind === 'refused' && outcome.code, 'WARDEN_ARGUMENTS_INVALID');
    assert.ok(outcome.kind === 'refused' && outcome.message.includes('Argument /text must be string (rule: type)'), outcome.kind === 'refused' ? outcome.message : '');
    assert.deepEqual(calls, []);
    assert.deepEqual(audit.records[0]?.['argumentError'], { path: '/text', rule: 'type' });
    // an ungranted tool with bad arguments is still "not found": validation never runs first
    const denied = await call('alice', 'notes__add_note', { title: 42 });
    assert.equal(denied.kind === 'refused' && denied.code, 'WARDEN_TOOL_NOT_FOUND');
  });

  it('refuses an agent that is not in the config', async () => {
    const { call } = setup(ok);
    const outcome = await call('mallory', 'notes__echo', { text: 'x' });
    assert.equal(outcome.kind === 'refused' && outcome.code, 'WARDEN_UNAUTHENTICATED');
  });

  it('keeps a WardenError code from the backend and records the call as allowed but refused', async () => {
    const { audit, call } = setup(async () => {
      throw new WardenError('WARDEN_DOWNSTREAM_TIMEOUT', 'server "notes" did not answer within 5 ms');
    });
    const outcome = await call('alice', 'notes__echo', { text: 'x' });
    assert.equal(outcome.kind === 'refused' && outcome.code, 'WARDEN_DOWNSTREAM_TIMEOUT');
    const record = audit.records.find((r) => r.event === 'tools/call');
    assert.equal(record?.decision, 'allow');
    assert.equal(record?.outcome, 'refused');
  });

  it('fails closed when a stage throws something unexpected, without leaking it', async () => {
    const exploding: StageFactory = () => async () => {
      throw new Error('/etc/secret/path: internal detail');
    };
    const stages = [...CALL_STAGES.slice(0, 3), exploding, ...CALL_STAGES.slice(3)];
    const { calls, call, audit } = setup(ok, stages);
    const outcome = await call('alice', 'notes__echo', { text: 'x' });
    assert.equal(outcome.kind === 'refused' && outcome.code, 'WARDEN_INTERNAL');
    assert.ok(outcome.kind === 'refused' && !outcome.message.includes('/etc/secret'));
    assert.deepEqual(calls, []);
    assert.equal(audit.records[0]?.reason, 'WARDEN_INTERNAL');
  });

  it('refuses every call while the audit trail is unwritable', async () => {
    const audit = { ...memoryAuditTrail(), healthy: false };
    const calls: string[] = [];
    const run = buildCallPipeline(pipelineDeps(config, state, { backends: new Map([['notes', fakeBackend(async (tool) => (calls.push(tool), ok()))]]), audit, instanceId: 'test' }));
    const outcome = await run({ correlationId: 'c', agentName: 'alice', toolName: 'notes__echo', args: {}, startedAt: 0, facts: {}, sendGuards: [] });
    assert.equal(outcome.kind === 'refused' && outcome.code, 'WARDEN_INTERNAL');
    assert.deepEqual(calls, []);
  });

  it('passes on only the payload of a downstream result', async () => {
    const { call } = setup(async () => ({ content: [{ type: 'text', text: 'x' }], _meta: { internal: 'downstream detail' }, isError: false, extra: 1 }));
    const outcome = await call('alice', 'notes__echo', { text: 'x' });
    assert.ok(outcome.kind === 'result');
    assert.deepEqual(outcome.result, { content: [{ type: 'text', text: 'x' }] });
  });
});
