import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { auditKeyId, chainRecord, checkpointSignatureValid, formatLine, GENESIS, lineHash, publicKeyFromPem, signCheckpoint } from '../../src/audit/chain.ts';
import { verifyTrail } from '../../src/audit/verify.ts';
import { tempDir } from '../helpers.ts';
import { chainedAfter, checkpointAfter, edited, errorLines, errorsOf, keyIn, noticesOf, openedAfter, readLines, rechained, recordAt, writeLines, writeTrail } from './trails.ts';

const { dir, cleanup } = tempDir('warden-chain-');
after(cleanup);
const key = keyIn(dir, 'broker');
const attacker = keyIn(dir, 'attacker');
/** The intact trail every case changes: 15 lines, line n holds seq n (see writeTrail). */
const { file: INTACT } = writeTrail(join(dir, 'intact/audit.jsonl'), key);
const LINES = readLines(INTACT);
let cases = 0;

/** Writes the changed lines to a file of their own and verifies it with the broker's key. */
function verifyLines(lines: readonly string[], options: { withKey?: boolean } = {}) {
  const file = writeLines(join(dir, `case-${++cases}.jsonl`), lines);
  return verifyTrail([file], options.withKey === false ? {} : { publicKey: key.publicKey });
}

function without(lines: readonly string[], n: number): string[] {
  return lines.filter((_, i) => i !== n - 1);
}

