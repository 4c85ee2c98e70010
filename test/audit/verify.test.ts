import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { formatLine, GENESIS, lineHash, MAX_LINE_BYTES } from '../../src/audit/chain.ts';
import { loadAuditKey } from '../../src/audit/signing-key.ts';
import { trailFiles, trailLines } from '../../src/audit/read.ts';
import { openAuditTrail } from '../../src/audit/trail.ts';
import { verifyTrail } from '../../src/audit/verify.ts';
import { tempDir } from '../helpers.ts';
import { callRecord, errorLines, errorsOf, keyIn, NO_TIMER, noticesOf, readLines, recordAt, writeLines, writeTrail } from './trails.ts';

const { dir, cleanup } = tempDir('warden-verify-');
after(cleanup);
const key = keyIn(dir, 'broker');
let cases = 0;
const caseFile = (name = 'audit.jsonl') => join(dir, `case-${++cases}`, name);

/** A trail written across several files by rotation: its files in chain order, and the store's head. */
function rotatedTrail() {
  const file = caseFile();
  const { head } = writeTrail(file, key, { count: 60, every: 7, rotateBytes: 2000 });
  return { file, files: trailFiles(file), head: head! };
}

describe('verifyTrail on files', () => {
  it('an intact trail across several rotations verifies with no error, and names every file', () => {
    const { files } = rotatedTrail();
    assert.ok(files.length >= 4, `${files.length} files`);
    for (const rotated of files.slice(0, -1)) assert.match(basename(rotated), /^audit\.\d{12}\.jsonl$/);
    const report = verifyTrail(files, { publicKey: key.publicKey });
    assert.equal(report.ok, true);
    assert.deepEqual(errorsOf(report), []);
    assert.deepEqual(report.findings, []);
    assert.equal(report.files.length, files.length);
    assert.equal(report.firstSeq, 1);
    assert.equal(report.records, report.lastSeq);
    const lines = files.reduce((sum, file) => sum + readLines(file).length, 0);
    assert.equal(report.records, lines);
    assert.equal(report.unsigned, 0);
  });

  it('a rotated file alone verifies, with a notice that the chain starts in an earlier file', () => {
    const { files } = rotatedTrail();
    const report = verifyTrail([files[1]!], { publicKey: key.publicKey });
    assert.equal(report.ok, true);
    assert.match(noticesOf(report)[0]!.message, /the chain starts at seq \d+: the records before it are in an earlier file not given here/);
  });

  it('rotated files out of order, or one missing, are reported at the first line of the file that does not follow', () => {
    const { files } = rotatedTrail();
    const swapped = [files[1]!, files[0]!, ...files.slice(2)];
    const report = verifyTrail(swapped, { publicKey: key.publicKey });
    assert.equal(report.ok, false);
    assert.equal(errorsOf(report)[0]!.file, files[0]);
    assert.equal(errorsOf(report)[0]!.line, 1);
    assert.match(errorsOf(report)[0]!.message, /seq 1 where \d+ was expected: records reordered or repeated, or files given out of order/);
    const missing = verifyTrail([files[0]!, ...files.slice(2)], { publicKey: key.publicKey });
    assert.equal(missing.ok, false);
    assert.deepEqual(errorsOf(missing).map((e) => [e.file, e.line]), [[files[2], 1]]);
    assert.match(errorsOf(missing)[0]!.message, /record\(s\) removed before this line, or a file is missing before this one/);
  });

  it('a file cut in the middle of a line is reported at that line', () => {
    const { file } = writeTrail(caseFile(), key);
    const text = readFileSync(file, 'utf8');
    writeFileSync(file, text.slice(0, text.length - 40));
    const report = verifyTrail([file], { publicKey: key.publicKey });
    assert.deepEqual(errorLines(report), ['15:-']);
    assert.match(errorsOf(report)[0]!.message, /ends in the middle of a record/);
  });

  it('whole records cut from the end pass alone, and are caught with the state store\'s newest checkpoint', () => {
    const { file, head } = writeTrail(caseFile(), key);
    assert.equal(head?.seq, 15);
    assert.equal(head?.hash, lineHash(readLines(file)[14]!));
    writeLines(file, readLines(file).slice(0, 12));
    assert.equal(verifyTrail([file], { publicKey: key.publicKey }).ok, true, 'what is left is a valid trail');
    const report = verifyTrail([file], { publicKey: key.publicKey, head: head! });
    assert.equal(report.ok, false);
    assert.equal(errorsOf(report)[0]!.seq, 15);
    assert.match(errorsOf(report)[0]!.message, /ends at seq 12, before the checkpoint at seq 15 the state store recorded at .*: records were cut from its end/);
  });

  it('a trail replaced by another is caught by the state store\'s head', () => {
    const { head } = writeTrail(caseFile(), key);
    const { file: other } = writeTrail(caseFile(), key, { count: 20 });
    const report = verifyTrail([other], { publicKey: key.publicKey, head: head! });
    assert.equal(report.ok, false);
    assert.match(errorsOf(report)[0]!.message, /the record at seq 15 is not the checkpoint the state store recorded .*: the trail was replaced or rewritten/);
    assert.equal(verifyTrail([other], { publicKey: key.publicKey }).ok, true);
  });

  it('the head of a rotated trail is found in its newest file, and a head in a file not given is a notice', () => {
    const { files, head } = rotatedTrail();
    assert.equal(verifyTrail(files, { publicKey: key.publicKey, head }).ok, true);
    const older = verifyTrail(files.slice(0, 1), { publicKey: key.publicKey, head: { ...head, seq: 2 } });
    assert.equal(older.ok, false, 'seq 2 of the first file is another record');
    const first = recordAt(readLines(files[0]!), 2);
    assert.equal(first['event'], 'audit.checkpoint');
    const lines = readLines(files[0]!);
    const partial = verifyTrail(files.slice(1, 2), { publicKey: key.publicKey, head: { seq: 2, hash: lineHash(lines[1]!), file: files[0]!, time: String(first['time']) } });
    assert.equal(partial.ok, true);
    assert.ok(noticesOf(partial).some((n) => /newest checkpoint \(seq 2\) is in a file not given here/.test(n.message)));
  });

  it('a line that is not JSON, or not a chained record, is reported where it is', () => {
    const { file } = writeTrail(caseFile(), key);
    const lines = readLines(file);
    for (const junk of ['hello', '{"event":"tools/call"}', '[1,2]', '{"seq":9,"prev":"nothex"}', '']) {
      const report = verifyTrail([writeLines(caseFile(), [...lines.slice(0, 8), junk, ...lines.slice(8)])], { publicKey: key.publicKey });
      assert.equal(report.ok, false, junk);
      assert.equal(errorLines(report)[0], '9:-', junk);
      assert.match(errorsOf(report)[0]!.message, /not a chained audit record/);
    }
  });

  it('a line longer than any record is reported without being read', () => {
    const { file } = writeTrail(caseFile(), key);
    const lines = readLines(file);
    const huge = `{"seq":9,"pad":"${'x'.repeat(MAX_LINE_BYTES)}"}`;
    const report = verifyTrail([writeLines(caseFile(), [...lines.slice(0, 8), huge, ...lines.slice(9)])], { publicKey: key.publicKey });
    assert.equal(report.ok, false);
    assert.equal(errorLines(report)[0], '9:-');
    assert.match(errorsOf(report)[0]!.message, /a line of \d+ bytes, longer than any record the broker writes/);
  });

  it('an empty file, a binary file, a missing file and a folder are reported, never thrown', () => {
    const empty = writeLines(caseFile(), []);
    const emptyReport = verifyTrail([empty]);
    assert.equal(emptyReport.ok, false);
    assert.match(errorsOf(emptyReport)[0]!.message, /the file is empty/);
    const binary = writeLines(caseFile(), []);
    writeFileSync(binary, Buffer.concat([randomBytes(3000), Buffer.from([0x0a]), randomBytes(200), Buffer.from([0x0a, 0, 0xff, 0x0a])]));
    const binaryReport = verifyTrail([binary], { publicKey: key.publicKey });
    assert.equal(binaryReport.ok, false);
    assert.equal(binaryReport.records, 0);
    assert.ok(errorsOf(binaryReport).every((e) => /not a chained audit record|no audit records/.test(e.message)));
    const missing = verifyTrail([join(dir, 'no-such-file.jsonl')]);
    assert.equal(missing.ok, false);
    assert.match(errorsOf(missing)[0]!.message, /cannot read the file: ENOENT/);
    assert.equal(verifyTrail([dir]).ok, false);
  });

  it('findings quote the trail\'s text only as printable ASCII', () => {
    const { file } = writeTrail(caseFile(), key);
    const lines = readLines(file);
    const record = recordAt(lines, 15);
    lines[14] = JSON.stringify({ ...record, keyId: '\u001b[31mred\u0007' });
    const report = verifyTrail([writeLines(caseFile(), lines)], { publicKey: key.publicKey });
    assert.equal(report.ok, false);
    const message = errorsOf(report)[0]!.message;
    assert.match(message, /signed with key \?\[31mred\?/);
    assert.doesNotMatch(message, /[\u0000-\u001f\u007f]/);
  });

  it('any single-byte change anywhere in a closed trail is reported', () => {
    // opened, checkpoint, 2 calls, checkpoint, 1 call, closing checkpoint
    const { file } = writeTrail(caseFile(), key, { count: 3, every: 2 });
    const bytes = readFileSync(file);
    assert.equal(readLines(file).length, 7);
    const target = writeLines(caseFile(), []);
    let runs = 0;
    fc.assert(
      fc.property(fc.nat({ max: bytes.length - 1 }), fc.integer({ min: 1, max: 255 }), (at, flip) => {
        runs += 1;
        const changed = Buffer.from(bytes);
        changed[at] = changed[at]! ^ flip;
        writeFileSync(target, changed);
        for (const options of [{ publicKey: key.publicKey }, {}]) {
          const report = verifyTrail([target], options);
          if (report.ok) return false;
        }
        return true;
      }),
      { numRuns: 200 },
    );
    assert.equal(runs, 200);
    // And every position once, deterministically.
    for (let at = 0; at < bytes.length; at++) {
      const changed = Buffer.from(bytes);
      changed[at] = changed[at]! ^ (1 << at % 8);
      writeFileSync(target, changed);
      assert.equal(verifyTrail([target], { publicKey: key.publicKey }).ok, false, `byte ${at}`);
    }
  });

  it('the same trail read back line by line gives its lines as written', () => {
    const { file } = writeTrail(caseFile(), key);
    const read = [...trailLines(file)];
    assert.deepEqual(
      read.map((line) => line.text),
      readLines(file),
    );
    assert.ok(read.every((line, i) => line.complete && line.number === i + 1 && line.bytes === Buffer.byteLength(line.text!)));
  });

  it('trailFiles lists rotated files oldest first and the live file last, ignoring files renamed aside', () => {
    const { file, files } = rotatedTrail();
    writeFileSync(`${file}.unchained-20260101T000000Z`, 'old\n');
    writeFileSync(join(dir, `case-${cases}`, 'audit.notes.jsonl'), 'x\n');
    assert.deepEqual(trailFiles(file), files);
    assert.equal(files.at(-1), file);
    const seqs = files.map((f) => recordAt(readLines(f), 1)['seq'] as number);
    assert.deepEqual([...seqs].sort((a, b) => a - b), seqs);
    for (const rotated of files.slice(0, -1)) assert.equal(basename(rotated), `audit.${String(recordAt(readLines(rotated), 1)['seq']).padStart(12, '0')}.jsonl`);
    assert.ok(readdirSync(join(dir, `case-${cases}`)).includes('audit.jsonl.lock') === false, 'a closed trail leaves no lock');
  });

  it('a live trail, still open, verifies with its unsigned records as a notice', () => {
    const file = caseFile();
    const trail = openAuditTrail(file, { key, checkpointEvery: 100, ...NO_TIMER });
    try {
      for (let i = 0; i < 3; i++) trail.write(callRecord(i));
      const report = verifyTrail([file], { publicKey: key.publicKey });
      assert.equal(report.ok, true);
      assert.equal(report.unsigned, 3);
    } finally {
      trail.close();
    }
    assert.equal(verifyTrail([file], { publicKey: key.publicKey }).unsigned, 0);
  });
});

describe('verifyTrail: what only the broker can write', () => {
  const { dir: own, cleanup: done } = tempDir('warden-verify-own-');
  after(done);

  it('a trail with records and no valid checkpoint is not intact, even with the broker\'s key', () => {
    const file = join(own, 'forged.jsonl');
    const lines: string[] = [];
    let prev = GENESIS;
    for (const record of [{ event: 'audit.opened', reason: 'new' }, { event: 'tools/call', agent: 'a' }, { event: 'tools/call', agent: 'b' }]) {
      const line = formatLine(lines.length + 1, '2026-01-01T00:00:00.000Z', prev, record);
      lines.push(line);
      prev = lineHash(line);
    }
    writeLines(file, lines);
    const report = verifyTrail([file], { publicKey: loadAuditKey(join(own, 'k.key')).publicKey });
    assert.equal(report.ok, false);
    assert.ok(errorsOf(report).some((e) => /no valid checkpoint anywhere/.test(e.message)), JSON.stringify(report.findings));
    assert.ok(errorsOf(report).some((e) => /not followed by its checkpoint/.test(e.message)), JSON.stringify(report.findings));
  });
});
