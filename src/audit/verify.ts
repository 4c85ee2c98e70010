import { createPublicKey, type KeyObject } from 'node:crypto';
import { basename } from 'node:path';
import { auditKeyId, checkpointSignatureValid, GENESIS, lineHash } from './chain.ts';
import { trailLines, type TrailLine } from './read.ts';
import type { AuditHead } from './trail.ts';

export interface Finding {
  /** error: the trail was changed or damaged here. notice: worth knowing, not a break. */
  readonly severity: 'error' | 'notice';
  readonly file: string;
  /** 1-based line in file; 0 for findings about the trail as a whole. */
  readonly line: number;
  readonly seq?: number;
  readonly message: string;
}

export interface VerifyReport {
  /** True when no finding is an error. */
  readonly ok: boolean;
  readonly files: readonly string[];
  readonly records: number;
  readonly firstSeq: number | undefined;
  readonly lastSeq: number | undefined;
  readonly checkpoints: number;
  readonly lastCheckpointSeq: number | undefined;
  /** Records after the last valid checkpoint: not covered by a signature yet. */
  readonly unsigned: number;
  /** Where the key checkpoints were checked with came from. */
  readonly key: 'given' | 'trail';
  readonly findings: readonly Finding[];
}

export interface VerifyOptions {
  /** The broker's audit public key. Without it, the key the trail names is used (and said so). */
  readonly publicKey?: KeyObject;
  /** The newest checkpoint the state store recorded: the trail must still contain it. */
  readonly head?: AuditHead;
}

/** Most findings listed; a trail broken everywhere is reported by its first breaks and a count. */
const MAX_FINDINGS = 200;

/**
 * Checks a trail, given as its files in chain order: every line a chained record written
 * as the writer writes it, every file opened by its `audit.opened` record, every sequence
 * number the one after the last, every `prev` the hash of the line before, every
 * checkpoint signature valid, nothing after a closing checkpoint but a reopening signed
 * by a checkpoint, no line cut short, and (with the state store's head) nothing cut from
 * the end. After a break the check continues from the breaking line, so each break is
 * reported where it is.
 */