describe('the chain format', () => {
  it('the intact trail has the documented layout and verifies with no finding but none', () => {
    assert.equal(LINES.length, 15);
    LINES.forEach((_, i) => assert.equal(recordAt(LINES, i + 1)['seq'], i + 1));
    assert.deepEqual([1, 2, 7, 12, 15].map((n) => recordAt(LINES, n)['event']), ['audit.opened', 'audit.checkpoint', 'audit.checkpoint', 'audit.checkpoint', 'audit.checkpoint']);
    assert.equal(recordAt(LINES, 1)['prev'], GENESIS);
    for (let n = 2; n <= 15; n++) assert.equal(recordAt(LINES, n)['prev'], lineHash(LINES[n - 2]!));
    const report = verifyLines(LINES);
    assert.equal(report.ok, true);
    assert.deepEqual(report.findings, []);
    assert.equal(report.checkpoints, 4);
    assert.equal(report.lastCheckpointSeq, 15);
    assert.equal(report.unsigned, 0);
  });

  it('the writer\'s fields come first and prev last, and a record cannot set them', () => {
    const line = formatLine(7, '2026-01-01T00:00:00.000Z', GENESIS, { seq: 1, time: 'then', service: 'y', prev: 'f'.repeat(64), event: 'tools/call' });
    assert.equal(line, `{"seq":7,"time":"2026-01-01T00:00:00.000Z","service":"mcp-warden","event":"tools/call","prev":"${GENESIS}"}`);
    assert.deepEqual(JSON.parse(line), chainRecord(7, '2026-01-01T00:00:00.000Z', GENESIS, { event: 'tools/call' }));
  });

  it('a signature is accepted in its one canonical base64 spelling only', () => {
    const record = chainRecord(3, '2026-01-01T00:00:00.000Z', GENESIS, { event: 'audit.checkpoint', keyId: 'k', final: true, records: 1 });
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const signature = signCheckpoint(record, privateKey);
    assert.equal(checkpointSignatureValid(record, signature, publicKey), true);
    // The 86th character carries 2 bits of the signature and 4 unused ones.
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
    const value = alphabet.indexOf(signature[85]!);
    for (let unused = 1; unused < 16; unused++) {
      const variant = `${signature.slice(0, 85)}${alphabet[value ^ unused]}==`;
      assert.deepEqual(Buffer.from(variant, 'base64'), Buffer.from(signature, 'base64'), 'decodes to the same bytes');
      assert.equal(checkpointSignatureValid(record, variant, publicKey), false, `unused bits ${unused}`);
    }
  });

  it('a line is exactly the JSON serialisation of its chained record, whatever the record holds', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue()), fc.integer({ min: 1, max: 2 ** 40 }), (record, seq) => {
        const line = formatLine(seq, '2026-01-01T00:00:00.000Z', GENESIS, record);
        assert.equal(line, JSON.stringify(chainRecord(seq, '2026-01-01T00:00:00.000Z', GENESIS, record)));
      }),
      { numRuns: 500 },
    );
  });

  it('a checkpoint signature covers every field, is bound to its domain and key, and refuses malleated or malformed signatures', () => {
    const record = chainRecord(3, '2026-01-01T00:00:00.000Z', GENESIS, { event: 'audit.checkpoint', keyId: key.keyId, final: false, records: 2 });
    const signature = signCheckpoint(record, key.privateKey);
    assert.equal(checkpointSignatureValid(record, signature, key.publicKey), true);
    assert.equal(checkpointSignatureValid({ ...record, signature }, signature, key.publicKey), true, 'the signature field itself is not covered');
    for (const [field, value] of Object.entries({ seq: 4, time: '2026-01-01T00:00:00.001Z', prev: 'a'.repeat(64), keyId: attacker.keyId, final: true, records: 3, kind: 'x', service: 'y', event: 'tools/call', extra: 1 })) {
      assert.equal(checkpointSignatureValid({ ...record, [field]: value }, signature, key.publicKey), false, field);
    }
    assert.equal(checkpointSignatureValid(record, signature, attacker.publicKey), false);
    assert.equal(checkpointSignatureValid(record, signCheckpoint(record, attacker.privateKey), key.publicKey), false);
    // S + L (the group order) is the same point equation but not the canonical signature.
    const bytes = Buffer.from(signature, 'base64');
    const order = 2n ** 252n + 27742317777372353535851937790883648493n;
    let s = 0n;
    for (let i = 63; i >= 32; i--) s = (s << 8n) | BigInt(bytes[i]!);
    s += order;
    for (let i = 32; i < 64; i++, s >>= 8n) bytes[i] = Number(s & 0xffn);
    if (s === 0n) assert.equal(checkpointSignatureValid(record, bytes.toString('base64'), key.publicKey), false, 'a malleated S is refused');
    for (const bad of ['', 'x', `${signature.slice(0, -2)}A=`, signature.replace(/==$/, ''), `${signature} `]) {
      assert.equal(checkpointSignatureValid(record, bad, key.publicKey), false, JSON.stringify(bad));
    }
  });

  it('the key id names the public key; the public half of a PEM file is taken, and a key of another type refused', () => {
    assert.match(key.keyId, /^[0-9a-f]{16}$/);
    assert.equal(auditKeyId(key.publicKey), key.keyId);
    assert.notEqual(attacker.keyId, key.keyId);
    assert.equal(auditKeyId(publicKeyFromPem(key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString())), key.keyId);
    assert.equal(auditKeyId(publicKeyFromPem(key.publicKey.export({ type: 'spki', format: 'pem' }).toString())), key.keyId);
    const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    assert.throws(() => publicKeyFromPem(p256), /not Ed25519/);
  });
});

