import { hash, randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fdatasync,
  fdatasyncSync,
  fstatSync,
  linkSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { WardenError } from '../errors.ts';
import { chainRecord, formatLine, GENESIS, lineHash, MAX_LINE_BYTES, signCheckpoint } from './chain.ts';
import { MAX_TRAIL_SLOTS, trailFiles, trailLines, trailSlot } from './read.ts';
import type { AuditKey } from './signing-key.ts';

/**
 * The requests of the resource, prompt and completion paths (src/surface/), one record each;
 * subscriptions/listen is recorded only when refused as a whole (each URI it names is a
 * resources/subscribe record of its own).
 */
export type SurfaceEvent = 'resources/list' | 'resources/templates/list' | 'resources/read' | 'resources/subscribe' | 'resources/unsubscribe' | 'subscriptions/listen' | 'prompts/list' | 'prompts/get' | 'completion/complete';

/** One audit record. Argument values never appear; argsSha256 identifies them. */
export interface AuditRecord {
  readonly event:
    | 'tools/list'
    | 'tools/call'
    | 'tools/call.dispatch'
    | SurfaceEvent
    | 'server.request'
    | 'server.state'
    | 'server.quarantined'
    | 'manifest.rejected'
    | 'manifest.accepted'
    | 'auth.failure'
    | 'broker.start'
    | 'broker.stop'
    | 'approval.requested'
    | 'approval.decided'
    | 'killswitch.changed'
    | 'config.reloaded'
    | 'config.refused'
    | 'egress.refused'
    | 'sandbox.worker'
    | 'audit.opened'
    | 'audit.checkpoint';
  readonly correlationId?: string;
  readonly agent?: string;
  readonly tool?: string;
  readonly server?: string;
  readonly decision?: 'allow' | 'deny';
  readonly reason?: string | null;
  readonly outcome?: 'ok' | 'tool_error' | 'refused' | 'failed' | 'input_required';
  readonly durationMs?: number;
  readonly argsSha256?: string | null;
  readonly [key: string]: unknown;
}

export interface AuditTrail {
  /**
   * Appends a record now: when this returns, the line is in the kernel's hands (a process
   * killed at any later moment cannot lose it). Throws if it cannot be written; the trail
   * is then unhealthy.
   */
  write(record: AuditRecord): void;
  /** False once a write has failed; callers then refuse calls (fail closed). */
  readonly healthy: boolean;
  /** Writes a final signed checkpoint, flushes to disk and closes. */
  close(): void;
}

/** The newest checkpoint of a trail: its sequence number, the SHA-256 of its line, where. */
export interface AuditHead {
  readonly seq: number;
  readonly hash: string;
  readonly file: string;
  readonly time: string;
}

export interface AuditTrailOptions {
  /** The broker's audit signing key: every checkpoint is signed with it. */
  readonly key: AuditKey;
  /** A file larger than this is closed with a final checkpoint and renamed; a new one continues the chain. */
  readonly rotateBytes?: number;
  /** A checkpoint after this many records ... */
  readonly checkpointEvery?: number;
  /** ... or this long after the first record not yet covered by one. */
  readonly checkpointMs?: number;
  /** Records reach the disk (fdatasync) within this bound; 0: after every record. */
  readonly fsyncMs?: number;
  /** Told of every checkpoint written (the broker keeps the newest in its state store). */
  readonly onCheckpoint?: (head: AuditHead) => void;
  /** The newest checkpoint the state store knows: a trail that ends before it was cut. */
  readonly lastCheckpoint?: (file: string) => AuditHead | undefined;
}

export const AUDIT_DEFAULTS = {
  rotateBytes: 64 * 1024 * 1024,
  checkpointEvery: 1000,
  checkpointMs: 5000,
  fsyncMs: 1000,
} as const;

/** How the writer found the file it continues; written into the `audit.opened` record. */
interface Resume {
  readonly seq: number;
  readonly prev: string;
  readonly size: number;
  /** The seq of the file's first record: the name the file gets when it is rotated. */
  readonly firstSeq: number;
  readonly facts: Record<string, unknown>;
}

/**
 * The audit trail: one JSON line per decision, each chained to the one before (chain.ts),
 * appended with one write(2) per record before the caller goes on, so a record exists
 * before the call it describes is dispatched and before its result is returned. Signed
 * checkpoints follow every `checkpointEvery` records, at most `checkpointMs` apart, at
 * rotation and at close; data reaches the disk within `fsyncMs`.
 *
 * One broker writes a trail at a time (a lock file beside it). A trail left by a broker
 * that was killed is continued: an incomplete last line (cut mid-write) is removed, and
 * its size and digest are recorded in the `audit.opened` record that resumes the chain.
 */
export function openAuditTrail(configured: string, options: AuditTrailOptions): AuditTrail & { readonly file: string } {
  const settings: { rotateBytes: number; checkpointEvery: number; checkpointMs: number; fsyncMs: number } = { ...AUDIT_DEFAULTS, ...definedOnly(options) };
  const { key } = options;
  const publicKey = key.publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
  let fd: number;
  let regular: boolean;
  let lock: string | undefined;
  let resume: Resume;
  let file = configured;
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    fd = openSync(file, 'a+', 0o600);
  } catch (error) {
    throw unwritable(file, `cannot open the audit trail ${file}: ${codeOf(error)}; the broker does not serve without it`);
  }
  try {
    regular = fstatSync(fd).isFile();
    // A device or pipe (/dev/stderr for a log collector) is a fresh stream each time.
    if (!regular) {
      resume = { seq: 0, prev: GENESIS, size: 0, firstSeq: 1, facts: { reason: 'new', stream: true } };
    } else {
      // One writer per chain: while another broker writes the configured file, this one
      // writes its own chain beside it (audit-2.jsonl, ...), which verify finds too.
      const slot = acquireSlot(configured);
      lock = slot.lock;
      if (slot.file !== file) {
        closeSync(fd);
        fd = -1;
        file = slot.file;
        fd = openSync(file, 'a+', 0o600);
        if (!fstatSync(fd).isFile()) throw unwritable(file, `${file} is not a regular file`);
      }
      const found = resumePoint(file, fd);
      if (found === 'unchained') {
        // Not a chained trail (an older format, or not an audit trail): kept, renamed aside.
        closeSync(fd);
        fd = -1;
        const aside = freeName(join(dirname(file), `${basename(file)}.unchained-${compactTime(new Date())}`));
        renameSync(file, aside);
        fd = openSync(file, 'a+', 0o600);
        resume = { seq: 0, prev: GENESIS, size: 0, firstSeq: 1, facts: { reason: 'new', previousFile: basename(aside) } };
      } else {
        resume = found;
      }
    }
  } catch (error) {
    if (fd >= 0) closeSync(fd);
    if (lock) releaseLock(lock);
    throw error instanceof WardenError ? error : unwritable(file, `cannot read the end of the audit trail ${file}: ${codeOf(error)}`);
  }

  let seq = resume.seq;
  let prev = resume.prev;
  let size = resume.size;
  let firstSeq = resume.firstSeq;
  let sinceCheckpoint = 0;
  let dirty = false;
  let syncing = false;
  /** Which file fd is: rotation closes the one a background fdatasync may still be syncing. */
  let generation = 0;
  let healthy = true;
  let closed = false;
  /** The newest checkpoint told to onCheckpoint. */
  let recordedSeq = 0;

  /** Appends one line; the chain advances only once the whole line is written. */
  const append = (record: Readonly<Record<string, unknown>>, time = new Date().toISOString()): string => {
    if (!healthy || closed) throw new Error('the audit trail is not writable');
    let line = formatLine(seq + 1, time, prev, record);
    // Encoded once: the line's size, the bytes written, and what the next prev hashes (lineHash(line)).
    let bytes = Buffer.from(`${line}\n`, 'utf8');
    if (bytes.length - 1 > MAX_LINE_BYTES) {
      // Never silently dropped: the event, its correlation id and its size remain.
      line = formatLine(seq + 1, time, prev, { event: record['event'], correlationId: record['correlationId'], oversized: true, bytes: bytes.length - 1 });
      bytes = Buffer.from(`${line}\n`, 'utf8');
    }
    try {
      for (let offset = 0; offset < bytes.length; ) offset += writeSync(fd, bytes, offset);
      if (settings.fsyncMs === 0) fdatasyncSync(fd);
    } catch (error) {
      healthy = false;
      throw new Error(`audit write failed: ${codeOf(error)}`);
    }
    seq += 1;
    prev = hash('sha256', bytes.subarray(0, bytes.length - 1), 'hex');
    size += bytes.length;
    dirty = settings.fsyncMs !== 0;
    return line;
  };

  const checkpoint = (final: boolean): void => {
    const time = new Date().toISOString();
    const fields = { event: 'audit.checkpoint', keyId: key.keyId, final, records: sinceCheckpoint };
    const signature = signCheckpoint(chainRecord(seq + 1, time, prev, fields), key.privateKey);
    const line = append({ ...fields, signature }, time);
    sinceCheckpoint = 0;
    const head = { seq, hash: lineHash(line), file, time };
    const record = (): void => {
      // Never an older head after a newer one (a close records its final one at once).
      if (head.seq <= recordedSeq) return;
      recordedSeq = head.seq;
      try {
        options.onCheckpoint?.(head);
      } catch {
        // The state store reports its own failures; the trail itself is intact.
      }
    };
    // On disk before the state store records it: a machine crash must not leave the store
    // naming a checkpoint the file lost (which would read as records cut from the trail).
    if (settings.fsyncMs === 0) return record();
    if (final) {
      // Closing or rotating: the file is synced and closed right after, so wait for it here.
      try {
        fdatasyncSync(fd);
      } catch (error) {
        healthy = false;
        throw new Error(`audit flush failed: ${codeOf(error)}`);
      }
      return record();
    }
    // Otherwise off the event loop: calls go on while the disk catches up.
    const synced = generation;
    fdatasync(fd, (error) => {
      // A rotation since synced this file before closing it.
      if (!error || synced !== generation) record();
      else if (!closed) healthy = false;
    });
  };

  const opened = (facts: Record<string, unknown>): void => {
    append({ event: 'audit.opened', ...facts, keyId: key.keyId, publicKey, pid: process.pid });
    // Signs at once everything before, including what a killed broker left unsigned.
    checkpoint(false);
  };

  const rotate = (): void => {
    checkpoint(true);
    fdatasyncSync(fd);
    closeSync(fd);
    fd = -1; // until the new file is open: a failed rotation must not leave a number that may be reused
    const rotated = freeName(join(dirname(file), `${basename(file, extname(file))}.${String(firstSeq).padStart(12, '0')}${extname(file)}`));
    renameSync(file, rotated);
    // 'ax': the name was just freed; anything there now is not ours to append to.
    fd = openSync(file, 'ax', 0o600);
    generation += 1;
    size = 0;
    firstSeq = seq + 1;
    opened({ reason: 'rotated', previousFile: basename(rotated) });
  };

  const write = (record: AuditRecord): void => {
    if (regular && size > 0 && size >= settings.rotateBytes && healthy && !closed) {
      try {
        rotate();
      } catch (error) {
        healthy = false;
        throw new Error(`audit rotation failed: ${codeOf(error)}`);
      }
    }
    append(record);
    sinceCheckpoint += 1;
    if (sinceCheckpoint >= settings.checkpointEvery) checkpoint(false);
  };

  const last = regular ? options.lastCheckpoint?.(file) : undefined;
  let behind: Record<string, unknown> = {};
  if (last && resume.seq < last.seq) behind = { gap: { lastCheckpoint: last, trailEndsAt: resume.seq } };
  else if (last && lineHashAt(file, last.seq) !== last.hash) {
    // The trail is as long as the state store remembers, but not the one it remembers:
    // signing on would vouch for whatever replaced it.
    closeSync(fd);
    if (lock) releaseLock(lock);
    throw unwritable(
      file,
      `the audit trail ${file} no longer holds the checkpoint the state store recorded (seq ${last.seq}, ${last.time}): it was replaced or edited while no broker wrote it. Run "mcp-warden audit verify --config <config>" to see where; to start a new trail, move ${file} and its rotated files aside`,
    );
  } else if (last && resume.seq > last.seq) {
    // Written after the last checkpoint by a broker that did not close the trail: whoever
    // could write the file since could have changed them, and the next checkpoint signs them.
    behind = { unsignedBefore: { fromSeq: last.seq + 1, toSeq: resume.seq } };
  }
  try {
    opened({ ...resume.facts, ...behind });
  } catch (error) {
    closeSync(fd);
    if (lock) releaseLock(lock);
    throw unwritable(file, `cannot write the audit trail ${file}: ${(error as Error).message}; the broker does not serve without it`);
  }

  const timers = [
    setInterval(() => {
      if (sinceCheckpoint === 0 || !healthy || closed) return;
      try {
        checkpoint(false);
      } catch {
        // healthy is now false: calls are refused until the trail is fixed
      }
    }, settings.checkpointMs),
    ...(settings.fsyncMs > 0
      ? [
          setInterval(() => {
            if (!dirty || syncing || closed) return;
            dirty = false;
            syncing = true;
            const synced = generation;
            fdatasync(fd, (error) => {
              syncing = false;
              // A file rotation closed was synced before it was closed.
              if (error && !closed && synced === generation) healthy = false;
            });
          }, settings.fsyncMs),
        ]
      : []),
  ];
  for (const timer of timers) timer.unref();

  return {
    file,
    write,
    get healthy() {
      return healthy;
    },
    close() {
      if (closed) return;
      for (const timer of timers) clearInterval(timer);
      try {
        if (healthy) checkpoint(true);
        fdatasyncSync(fd);
      } catch {
        // already unhealthy; what was written stays
      }
      closed = true;
      try {
        closeSync(fd);
      } catch {
        // a failed rotation left no file open
      }
      if (lock) releaseLock(lock);
    },
  };
}