export function verifyTrail(files: readonly string[], options: VerifyOptions = {}): VerifyReport {
  const findings: Finding[] = [];
  let errors = 0;
  const report = (severity: Finding['severity'], file: string, line: number, message: string, seq?: number): void => {
    if (severity === 'error') errors += 1;
    if (findings.length < MAX_FINDINGS) findings.push({ severity, file, line, message, ...(seq === undefined ? {} : { seq }) });
  };
  const given = options.publicKey;
  const givenKeyId = given && auditKeyId(given);
  let trailKey: KeyObject | undefined;
  let expectedSeq: number | undefined;
  let expectedPrev: string | undefined;
  let firstSeq: number | undefined;
  let lastSeq: number | undefined;
  let records = 0;
  let checkpoints = 0;
  let lastCheckpointSeq: number | undefined;
  let unsigned = 0;
  let closedAt: number | undefined;
  let previousLine = '';
  let trailKeyId: string | undefined;
  /** The seq of an `audit.opened` whose checkpoint has not come yet. */
  let awaitingSignature: number | undefined;
  let headFound: 'match' | 'differs' | undefined;

  for (const file of files) {
    const lines = trailLines(file);
    let empty = true;
    for (;;) {
      let next: IteratorResult<TrailLine>;
      try {
        next = lines.next();
      } catch (error) {
        report('error', file, 0, `cannot read the file: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
        break;
      }
      if (next.done) {
        if (empty) report('error', file, 0, 'the file is empty: a trail file always begins with the record that opens it');
        break;
      }
      empty = false;
      const line = next.value;
      const at = (severity: Finding['severity'], message: string, seq?: number) => report(severity, file, line.number, message, seq);
      if (!line.complete) {
        at('error', `the file ends in the middle of a record (${line.bytes} bytes after the last complete line): it was cut`);
        continue;
      }
      if (line.text === undefined) {
        at('error', `a line of ${line.bytes} bytes, longer than any record the broker writes: inserted or damaged`);
        expectedPrev = undefined;
        continue;
      }
      const here = previousLine;
      previousLine = `line ${line.number} of ${basename(file)}`;
      const record = parse(line.text);
      if (!record) {
        at('error', 'not a chained audit record (not JSON, or no seq and prev): inserted or damaged');
        // The next record's prev names this line if it was edited in place.
        expectedPrev = lineHash(line.text);
        expectedSeq = undefined;
        continue;
      }
      const { seq, prev } = record;
      records += 1;
      firstSeq ??= seq;
      lastSeq = seq;
      if (JSON.stringify(record) !== line.text) at('error', 'the line is not as the broker wrote it (its JSON was re-encoded or edited)', seq);
      // Every record has an event, and only a checkpoint is signed: the one edit to a closing
      // checkpoint its signature cannot see is the one that makes it no checkpoint at all.
      if (typeof record.event !== 'string') at('error', 'a record with no event: edited', seq);
      else if (record.event !== 'audit.checkpoint' && 'signature' in record) at('error', 'a signed record that is not a checkpoint: its event was edited', seq);
      if (line.number === 1 && record.event !== 'audit.opened') at('error', 'the file does not begin with the record that opens it (audit.opened): records were removed from its start', seq);
      if (expectedSeq === undefined && expectedPrev === undefined) {
        if (prev === GENESIS && seq !== 1) at('error', `the first record of a trail must have seq 1, not ${seq}`, seq);
        else if (prev !== GENESIS && record.event === 'audit.opened') {
          // Only rotation starts a file in the middle of a chain.
          if (record.reason === 'rotated') at('notice', `the chain starts at seq ${seq}: the records before it are in an earlier file not given here`, seq);
          else at('error', `the chain starts at seq ${seq}, but not where rotation began a file: the records before it were removed`, seq);
        }
      } else {
        const seqOk = expectedSeq === undefined || seq === expectedSeq;
        const prevOk = expectedPrev === undefined || prev === expectedPrev;
        if (!seqOk && expectedSeq !== undefined) {
          at(
            'error',
            seq > expectedSeq
              ? `seq ${seq} where ${expectedSeq} was expected: ${seq - expectedSeq} record(s) removed before this line${line.number === 1 ? ', or a file is missing before this one' : ''}`
              : `seq ${seq} where ${expectedSeq} was expected: records reordered or repeated${line.number === 1 ? ', or files given out of order' : ''}`,
            seq,
          );
        } else if (!prevOk) {
          at('error', `does not follow ${here}: that line was edited, or records were removed or inserted between them`, seq);
        }
      }
      if (closedAt !== undefined && record.event !== 'audit.opened' && record.event !== 'audit.checkpoint') {
        at('error', `a record after the closing checkpoint (seq ${closedAt}) with no signed reopening: appended by hand`, seq);
      }
      // The writer signs right after it opens a trail; an opening nothing signs was not written by it.
      if (awaitingSignature !== undefined && record.event !== 'audit.checkpoint') {
        at('error', `the record that opens the trail at seq ${awaitingSignature} is not followed by its checkpoint: written by hand`, seq);
        awaitingSignature = undefined;
      }
      if (record.event === 'audit.opened') {
        opening(record, seq, at);
        awaitingSignature = seq;
      }
      if (record.event === 'audit.checkpoint') {
        awaitingSignature = undefined;
        const key = given ?? trailKey;
        const expectedKeyId = givenKeyId ?? trailKeyId;
        const keyId = typeof record.keyId === 'string' ? record.keyId : '';
        if (!key) at('error', 'a checkpoint with no key to check it against', seq);
        else if (keyId !== expectedKeyId) at('error', `a checkpoint signed with key ${printable(keyId)}, not ${given ? 'the given key' : 'the key the trail names'} (${expectedKeyId})`, seq);
        else if (!checkpointSignatureValid(record, typeof record.signature === 'string' ? record.signature : '', key)) {
          at('error', 'the checkpoint signature is not valid: the records before it or the checkpoint were changed', seq);
        } else {
          checkpoints += 1;
          lastCheckpointSeq = seq;
          unsigned = 0;
          // A reopening counts once a checkpoint signs it.
          closedAt = record.final === true ? seq : undefined;
        }
      } else {
        unsigned += 1;
      }
      const hash = lineHash(line.text);
      if (options.head && seq === options.head.seq) headFound = hash === options.head.hash ? 'match' : 'differs';
      expectedSeq = seq + 1;
      expectedPrev = hash;
    }
  }

  /** An `audit.opened` record: the key it names, and what the broker found when it opened the trail. */
  function opening(record: ChainedRecord, seq: number, at: (severity: Finding['severity'], message: string, seq?: number) => void): void {
    const key = typeof record.publicKey === 'string' ? keyFrom(record.publicKey) : undefined;
    if (!given) {
      if (!key) at('error', 'the record that opens the trail names no valid public key', seq);
      else {
        const keyId = auditKeyId(key);
        if (trailKeyId !== undefined && keyId !== trailKeyId) {
          at('notice', `from here on the trail names another audit key (${keyId}, before ${trailKeyId}): the broker's key was replaced, or someone else reopened the trail; check with the broker's key`, seq);
        }
        trailKey = key;
        trailKeyId = keyId;
      }
    }
    const gap = record.gap as { lastCheckpoint?: { seq?: unknown; time?: unknown }; trailEndsAt?: unknown } | undefined;
    if (typeof gap === 'object' && gap !== null) {
      at(
        'error',
        `when the broker opened the trail it ended at seq ${printable(String(gap.trailEndsAt))}, before the checkpoint at seq ${printable(String(gap.lastCheckpoint?.seq))} its state store had recorded (${printable(String(gap.lastCheckpoint?.time))}): records were cut from the end while it was stopped, or lost in a machine crash`,
        seq,
      );
    }
    const inherited = record.unsignedBefore as { fromSeq?: unknown; toSeq?: unknown } | undefined;
    if (typeof inherited === 'object' && inherited !== null) {
      at(
        'notice',
        `records seq ${printable(String(inherited.fromSeq))} to ${printable(String(inherited.toSeq))} were written after the last checkpoint before the broker stopped without closing the trail (killed, or the machine stopped); the checkpoint after this record signs them as they were found then, not as they were written`,
        seq,
      );
    }
    const discarded = record.discardedTail as { bytes?: unknown; sha256?: unknown } | undefined;
    if (typeof discarded === 'object' && discarded !== null) {
      at('notice', `when the broker opened the trail it cut off an incomplete last line (${printable(String(discarded.bytes))} bytes, sha256 ${printable(String(discarded.sha256))}): the broker before it stopped in the middle of a write`, seq);
    }
  }

  const whole = files.at(-1) ?? '';
  if (records === 0 && errors === 0) report('error', whole, 0, 'no audit records found');
  if (records > 0 && checkpoints === 0) report('error', whole, 0, 'no valid checkpoint anywhere: nothing in this trail is signed by the broker');
  if (unsigned > 0) {
    report(
      'notice',
      whole,
      0,
      `${unsigned} record(s) after the last checkpoint${lastCheckpointSeq === undefined ? '' : ` (seq ${lastCheckpointSeq})`} are not covered by a signature yet: the broker is running, or was stopped without closing the trail`,
    );
  }
  if (options.head) {
    const head = options.head;
    if (headFound === 'differs') {
      report('error', whole, 0, `the record at seq ${head.seq} is not the checkpoint the state store recorded at ${printable(head.time)}: the trail was replaced or rewritten`, head.seq);
    } else if (headFound === undefined && (lastSeq === undefined || lastSeq < head.seq)) {
      report('error', whole, 0, `the trail ends at seq ${lastSeq ?? 0}, before the checkpoint at seq ${head.seq} the state store recorded at ${printable(head.time)}: records were cut from its end`, head.seq);
    } else if (headFound === undefined) {
      report('notice', whole, 0, `the state store's newest checkpoint (seq ${head.seq}) is in a file not given here`, head.seq);
    }
  }
  if (!given) report('notice', whole, 0, 'checkpoints were checked against the public key the trail names itself; pass --key or --config to check them against the broker\'s key');
  if (errors > findings.filter((f) => f.severity === 'error').length) report('notice', whole, 0, `${errors} errors in all; the first ones are listed`);
  return { ok: errors === 0, files: [...files], records, firstSeq, lastSeq, checkpoints, lastCheckpointSeq, unsigned, key: given ? 'given' : 'trail', findings };
}

interface ChainedRecord {
  readonly seq: number;
  readonly prev: string;
  readonly event?: unknown;
  readonly [key: string]: unknown;
}

function parse(text: string): ChainedRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const { seq, prev } = value as { seq?: unknown; prev?: unknown };
  if (!Number.isSafeInteger(seq) || (seq as number) < 1 || typeof prev !== 'string' || !/^[0-9a-f]{64}$/.test(prev)) return undefined;
  return value as ChainedRecord;
}

function keyFrom(spkiBase64: string): KeyObject | undefined {
  try {
    const key = createPublicKey({ key: Buffer.from(spkiBase64, 'base64'), format: 'der', type: 'spki' });
    return key.asymmetricKeyType === 'ed25519' ? key : undefined;
  } catch {
    return undefined;
  }
}

/** Text from the trail, made safe to print: printable ASCII only, bounded. */
export function printable(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?').slice(0, 200);
}
