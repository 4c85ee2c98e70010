import { closeSync, openSync, readFileSync, statSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { KeyObject } from 'node:crypto';
import type { AuditHead } from '../audit/trail.ts';
import type { VerifyReport } from '../audit/verify.ts';
import { WardenError } from '../errors.ts';
import { configPaths } from './config-paths.ts';

const HELP = `Usage: mcp-warden audit verify [FILE...] [--config FILE | --key PUBKEY] [--json]
       mcp-warden audit tail [FILE] [--config FILE] [-n N] [--follow] [--json]
       mcp-warden audit query [FILE...] [--config FILE] [filters] [--limit N] [--json]

The audit trail is one JSON record per line. Each record carries its sequence number
(seq) and the SHA-256 of the line before it (prev); signed checkpoints
(event audit.checkpoint) follow at intervals and close every file. Rotated files are
named audit.<first seq>.jsonl beside the live one.

verify   Checks the whole chain: every record in order and unedited, nothing removed,
         inserted or appended by hand, no line cut short, every checkpoint signature
         valid. With --config it checks the config's trail (rotated files first, then
         the live file), with the broker's public key (<audit.keyFile>.pub), and checks
         that the trail still holds the newest checkpoint the state store recorded (so
         records cut from its end are caught). Given FILEs are checked in the order
         given: one trail, oldest file first.
tail     The last records of the trail (-n, default 20); --follow keeps printing new
         ones, across rotations, until interrupted.
query    The records that match every filter given, oldest first.

Filters (query):
  --agent NAME        records of this agent
  --tool NAME         records of this tool (the name the agent sees)
  --event NAME        records of this event (tools/call, tools/call.dispatch, auth.failure, ...)
  --decision allow|deny
  --correlation ID    the records of one call
  --since WHEN        at or after WHEN: an ISO date or time (2026-11-23, 2026-11-23T10:00Z)
                      or a span back from now (90s, 15m, 2h, 7d)
  --until WHEN        before WHEN, same forms

Options:
  --config FILE   the broker's config (warden.yaml): only audit.file, audit.keyFile and
                  state.dir are read, so this works while the rest is broken
  --key PUBKEY    verify: the broker's audit public key (PEM), if not taken from --config
  -n N            tail: how many records (default 20, at most 100000)
  --follow        tail: keep printing new records
  --limit N       query: stop after N records
  --json          the records (or verify's report) as JSON lines / JSON
  -h, --help      this help

Exit codes: 0 success (verify: the trail is intact); 1 verify: the trail was changed,
damaged or cut, and where is printed; 2 usage error; 3 the config cannot be read;
8 the trail cannot be read.
`;

const MAX_TAIL = 100_000;

export async function runAudit(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: 'string' },
      key: { type: 'string' },
      json: { type: 'boolean' },
      n: { type: 'string', short: 'n' },
      follow: { type: 'boolean' },
      limit: { type: 'string' },
      agent: { type: 'string' },
      tool: { type: 'string' },
      event: { type: 'string' },
      decision: { type: 'string' },
      correlation: { type: 'string' },
      since: { type: 'string' },
      until: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const [sub, ...files] = positionals;
  if (sub !== 'verify' && sub !== 'tail' && sub !== 'query') {
    const got = sub === undefined ? 'missing subcommand' : `unknown subcommand "${printableArg(sub)}"`;
    throw new WardenError('WARDEN_USAGE', `${got}; expected: mcp-warden audit verify|tail|query; see mcp-warden audit --help`);
  }
  const only = (names: readonly (keyof typeof values)[], where: string) => {
    for (const name of names) if (values[name] !== undefined) throw new WardenError('WARDEN_USAGE', `--${name} applies to audit ${where} only`);
  };
  if (sub !== 'verify') only(['key'], 'verify');
  if (sub !== 'tail') only(['n', 'follow'], 'tail');
  if (sub !== 'query') only(['limit', 'agent', 'tool', 'event', 'decision', 'correlation', 'since', 'until'], 'query');
  if (files.length === 0 && values.config === undefined) throw new WardenError('WARDEN_USAGE', `audit ${sub} needs the trail: FILE or --config FILE`);
  if (files.length > 0 && values.config !== undefined && sub !== 'verify') throw new WardenError('WARDEN_USAGE', 'give the trail either as FILE or by --config, not both');
  if (sub === 'tail' && files.length > 1) throw new WardenError('WARDEN_USAGE', 'audit tail reads one trail: give one FILE');

  const { configuredTrails } = await import('../audit/read.ts');
  const paths = values.config === undefined ? undefined : await configPaths(values.config);
  // Given files are one trail; a config names a trail and the chains written beside it.
  const trails = files.length > 0 ? [files] : configuredTrails(paths!.auditFile);
  for (const file of trails[0]!) requireFile(file);

  if (sub === 'verify') return verify(trails, paths, values.key, values.json === true);
  if (sub === 'tail') {
    const count = values.n === undefined ? 20 : count_('-n', values.n, MAX_TAIL);
    return tail(files.length > 0 ? [[files[0]!]] : trails, count, values.follow === true, values.json === true);
  }
  const { compileFilter } = await import('../audit/query.ts');
  const filter = compileFilter({
    agent: values.agent,
    tool: values.tool,
    event: values.event,
    decision: values.decision,
    correlation: values.correlation,
    since: values.since,
    until: values.until,
  });
  const limit = values.limit === undefined ? Number.POSITIVE_INFINITY : count_('--limit', values.limit, Number.MAX_SAFE_INTEGER);
  return query(trails.flat(), filter, limit, values.json === true);
}

