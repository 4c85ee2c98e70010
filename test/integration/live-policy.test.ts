import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Client, type ElicitResult } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { pino } from 'pino';
import { Broker } from '../../src/broker.ts';
import { loadConfig } from '../../src/config/load.ts';
import { ConfigReloader } from '../../src/config/reload.ts';
import { openStateStore } from '../../src/state/store.ts';
import type { KillSwitchState } from '../../src/state/switches.ts';
import { CLI, NOTES_SERVER, NOTES_TOOLS, refusalCode, stdioManifest, tempDir, textOf, waitFor, writeConfig, writeManifest } from '../helpers.ts';

const { dir, cleanup } = tempDir();
after(cleanup);
writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS, { era: 'legacy' }));

const READS = ['notes__echo', 'notes__get_note', 'notes__list_notes', 'notes__search_notes'];

function policy(extra: Record<string, unknown> = {}, grants: unknown[] = [{ tools: READS }, { tools: ['notes__add_note'], access: ['write'] }]) {
  return {
    version: 1,
    servers: { notes: { manifest: 'notes.json' } },
    agents: { a: { allow: grants } },
    ...extra,
  };
}

/** A stdio agent that counts list_changed and, when given an answer, can be asked for approval. */
async function connect(config: string, options: { era?: 'legacy' | 'auto'; answer?: () => ElicitResult } = {}) {
  const client = new Client(
    { name: 'live-policy-test', version: '1.0.0' },
    { versionNegotiation: { mode: options.era ?? 'legacy' }, capabilities: options.answer ? { elicitation: { form: {} } } : {} },
  );
  const seen = { listChanged: 0, asked: [] as string[] };
  client.setNotificationHandler('notifications/tools/list_changed', async () => {
    seen.listChanged++;
  });
  if (options.answer) {
    const answer = options.answer;
    client.setRequestHandler('elicitation/create', async (request) => {
      seen.asked.push(String((request.params as { message?: string }).message));
      return answer();
    });
  }
  const transport = new StdioClientTransport({ command: process.execPath, args: [CLI, 'serve', '--config', config, '--stdio', '--agent', 'a'], env: { PATH: process.env['PATH'] ?? '' }, stderr: 'ignore' });
  await client.connect(transport);
  return { client, seen, pid: transport.pid, names: async () => (await client.listTools()).tools.map((tool) => tool.name).sort() };
}

function setKillSwitch(stateDir: string, state: KillSwitchState): void {
  const store = openStateStore(stateDir, 'read-write');
  try {
    store.killSwitch.set(state, 'test', Date.now());
  } finally {
    store.close();
  }
}

describe('kill switch on a running broker', () => {
  const config = writeConfig(join(dir, 'kill.yaml'), policy({ state: { dir: 'state-kill' } }));
  const stateDir = join(dir, 'state-kill');

  it('on empties the list (with list_changed) and refuses every call; readonly keeps reads; off restores; a restart keeps it', async () => {
    const agent = await connect(config);
    try {
      const all = await agent.names();
      assert.deepEqual(all, [...READS, 'notes__add_note'].sort());
      setKillSwitch(stateDir, 'on');
      assert.ok(await waitFor(() => agent.seen.listChanged >= 1, 100, 50), 'the agent is told its list changed');
      assert.deepEqual(await agent.names(), []);
      assert.equal(refusalCode(await agent.client.callTool({ name: 'notes__echo', arguments: { text: 'x' } })), 'WARDEN_KILL_SWITCH');

      setKillSwitch(stateDir, 'readonly');
      assert.ok(await waitFor(() => agent.seen.listChanged >= 2, 100, 50));
      assert.deepEqual(await agent.names(), READS);
      assert.equal(textOf(await agent.client.callTool({ name: 'notes__echo', arguments: { text: 'read' } })), 'read');
      assert.equal(refusalCode(await agent.client.callTool({ name: 'notes__add_note', arguments: { title: 't', body: 'b' } })), 'WARDEN_READ_ONLY_MODE');

      setKillSwitch(stateDir, 'on');
      assert.ok(await waitFor(() => agent.seen.listChanged >= 3, 100, 50));
    } finally {
      await agent.client.close();
    }
    // A new broker process reads the switch from the state store before it serves.
    const restarted = await connect(config);
    try {
      assert.deepEqual(await restarted.names(), []);
      assert.equal(refusalCode(await restarted.client.callTool({ name: 'notes__echo', arguments: { text: 'x' } })), 'WARDEN_KILL_SWITCH');
      setKillSwitch(stateDir, 'off');
      assert.ok(await waitFor(() => restarted.seen.listChanged >= 1, 100, 50));
      assert.deepEqual(await restarted.names(), [...READS, 'notes__add_note'].sort());
      assert.equal(textOf(await restarted.client.callTool({ name: 'notes__echo', arguments: { text: 'back' } })), 'back');
    } finally {
      await restarted.client.close();
    }
  });
});

