import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { ApprovalRecord } from '../../src/state/approvals.ts';
import { openStateStore } from '../../src/state/store.ts';
import { CLI, connectStdio, NOTES_SERVER, NOTES_TOOLS, refusalCode, stdioManifest, tempDir, textOf, waitFor, writeConfig, writeManifest } from '../helpers.ts';

const { dir, cleanup } = tempDir('warden-approvals-');
after(cleanup);

function run(args: string[]) {
  const result = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
const CONFIG = writeConfig(join(dir, 'warden.yaml'), {
  version: 1,
  servers: { notes: { manifest: 'notes.json' } },
  agents: { a: { allow: [{ tools: ['notes__add_note'], access: ['write'], approval: 'required' }] } },
});
const STATE = join(dir, 'state');

let calls = 0;
/** A pending approval, made the way the broker's approve stage makes one. */
function openApproval(args: Record<string, unknown>, options: { expireMs?: number; now?: number } = {}): ApprovalRecord {
  const store = openStateStore(STATE, 'read-write');
  try {
    const text = JSON.stringify(args);
    const opened = store.approvals.open({
      agent: 'a',
      tool: 'notes__add_note',
      argsDigest: createHash('sha256').update(text).digest('hex'),
      arguments: text,
      kind: 'out-of-band',
      correlationId: `corr-${++calls}`,
      now: options.now ?? Date.now(),
      expireMs: options.expireMs ?? 600_000,
      maxPendingPerAgent: 64,
    });
    assert.ok(opened !== 'backlog' && opened.created);
    return opened.record;
  } finally {
    store.close();
  }
}

function stored(id: string): ApprovalRecord | undefined {
  const store = openStateStore(STATE, 'read-only');
  try {
    return store.approvals.get(id);
  } finally {
    store.close();
  }
}

const first = openApproval({ title: 'first', body: 'one' });
const second = openApproval({ title: 'second', body: 'two' });
const decided = openApproval({ title: 'decided', body: 'three' });
{
  const store = openStateStore(STATE, 'read-write');
  store.approvals.decide(decided.id, 'denied', 'earlier', 'no', Date.now());
  store.close();
}

describe('approvals: command line', () => {
  it('--help explains every subcommand', () => {
    const help = run(['approvals', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: mcp-warden approvals list/);
    for (const word of ['show ID', 'approve ID', 'deny ID', '--reason', '--all', 'Exit']) assert.ok(help.stdout.includes(word), word);
  });

  it('usage errors exit 2 with WARDEN_USAGE and change nothing', () => {
    const cases: string[][] = [
      ['approvals'], // no subcommand
      ['approvals', 'frob', '--config', CONFIG],
      ['approvals', 'list'], // no --config
      ['approvals', 'approve', first.id], // no --config
      ['approvals', 'show', '--config', CONFIG], // no ID
      ['approvals', 'approve', '--config', CONFIG], // no ID
      ['approvals', 'approve', 'ap_NOTANID!', '--config', CONFIG],
      ['approvals', 'approve', 'ap_abc', '--config', CONFIG], // too short
      ['approvals', 'deny', `${first.id}x`, '--config', CONFIG],
      ['approvals', 'approve', first.id, 'extra', '--config', CONFIG],
      ['approvals', 'list', 'extra', '--config', CONFIG],
      ['approvals', 'list', '--config', CONFIG, '--by', 'x'],
      ['approvals', 'show', first.id, '--config', CONFIG, '--all'],
      ['approvals', 'approve', first.id, '--config', CONFIG, '--json'],
      ['approvals', 'approve', first.id, '--config', CONFIG, '--by'], // option without its value
      ['approvals', 'list', '--config', CONFIG, '--no-such-option'],
    ];
    for (const args of cases) {
      const result = run(args);
      assert.equal(result.code, 2, args.join(' '));
      assert.match(result.stderr, /WARDEN_USAGE/, args.join(' '));
    }
    assert.equal(stored(first.id)?.status, 'pending');
  });
});

describe('approvals list and show', () => {
  it('list shows pending approvals only, newest first; --all shows decided ones too', () => {
    const result = run(['approvals', 'list', '--config', CONFIG]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`^${second.id} +pending +out-of-band +agent a +tool notes__add_note +requested \\S+Z +expires \\S+Z$`, 'm'));
    assert.match(result.stdout, /arguments: \{"body":"one","title":"first"\}|arguments: \{"title":"first","body":"one"\}/);
    assert.ok(result.stdout.indexOf(second.id) < result.stdout.indexOf(first.id), 'newest first');
    assert.ok(!result.stdout.includes(decided.id));
    assert.match(result.stdout, /approvals approve\|deny ID --config/);
    const all = run(['approvals', 'list', '--all', '--config', CONFIG]);
    assert.match(all.stdout, new RegExp(`^${decided.id} +denied +out-of-band .* by earlier$`, 'm'));
  });

  it('list --json: every approval as an object, times as ISO, arguments parsed', () => {
    const result = run(['approvals', 'list', '--json', '--all', '--config', CONFIG]);
    assert.equal(result.code, 0);
    const { approvals } = JSON.parse(result.stdout) as { approvals: Record<string, unknown>[] };
    const ids = approvals.map((approval) => approval['id']);
    for (const record of [first, second, decided]) assert.ok(ids.includes(record.id));
    const one = approvals.find((approval) => approval['id'] === first.id);
    assert.deepEqual(one?.['arguments'], { title: 'first', body: 'one' });
    assert.equal(one?.['requestedAt'], new Date(first.requestedAt).toISOString());
    assert.equal(one?.['decidedAt'], null);
    const denied = approvals.find((approval) => approval['id'] === decided.id);
    assert.equal(denied?.['status'], 'denied');
    assert.equal(denied?.['reason'], 'no');
  });

  it('show prints every field and the arguments in full, pretty-printed; an unknown ID is exit 2', () => {
    const result = run(['approvals', 'show', first.id, '--config', CONFIG]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`^approval ${first.id}$`, 'm'));
    assert.match(result.stdout, /^ {2}status: +pending$/m);
    assert.match(result.stdout, /^ {2}agent: +a$/m);
    assert.match(result.stdout, /^ {2}tool: +notes__add_note$/m);
    assert.match(result.stdout, new RegExp(`^  requested at: +${new Date(first.requestedAt).toISOString()}$`, 'm'));
    assert.match(result.stdout, new RegExp(`^  expires at: +${new Date(first.expiresAt).toISOString()}$`, 'm'));
    assert.match(result.stdout, new RegExp(`^  correlation id: +${first.correlationId}$`, 'm'));
    assert.match(result.stdout, new RegExp(`^  arguments sha256: +${first.argsDigest}$`, 'm'));
    assert.match(result.stdout, /^ {4}\{\n {6}"title": "first",\n {6}"body": "one"\n {4}\}$/m);
    const json = JSON.parse(run(['approvals', 'show', first.id, '--json', '--config', CONFIG]).stdout);
    assert.equal(json.id, first.id);
    assert.equal(json.status, 'pending');
    const unknown = run(['approvals', 'show', 'ap_aaaaaaaaaa', '--config', CONFIG]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /WARDEN_USAGE: there is no approval ap_aaaaaaaaaa/);
  });

  it('arguments from the agent are shown with invisible and control characters escaped', () => {
    // A right-to-left override could make "rm /etc" read as something harmless.
    const hostile = openApproval({ title: 'safe\u202e cte/ mr', body: 'bell\u0007 zero\u200bwidth \u001b[2J' });
    const result = run(['approvals', 'show', hostile.id, '--config', CONFIG]);
    assert.equal(result.code, 0);
    assert.ok(!/[\u202e\u200b\u0007\u001b]/u.test(result.stdout), result.stdout);
    assert.match(result.stdout, /safe\\u202e cte\/ mr/);
    assert.match(result.stdout, /zero\\u200bwidth/);
    const listed = run(['approvals', 'list', '--config', CONFIG]);
    assert.ok(!/[\u202e\u200b\u0007\u001b]/u.test(listed.stdout));
    // The JSON stays valid and means the same.
    const json = JSON.parse(run(['approvals', 'show', hostile.id, '--json', '--config', CONFIG]).stdout);
    assert.equal(json.arguments.title, 'safe\u202e cte/ mr');
  });
});