async function verify(trails: readonly (readonly string[])[], paths: { stateDir: string; auditFile: string; auditKeyFile: string } | undefined, keyFile: string | undefined, json: boolean): Promise<number> {
  const { verifyTrail } = await import('../audit/verify.ts');
  const { publicKeyFromPem } = await import('../audit/chain.ts');
  const { auditPublicKeyFile } = await import('../audit/signing-key.ts');
  let publicKey: KeyObject | undefined;
  const source = keyFile ?? (paths ? auditPublicKeyFile(paths.auditKeyFile) : undefined);
  if (source !== undefined) {
    let pem: string;
    try {
      pem = readFileSync(source, 'utf8');
    } catch (error) {
      throw new WardenError('WARDEN_USAGE', `cannot read the audit public key ${source}: ${(error as NodeJS.ErrnoException).code ?? 'error'}${keyFile ? '' : ' (the broker writes it beside audit.keyFile when it starts)'}`);
    }
    try {
      publicKey = publicKeyFromPem(pem);
    } catch (error) {
      throw new WardenError('WARDEN_USAGE', `${source} is not an Ed25519 key in PEM: ${(error as Error).message}`);
    }
  }
  // With a config, the state store knows every chain a broker signed beside the trail.
  let heads: readonly { readonly trail: string; readonly head: AuditHead }[] = [];
  if (paths) {
    const { openStateStore } = await import('../state/store.ts');
    const store = openStateStore(paths.stateDir, 'read-only');
    try {
      heads = store.auditHeads.list();
    } finally {
      store.close();
    }
  }
  const reports: VerifyReport[] = [];
  for (const files of trails) {
    const head = heads.find((entry) => entry.trail === files.at(-1))?.head;
    reports.push(verifyTrail(files, { ...(publicKey ? { publicKey } : {}), ...(head ? { head } : {}) }));
  }
  const { slotOf } = await import('../audit/read.ts');
  const missing = paths ? heads.filter((entry) => slotOf(paths.auditFile, entry.trail) && !trails.some((files) => files.at(-1) === entry.trail)) : [];
  const ok = reports.every((report) => report.ok) && missing.length === 0;
  if (json) {
    const gone = missing.map(({ trail, head }) => ({ trail, head }));
    process.stdout.write(`${JSON.stringify(reports.length === 1 && gone.length === 0 ? reports[0] : { ok, trails: reports, missing: gone })}\n`);
    return ok ? 0 : 1;
  }
  const { printable } = await import('../audit/verify.ts');
  const out: string[] = [];
  for (const report of reports) {
    if (reports.length > 1) out.push(`trail ${report.files.at(-1)}:`);
    for (const finding of report.findings) {
      const where = finding.line > 0 ? `${finding.file}:${finding.line}` : finding.file;
      out.push(`${finding.severity === 'error' ? 'BROKEN' : 'note  '}  ${where}${finding.seq === undefined ? '' : ` (seq ${finding.seq})`}: ${printable(finding.message)}`);
    }
    const range = report.firstSeq === undefined ? 'no records' : `seq ${report.firstSeq} to ${report.lastSeq}`;
    out.push(
      report.ok
        ? `audit trail intact: ${report.records} records (${range}) in ${report.files.length} file(s), ${report.checkpoints} valid checkpoint(s)${report.lastCheckpointSeq === undefined ? '' : `, the last at seq ${report.lastCheckpointSeq}`}`
        : `audit trail NOT intact: ${report.findings.filter((f) => f.severity === 'error').length} problem(s) listed above; ${report.records} records (${range}) in ${report.files.length} file(s)`,
    );
  }
  for (const { trail, head } of missing) {
    out.push(`BROKEN  ${trail}: the state store recorded a checkpoint of this trail (seq ${head.seq}, ${printable(head.time)}), but the file is gone: it was deleted or moved`);
  }
  process.stdout.write(`${out.join('\n')}\n`);
  return ok ? 0 : 1;
}

