import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfig } from '../../src/config/load.ts';
import { openStateStore, STATE_FILE } from '../../src/state/store.ts';
import { CLI, connectStdio, NOTES_SERVER, NOTES_TOOLS, refusalCode, stdioManifest, tempDir, waitFor, writeConfig, writeManifest, writeYaml } from '../helpers.ts';

const { dir, cleanup } = tempDir('warden-killswitch-');
after(cleanup);

function run(args: string[]) {
  const result = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
// No state.dir: the default folder, resolved as loadConfig resolves it.
const CONFIG = writeConfig(join(dir, 'warden.yaml'), { version: 1, servers: { notes: { manifest: 'notes.json' } }, agents: { a: { allow: [{ tools: ['notes__*'] }] } } });
const STATE_DIR = loadConfig(CONFIG, { state: 'read-only' }).state.dir;

function storedSwitch(stateDir = STATE_DIR) {
  const store = openStateStore(stateDir, 'read-only');
  try {
    return store.killSwitch.read();
  } finally {
    store.close();
  }
}

function status(config = CONFIG) {
  const result = run(['killswitch', 'status', '--config', config, '--json']);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as { state: string; changedBy: string | null; changedAt: string | null; stateStore: string; stateStoreExists: boolean };
}

describe('killswitch', () => {
  it('--help explains each state and that running brokers apply it within a second', () => {
    const help = run(['killswitch', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: mcp-warden killswitch on\|readonly\|off/);
    assert.match(help.stdout, /within a second/);
    assert.match(help.stdout, /every call is refused and every agent's tool list is emptied/);
    assert.match(help.stdout, /only read tools/);
  });

  it('usage errors exit 2: a bogus state, no state, no --config, extra arguments, misplaced options', () => {
    const cases: string[][] = [
      ['killswitch'],
      ['killswitch', 'maybe', '--config', CONFIG],
      ['killswitch', 'ON', '--config', CONFIG],
      ['killswitch', 'on'],
      ['killswitch', 'on', 'now', '--config', CONFIG],
      ['killswitch', 'status', '--config', CONFIG, '--by', 'ops'],
      ['killswitch', 'on', '--config', CONFIG, '--json'],
      ['killswitch', 'on', '--config', CONFIG, '--force'],
      ['killswitch', 'on', '--config', CONFIG, '--by', 'ops\u001b[2J'],
      ['killswitch', 'on', '--config', CONFIG, '--by', 'o'.repeat(501)],
    ];
    for (const args of cases) {
      const result = run(args);
      assert.equal(result.code, 2, args.join(' '));
      assert.match(result.stderr, /WARDEN_USAGE/, args.join(' '));
    }
    assert.equal(existsSync(join(STATE_DIR, STATE_FILE)), false, 'nothing was written');
  });

  it('status before anything is set: off, and the state store is not created', () => {
    const text = run(['killswitch', 'status', '--config', CONFIG]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^kill switch: off$/m);
    assert.match(text.stdout, /not created yet/);
    const json = status();
    assert.deepEqual(json, { state: 'off', changedAt: null, changedBy: null, stateStore: join(STATE_DIR, STATE_FILE), stateStoreExists: false });
    assert.equal(existsSync(join(STATE_DIR, STATE_FILE)), false);
  });

  it('on, readonly, off round trip: each is stored with who set it, and says its effect', () => {
    const on = run(['killswitch', 'on', '--config', CONFIG, '--by', 'ops']);
    assert.equal(on.code, 0, on.stderr);
    assert.match(on.stdout, /^kill switch: on \(was off\), set by ops$/m);
    assert.match(on.stdout, /Running brokers apply it within a second: every call is refused and every agent's tool list is emptied\./);
    assert.match(on.stderr, /warning: there was no state store/, 'the first write says the store is new');
    assert.equal(storedSwitch().state, 'on');
    assert.equal(storedSwitch().changedBy, 'ops');
    const onStatus = status();
    assert.equal(onStatus.state, 'on');
    assert.equal(onStatus.changedBy, 'ops');
    assert.ok(onStatus.changedAt !== null && Math.abs(Date.parse(onStatus.changedAt) - Date.now()) < 60_000);

    const readonly = run(['killswitch', 'readonly', '--config', CONFIG, '--by', 'ops2']);
    assert.equal(readonly.code, 0);
    assert.match(readonly.stdout, /^kill switch: readonly \(was on\), set by ops2$/m);
    assert.match(readonly.stdout, /only read tools may be called or listed/);
    assert.equal(readonly.stderr, '', 'no warning once the store exists');
    assert.equal(status().state, 'readonly');
    const text = run(['killswitch', 'status', '--config', CONFIG]);
    assert.match(text.stdout, /^kill switch: readonly \(set by ops2 at \S+Z\)$/m);

    const off = run(['killswitch', 'off', '--config', CONFIG]);
    assert.equal(off.code, 0);
    assert.match(off.stdout, /^kill switch: off \(was readonly\), set by \S+/m);
    assert.equal(storedSwitch().state, 'off');
  });

  it('setting the state it already has changes nothing, not even who set it', () => {
    assert.equal(run(['killswitch', 'on', '--config', CONFIG, '--by', 'first']).code, 0);
    const before = storedSwitch();
    const again = run(['killswitch', 'on', '--config', CONFIG, '--by', 'second']);
    assert.equal(again.code, 0);
    assert.match(again.stdout, /^kill switch: on, unchanged \(set by first at /m);
    assert.deepEqual(storedSwitch(), before);
    assert.equal(run(['killswitch', 'off', '--config', CONFIG, '--by', 'first']).code, 0);
  });

  it('works while the rest of the config is broken: only state.dir is read', () => {
    // An invalid grant: config check and serve refuse this file, the kill switch must not.
    const broken = writeYaml(join(dir, 'broken.yaml'), { version: 1, servers: { notes: { manifest: 'missing.json', name: 'test.notes' } }, agents: { a: { allow: 'everything' } }, state: { dir: 'broken-state' } });
    assert.equal(run(['config', 'check', broken]).code, 3);
    const result = run(['killswitch', 'on', '--config', broken, '--by', 'ops']);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(storedSwitch(join(dir, 'broken-state')).state, 'on');
    assert.equal(status(broken).state, 'on');
  });

  it('a file that is not an mcp-warden config, or no file, is exit 3 and writes nothing', () => {
    const manifest = writeYaml(join(dir, 'not-a-config.yaml'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
    const wrong = run(['killswitch', 'on', '--config', manifest]);
    assert.equal(wrong.code, 3);
    assert.match(wrong.stderr, /WARDEN_CONFIG_INVALID: .*not an mcp-warden config/);
    const badDir = writeYaml(join(dir, 'bad-dir.yaml'), { version: 1, servers: {}, agents: {}, state: { dir: 42 } });
    assert.equal(run(['killswitch', 'on', '--config', badDir]).code, 3);
    const missing = run(['killswitch', 'status', '--config', join(dir, 'missing.yaml')]);
    assert.equal(missing.code, 3);
    assert.match(missing.stderr, /WARDEN_CONFIG_UNREADABLE/);
    assert.equal(existsSync(join(dir, 'state', STATE_FILE)) && storedSwitch().state, 'off', 'the real store was not touched');
  });

  it('a running broker applies it without being told: on empties the tool list and refuses calls, off restores them', async () => {
    const client = await connectStdio(CONFIG, 'a');
    try {
      const names = async () => (await client.listTools()).tools.map((tool) => tool.name);
      assert.ok((await names()).includes('notes__list_notes'));
      assert.equal(run(['killswitch', 'on', '--config', CONFIG, '--by', 'incident']).code, 0);
      // The broker polls the store every 250 ms; bounded wait, no timing assertion.
      assert.ok(await waitFor(async () => (await names()).length === 0, 60, 50), 'the tool list is emptied');
      assert.equal(refusalCode(await client.callTool({ name: 'notes__list_notes', arguments: {} })), 'WARDEN_KILL_SWITCH');
      assert.equal(run(['killswitch', 'off', '--config', CONFIG, '--by', 'incident']).code, 0);
      assert.ok(await waitFor(async () => (await names()).includes('notes__list_notes'), 60, 50), 'the tool list is back');
      assert.equal(refusalCode(await client.callTool({ name: 'notes__list_notes', arguments: {} })), undefined);
    } finally {
      await client.close();
    }
  });
});
