import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { spawnSync } from 'node:child_process';
import { createHash, createPublicKey } from 'node:crypto';
import { appendFileSync, existsSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { toNodeHandler } from '@modelcontextprotocol/node';
import { createMcpHandler, Server } from '@modelcontextprotocol/server';
import { pino } from 'pino';
import { GENESIS, lineHash, MAX_LINE_BYTES } from '../../src/audit/chain.ts';
import { trailFiles } from '../../src/audit/read.ts';
import { auditPublicKeyFile, loadAuditKey } from '../../src/audit/signing-key.ts';
import { openAuditTrail, type AuditRecord, type AuditTrail } from '../../src/audit/trail.ts';
import { verifyTrail } from '../../src/audit/verify.ts';
import { Broker } from '../../src/broker.ts';
import { loadConfig } from '../../src/config/load.ts';
import { expectWardenError, refusalCode, tempDir, waitFor, writeConfig, writeManifest } from '../helpers.ts';
import { callRecord, chainedAfter, errorsOf, NO_TIMER, noticesOf, readLines, recordAt, writeLines, writeTrail } from './trails.ts';

const { dir, cleanup } = tempDir();
after(cleanup);
const key = loadAuditKey(join(dir, 'audit-signing.key'));
let cases = 0;
const caseFile = () => join(dir, `case-${++cases}`, 'audit.jsonl');

/** A pid no process has: a child that has already exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', '']);
  assert.ok(child.pid);
  return child.pid;
}

function verifyWithKey(files: readonly string[]) {
  return verifyTrail(files, { publicKey: key.publicKey });
}

describe('audit trail', () => {
  it('writes one JSON object per line to a file only its owner can read', () => {
    const file = join(dir, 'nested/audit.jsonl');
    const trail = openAuditTrail(file, { key });
    trail.write({ event: 'tools/call', agent: 'a', tool: 't', decision: 'deny', reason: 'WARDEN_TOOL_NOT_FOUND' });
    trail.write({ event: 'broker.stop' });
    trail.close();
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    assert.deepEqual(lines.map((line) => line.event), ['audit.opened', 'audit.checkpoint', 'tools/call', 'broker.stop', 'audit.checkpoint']);
    assert.equal(lines[2].event, 'tools/call');
    assert.equal(lines[2].service, 'mcp-warden');
    assert.match(lines[2].time, /^\d{4}-\d\d-\d\dT/);
    assert.equal(statSync(file).mode & 0o777, 0o600);
  });

  it('the opening record names the key, its id and the process, and the chain starts at GENESIS', () => {
    const { file } = writeTrail(caseFile(), key, { count: 0 });
    const opened = recordAt(readLines(file), 1);
    assert.equal(opened['event'], 'audit.opened');
    assert.equal(opened['reason'], 'new');
    assert.equal(opened['keyId'], key.keyId);
    assert.equal(opened['pid'], process.pid);
    assert.equal(opened['prev'], GENESIS);
    const publicKey = createPublicKey({ key: Buffer.from(String(opened['publicKey']), 'base64'), format: 'der', type: 'spki' });
    assert.ok(publicKey.equals(key.publicKey));
  });

  it('records cannot set the fields the writer sets (seq, time, service, prev)', () => {
    const file = caseFile();
    const trail = openAuditTrail(file, { key, ...NO_TIMER });
    trail.write({ event: 'tools/call', seq: 999, time: 'yesterday', kind: 'forged', service: 'other', prev: 'f'.repeat(64), agent: 'a' });
    trail.close();
    const lines = readLines(file);
    const record = recordAt(lines, 3);
    assert.equal(record['seq'], 3);
    assert.notEqual(record['time'], 'yesterday');
    assert.equal(record['kind'], 'forged', 'kind is a record\'s own field (approval records use it)');
    assert.equal(record['service'], 'mcp-warden');
    assert.equal(record['prev'], lineHash(lines[1]!));
    assert.equal(record['agent'], 'a');
    assert.equal(verifyWithKey([file]).ok, true);
  });

  it('each prev is the SHA-256 of the line before, as UTF-8 bytes, also for text outside ASCII', () => {
    const file = caseFile();
    const trail = openAuditTrail(file, { key, ...NO_TIMER });
    trail.write({ event: 'tools/call', correlationId: 'u-1', agent: 'zoë', tool: 'josé__naïve', reason: '漢字 \u{1F600} \u2028' });
    trail.write({ event: 'tools/call', correlationId: 'u-2', agent: 'a' });
    trail.close();
    const lines = readLines(file);
    assert.match(lines[2]!, /zoë/);
    assert.equal(recordAt(lines, 4)['prev'], createHash('sha256').update(Buffer.from(lines[2]!, 'utf8')).digest('hex'));
    assert.equal(recordAt(lines, 4)['prev'], lineHash(lines[2]!));
    assert.equal(verifyWithKey([file]).ok, true);
  });

  it('a record too long for one line counts its size in UTF-8 bytes', () => {
    const file = caseFile();
    const trail = openAuditTrail(file, { key, ...NO_TIMER });
    // Fewer characters than the limit, more bytes: 'é' is two bytes in UTF-8.
    trail.write({ event: 'tools/call', correlationId: 'big-2', agent: 'a', reason: 'é'.repeat(MAX_LINE_BYTES / 2 + 10) });
    trail.close();
    const marker = recordAt(readLines(file), 3);
    assert.equal(marker['oversized'], true);
    assert.ok((marker['bytes'] as number) > MAX_LINE_BYTES + 20);
    assert.equal(verifyWithKey([file]).ok, true);
  });

  it('a record too long for one line becomes a marker with its event, correlation id and size', () => {
    const file = caseFile();
    const trail = openAuditTrail(file, { key, ...NO_TIMER });
    trail.write({ event: 'tools/call', correlationId: 'big-1', agent: 'a', reason: 'x'.repeat(MAX_LINE_BYTES) });
    trail.write({ event: 'tools/call', correlationId: 'small-1', agent: 'a' });
    trail.close();
    const lines = readLines(file);
    const marker = recordAt(lines, 3);
    assert.equal(marker['event'], 'tools/call');
    assert.equal(marker['correlationId'], 'big-1');
    assert.equal(marker['oversized'], true);
    assert.ok((marker['bytes'] as number) > MAX_LINE_BYTES);
    assert.equal(marker['reason'], undefined);
    assert.ok(lines.every((line) => Buffer.byteLength(line) <= MAX_LINE_BYTES));
    assert.equal(recordAt(lines, 4)['correlationId'], 'small-1');
    assert.equal(verifyWithKey([file]).ok, true);
  });

  it('checkpoints follow every checkpointEvery records, and closing writes a final one', () => {
    const file = caseFile();
    const heads: number[] = [];
    // fsyncMs 0: every record is flushed as written, and each checkpoint recorded at once.
    const trail = openAuditTrail(file, { key, checkpointEvery: 3, fsyncMs: 0, ...NO_TIMER, onCheckpoint: (head) => heads.push(head.seq) });
    for (let i = 0; i < 7; i++) trail.write(callRecord(i));
    const open = readLines(file).map((line) => JSON.parse(line));
    trail.close();
    const lines = readLines(file).map((line) => JSON.parse(line));
    const checkpoints = lines.filter((line) => line.event === 'audit.checkpoint');
    // At open, after records 3 and 6, and at close.
    assert.deepEqual(checkpoints.map((c) => [c.seq, c.records, c.final]), [[2, 0, false], [6, 3, false], [10, 3, false], [12, 1, true]]);
    assert.ok(checkpoints.every((c) => c.keyId === key.keyId && /^[A-Za-z0-9+/]{86}==$/.test(c.signature)));
    assert.equal(open.filter((line) => line.event === 'audit.checkpoint').length, 3, 'no final checkpoint before close');
    assert.deepEqual(heads, [2, 6, 10, 12]);
    const report = verifyWithKey([file]);
    assert.equal(report.ok, true);
    assert.equal(report.checkpoints, 4);
  });

  it('with a flush interval, a checkpoint is recorded once it is on disk, never out of order, and the closing one at close', async () => {
    const file = caseFile();
    const heads: number[] = [];
    const trail = openAuditTrail(file, { key, checkpointEvery: 3, fsyncMs: 1000, ...NO_TIMER, onCheckpoint: (head) => heads.push(head.seq) });
    for (let i = 0; i < 7; i++) trail.write(callRecord(i));
    assert.deepEqual(heads, [], 'not before the disk has it');
    // Flushes finish in any order; a head older than one recorded is never recorded after it.
    assert.ok(await waitFor(() => heads.at(-1) === 10, 200, 10), `recorded after the flush: ${heads.join(',')}`);
    assert.ok(heads.every((seq, i) => [2, 6, 10].includes(seq) && (i === 0 || seq > heads[i - 1]!)), heads.join(','));
    trail.write(callRecord(7));
    trail.close();
    assert.equal(heads.at(-1), 13, 'the closing checkpoint at once');
  });

  it('the signing key is created on first use, owner-only, with its public key beside it', () => {
    const keyFile = join(dir, 'keys/new-audit.key');
    const created = loadAuditKey(keyFile);
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    const publicFile = auditPublicKeyFile(keyFile);
    assert.equal(publicFile, `${keyFile}.pub`);
    assert.equal(statSync(publicFile).mode & 0o777, 0o644);
    assert.ok(createPublicKey(readFileSync(publicFile, 'utf8')).equals(created.publicKey));
    // Loaded again: the same key; a public file that does not match is rewritten.
    writeFileSync(publicFile, key.publicKey.export({ type: 'spki', format: 'pem' }));
    const again = loadAuditKey(keyFile);
    assert.equal(again.keyId, created.keyId);
    assert.ok(createPublicKey(readFileSync(publicFile, 'utf8')).equals(created.publicKey));
  });

  it('a trail closed and opened again continues its chain', () => {
    const file = caseFile();
    writeTrail(file, key, { count: 3 });
    writeTrail(file, key, { count: 2 });
    const lines = readLines(file);
    const opened = lines.map((line) => JSON.parse(line)).filter((line) => line.event === 'audit.opened');
    assert.deepEqual(opened.map((o) => o.reason), ['new', 'resumed']);
    assert.equal(opened[1].discardedTail, undefined);
    const report = verifyWithKey([file]);
    assert.equal(report.ok, true);
    assert.deepEqual(report.findings, []);
    assert.equal(report.lastSeq, lines.length);
  });

  it('after a crash, an incomplete last line is cut off and recorded, and the chain goes on intact', () => {
    const file = caseFile();
    writeTrail(file, key, { count: 3 });
    // As a broker killed mid-write leaves it: no closing checkpoint, half a line, its lock.
    const lines = readLines(file).slice(0, -1);
    writeLines(file, lines);
    const partial = '{"seq":8,"time":"2026-11-23T10:00:00.000Z","service":"mcp-warden","event":"tools/c';
    appendFileSync(file, partial);
    writeFileSync(`${file}.lock`, `${deadPid()} ${hostname()}\n`);
    writeTrail(file, key, { count: 1 });
    const after = readLines(file);
    assert.deepEqual(after.slice(0, lines.length), lines, 'what was complete is kept as it was');
    assert.ok(!readFileSync(file, 'utf8').includes(partial));
    const opened = recordAt(after, lines.length + 1);
    assert.equal(opened['event'], 'audit.opened');
    assert.equal(opened['reason'], 'resumed');
    assert.deepEqual(opened['discardedTail'], { bytes: Buffer.byteLength(partial), sha256: createHash('sha256').update(partial).digest('hex') });
    assert.equal(opened['seq'], lines.length + 1);
    assert.equal(opened['prev'], lineHash(lines.at(-1)!));
    const report = verifyWithKey([file]);
    assert.equal(report.ok, true, JSON.stringify(report.findings));
    assert.ok(noticesOf(report).some((n) => /cut off an incomplete last line/.test(n.message) && n.seq === lines.length + 1));
    assert.equal(existsSync(`${file}.lock`), false, 'closing releases the lock it took over');
  });

  it('a file that is not a chained trail is renamed aside, kept as it was, and a new chain starts', () => {
    const file = caseFile();
    const old = '{"level":30,"time":1700000000000,"event":"tools/call","agent":"a"}\n{"level":30,"event":"broker.stop"}\n';
    writeLines(file, []);
    writeFileSync(file, old);
    writeTrail(file, key, { count: 1 });
    const folder = join(dir, `case-${cases}`);
    const aside = readdirSync(folder).filter((name) => name.startsWith('audit.jsonl.unchained-'));
    assert.equal(aside.length, 1);
    assert.equal(readFileSync(join(folder, aside[0]!), 'utf8'), old);
    const opened = recordAt(readLines(file), 1);
    assert.equal(opened['seq'], 1);
    assert.equal(opened['prev'], GENESIS);
    assert.equal(opened['previousFile'], aside[0]);
    assert.equal(verifyWithKey([file]).ok, true);
  });

  it('rotation closes the full file with a final checkpoint, names it by its first seq, and keeps the chain', () => {
    const file = caseFile();
    writeTrail(file, key, { count: 5 });
    // Reopened (its first seq is no longer the writer's first), then rotated by size.
    writeTrail(file, key, { count: 40, rotateBytes: 3000 });
    const files = trailFiles(file);
    assert.ok(files.length >= 3, `${files.length} files`);
    for (const rotated of files.slice(0, -1)) {
      const lines = readLines(rotated);
      assert.equal(basename(rotated), `audit.${String(recordAt(lines, 1)['seq']).padStart(12, '0')}.jsonl`);
      const last = recordAt(lines, lines.length);
      assert.equal(last['event'], 'audit.checkpoint');
      assert.equal(last['final'], true);
    }
    assert.equal(basename(files[0]!), 'audit.000000000001.jsonl');
    for (const later of files.slice(1)) {
      const opened = recordAt(readLines(later), 1);
      assert.equal(opened['reason'], 'rotated');
    }
    const report = verifyWithKey(files);
    assert.equal(report.ok, true, JSON.stringify(errorsOf(report)));
    assert.deepEqual(report.findings, []);
  });

  it('a broker stopped between renaming a full file and writing the new one continues from the renamed file', () => {
    const file = caseFile();
    writeTrail(file, key, { count: 3 });
    renameSync(file, join(dir, `case-${cases}`, 'audit.000000000001.jsonl'));
    writeTrail(file, key, { count: 2 });
    const opened = recordAt(readLines(file), 1);
    assert.equal(opened['reason'], 'rotated');
    assert.equal(opened['previousFile'], 'audit.000000000001.jsonl');
    const files = trailFiles(file);
    assert.equal(files.length, 2);
    const report = verifyWithKey(files);
    assert.equal(report.ok, true, JSON.stringify(errorsOf(report)));
    assert.deepEqual(report.findings, []);
  });

  it('one writer per chain: a second writer gets its own chain beside the first; a lock whose process is gone is taken over', () => {
    const file = caseFile();
    const second = file.replace(/\.jsonl$/, '-2.jsonl');
    const first = openAuditTrail(file, { key, ...NO_TIMER });
    try {
      assert.equal(first.file, file);
      assert.equal(readFileSync(`${file}.lock`, 'utf8'), `${process.pid} ${hostname()}\n`);
      const beside = openAuditTrail(file, { key, ...NO_TIMER });
      assert.equal(beside.file, second, 'the same process opening the trail again writes beside it');
      beside.write({ event: 'broker.start' });
      beside.close();
    } finally {
      first.close();
    }
    assert.equal(existsSync(`${file}.lock`), false);
    assert.equal(existsSync(`${second}.lock`), false);
    assert.equal(verifyWithKey([file]).ok, true);
    assert.equal(verifyWithKey([second]).ok, true, 'each chain verifies on its own');
    // Held by another live process (this test's parent).
    writeFileSync(`${file}.lock`, `${process.ppid} ${hostname()}\n`);
    const before = readFileSync(file, 'utf8');
    const other = openAuditTrail(file, { key, ...NO_TIMER });
    assert.equal(other.file, second);
    other.close();
    assert.equal(readFileSync(`${file}.lock`, 'utf8'), `${process.ppid} ${hostname()}\n`, 'the live holder keeps its lock');
    assert.equal(readFileSync(file, 'utf8'), before, 'and its file is not written');
    // Held by a process of another host (a container sharing the folder): never taken over.
    writeFileSync(`${file}.lock`, `${deadPid()} another-host.example\n`);
    const foreign = openAuditTrail(file, { key, ...NO_TIMER });
    assert.equal(foreign.file, second, 'a lock from another host is left alone');
    foreign.close();
    // Held by a process that is gone.
    writeFileSync(`${file}.lock`, `${deadPid()} ${hostname()}\n`);
    const third = openAuditTrail(file, { key, ...NO_TIMER });
    assert.equal(third.file, file);
    assert.equal(readFileSync(`${file}.lock`, 'utf8'), `${process.pid} ${hostname()}\n`);
    third.close();
    assert.equal(verifyWithKey([file]).ok, true);
  });

  it('a trail that no longer holds the state store\'s checkpoint is not signed on: the broker refuses to open it', () => {
    const file = caseFile();
    const { head } = writeTrail(file, key, { count: 10 });
    // Replaced by a chain as long, written with another key while no broker wrote it.
    const other = caseFile();
    writeTrail(other, loadAuditKey(join(dir, 'other-audit.key')), { count: 12 });
    writeFileSync(file, readFileSync(other));
    const before = readFileSync(file, 'utf8');
    expectWardenError(() => openAuditTrail(file, { key, ...NO_TIMER, lastCheckpoint: () => head! }), 'WARDEN_AUDIT_UNWRITABLE', /no longer holds the checkpoint the state store recorded \(seq \d+/);
    assert.equal(readFileSync(file, 'utf8'), before, 'nothing is written to it');
    assert.equal(existsSync(`${file}.lock`), false, 'and its lock is released');
  });

  it('records a killed broker wrote after its last checkpoint are named when the trail is reopened', () => {
    const file = caseFile();
    writeTrail(file, key, { count: 5, every: 4 });
    // As a broker killed after its checkpoint at seq 7 (not a closing one) and two more records.
    const lines = readLines(file).slice(0, 7);
    const last = JSON.parse(lines[6]!) as { event: string; final: boolean; seq: number; time: string };
    assert.deepEqual([last.event, last.final, last.seq], ['audit.checkpoint', false, 7]);
    const head = { seq: 7, hash: lineHash(lines[6]!), file, time: last.time };
    lines.push(chainedAfter(lines.at(-1)!, { event: 'tools/call', agent: 'a' }));
    lines.push(chainedAfter(lines.at(-1)!, { event: 'tools/call', agent: 'b' }));
    writeLines(file, lines);
    writeTrail(file, key, { count: 1, lastCheckpoint: () => head });
    const opened = recordAt(readLines(file), 10);
    assert.equal(opened['event'], 'audit.opened');
    assert.deepEqual(opened['unsignedBefore'], { fromSeq: 8, toSeq: 9 });
    const report = verifyWithKey([file]);
    assert.equal(report.ok, true, JSON.stringify(report.findings));
    assert.ok(report.findings.some((f) => f.severity === 'notice' && /were written after the last checkpoint before the broker stopped/.test(f.message)));
  });

  it('a state store checkpoint beyond the trail\'s end is recorded as a gap, which verify reports', () => {
    const file = caseFile();
    const { head } = writeTrail(file, key, { count: 10 });
    writeLines(file, readLines(file).slice(0, 9));
    writeTrail(file, key, { count: 1, lastCheckpoint: () => head! });
    const lines = readLines(file);
    const opened = recordAt(lines, 10);
    assert.deepEqual(opened['gap'], { lastCheckpoint: head, trailEndsAt: 9 });
    const report = verifyWithKey([file]);
    assert.equal(report.ok, false);
    assert.equal(errorsOf(report)[0]!.seq, 10);
    assert.match(errorsOf(report)[0]!.message, /it ended at seq 9, before the checkpoint at seq 15 its state store had recorded/);
  });

  it('a trail that cannot be written fails at open with WARDEN_AUDIT_UNWRITABLE', { skip: !existsSync('/dev/full') && 'needs /dev/full' }, () => {
    expectWardenError(() => openAuditTrail('/dev/full', { key }), 'WARDEN_AUDIT_UNWRITABLE', /cannot write the audit trail \/dev\/full: audit write failed: ENOSPC/);
  });

  it('a trail in a folder that cannot be created fails at open with WARDEN_AUDIT_UNWRITABLE', () => {
    const blocker = join(dir, 'not-a-folder');
    writeFileSync(blocker, 'x');
    expectWardenError(() => openAuditTrail(join(blocker, 'audit.jsonl'), { key }), 'WARDEN_AUDIT_UNWRITABLE', /cannot open the audit trail/);
  });
});

describe('a broker whose audit trail fails', () => {
  const calls = { count: 0 };
  let server: HttpServer | undefined;
  after(() => server?.close());

  /** A Streamable HTTP MCP server that counts the calls that reach it. */
  async function countingServer(): Promise<string> {
    const handler = toNodeHandler(
      createMcpHandler(() => {
        const mcp = new Server({ name: 'counter', version: '1.0.0' }, { capabilities: { tools: {} } });
        mcp.setRequestHandler('tools/list', async () => ({ tools: [{ name: 'count', description: 'Counts calls.', inputSchema: { type: 'object' } }] }));
        mcp.setRequestHandler('tools/call', async () => {
          calls.count += 1;
          return { content: [{ type: 'text', text: String(calls.count) }] };
        });
        return mcp;
      }),
    );
    server = createServer((req, res) => void handler(req, res));
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
  }

  async function brokerWith(audit: AuditTrail): Promise<Broker> {
    const url = server ? `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp` : await countingServer();
    const folder = join(dir, `broker-${++cases}`);
    writeManifest(join(folder, 'manifests/counter.json'), {
      manifestVersion: 1,
      name: 'test.counter',
      version: '1',
      serial: 1,
      transport: { type: 'http', url },
      tools: [{ name: 'count', description: 'Counts calls.', access: 'read', inputSchema: { type: 'object' } }],
    });
    const config = loadConfig(
      writeConfig(join(folder, 'warden.yaml'), {
        version: 1,
        servers: { counter: { manifest: 'counter.json', allowPlainHttp: true } },
        egress: { allow: [{ destination: new URL(url).origin, addresses: ['127.0.0.1'] }] },
        agents: { a: { allow: [{ tools: ['*'] }] } },
      }),
    );
    assert.equal(config.rejected.size, 0);
    const broker = new Broker(config, { logger: pino({ level: 'silent' }), audit });
    await broker.start(); // a failed broker.start record is logged, not thrown
    assert.ok(await waitFor(() => broker.backends.get('counter')?.state === 'ready'), 'the server connects');
    return broker;
  }

  it('refuses every call, and none reaches the tool, once a write has failed', async () => {
    let healthy = true;
    const attempts: string[] = [];
    const failing: AuditTrail = {
      get healthy() {
        return healthy;
      },
      write(record: AuditRecord) {
        attempts.push(record.event);
        healthy = false;
        throw new Error('audit write failed: ENOSPC');
      },
      close() {},
    };
    const broker = await brokerWith(failing);
    try {
      assert.ok(attempts.includes('broker.start'));
      for (let i = 0; i < 3; i++) {
        const result = await broker.callTool('a', 'counter__count', { i });
        assert.equal(refusalCode(result), 'WARDEN_INTERNAL');
      }
      assert.throws(() => broker.listTools('a'));
      assert.equal(calls.count, 0, 'no call reached the tool');
      assert.ok(!attempts.includes('tools/call.dispatch'));
    } finally {
      await broker.close();
    }
  });

  it('does not send a call whose write-ahead record cannot be written', async () => {
    const written: AuditRecord[] = [];
    const dispatchFails: AuditTrail = {
      healthy: true,
      write(record: AuditRecord) {
        if (record.event === 'tools/call.dispatch') throw new Error('audit write failed: EIO');
        written.push(record);
      },
      close() {},
    };
    const before = calls.count;
    const broker = await brokerWith(dispatchFails);
    try {
      const result = await broker.callTool('a', 'counter__count', { n: 1 });
      assert.equal(refusalCode(result), 'WARDEN_INTERNAL');
      assert.equal(calls.count, before, 'the call was not sent');
      const outcome = written.find((record) => record.event === 'tools/call');
      assert.equal(outcome?.decision, 'deny');
      assert.equal(outcome?.reason, 'WARDEN_INTERNAL');
      assert.equal(outcome?.outcome, 'refused');
    } finally {
      await broker.close();
    }
  });
});