async function tail(trails: readonly (readonly string[])[], count: number, follow: boolean, json: boolean): Promise<number> {
  const { trailLines } = await import('../audit/read.ts');
  const { formatRecord, parseRecord, recordJson } = await import('../audit/query.ts');
  const show = (text: string): void => {
    const out = json ? recordJson(text) : formatRecord(text);
    if (out !== undefined) process.stdout.write(`${out}\n`);
  };
  // The last `count` lines of each chain, then of all of them by time.
  const last: { time: string; text: string }[] = [];
  for (const files of trails) {
    let kept: string[] = [];
    for (const file of files) {
      for (const line of trailLines(file)) {
        if (line.text === undefined || !line.complete) continue;
        kept.push(line.text);
        if (kept.length >= 2 * count) kept = kept.slice(-count);
      }
    }
    for (const text of kept.slice(-count)) last.push({ time: String(parseRecord(text)?.['time'] ?? ''), text });
  }
  const ordered = trails.length > 1 ? last.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0)) : last;
  for (const { text } of ordered.slice(-count)) show(text);
  if (!follow) return 0;
  const { followTrail } = await import('../audit/query.ts');
  await Promise.all(trails.map((files) => followTrail(files.at(-1)!, show)));
  return 0;
}

async function query(files: readonly string[], filter: (record: Record<string, unknown>) => boolean, limit: number, json: boolean): Promise<number> {
  const { trailLines } = await import('../audit/read.ts');
  const { formatRecord, parseRecord, recordJson } = await import('../audit/query.ts');
  let shown = 0;
  for (const file of files) {
    for (const line of trailLines(file)) {
      if (shown >= limit) return 0;
      if (line.text === undefined || !line.complete) continue;
      const record = parseRecord(line.text);
      if (!record || !filter(record)) continue;
      process.stdout.write(`${json ? recordJson(line.text) : formatRecord(line.text)}\n`);
      shown += 1;
    }
  }
  return 0;
}

function requireFile(file: string): void {
  try {
    if (!statSync(file).isFile()) throw new WardenError('WARDEN_AUDIT_UNWRITABLE', `${file} is not a file`, { file });
    closeSync(openSync(file, 'r')); // readable, so reading it later does not fail halfway
  } catch (error) {
    if (error instanceof WardenError) throw error;
    throw new WardenError('WARDEN_AUDIT_UNWRITABLE', `cannot read the audit trail ${file}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`, { file });
  }
}

function count_(option: string, text: string, max: number): number {
  if (!/^\d{1,16}$/.test(text) || Number(text) < 1 || Number(text) > max) throw new WardenError('WARDEN_USAGE', `${option} must be a whole number from 1 to ${max}`);
  return Number(text);
}

function printableArg(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?').slice(0, 64);
}
