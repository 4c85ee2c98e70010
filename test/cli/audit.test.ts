import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { formatLine, GENESIS, lineHash } from '../../src/audit/chain.ts';
import { loadAuditKey } from '../../src/audit/signing-key.ts';
import { openAuditTrail } from '../../src/audit/trail.ts';
import type { VerifyReport } from '../../src/audit/verify.ts';
import { openStateStore } from '../../src/state/store.ts';
import { CLI, runCli, tempDir, waitFor, writeYaml } from '../helpers.ts';
import { callRecord, edited, NO_TIMER, readLines, writeLines } from '../audit/trails.ts';

const { dir, cleanup } = tempDir('warden-audit-cli-');
after(cleanup);

/**
 * A broker's folder as the config names it: the trail, its key (and .pub), and the state
 * store holding the newest checkpoint. The rest of the config is deliberately invalid:
 * the audit command reads audit.file, audit.keyFile and state.dir only.
 */
function workspace(name: string, count = 10) {
  const root = join(dir, name);
  const config = writeYaml(join(root, 'warden.yaml'), {
    version: 1,
    servers: { notes: { manifest: 'missing.json', name: 'test.notes' } },
    agents: { a: { allow: 'everything' } },
    rateLimits: 'none',
    state: { dir: 'state' },
    audit: { file: 'logs/audit.jsonl', keyFile: 'keys/audit.key' },
  });
  const file = join(root, 'logs/audit.jsonl');
  const key = loadAuditKey(join(root, 'keys/audit.key'));
  const store = openStateStore(join(root, 'state'), 'read-write');
  try {
    const trail = openAuditTrail(file, { key, checkpointEvery: 4, ...NO_TIMER, onCheckpoint: (head) => store.auditHeads.save(file, head) });
    for (let i = 0; i < count; i++) trail.write(callRecord(i));
    trail.close();
  } finally {
    store.close();
  }
  return { root, config, file, key };
}

/** A trail written by hand with chosen times, for the filters (query does not verify). */
function queryTrail(records: readonly (Record<string, unknown> & { time: string })[]): string {
  const lines: string[] = [];
  let prev = GENESIS;
  records.forEach(({ time, ...record }, i) => {
    const line = formatLine(i + 1, time, prev, record);
    lines.push(line);
    prev = lineHash(line);
  });
  return writeLines(join(dir, `query-${Math.random().toString(36).slice(2)}.jsonl`), lines);
}

function usage(args: string[], pattern?: RegExp): void {
  const result = runCli(args);
  assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
  assert.match(result.stderr, /WARDEN_USAGE/, args.join(' '));
  if (pattern) assert.match(result.stderr, pattern, args.join(' '));
  assert.equal(result.stdout, '', args.join(' '));
}

const NOW = Date.now();
const iso = (msAgo: number) => new Date(NOW - msAgo).toISOString();
const QUERY = queryTrail([
  { time: '2020-01-01T09:00:00.000Z', event: 'audit.opened', reason: 'new' },
  { time: '2020-01-01T10:00:00.000Z', event: 'tools/call.dispatch', correlationId: 'c-1', agent: 'alice', tool: 'notes__add_note' },
  { time: '2020-01-01T10:00:01.000Z', event: 'tools/call', correlationId: 'c-1', agent: 'alice', tool: 'notes__add_note', decision: 'allow', outcome: 'ok' },
  { time: '2020-01-02T10:00:00.000Z', event: 'tools/call', correlationId: 'c-2', agent: 'bob', tool: 'notes__delete_note', decision: 'deny', reason: 'WARDEN_TOOL_NOT_FOUND' },
  { time: iso(3_600_000), event: 'tools/call', correlationId: 'c-3', agent: 'bob', tool: 'notes__echo', decision: 'allow', outcome: 'ok' },
  { time: iso(300_000), event: 'auth.failure', reason: 'bad token' },
  { time: iso(60_000), event: 'tools/call', correlationId: 'c-4', agent: 'alice', tool: 'notes__echo', decision: 'deny', reason: 'WARDEN_RATE_LIMITED' },
]);