/**
 * Where a regular file's chain continues: after its last complete line. An incomplete
 * last line (the process was killed mid-write, or the machine stopped) is cut off and
 * reported. 'unchained' when the last line is not a chained record. An empty file goes
 * on from the newest rotated file, if there is one: the broker may have stopped between
 * renaming the full file and writing the new one.
 */
function resumePoint(file: string, fd: number): Resume | 'unchained' {
  const size = fstatSync(fd).size;
  const fresh = (facts: Record<string, unknown>): Resume => afterRotation(file, facts) ?? { seq: 0, prev: GENESIS, size: 0, firstSeq: 1, facts: { ...facts, reason: 'new' } };
  if (size === 0) return fresh({});
  const end = fileEnd(fd, size);
  if (!end.newline && !end.whole) {
    throw unwritable(file, `the audit trail ${file} ends with ${end.partial.length} or more bytes that are not a complete record; run "mcp-warden audit verify ${file}", then move the file aside to start a new trail`);
  }
  const last = end.line === undefined ? undefined : chainedSeq(end.line);
  if (end.newline && last === undefined) return 'unchained';
  const facts: Record<string, unknown> = {};
  const kept = size - end.partial.length;
  if (end.partial.length > 0) {
    facts['discardedTail'] = { bytes: end.partial.length, sha256: hash('sha256', end.partial, 'hex') };
    ftruncateSync(fd, kept);
  }
  if (last === undefined || end.line === undefined) return fresh(facts);
  const head = readAt(fd, 0, Math.min(kept, MAX_LINE_BYTES + 1));
  const newline = head.indexOf(0x0a);
  const first = newline === -1 ? undefined : chainedSeq(head.subarray(0, newline).toString('utf8'));
  return { seq: last, prev: lineHash(end.line), size: kept, firstSeq: first ?? last + 1, facts: { reason: 'resumed', ...facts } };
}