describe('approvals approve and deny', () => {
  it('approve records the decision and says what happens next; approving again is exit 11', () => {
    const result = run(['approvals', 'approve', first.id, '--config', CONFIG, '--by', 'alice', '--reason', 'checked the title']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`^approved ${first.id} \\(agent "a", tool notes__add_note\\) by alice, reason "checked the title"$`, 'm'));
    assert.match(result.stdout, /The held call proceeds within a second; if the agent already gave up waiting, its next identical call runs once/);
    const record = stored(first.id);
    assert.equal(record?.status, 'approved');
    assert.equal(record?.decidedBy, 'alice');
    assert.equal(record?.reason, 'checked the title');
    assert.ok(record?.decidedAt !== undefined && Math.abs(record.decidedAt - Date.now()) < 60_000);

    const again = run(['approvals', 'approve', first.id, '--config', CONFIG, '--by', 'bob']);
    assert.equal(again.code, 11);
    assert.match(again.stderr, /WARDEN_APPROVAL_NOT_PENDING: approval \S+ is approved \(by alice\)/);
    assert.equal(stored(first.id)?.decidedBy, 'alice', 'the first decision stands');
    assert.equal(run(['approvals', 'deny', first.id, '--config', CONFIG]).code, 11);
  });

  it('deny stores the reason; --by defaults to the login name', () => {
    const result = run(['approvals', 'deny', second.id, '--config', CONFIG, '--reason', 'not during the freeze']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`^denied ${second.id} .* by ${userInfo().username}, reason "not during the freeze"$`, 'm'));
    assert.match(result.stdout, /the agent is told the reason/);
    const record = stored(second.id);
    assert.equal(record?.status, 'denied');
    assert.equal(record?.reason, 'not during the freeze');
    assert.equal(record?.decidedBy, userInfo().username);
    assert.equal(run(['approvals', 'list', '--config', CONFIG]).stdout.includes(second.id), false, 'no longer pending');
  });

  it('an unknown or expired approval is exit 11', () => {
    const unknown = run(['approvals', 'approve', 'ap_aaaaaaaaaa', '--config', CONFIG]);
    assert.equal(unknown.code, 11);
    assert.match(unknown.stderr, /WARDEN_APPROVAL_NOT_PENDING: there is no approval ap_aaaaaaaaaa/);
    const stale = openApproval({ title: 'stale', body: '' }, { now: Date.now() - 10_000, expireMs: 1000 });
    const expired = run(['approvals', 'approve', stale.id, '--config', CONFIG]);
    assert.equal(expired.code, 11);
    assert.match(expired.stderr, /is expired/);
    assert.equal(stored(stale.id)?.status, 'expired');
  });

  it('a hostile or oversized reason or name is refused and nothing is decided', () => {
    const target = openApproval({ title: 'target', body: '' });
    const cases: string[][] = [
      ['--reason', 'ok\u001b[2J\u001b[Happroved by security'], // terminal escape
      ['--reason', 'line one\nline two'],
      ['--reason', 'looks \u202efine'], // bidi override
      ['--reason', 'x'.repeat(501)],
      ['--by', 'alice\u0007root'],
      ['--by', ' '],
      ['--by', 'y'.repeat(501)],
    ];
    for (const extra of cases) {
      const result = run(['approvals', 'deny', target.id, '--config', CONFIG, ...extra]);
      assert.equal(result.code, 2, JSON.stringify(extra));
      assert.match(result.stderr, /WARDEN_USAGE: --(reason|by) /, JSON.stringify(extra));
      assert.ok(!result.stderr.includes('\u001b'));
    }
    assert.equal(stored(target.id)?.status, 'pending');
    const longest = run(['approvals', 'deny', target.id, '--config', CONFIG, '--reason', 'z'.repeat(500)]);
    assert.equal(longest.code, 0, longest.stderr);
    assert.equal(stored(target.id)?.reason, 'z'.repeat(500));
  });

  it('on a running broker, approving a held call lets it run once', async () => {
    const client = await connectStdio(CONFIG, 'a');
    try {
      const args = { title: `held ${Date.now()}`, body: 'waits for a person' };
      const call = client.callTool({ name: 'notes__add_note', arguments: args });
      let id: string | undefined;
      const pendingFor = () => {
        const store = openStateStore(STATE, 'read-only');
        try {
          return store.approvals.list({ statuses: ['pending'], limit: 100 }).find((record) => record.arguments.includes(args.title));
        } finally {
          store.close();
        }
      };
      assert.ok(await waitFor(() => (id = pendingFor()?.id) !== undefined, 100, 50), 'the call is held for approval');
      const approved = run(['approvals', 'approve', id ?? '', '--config', CONFIG, '--by', 'alice']);
      assert.equal(approved.code, 0, approved.stderr);
      const result = await call;
      assert.equal(refusalCode(result), undefined, textOf(result));
      assert.equal(stored(id ?? '')?.status, 'used', 'the approval is spent');
    } finally {
      await client.close();
    }
  });
});