describe('live config edits', () => {
  it('a valid edit is swapped in with list_changed; invalid, half-written and restart-only edits are refused and audited', async () => {
    const file = join(dir, 'live.yaml');
    writeConfig(file, policy({ state: { dir: 'state-live' }, audit: { file: 'audit-live.jsonl' } }));
    const agent = await connect(file);
    try {
      assert.deepEqual(await agent.names(), [...READS, 'notes__add_note'].sort());

      writeConfig(file, policy({ state: { dir: 'state-live' }, audit: { file: 'audit-live.jsonl' } }, [{ tools: ['notes__echo'] }]));
      assert.ok(await waitFor(() => agent.seen.listChanged >= 1, 200, 50), 'list_changed after the edit');
      assert.deepEqual(await agent.names(), ['notes__echo']);
      assert.equal(refusalCode(await agent.client.callTool({ name: 'notes__get_note', arguments: { id: 1 } })), 'WARDEN_TOOL_NOT_FOUND');

      const good = readFileSync(file, 'utf8');
      const refusals = () => audit(dir, 'audit-live.jsonl').filter((line) => line['event'] === 'config.refused');
      // Half-written: the file cut in the middle (it lacks the agents), each edit read before the next.
      writeFileSync(file, good.slice(0, Math.floor(good.length / 2)));
      assert.ok(await waitFor(() => refusals().length >= 1, 200, 50), 'the half-written file is refused');
      assert.ok(['WARDEN_CONFIG_INVALID', 'WARDEN_CONFIG_UNREADABLE'].includes(String(refusals()[0]?.['reason'])), String(refusals()[0]?.['reason']));
      // Schema-invalid.
      writeFileSync(file, good.replace('version: 1', 'version: 2'));
      assert.ok(await waitFor(() => refusals().length >= 2, 200, 50), 'the invalid file is refused');
      assert.equal(refusals()[1]?.['reason'], 'WARDEN_CONFIG_INVALID');
      // A setting that needs a restart.
      writeConfig(file, policy({ state: { dir: 'state-live' }, audit: { file: 'elsewhere.jsonl' } }, [{ tools: ['*'], access: ['read', 'write', 'destructive'] }]));
      assert.ok(await waitFor(() => refusals().length >= 3, 200, 50), 'the restart-only change is refused');
      assert.equal(refusals()[2]?.['reason'], 'WARDEN_RELOAD_REFUSED');
      assert.match(String(refusals()[2]?.['message']), /: audit changed; that needs a restart/, 'and says which setting');
      assert.deepEqual(await agent.names(), ['notes__echo'], 'the previous config stands');
      assert.equal(agent.seen.listChanged, 1);
      const reloads = audit(dir, 'audit-live.jsonl').filter((line) => line['event'] === 'config.reloaded');
      assert.equal(reloads.length, 1);
      assert.match(String(reloads[0]?.['fromSha256']), /^[0-9a-f]{64}$/);
      assert.notEqual(reloads[0]?.['fromSha256'], reloads[0]?.['toSha256']);
    } finally {
      await agent.client.close();
    }
  });

  it('SIGHUP makes a running broker load a newly signed release, with the same config text', async () => {
    const file = writeConfig(join(dir, 'hup.yaml'), { ...policy({ state: { dir: 'state-hup' }, audit: { file: 'audit-hup.jsonl' } }), servers: { notes: { manifest: 'hup.json', name: 'test.notes' } } });
    writeManifest(join(dir, 'manifests/hup.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS, { era: 'legacy' }));
    const agent = await connect(file);
    try {
      assert.equal(typeof agent.pid, 'number');
      const withoutEcho = NOTES_TOOLS.map((tool) => (tool['name'] === 'echo' ? { ...tool, description: 'Return the text unchanged, as signed in release 2.' } : tool));
      writeManifest(join(dir, 'manifests/hup.json'), { ...stdioManifest('notes', NOTES_SERVER, withoutEcho, { era: 'legacy' }), serial: 2 });
      process.kill(agent.pid!, 'SIGHUP');
      const reloaded = () => audit(dir, 'audit-hup.jsonl').some((line) => line['event'] === 'config.reloaded');
      assert.ok(await waitFor(reloaded, 200, 50), 'the signal reloads');
      assert.ok(audit(dir, 'audit-hup.jsonl').some((line) => line['event'] === 'manifest.accepted' && line['serial'] === 2));
      // Release 2 signs a description the live server does not send: the new backend quarantines it.
      assert.ok(await waitFor(async () => (await agent.names()).length === 0, 200, 50), 'the new release is what is enforced');
    } finally {
      await agent.client.close();
    }
  });

  it('reload on signal re-reads the manifests: a new signed release is started, the old server stopped', async () => {
    const file = writeConfig(join(dir, 'signal.yaml'), { ...policy({ state: { dir: 'state-signal' } }), servers: { notes: { manifest: 'signal.json', name: 'test.notes' } } });
    writeManifest(join(dir, 'manifests/signal.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS, { era: 'legacy' }));
    const broker = new Broker(loadConfig(file, { state: 'read-write' }), { logger: pino({ level: 'silent' }), audit: 'memory' });
    await broker.start();
    const reloader = new ConfigReloader(broker, file);
    try {
      assert.equal((await reloader.reload('file')).outcome, 'unchanged', 'same text, no signal: nothing to do');
      const first = broker.backends.get('notes');
      const same = await reloader.reload('signal');
      assert.equal(same.outcome, 'applied');
      assert.equal(broker.backends.get('notes'), first, 'an unchanged release keeps running');
      writeManifest(join(dir, 'manifests/signal.json'), { ...stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS, { era: 'legacy' }), serial: 2 });
      const next = await reloader.reload('signal');
      assert.ok(next.outcome === 'applied' && next.started.includes('notes') && next.stopped.includes('notes'), JSON.stringify(next));
      assert.notEqual(broker.backends.get('notes'), first);
      assert.equal(broker.config.servers.get('notes')?.serial, 2);
      assert.equal(textOf(await broker.callTool('a', 'notes__echo', { text: 'new release' })), 'new release');
    } finally {
      reloader.close();
      await broker.close();
    }
  });
});

describe('out-of-band decisions in the audit trail', () => {
  it('a decision made with the approvals command is audited by the broker, even when no call waits for it', async () => {
    const file = writeConfig(join(dir, 'decided.yaml'), policy({ state: { dir: 'state-decided' }, approvals: { waitSeconds: 0 } }, [{ tools: READS }, { tools: ['notes__add_note'], access: ['write'], approval: 'required' }]));
    const broker = new Broker(loadConfig(file, { state: 'read-write' }), { logger: pino({ level: 'silent' }), audit: 'memory' });
    await broker.start();
    try {
      const pending = await broker.callTool('a', 'notes__add_note', { title: 'audited', body: 'b' });
      assert.equal(refusalCode(pending), 'WARDEN_APPROVAL_PENDING');
      const id = (pending._meta?.['mcp-warden/refusal'] as { approvalId?: string }).approvalId;
      assert.match(String(id), /^ap_/);
      const other = openStateStore(join(dir, 'state-decided'), 'read-write');
      try {
        other.approvals.decide(String(id), 'denied', 'carol', 'not today', Date.now());
      } finally {
        other.close();
      }
      const records = (broker.audit as unknown as { records: Record<string, unknown>[] }).records;
      assert.ok(await waitFor(() => records.some((record) => record['event'] === 'approval.decided'), 100, 50), 'the broker notices and audits the decision');
      const decided = records.find((record) => record['event'] === 'approval.decided');
      assert.deepEqual({ id: decided?.['id'], verdict: decided?.['verdict'], by: decided?.['by'], reason: decided?.['reason'], agent: decided?.['agent'] }, { id, verdict: 'denied', by: 'carol', reason: 'not today', agent: 'a' });
      broker.refreshState();
      assert.equal(records.filter((record) => record['event'] === 'approval.decided').length, 1, 'audited once');
      assert.ok(records.some((record) => record['event'] === 'approval.requested' && record['id'] === id));
    } finally {
      await broker.close();
    }
  });

  it('a decision made while no broker runs is audited when one starts, and only once', async () => {
    const file = writeConfig(join(dir, 'offline.yaml'), policy({ state: { dir: 'state-offline' }, approvals: { waitSeconds: 0 } }, [{ tools: READS }, { tools: ['notes__add_note'], access: ['write'], approval: 'required' }]));
    const start = async () => {
      const broker = new Broker(loadConfig(file, { state: 'read-write' }), { logger: pino({ level: 'silent' }), audit: 'memory' });
      await broker.start();
      return { broker, decided: () => (broker.audit as unknown as { records: Record<string, unknown>[] }).records.filter((record) => record['event'] === 'approval.decided') };
    };
    const first = await start();
    const pending = await first.broker.callTool('a', 'notes__add_note', { title: 'offline', body: 'b' });
    const id = String((pending._meta?.['mcp-warden/refusal'] as { approvalId?: string }).approvalId);
    await first.broker.close();
    const operator = openStateStore(join(dir, 'state-offline'), 'read-write');
    try {
      operator.approvals.decide(id, 'approved', 'dave', 'checked by phone', Date.now());
    } finally {
      operator.close();
    }
    const second = await start();
    try {
      assert.deepEqual(second.decided().map((record) => [record['id'], record['verdict'], record['by']]), [[id, 'approved', 'dave']]);
    } finally {
      await second.broker.close();
    }
    const third = await start();
    try {
      third.broker.refreshState();
      assert.deepEqual(third.decided(), [], 'already audited by the previous start');
    } finally {
      await third.broker.close();
    }
  });
});

describe('in-band approval (approval: user)', () => {
  const grants = [{ tools: READS }, { tools: ['notes__add_note'], access: ['write'], approval: 'user' }];
  const config = writeConfig(join(dir, 'user.yaml'), policy({ state: { dir: 'state-user' } }, grants));

  for (const era of ['legacy', 'auto'] as const) {
    it(`the host's user is asked (${era === 'legacy' ? '2025' : '2026-07-28'} era); yes runs the call once, no refuses it`, async () => {
      let answer: ElicitResult = { action: 'accept', content: { approve: true } };
      const agent = await connect(config, { era, answer: () => answer });
      try {
        const yes = await agent.client.callTool({ name: 'notes__add_note', arguments: { title: `asked ${era}`, body: 'b' } });
        assert.equal(yes.isError, undefined, JSON.stringify(yes));
        assert.equal(agent.seen.asked.length, 1);
        assert.match(agent.seen.asked[0] ?? '', new RegExp(`notes__add_note[\\s\\S]*asked ${era}`));
        answer = { action: 'decline' };
        const no = await agent.client.callTool({ name: 'notes__add_note', arguments: { title: `declined ${era}`, body: 'b' } });
        assert.equal(refusalCode(no), 'WARDEN_APPROVAL_DENIED');
        answer = { action: 'accept', content: { approve: false } };
        assert.equal(refusalCode(await agent.client.callTool({ name: 'notes__add_note', arguments: { title: `unticked ${era}`, body: 'b' } })), 'WARDEN_APPROVAL_DENIED');
        const listed = textOf(await agent.client.callTool({ name: 'notes__list_notes', arguments: {} }));
        assert.match(listed, new RegExp(`asked ${era}`));
        assert.doesNotMatch(listed, /declined|unticked/);
      } finally {
        await agent.client.close();
      }
    });
  }

  it('a host that cannot ask is refused (fallback refuse), never approved silently', async () => {
    const agent = await connect(config);
    try {
      assert.equal(refusalCode(await agent.client.callTool({ name: 'notes__add_note', arguments: { title: 'silent', body: 'b' } })), 'WARDEN_APPROVAL_UNAVAILABLE');
    } finally {
      await agent.client.close();
    }
  });
});

function audit(folder: string, name: string): Record<string, unknown>[] {
  try {
    return readFileSync(join(folder, name), 'utf8').trim().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>);
  } catch {
    return [];
  }
}
