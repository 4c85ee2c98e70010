import { closeSync, existsSync, openSync, readdirSync, readSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import { MAX_LINE_BYTES } from './chain.ts';

/** One line of a trail file as read: its text (without the newline), where it is, and whether it ended. */
export interface TrailLine {
  readonly file: string;
  /** 1-based line number in its file. */
  readonly number: number;
  /** The line's text; undefined when it was longer than MAX_LINE_BYTES (not read). */
  readonly text: string | undefined;
  /** Bytes of the line, newline excluded. */
  readonly bytes: number;
  /** False for the last line of a file that does not end with a newline (cut mid-record). */
  readonly complete: boolean;
}

const CHUNK = 1024 * 1024;

/**
 * Every line of a file, in order, read in bounded chunks: a file of any size is read in
 * constant memory, and a line longer than MAX_LINE_BYTES is reported without its text.
 */
export function* trailLines(file: string): Generator<TrailLine> {
  const fd = openSync(file, 'r');
  try {
    const buffer = Buffer.alloc(CHUNK);
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let oversized = false;
    let number = 0;
    let position = 0;
    for (;;) {
      const n = readSync(fd, buffer, 0, CHUNK, position);
      if (n === 0) break;
      position += n;
      let start = 0;
      for (let newline = buffer.indexOf(0x0a, start); newline !== -1 && newline < n; newline = buffer.indexOf(0x0a, start)) {
        const piece = buffer.subarray(start, newline);
        const bytes = pendingBytes + piece.length;
        number += 1;
        const tooLong = oversized || bytes > MAX_LINE_BYTES;
        yield { file, number, bytes, complete: true, text: tooLong ? undefined : Buffer.concat([...pending, piece]).toString('utf8') };
        pending = [];
        pendingBytes = 0;
        oversized = false;
        start = newline + 1;
      }
      if (start < n) {
        const rest = buffer.subarray(start, n);
        pendingBytes += rest.length;
        if (pendingBytes > MAX_LINE_BYTES) {
          oversized = true;
          pending = [];
        } else {
          pending.push(Buffer.from(rest));
        }
      }
    }
    if (pendingBytes > 0) {
      yield { file, number: number + 1, bytes: pendingBytes, complete: false, text: oversized ? undefined : Buffer.concat(pending).toString('utf8') };
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * A trail's files in chain order: the files rotation renamed aside (`audit.<first seq,
 * 12 digits>.jsonl`, oldest first), then the live file.
 */
export function trailFiles(file: string): string[] {
  const dir = dirname(file);
  const extension = extname(file);
  const stem = basename(file, extension);
  const pattern = new RegExp(`^${escapeRegExp(stem)}\\.(\\d{12})${escapeRegExp(extension)}(?:-(\\d+))?$`);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    names = [];
  }
  const rotated = names
    .map((name) => ({ name, match: pattern.exec(name) }))
    .filter((entry): entry is { name: string; match: RegExpExecArray } => entry.match !== null)
    .sort((a, b) => a.match[1]!.localeCompare(b.match[1]!) || Number(a.match[2] ?? 1) - Number(b.match[2] ?? 1))
    .map((entry) => join(dir, entry.name));
  return [...rotated, file];
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** How many brokers may write beside one configured trail at once, each its own chain. */
export const MAX_TRAIL_SLOTS = 64;

/** The file of slot n of a configured trail: the file itself for n = 1, else `<stem>-n<ext>` beside it. */
export function trailSlot(configured: string, n: number): string {
  if (n === 1) return configured;
  const extension = extname(configured);
  return join(dirname(configured), `${basename(configured, extension)}-${n}${extension}`);
}

/**
 * Every chain written beside a configured trail, each as its files in chain order: the
 * configured file's own, then those of brokers that found it busy and wrote
 * `<stem>-2<ext>`, `<stem>-3<ext>`, ... (see trail.ts). The configured one always comes
 * first, whether or not it exists yet.
 */
export function configuredTrails(configured: string): string[][] {
  const trails = [trailFiles(configured)];
  for (let n = 2; n <= MAX_TRAIL_SLOTS; n++) {
    const slot = trailSlot(configured, n);
    const files = trailFiles(slot);
    if (existsSync(slot) || files.length > 1) trails.push(files);
  }
  return trails;
}

/** Whether file is the configured trail or one of the chains written beside it. */
export function slotOf(configured: string, file: string): boolean {
  for (let n = 1; n <= MAX_TRAIL_SLOTS; n++) if (trailSlot(configured, n) === file) return true;
  return false;
}