/** The chain's continuation from the newest rotated file beside an empty live file, if any. */
function afterRotation(file: string, facts: Record<string, unknown>): Resume | undefined {
  const previous = trailFiles(file).at(-2);
  if (previous === undefined) return undefined;
  let fd: number | undefined;
  try {
    fd = openSync(previous, 'r');
    const end = fileEnd(fd, fstatSync(fd).size);
    const seq = end.line === undefined ? undefined : chainedSeq(end.line);
    if (seq === undefined || end.line === undefined) return undefined;
    return { seq, prev: lineHash(end.line), size: 0, firstSeq: seq + 1, facts: { ...facts, reason: 'rotated', previousFile: basename(previous) } };
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

interface FileEnd {
  /** The last complete line; undefined when there is none, or it is longer than any record. */
  readonly line: string | undefined;
  /** The bytes after the last newline: a record cut mid-write. */
  readonly partial: Buffer;
  /** Whether the part read holds a newline at all. */
  readonly newline: boolean;
  /** Whether the part read is the whole file. */
  readonly whole: boolean;
}

function fileEnd(fd: number, size: number): FileEnd {
  // The last complete line and an incomplete one after it both fit in this window.
  const window = Math.min(size, 2 * MAX_LINE_BYTES + 2);
  const tail = readAt(fd, size - window, window);
  const lastNewline = tail.lastIndexOf(0x0a);
  const partial = tail.subarray(lastNewline + 1);
  const whole = tail.length === size;
  if (lastNewline === -1) return { line: undefined, partial, newline: false, whole };
  // (a negative offset would make lastIndexOf search from the end)
  const before = lastNewline === 0 ? -1 : tail.lastIndexOf(0x0a, lastNewline - 1);
  const line = before === -1 && !whole ? undefined : tail.subarray(before + 1, lastNewline).toString('utf8');
  return { line, partial, newline: true, whole };
}

function readAt(fd: number, position: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  let read = 0;
  while (read < length) {
    const n = readSync(fd, buffer, read, length - read, position + read);
    if (n === 0) break;
    read += n;
  }
  return buffer.subarray(0, read);
}

/** The seq of a chained record's line; undefined when the line is not one. */
function chainedSeq(line: string): number | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return undefined;
  }
  const { seq, prev } = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as { seq?: unknown; prev?: unknown };
  return Number.isSafeInteger(seq) && (seq as number) >= 1 && typeof prev === 'string' && /^[0-9a-f]{64}$/.test(prev) ? (seq as number) : undefined;
}