/** The correlation ids (or events, where there is none) of the records a query prints as JSON lines. */
function queried(args: string[]): string[] {
  const result = runCli(['audit', 'query', QUERY, '--json', ...args]);
  assert.equal(result.code, 0, `${args.join(' ')}: ${result.stderr}`);
  return result.stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const record = JSON.parse(line) as Record<string, unknown>;
      return String(record['correlationId'] ?? record['event']);
    });
}

describe('mcp-warden audit verify', () => {
  const ws = workspace('verify');

  it('an intact trail: exit 0 and a summary line', () => {
    const result = runCli(['audit', 'verify', ws.file]);
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stdout.trim().split('\n');
    assert.equal(lines.at(-1), 'audit trail intact: 15 records (seq 1 to 15) in 1 file(s), 4 valid checkpoint(s), the last at seq 15');
    assert.match(result.stdout, /^note {3}.*checked against the public key the trail names itself/m);
  });

  it('--config checks the config\'s trail with the broker\'s public key and the state store, the rest of the config unread', () => {
    const result = runCli(['audit', 'verify', '--config', ws.config]);
    assert.equal(result.code, 0, result.stderr + result.stdout);
    assert.equal(result.stdout, 'audit trail intact: 15 records (seq 1 to 15) in 1 file(s), 4 valid checkpoint(s), the last at seq 15\n');
    const json = runCli(['audit', 'verify', '--config', ws.config, '--json']);
    const report = JSON.parse(json.stdout) as VerifyReport;
    assert.equal(report.key, 'given');
    assert.deepEqual(report.files, [ws.file]);
  });

  it('--config also checks the chains brokers wrote beside a busy trail, each on its own, and names a broken one', () => {
    const ws2 = workspace('slots', 3);
    const key = ws2.key;
    const store = openStateStore(join(ws2.root, 'state'), 'read-write');
    let second: string;
    try {
      const save = (head: { file: string; seq: number; hash: string; time: string }) => store.auditHeads.save(head.file, head);
      const first = openAuditTrail(ws2.file, { key, ...NO_TIMER, onCheckpoint: save });
      const beside = openAuditTrail(ws2.file, { key, ...NO_TIMER, onCheckpoint: save });
      second = beside.file;
      assert.equal(second, join(ws2.root, 'logs/audit-2.jsonl'));
      for (let i = 0; i < 3; i++) beside.write(callRecord(100 + i));
      beside.close();
      first.close();
    } finally {
      store.close();
    }
    const intact = runCli(['audit', 'verify', '--config', ws2.config]);
    assert.equal(intact.code, 0, intact.stdout + intact.stderr);
    assert.match(intact.stdout, /trail .*logs\/audit\.jsonl:/);
    assert.match(intact.stdout, /trail .*logs\/audit-2\.jsonl:/);
    const json = JSON.parse(runCli(['audit', 'verify', '--config', ws2.config, '--json']).stdout) as { ok: boolean; trails: VerifyReport[] };
    assert.equal(json.ok, true);
    assert.equal(json.trails.length, 2);
    const query = runCli(['audit', 'query', '--config', ws2.config, '--event', 'tools/call', '--json']);
    assert.equal(query.stdout.trim().split('\n').length, 6, 'query reads both chains');
    const lines = readLines(second);
    lines[2] = edited(lines[2]!, { agent: 'someone-else' });
    writeLines(second, lines);
    const broken = runCli(['audit', 'verify', '--config', ws2.config]);
    assert.equal(broken.code, 1);
    assert.match(broken.stdout, /BROKEN {2}.*audit-2\.jsonl:\d+/);
    assert.doesNotMatch(broken.stdout, /BROKEN {2}.*logs\/audit\.jsonl:/, 'the intact chain is not blamed');
    // A chain deleted whole is still known to the state store.
    rmSync(second);
    const gone = runCli(['audit', 'verify', '--config', ws2.config]);
    assert.equal(gone.code, 1);
    assert.match(gone.stdout, /BROKEN {2}.*audit-2\.jsonl: the state store recorded a checkpoint of this trail .* but the file is gone/);
  });

  it('a tampered trail: exit 1, naming file:line and seq', () => {
    const copy = join(dir, 'tampered.jsonl');
    const lines = readLines(ws.file);
    lines[8] = edited(lines[8]!, { agent: 'mallory' });
    writeLines(copy, lines);
    const result = runCli(['audit', 'verify', copy]);
    assert.equal(result.code, 1);
    assert.match(result.stdout, new RegExp(`^BROKEN  ${copy.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:10 \\(seq 10\\): does not follow line 9 of tampered\\.jsonl`, 'm'));
    assert.match(result.stdout, /^audit trail NOT intact: 1 problem\(s\) listed above; 15 records \(seq 1 to 15\) in 1 file\(s\)$/m);
    const json = runCli(['audit', 'verify', copy, '--json']);
    assert.equal(json.code, 1);
    const report = JSON.parse(json.stdout) as VerifyReport;
    assert.equal(report.ok, false);
    assert.deepEqual(
      report.findings.filter((f) => f.severity === 'error').map((f) => [f.file, f.line, f.seq]),
      [[copy, 10, 10]],
    );
  });

  it('records cut from the end are caught with --config (the state store\'s head), not without it', () => {
    const cut = workspace('cut');
    writeLines(cut.file, readLines(cut.file).slice(0, 12));
    assert.equal(runCli(['audit', 'verify', cut.file]).code, 0);
    const result = runCli(['audit', 'verify', '--config', cut.config]);
    assert.equal(result.code, 1);
    assert.match(result.stdout, /the trail ends at seq 12, before the checkpoint at seq 15 the state store recorded/);
  });

  it('--key: the broker\'s public key verifies; another key fails; a file that is not a key is a usage error', () => {
    const good = runCli(['audit', 'verify', ws.file, '--key', join(ws.root, 'keys/audit.key.pub')]);
    assert.equal(good.code, 0, good.stdout);
    assert.doesNotMatch(good.stdout, /names itself/);
    const other = loadAuditKey(join(dir, 'other/audit.key'));
    const wrong = runCli(['audit', 'verify', ws.file, '--key', join(dir, 'other/audit.key.pub')]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stdout, new RegExp(`BROKEN .*:2 \\(seq 2\\): a checkpoint signed with key ${ws.key.keyId}, not the given key \\(${other.keyId}\\)`));
    usage(['audit', 'verify', ws.file, '--key', ws.config], /is not an Ed25519 key in PEM/);
    usage(['audit', 'verify', ws.file, '--key', join(dir, 'missing.pub')], /cannot read the audit public key/);
  });

  it('a trail that cannot be read is exit 8; a file that is not a config is exit 3', () => {
    const missing = runCli(['audit', 'verify', join(dir, 'nothing.jsonl')]);
    assert.equal(missing.code, 8);
    assert.match(missing.stderr, /WARDEN_AUDIT_UNWRITABLE: cannot read the audit trail .*nothing\.jsonl: ENOENT/);
    const folder = runCli(['audit', 'tail', dir]);
    assert.equal(folder.code, 8);
    assert.match(folder.stderr, /is not a file/);
    const noTrail = writeYaml(join(dir, 'no-trail/warden.yaml'), { version: 1, servers: {}, agents: {} });
    assert.equal(runCli(['audit', 'verify', '--config', noTrail]).code, 8);
    const notConfig = runCli(['audit', 'verify', '--config', ws.file]);
    assert.equal(notConfig.code, 3);
    const badPath = writeYaml(join(dir, 'bad-path.yaml'), { version: 1, servers: {}, agents: {}, audit: { file: 42 } });
    const bad = runCli(['audit', 'query', '--config', badPath]);
    assert.equal(bad.code, 3);
    assert.match(bad.stderr, /at \/audit\/file: expected the audit file/);
  });
});