describe('verifyTrail finds each change where it was made', () => {
  it('an edited field of a record in the middle breaks the link to the next line', () => {
    for (const [field, value] of Object.entries({ agent: 'agent-b', tool: 'notes__delete_note', decision: 'deny', correlationId: 'call-x', time: '2020-01-01T00:00:00.000Z', event: 'tools/list', kind: 'other' })) {
      const lines = [...LINES];
      lines[8] = edited(lines[8]!, { [field]: value });
      const report = verifyLines(lines);
      assert.equal(report.ok, false, field);
      assert.deepEqual(errorLines(report), ['10:10'], field);
      assert.match(errorsOf(report)[0]!.message, /does not follow line 9 of case-\d+\.jsonl: that line was edited/);
    }
  });

  it('an edited seq or prev is reported on the edited line itself', () => {
    const seqEdit = [...LINES];
    seqEdit[8] = edited(seqEdit[8]!, { seq: 90 });
    assert.equal(errorLines(verifyLines(seqEdit))[0], '9:90');
    const prevEdit = [...LINES];
    prevEdit[8] = edited(prevEdit[8]!, { prev: 'a'.repeat(64) });
    // The edited line's own hash changed too, so the next link breaks as well.
    assert.deepEqual(errorLines(verifyLines(prevEdit)), ['9:9', '10:10']);
  });

  it('an edited first record (the one that opens the trail) is caught by the checkpoint after it', () => {
    for (const changes of [{ pid: 1 }, { reason: 'rotated' }, { publicKey: attacker.publicKey.export({ type: 'spki', format: 'der' }).toString('base64') }]) {
      const lines = [...LINES];
      lines[0] = edited(lines[0]!, changes);
      const report = verifyLines(lines);
      assert.equal(report.ok, false);
      assert.equal(errorLines(report)[0], '2:2', JSON.stringify(changes));
    }
  });

  it('an edited checkpoint, the closing one included, fails its signature', () => {
    for (const n of [7, 15]) {
      const lines = [...LINES];
      lines[n - 1] = edited(lines[n - 1]!, { records: 99 });
      const report = verifyLines(lines);
      assert.equal(errorLines(report)[0], `${n}:${n}`);
      assert.match(errorsOf(report)[0]!.message, /signature is not valid/);
    }
  });

  it('a line re-encoded without changing its JSON value (spacing, repeated keys, escapes) is reported', () => {
    const last = LINES[14]!;
    for (const variant of [last.replace('"final":true', '"final": true'), last.replace('"records":2', '"records":5,"records":2'), last.replace('"service":"mcp-warden"', '"service":"\\u006dcp-warden"')]) {
      assert.notEqual(variant, last);
      assert.deepEqual(JSON.parse(variant), JSON.parse(last));
      const report = verifyLines([...LINES.slice(0, 14), variant]);
      assert.deepEqual(errorLines(report), ['15:15']);
      assert.match(errorsOf(report)[0]!.message, /not as the broker wrote it/);
    }
  });

  it('a removed record in the middle: the next seq jumps', () => {
    const report = verifyLines(without(LINES, 9));
    assert.deepEqual(errorLines(report), ['9:10']);
    assert.match(errorsOf(report)[0]!.message, /seq 10 where 9 was expected: 1 record\(s\) removed before this line/);
  });

  it('a removed first record: the file no longer begins with its opening record', () => {
    for (const removed of [1, 2]) {
      const report = verifyLines(LINES.slice(removed));
      assert.equal(report.ok, false);
      assert.equal(errorLines(report)[0], `1:${removed + 1}`);
      assert.match(errorsOf(report)[0]!.message, /does not begin with the record that opens it/);
    }
  });

  it('a removed record just before a checkpoint: the checkpoint\'s seq jumps', () => {
    const report = verifyLines(without(LINES, 11));
    assert.deepEqual(errorLines(report), ['11:12']);
  });

  it('two records swapped: both places are reported', () => {
    const lines = [...LINES];
    [lines[8], lines[9]] = [lines[9]!, lines[8]!];
    const report = verifyLines(lines);
    assert.equal(report.ok, false);
    assert.deepEqual(errorLines(report).slice(0, 2), ['9:10', '10:9']);
    assert.match(errorsOf(report)[1]!.message, /reordered or repeated/);
  });

  it('a record inserted, chained to the line before it or not', () => {
    const chained = [...LINES.slice(0, 9), chainedAfter(LINES[8]!, { event: 'tools/call', agent: 'agent-a', tool: 'notes__delete_note', decision: 'allow' }), ...LINES.slice(9)];
    const report = verifyLines(chained);
    assert.deepEqual(errorLines(report), ['11:10']);
    const plain = [...LINES.slice(0, 9), JSON.stringify({ event: 'tools/call', agent: 'agent-a' }), ...LINES.slice(9)];
    const second = verifyLines(plain);
    assert.deepEqual(errorLines(second).slice(0, 1), ['10:-']);
    assert.match(errorsOf(second)[0]!.message, /not a chained audit record/);
  });

  it('a record appended by hand after the closing checkpoint', () => {
    const report = verifyLines([...LINES, chainedAfter(LINES[14]!, { event: 'tools/call', agent: 'agent-a' })]);
    assert.deepEqual(errorLines(report), ['16:16']);
    assert.match(errorsOf(report)[0]!.message, /after the closing checkpoint \(seq 15\)/);
  });

  it('a record appended after the last checkpoint of a running broker\'s trail is a notice: it is not signed yet', () => {
    const live = LINES.slice(0, 14); // as if the broker were still running: no closing checkpoint
    const report = verifyLines([...live, chainedAfter(live[13]!, { event: 'tools/call', agent: 'agent-a' })]);
    assert.equal(report.ok, true);
    assert.equal(report.unsigned, 3);
    assert.equal(report.lastCheckpointSeq, 12);
    assert.ok(noticesOf(report).some((n) => /3 record\(s\) after the last checkpoint \(seq 12\) are not covered by a signature yet/.test(n.message)));
  });

  it('a chain recomputed after an edit fails at the next checkpoint\'s signature', () => {
    const lines = [...LINES];
    lines[8] = edited(lines[8]!, { decision: 'deny' });
    const report = verifyLines(rechained(lines, 9));
    assert.deepEqual(errorLines(report), ['12:12', '15:15']);
    assert.ok(errorsOf(report).every((e) => /signature is not valid/.test(e.message)));
  });

  it('checkpoints signed by another key fail against the broker\'s key, whatever key id they name', () => {
    const resigned = LINES.map((line, i) => (recordAt(LINES, i + 1)['event'] === 'audit.checkpoint' ? checkpointAfter(LINES[i - 1]!, attacker, { final: i === 14 }) : line));
    const report = verifyLines(rechained(resigned, 1));
    // '0:-': the trail as a whole, which then holds no valid checkpoint at all.
    assert.deepEqual(errorLines(report), ['2:2', '7:7', '12:12', '15:15', '0:-']);
    assert.match(errorsOf(report)[0]!.message, new RegExp(`signed with key ${attacker.keyId}, not the given key \\(${key.keyId}\\)`));
    // Naming the broker's key id does not help.
    const named = [...LINES.slice(0, 14), checkpointAfter(LINES[13]!, attacker, { final: true, keyId: key.keyId })];
    assert.deepEqual(errorLines(verifyLines(named)), ['15:15']);
  });

  it('a trail reopened by hand with another key verifies only without the broker\'s key, and then says whose key it used', () => {
    const opened = openedAfter(LINES[14]!, attacker);
    const forged = [...LINES, opened];
    forged.push(checkpointAfter(opened, attacker));
    forged.push(chainedAfter(forged.at(-1)!, { event: 'tools/call', agent: 'agent-a', tool: 'notes__delete_note', decision: 'allow' }));
    forged.push(checkpointAfter(forged.at(-1)!, attacker, { final: true }));
    const trusting = verifyLines(forged, { withKey: false });
    assert.equal(trusting.ok, true);
    assert.equal(trusting.key, 'trail');
    const notices = noticesOf(trusting).map((n) => n.message);
    assert.ok(notices.some((m) => /checked against the public key the trail names itself/.test(m)), notices.join('\n'));
    assert.ok(notices.some((m) => m.includes(`another audit key (${attacker.keyId}, before ${key.keyId})`)), notices.join('\n'));
    const checked = verifyLines(forged);
    assert.equal(checked.ok, false);
    assert.equal(checked.key, 'given');
    assert.deepEqual(errorLines(checked), ['17:17', '18:18', '19:19']);
  });

  it('a trail reopened by hand without a checkpoint is still a record after the closing checkpoint', () => {
    const opened = openedAfter(LINES[14]!, key);
    const report = verifyLines([...LINES, opened, chainedAfter(opened, { event: 'tools/call', agent: 'agent-a' })]);
    // Twice at the record after it: the opening has no checkpoint, and the trail was closed.
    assert.deepEqual(errorLines(report), ['17:17', '17:17']);
    assert.ok(errorsOf(report).some((e) => /not followed by its checkpoint: written by hand/.test(e.message)));
    assert.ok(errorsOf(report).some((e) => /after the closing checkpoint/.test(e.message)));
  });
});