/** The locks this process holds: the pid in a lock file cannot tell two of its own trails apart. */
const locksHeld = new Set<string>();

/**
 * The SHA-256 of the line with this seq in a trail (the live file, then its rotated files,
 * newest first), or undefined when no file holds it. Reads only the `"seq":N` at the start
 * of each line, as the writer writes it.
 */
function lineHashAt(file: string, seq: number): string | undefined {
  for (const candidate of trailFiles(file).reverse()) {
    let first: number | undefined;
    for (const line of trailLines(candidate)) {
      if (line.text === undefined || !line.complete) continue;
      const found = /^\{"seq":(\d{1,16}),/.exec(line.text);
      const at = found ? Number(found[1]) : undefined;
      first ??= at;
      if (at === seq) return lineHash(line.text);
      if (at !== undefined && at > seq) break;
    }
    if (first !== undefined && first <= seq) return undefined;
  }
  return undefined;
}

/**
 * The first of the configured file, then `<stem>-2<ext>`, `<stem>-3<ext>`, ... whose lock
 * this process can take: a broker started while another writes the configured trail gets
 * a chain of its own instead of interleaving with it.
 */
function acquireSlot(configured: string): { readonly file: string; readonly lock: string } {
  for (let n = 1; n <= MAX_TRAIL_SLOTS; n++) {
    const file = trailSlot(configured, n);
    const lock = acquireLock(file);
    if (lock !== 'busy') return { file, lock };
  }
  throw unwritable(configured, `${MAX_TRAIL_SLOTS} brokers are writing audit trails beside ${configured} already; give this broker its own audit.file`);
}

/**
 * The lock file beside the trail: one writer per chain. A lock whose process is gone is
 * taken over; 'busy' while a live process (or this one, for another trail object) holds it.
 */
function acquireLock(file: string): string | 'busy' {
  const lock = `${file}.lock`;
  if (locksHeld.has(resolve(lock))) return 'busy';
  for (let attempt = 0; attempt < 2; attempt++) {
    // Written aside, then linked into place: the lock never exists without its holder in it.
    const draft = `${lock}.${process.pid}.${randomBytes(6).toString('hex')}`;
    try {
      writeFileSync(draft, `${process.pid} ${hostname()}\n`, { mode: 0o600, flag: 'wx' });
      linkSync(draft, lock);
      locksHeld.add(resolve(lock));
      return lock;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw unwritable(file, `cannot create the audit lock ${lock}: ${codeOf(error)}`);
    } finally {
      try {
        unlinkSync(draft);
      } catch {
        // not written
      }
    }
    if (!stale(lock)) return 'busy';
    try {
      unlinkSync(lock);
    } catch {
      // someone else took it over first; the next attempt decides
    }
  }
  throw unwritable(file, `cannot take the audit lock ${lock}`);
}

/**
 * Whether a lock's holder is gone: a process of this machine (same host name) that no
 * longer exists, or this process's own number (a previous process that had it, as after a
 * container restart; this process's own locks are in locksHeld). A lock from another host
 * or container, or one that cannot be read, is never taken over.
 */
function stale(lock: string): boolean {
  const [pidText, host] = readText(lock).trim().split(' ');
  const pid = Number(pidText);
  if (host !== hostname() || !Number.isSafeInteger(pid) || pid <= 0) return false;
  return pid === process.pid || !alive(pid);
}

function releaseLock(lock: string): void {
  locksHeld.delete(resolve(lock));
  try {
    if (readText(lock) === `${process.pid} ${hostname()}\n`) unlinkSync(lock);
  } catch {
    // gone already
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** name, or name-2, name-3, ... whichever does not exist yet. */
function freeName(name: string): string {
  for (let n = 1; n < 1000; n++) {
    const candidate = n === 1 ? name : `${name}-${n}`;
    if (!existsSync(candidate)) return candidate;
  }
  throw new Error(`no free name beside ${name}`);
}

function compactTime(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

function definedOnly(options: AuditTrailOptions): Partial<Record<keyof typeof AUDIT_DEFAULTS, number>> {
  const out: Record<string, number> = {};
  for (const name of ['rotateBytes', 'checkpointEvery', 'checkpointMs', 'fsyncMs'] as const) {
    const value = options[name];
    if (value !== undefined) out[name] = value;
  }
  return out;
}

function codeOf(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? (error as Error).message ?? 'error';
}

function unwritable(file: string, message: string): WardenError {
  return new WardenError('WARDEN_AUDIT_UNWRITABLE', message, { file });
}

/**
 * For records outside a call (server state, auth failures, start and stop): a failed write
 * must not crash the broker from an event handler. It is logged, and the trail is then
 * unhealthy, so the record stage refuses every call until it is fixed.
 */
export function writeOrLog(audit: AuditTrail, record: AuditRecord, logger: { error: (obj: object, msg: string) => void }): void {
  try {
    audit.write(record);
  } catch (error) {
    logger.error({ err: error instanceof Error ? error.message : String(error), event: record.event }, 'audit trail write failed');
  }
}

/** An audit trail held in memory; for tests and tooling that must not touch disk. */
export function memoryAuditTrail(): AuditTrail & { readonly records: AuditRecord[] } {
  const records: AuditRecord[] = [];
  return {
    records,
    healthy: true,
    write(record) {
      records.push(record);
    },
    close() {},
  };
}