describe('mcp-warden audit tail', () => {
  const ws = workspace('tail', 30);

  it('prints the last records, 20 by default, one per line for a person', () => {
    const all = readLines(ws.file);
    const result = runCli(['audit', 'tail', ws.file]);
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stdout.trim().split('\n');
    assert.equal(lines.length, 20);
    const last = JSON.parse(all.at(-1)!) as { time: string; seq: number };
    assert.match(lines.at(-1)!, new RegExp(`^${last.time}  #${last.seq}  audit\\.checkpoint  keyId=${ws.key.keyId}  final=true  records=\\d+$`));
    assert.match(lines.at(-2)!, /  tools\/call  correlationId=call-29  agent=agent-a  tool=notes__echo  decision=allow  outcome=ok  argsSha256=[0-9a-f]{64}$/);
    assert.doesNotMatch(result.stdout, /prev=|signature=/);
  });

  it('-n picks how many; --json prints the records as JSON lines; --config reads the config\'s trail', () => {
    const three = runCli(['audit', 'tail', ws.file, '-n', '3', '--json']);
    assert.equal(three.code, 0);
    const records = three.stdout.trim().split('\n').map((line) => JSON.parse(line));
    assert.deepEqual(records, readLines(ws.file).slice(-3).map((line) => JSON.parse(line)));
    const viaConfig = runCli(['audit', 'tail', '--config', ws.config, '-n', '1']);
    assert.equal(viaConfig.code, 0);
    assert.match(viaConfig.stdout, /^\S+  #\d+  audit\.checkpoint  /);
    assert.equal(viaConfig.stdout.trim().split('\n').length, 1);
  });

  it('a bad -n is a usage error', () => {
    for (const n of ['0', 'abc', '1.5', '100001', '']) usage(['audit', 'tail', ws.file, '-n', n], /-n must be a whole number from 1 to 100000/);
    usage(['audit', 'tail', ws.file, '-n', '-1']);
  });

  it('--follow prints records appended later, until stopped', async () => {
    const file = join(dir, 'follow/audit.jsonl');
    const key = loadAuditKey(join(dir, 'follow/audit.key'));
    openAuditTrail(file, { key, ...NO_TIMER }).close();
    const child = spawn(process.execPath, [CLI, 'audit', 'tail', file, '-n', '1', '--follow'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      assert.ok(await waitFor(() => /audit\.checkpoint/.test(out), 400, 50), 'the last record first');
      // It follows from the size it found when it started: write until one is seen (bounded).
      for (let i = 0; i < 5 && !/correlationId=followed-/.test(out); i++) {
        const trail = openAuditTrail(file, { key, ...NO_TIMER });
        trail.write({ event: 'tools/call', correlationId: `followed-${i}`, agent: 'a' });
        trail.close();
        await waitFor(() => /correlationId=followed-/.test(out), 60, 50);
      }
      assert.match(out, /  tools\/call  correlationId=followed-\d  agent=a\n/);
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });
});

describe('mcp-warden audit query', () => {
  it('each filter keeps the matching records, oldest first', () => {
    assert.deepEqual(queried([]), ['audit.opened', 'c-1', 'c-1', 'c-2', 'c-3', 'auth.failure', 'c-4']);
    assert.deepEqual(queried(['--agent', 'alice']), ['c-1', 'c-1', 'c-4']);
    assert.deepEqual(queried(['--tool', 'notes__echo']), ['c-3', 'c-4']);
    assert.deepEqual(queried(['--event', 'tools/call.dispatch']), ['c-1']);
    assert.deepEqual(queried(['--event', 'auth.failure']), ['auth.failure']);
    assert.deepEqual(queried(['--decision', 'deny']), ['c-2', 'c-4']);
    assert.deepEqual(queried(['--decision', 'allow', '--agent', 'bob']), ['c-3']);
    assert.deepEqual(queried(['--correlation', 'c-1']), ['c-1', 'c-1']);
    assert.deepEqual(queried(['--correlation', 'c-1', '--event', 'tools/call']), ['c-1']);
  });

  it('--since and --until take an ISO date or time, or a span back from now', () => {
    assert.deepEqual(queried(['--since', '2020-01-02']), ['c-2', 'c-3', 'auth.failure', 'c-4']);
    assert.deepEqual(queried(['--until', '2020-01-02']), ['audit.opened', 'c-1', 'c-1']);
    assert.deepEqual(queried(['--since', '2020-01-01T10:00Z', '--until', '2020-01-01T10:00:01Z']), ['c-1']);
    assert.deepEqual(queried(['--since', '2020-01-01T11:00:00+01:00', '--until', '2020-01-01T11:00:01+01:00']), ['c-1']);
    assert.deepEqual(queried(['--since', '15m']), ['auth.failure', 'c-4']);
    assert.deepEqual(queried(['--since', '2h', '--until', '15m']), ['c-3']);
    assert.deepEqual(queried(['--since', '3000s']), ['auth.failure', 'c-4']);
    assert.deepEqual(queried(['--since', '7d', '--agent', 'alice']), ['c-4']);
  });

  it('--limit stops after that many; the text form prints a line per record', () => {
    assert.deepEqual(queried(['--limit', '2']), ['audit.opened', 'c-1']);
    const text = runCli(['audit', 'query', QUERY, '--correlation', 'c-2']);
    assert.equal(text.code, 0);
    assert.equal(text.stdout, '2020-01-02T10:00:00.000Z  #4  tools/call  correlationId=c-2  agent=bob  tool=notes__delete_note  decision=deny  reason=WARDEN_TOOL_NOT_FOUND\n');
  });

  it('--config reads the config\'s trail, rotated files first', () => {
    const root = join(dir, 'rotated');
    const config = writeYaml(join(root, 'warden.yaml'), { version: 1, servers: {}, agents: {}, audit: { file: 'audit.jsonl', keyFile: 'audit.key' } });
    const key = loadAuditKey(join(root, 'audit.key'));
    const trail = openAuditTrail(join(root, 'audit.jsonl'), { key, rotateBytes: 2000, checkpointEvery: 50, ...NO_TIMER });
    for (let i = 0; i < 30; i++) trail.write(callRecord(i));
    trail.close();
    const result = runCli(['audit', 'query', '--config', config, '--event', 'tools/call', '--json']);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(result.stdout.trim().split('\n').map((line) => JSON.parse(line).correlationId), Array.from({ length: 30 }, (_, i) => `call-${i}`));
    assert.equal(runCli(['audit', 'verify', '--config', config]).code, 0);
  });

  it('bad filter values are usage errors with a clear message', () => {
    usage(['audit', 'query', QUERY, '--decision', 'maybe'], /--decision must be allow or deny/);
    for (const since of ['yesterday', '15', '15y', '2026-13-45', '2020-01-01T25:00Z', '+5m']) usage(['audit', 'query', QUERY, '--since', since], /--since must be an ISO date or time .* or a span such as 90s, 15m, 2h or 7d/);
    usage(['audit', 'query', QUERY, '--until', 'soon'], /--until must be/);
    usage(['audit', 'query', QUERY, '--since', '-5m']);
    for (const limit of ['0', 'ten', '=3']) usage(['audit', 'query', QUERY, '--limit', limit], /--limit must be a whole number/);
  });
});

describe('mcp-warden audit usage and hostile content', () => {
  it('--help explains the subcommands', () => {
    const help = runCli(['audit', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: mcp-warden audit verify/);
    assert.match(help.stdout, /Exit codes: 0 success/);
  });

  it('a missing or unknown subcommand, options of another subcommand, no trail, or extra files are usage errors', () => {
    usage(['audit'], /missing subcommand/);
    usage(['audit', 'rewrite', QUERY], /unknown subcommand "rewrite"/);
    usage(['audit', 'frob\u001b[2J'], /unknown subcommand "frob\?\[2J"/);
    usage(['audit', 'tail', QUERY, '--agent', 'a'], /--agent applies to audit query only/);
    usage(['audit', 'verify', QUERY, '-n', '3'], /-n applies to audit tail only/);
    usage(['audit', 'verify', QUERY, '--follow'], /--follow applies to audit tail only/);
    usage(['audit', 'query', QUERY, '--key', 'k.pub'], /--key applies to audit verify only/);
    usage(['audit', 'tail', QUERY, '--limit', '3'], /--limit applies to audit query only/);
    usage(['audit', 'verify'], /audit verify needs the trail: FILE or --config FILE/);
    usage(['audit', 'query'], /audit query needs the trail/);
    usage(['audit', 'tail', QUERY, QUERY], /audit tail reads one trail/);
    usage(['audit', 'tail', QUERY, '--config', join(dir, 'x.yaml')], /either as FILE or by --config/);
    usage(['audit', 'verify', QUERY, '--frob']);
  });

  it('control characters and terminal escapes in a record are printed as ?, never raw', () => {
    const key = loadAuditKey(join(dir, 'hostile/audit.key'));
    const file = join(dir, 'hostile/audit.jsonl');
    const trail = openAuditTrail(file, { key, ...NO_TIMER });
    trail.write({ event: 'tools/call', correlationId: 'h-1', agent: '\u001b]0;pwned\u0007\u001b[2Jevil', tool: 'x\u009b31m\u202e\r\n', reason: 'a\u0000b' });
    trail.close();
    // And a line edited by hand with raw bytes: an escape outside any JSON string escape, and a C1 CSI.
    appendFileSync(file, '{"seq":99,"agent":"\u001b[31mraw"}\n');
    appendFileSync(file, `${JSON.stringify({ seq: 100, time: '2020-01-01T00:00:00Z', event: 'tools/call', agent: 'c1\u009b2J\u2028' })}\n`);
    const raw = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202e]/;
    for (const args of [
      ['audit', 'tail', file],
      ['audit', 'tail', file, '--json'],
      ['audit', 'query', file, '--agent', 'c1\u009b2J\u2028'],
      ['audit', 'query', file, '--json'],
      ['audit', 'verify', file],
      ['audit', 'verify', file, '--json'],
    ]) {
      const result = runCli(args);
      assert.ok(result.code === 0 || result.code === 1, `${args.join(' ')}: ${result.stderr}`);
      assert.ok(result.stdout.length > 0, args.join(' '));
      assert.doesNotMatch(result.stdout, raw, args.join(' '));
      assert.doesNotMatch(result.stderr, raw, args.join(' '));
    }
    const text = runCli(['audit', 'tail', file]).stdout;
    assert.match(text, /agent=\?\]0;pwned\?\?\[2Jevil/);
    assert.match(text, /tool=x\?31m\?\?\?/);
    assert.match(text, /\(not a record\) \{"seq":99,"agent":"\?\[31mraw"\}/);
    const json = runCli(['audit', 'tail', file, '--json']).stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.ok(json.some((record) => record['agent'] === 'c1\u009b2J\u2028'), 'the JSON form keeps the value, escaped');
    assert.ok(json.some((record) => record['agent'] === '\u001b]0;pwned\u0007\u001b[2Jevil'));
    const hostileQuery = runCli(['audit', 'query', file, '--agent', 'c1\u009b2J\u2028']);
    assert.match(hostileQuery.stdout, /agent=c1\?2J\?/);
    assert.equal(readFileSync(file, 'utf8').includes('\u001b[31mraw'), true, 'the file itself was not changed');
  });
});
