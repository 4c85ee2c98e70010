import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { WardenError } from '../errors.ts';
import { printable } from './verify.ts';

export interface FilterOptions {
  readonly agent?: string | undefined;
  readonly tool?: string | undefined;
  readonly event?: string | undefined;
  readonly decision?: string | undefined;
  readonly correlation?: string | undefined;
  readonly since?: string | undefined;
  readonly until?: string | undefined;
}

const SPAN_UNITS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A predicate over parsed records that holds when every given filter matches. */
export function compileFilter(options: FilterOptions, now = Date.now()): (record: Record<string, unknown>) => boolean {
  if (options.decision !== undefined && options.decision !== 'allow' && options.decision !== 'deny') {
    throw new WardenError('WARDEN_USAGE', '--decision must be allow or deny');
  }
  const since = options.since === undefined ? undefined : instant('--since', options.since, now);
  const until = options.until === undefined ? undefined : instant('--until', options.until, now);
  const equal: [string, string | undefined][] = [
    ['agent', options.agent],
    ['tool', options.tool],
    ['event', options.event],
    ['decision', options.decision],
    ['correlationId', options.correlation],
  ];
  return (record) => {
    for (const [field, wanted] of equal) if (wanted !== undefined && record[field] !== wanted) return false;
    if (since === undefined && until === undefined) return true;
    const time = typeof record['time'] === 'string' ? Date.parse(record['time']) : Number.NaN;
    if (Number.isNaN(time)) return false;
    return (since === undefined || time >= since) && (until === undefined || time < until);
  };
}

/** An ISO date or date-time, or a span back from now (90s, 15m, 2h, 7d), as epoch ms. */
function instant(option: string, text: string, now: number): number {
  const span = /^(\d{1,9})([smhd])$/.exec(text);
  if (span) return now - Number(span[1]) * SPAN_UNITS[span[2]!]!;
  if (/^\d{4}-\d\d-\d\d(?:[T ][\d:.]+(?:Z|[+-]\d\d:?\d\d)?)?$/.test(text)) {
    const time = Date.parse(text);
    if (!Number.isNaN(time)) return time;
  }
  throw new WardenError('WARDEN_USAGE', `${option} must be an ISO date or time (2026-11-23, 2026-11-23T10:00Z) or a span such as 90s, 15m, 2h or 7d`);
}

/** The record on a line, or undefined when the line is not a JSON object. */
export function parseRecord(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * One record as a JSON line for another program, re-serialised from the parsed record:
 * a control character written raw into the file comes out escaped. Undefined when the
 * line is not a record.
 */
export function recordJson(text: string): string | undefined {
  const record = parseRecord(text);
  // JSON.stringify escapes C0 controls only; these too: DEL, C1 controls (CSI), invisible
  // and bidirectional formatting characters, line separators.
  return record && JSON.stringify(record).replace(/[\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

const LEADING = new Set(['seq', 'time', 'event', 'service', 'prev', 'signature', 'publicKey']);

/**
 * One record for a person: time, seq and event first, then the rest as key=value. Every
 * value is printed as printable ASCII: a record's text came partly from agents and tools.
 */
export function formatRecord(text: string): string {
  const record = parseRecord(text);
  if (!record) return `(not a record) ${printable(text)}`;
  const fields = Object.entries(record)
    .filter(([key]) => !LEADING.has(key))
    .map(([key, value]) => `${printable(key)}=${printable(typeof value === 'string' ? value : JSON.stringify(value) ?? String(value))}`);
  return [printable(String(record['time'] ?? '')), `#${printable(String(record['seq'] ?? '?'))}`, printable(String(record['event'] ?? '?')), ...fields].join('  ');
}

/**
 * Prints lines appended to a trail file as they come, until the process is interrupted.
 * Polls twice a second; when the file is rotated (replaced by a new, smaller one), reads
 * the new file from its start.
 */
export async function followTrail(file: string, onLine: (text: string) => void, signal?: AbortSignal): Promise<void> {
  let position = statSync(file).size;
  let inode = statSync(file).ino;
  let pending = Buffer.alloc(0);
  while (!signal?.aborted) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    let stat;
    try {
      stat = statSync(file);
    } catch {
      continue; // between the rename and the new file
    }
    if (stat.ino !== inode || stat.size < position) {
      inode = stat.ino;
      position = 0;
      pending = Buffer.alloc(0);
    }
    if (stat.size === position) continue;
    const fd = openSync(file, 'r');
    try {
      const buffer = Buffer.alloc(Math.min(stat.size - position, 4 * 1024 * 1024));
      const n = readSync(fd, buffer, 0, buffer.length, position);
      position += n;
      // Split on newline bytes, so a character cut between two reads stays whole.
      let data = Buffer.concat([pending, buffer.subarray(0, n)]);
      for (let newline = data.indexOf(0x0a); newline !== -1; newline = data.indexOf(0x0a)) {
        if (newline > 0) onLine(data.subarray(0, newline).toString('utf8'));
        data = data.subarray(newline + 1);
      }
      pending = Buffer.from(data);
    } finally {
      closeSync(fd);
    }
  }
}
