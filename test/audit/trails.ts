import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { chainRecord, formatLine, lineHash, signCheckpoint } from '../../src/audit/chain.ts';
import { loadAuditKey, type AuditKey } from '../../src/audit/signing-key.ts';
import { openAuditTrail, type AuditHead, type AuditTrailOptions } from '../../src/audit/trail.ts';
import type { Finding, VerifyReport } from '../../src/audit/verify.ts';

/** Trails for the audit tests: written by the real writer, then changed line by line. */

/** No checkpoint by the clock while a test writes: the layout of every trail is known. */
export const NO_TIMER = { checkpointMs: 3_600_000 } as const;

/**
 * A closed trail of `count` call records with a checkpoint every `every` records. With
 * every = 4 and count = 10 its lines (line n holds seq n) are: 1 audit.opened,
 * 2 checkpoint, 3-6 calls 0-3, 7 checkpoint, 8-11 calls 4-7, 12 checkpoint, 13-14 calls
 * 8-9, 15 final checkpoint.
 */
export function writeTrail(file: string, key: AuditKey, options: { count?: number; every?: number; close?: boolean } & Partial<AuditTrailOptions> = {}): { file: string; head: AuditHead | undefined } {
  const { count = 10, every = 4, close = true, ...rest } = options;
  let head: AuditHead | undefined;
  const trail = openAuditTrail(file, { key, checkpointEvery: every, ...NO_TIMER, onCheckpoint: (h) => (head = h), ...rest });
  for (let i = 0; i < count; i++) trail.write(callRecord(i));
  if (close) trail.close();
  return { file, head };
}

export function callRecord(i: number): { event: 'tools/call'; correlationId: string; agent: string; tool: string; decision: 'allow'; outcome: 'ok'; argsSha256: string } {
  return { event: 'tools/call', correlationId: `call-${i}`, agent: 'agent-a', tool: 'notes__echo', decision: 'allow', outcome: 'ok', argsSha256: lineHash(`args-${i}`) };
}

/** A file's lines, without the newline after the last. */
export function readLines(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  assert.ok(text.endsWith('\n'), 'a trail ends with a newline');
  return text.slice(0, -1).split('\n');
}

export function writeLines(file: string, lines: readonly string[]): string {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, lines.map((line) => `${line}\n`).join(''));
  return file;
}

/** Line n (1-based) parsed. */
export function recordAt(lines: readonly string[], n: number): Record<string, unknown> {
  return JSON.parse(lines[n - 1]!) as Record<string, unknown>;
}

/** The line's record with some fields replaced, re-serialised as the writer would. */
export function edited(line: string, changes: Record<string, unknown>): string {
  return JSON.stringify({ ...(JSON.parse(line) as Record<string, unknown>), ...changes });
}

/** Recomputes every prev from index `from` (0-based) on, as someone covering an edit would; signatures stay as they were. */
export function rechained(lines: readonly string[], from: number): string[] {
  const out = [...lines];
  for (let i = Math.max(from, 1); i < out.length; i++) out[i] = edited(out[i]!, { prev: lineHash(out[i - 1]!) });
  return out;
}

/** A record chained after `previous`, as a hand-written line. */
export function chainedAfter(previous: string, record: Record<string, unknown>): string {
  const { seq } = JSON.parse(previous) as { seq: number };
  return formatLine(seq + 1, new Date().toISOString(), lineHash(previous), record);
}

/** A checkpoint chained after `previous`, signed with `key` (and naming keyId, its own by default). */
export function checkpointAfter(previous: string, key: AuditKey, options: { final?: boolean; keyId?: string } = {}): string {
  const { seq } = JSON.parse(previous) as { seq: number };
  const time = new Date().toISOString();
  const fields = { event: 'audit.checkpoint', keyId: options.keyId ?? key.keyId, final: options.final ?? false, records: 0 };
  const signature = signCheckpoint(chainRecord(seq + 1, time, lineHash(previous), fields), key.privateKey);
  return formatLine(seq + 1, time, lineHash(previous), { ...fields, signature });
}

/** The `audit.opened` record another key's holder would write to reopen a trail. */
export function openedAfter(previous: string, key: AuditKey): string {
  return chainedAfter(previous, { event: 'audit.opened', reason: 'resumed', keyId: key.keyId, publicKey: key.publicKey.export({ type: 'spki', format: 'der' }).toString('base64'), pid: 4242 });
}

export function errorsOf(report: VerifyReport): Finding[] {
  return report.findings.filter((finding) => finding.severity === 'error');
}

export function noticesOf(report: VerifyReport): Finding[] {
  return report.findings.filter((finding) => finding.severity === 'notice');
}

/** The report's errors as `line:seq`, for a compact assertion of where each was found. */
export function errorLines(report: VerifyReport): string[] {
  return errorsOf(report).map((finding) => `${finding.line}:${finding.seq ?? '-'}`);
}

export function keyIn(dir: string, name: string): AuditKey {
  return loadAuditKey(join(dir, `${name}.key`));
}
