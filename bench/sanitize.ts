// npm run bench: what the output sanitiser costs per KiB of a tool result, in process.
// sanitizeResult (the function the pipeline's sanitize-output stage calls) with the options
// the broker uses by default: the known-secret forms of three injected credentials, the
// secret-detection rules, escapes and invisible characters removed, and the default cap on
// a result's text (limits.maxResultBytes). Results of 1, 4, 16, 64 and 100 KiB of ordinary
// text (log lines, JSON-ish records and prose, made deterministically, all within Latin-1),
// the same with typographic quotes and dashes (characters beyond U+00FF, which V8 stores
// as a two-byte string: that alone makes the invisible-character scan several times
// slower), and, separately, text with secrets and invisible characters planted in it. Each is timed against a
// baseline of JSON.parse(JSON.stringify(result)) on the same result, side by side in
// rotating rounds, so the ratio means something on a shared, noisy machine.
//
//   node bench/sanitize.ts [--quick] [--json]
//
// Exits with 1 if the sanitiser's output is wrong (ordinary text changed, a planted secret
// or invisible character left, a truncation that is not the one expected); with 3 if the
// run exceeds its time limit.
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import type { CallToolResult } from '@modelcontextprotocol/server';
import { DEFAULTS } from '../src/config/load.ts';
import { DETECTED, maskSecrets } from '../src/guard/detect-secrets.ts';
import { findInvisible } from '../src/guard/invisible.ts';
import { cleanText, noRedactions, REDACTED, sanitizeResult, secretForms, type Redactions } from '../src/guard/sanitize-output.ts';
import { FOLDERS, seeded, USERS } from './seeded.ts';

const HELP = `Usage: node bench/sanitize.ts [--quick] [--json]

--quick   a short smoke run (fewer rounds, shorter samples; figures are rough)
--json    print the results as JSON on stdout
`;
const { values } = parseArgs({ options: { quick: { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
if (values.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

const PLAN = values.quick ? { rounds: 3, sampleMs: 10, warmupMs: 50 } : { rounds: 11, sampleMs: 40, warmupMs: 300 };
/** Calls per timed sample are chosen so that a sample takes about PLAN.sampleMs, within these bounds. */
const MIN_CALLS = 3;
const MAX_CALLS = 5000;
const DEADLINE_MS = (values.quick ? 1 : 4) * 60_000;
const KIB = 1024;
const SIZES_KIB = [1, 4, 16, 64, 100];
/** The broker's default cap on a result's text; bench/run.ts raises it to this for its 100 KiB tool. */
const DEFAULT_CAP = DEFAULTS.maxResultBytes;
const RAISED_CAP = 128 * KIB;

// Three credentials the broker injects into downstream servers: each is redacted by value in
// every common encoding (the same forms the broker builds from its servers' credentials).
const CREDENTIALS = ['bench-notes-api-token-0123456789', 'tk-7Hq2mZ9xV4pL8sR3wN6yB1cD5fG0jK', 'correct-horse-battery-staple-42'];
const FORMS = secretForms(CREDENTIALS);

// Made-up values in formats the detection rules recognise (as in test/guard/detect-secrets.test.ts);
// none is a real credential.
const DETECTABLE = [
  'ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8',
  'xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx',
  'postgres://admin:s3cretPassw0rd@10.0.0.1:5432/app',
  'aws_secret_access_key=Xq2ZP7kM9vLw3RtY8bNc4HdF6gJe1SaU0iOpQwEr',
  'npm_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8',
];
/** What must not survive of them: the value itself (for the AWS line, the key). */
const DETECTABLE_VALUES = DETECTABLE.map((secret) => secret.replace(/^aws_secret_access_key=/, ''));
const INJECTED = [
  CREDENTIALS[0]!,
  Buffer.from(CREDENTIALS[1]!).toString('base64'),
  encodeURIComponent(CREDENTIALS[2]!),
  Buffer.from(CREDENTIALS[0]!).toString('hex'),
];
/** Invisible characters and a terminal escape: zero-width space, RTL override, BOM, soft hyphen, a tag character, ANSI colour. */
const INVISIBLES = ['\u200b', '\u202e', '\ufeff', '\u00ad', '\u{e0041}', '\u001b[31m'];

interface Case {
  readonly name: string;
  readonly group: 'ordinary' | 'typographic' | 'truncated' | 'planted' | 'part';
  readonly bytes: number;
  readonly cap: number;
  /** One call of the code measured. */
  readonly run: () => Promise<unknown>;
  /** Throws if an output of run is wrong. */
  readonly check: (output: unknown) => void;
  readonly result: CallToolResult;
  calls?: number;
  baselineCalls?: number;
  readonly us: number[];
  readonly baselineUs: number[];
}

const started = performance.now();
const startLoad = loadavg().map((x) => x.toFixed(2)).join(' ');
const cases: Case[] = [];

for (const kib of SIZES_KIB) {
  const text = ordinaryText(kib * KIB);
  const cap = kib * KIB <= DEFAULT_CAP ? DEFAULT_CAP : RAISED_CAP;
  cases.push(sanitizeCase(`${kib} KiB ordinary${cap === DEFAULT_CAP ? '' : `, cap ${cap / KIB} KiB`}`, 'ordinary', text, cap, unchanged(text)));
}
for (const kib of [4, 100]) {
  const text = ordinaryText(kib * KIB, true);
  const cap = kib * KIB <= DEFAULT_CAP ? DEFAULT_CAP : RAISED_CAP;
  cases.push(sanitizeCase(`${kib} KiB typographic (beyond Latin-1)${cap === DEFAULT_CAP ? '' : `, cap ${cap / KIB} KiB`}`, 'typographic', text, cap, unchanged(text)));
}
{
  // The default cap on a 100 KiB result: detection runs on the cap plus a margin, then the text is cut.
  const text = ordinaryText(100 * KIB);
  cases.push(sanitizeCase(`100 KiB ordinary, default cap ${DEFAULT_CAP / KIB} KiB (truncated)`, 'truncated', text, DEFAULT_CAP, truncated(text, DEFAULT_CAP)));
}
for (const kib of [4, 100]) {
  const planted = plantedText(kib * KIB);
  cases.push(sanitizeCase(`${kib} KiB with ${INJECTED.length + DETECTABLE.length} secrets, ${INVISIBLES.length} invisibles`, 'planted', planted.text, RAISED_CAP, cleaned(planted)));
}
{
  // The sanitiser's two parts on their own, on the 100 KiB ordinary text.
  const text = ordinaryText(100 * KIB);
  cases.push(partCase('100 KiB: cleanText alone (escapes, invisibles, credential forms)', text, () => Promise.resolve(cleanText(text, FORMS, noRedactions()))));
  cases.push(partCase('100 KiB: maskSecrets alone (detection rules)', text, () => maskSecrets(text, { detected: 0 })));
}

const guard = setTimeout(() => {
  process.stderr.write(`bench: FAILED: the run exceeded ${DEADLINE_MS / 60_000} minutes\n`);
  process.exit(3);
}, DEADLINE_MS);
guard.unref();

try {
  // Warm-up, output checks, and the number of calls per sample for each case and its baseline.
  for (const c of cases) {
    c.check(await c.run());
    c.calls = callsPerSample(await warm(c.run));
    c.baselineCalls = callsPerSample(await warm(async () => baseline(c.result)));
  }
  for (let round = 0; round < PLAN.rounds; round++) {
    const order = cases.map((_, i) => cases[(i + round) % cases.length]!);
    for (const c of order) {
      c.us.push(await sample(c.run, c.calls!, c.check));
      c.baselineUs.push(await sample(async () => baseline(c.result), c.baselineCalls!));
    }
  }
} catch (error) {
  process.stderr.write(`bench: FAILED: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
}
clearTimeout(guard);
report();

function sanitizeCase(name: string, group: Case['group'], text: string, cap: number, check: (result: CallToolResult, redactions: Redactions) => void): Case {
  const result: CallToolResult = { content: [{ type: 'text', text }] };
  return {
    name,
    group,
    bytes: Buffer.byteLength(text, 'utf8'),
    cap,
    result,
    run: () => sanitizeResult(result, { secretForms: FORMS, maxTextBytes: cap }),
    check: (output) => {
      const { result: out, redactions } = output as Awaited<ReturnType<typeof sanitizeResult>>;
      check(out, redactions);
    },
    us: [],
    baselineUs: [],
  };
}

function partCase(name: string, text: string, run: () => Promise<string>): Case {
  return {
    name,
    group: 'part',
    bytes: Buffer.byteLength(text, 'utf8'),
    cap: Number.POSITIVE_INFINITY,
    result: { content: [{ type: 'text', text }] },
    run,
    check: (output) => {
      if (output !== text) fail(`${name}: ordinary text was changed at ${firstDifference(output as string, text)}`);
    },
    us: [],
    baselineUs: [],
  };
}

/** The baseline: what any proxy that parses and re-serialises a result spends on it. */
function baseline(result: CallToolResult): unknown {
  return JSON.parse(JSON.stringify(result));
}

/** Runs fn for about PLAN.warmupMs (at least MIN_CALLS times); returns its mean time per call, ms. */
async function warm(fn: () => Promise<unknown>): Promise<number> {
  let calls = 0;
  const t0 = performance.now();
  while (calls < MIN_CALLS || (performance.now() - t0 < PLAN.warmupMs && calls < MAX_CALLS)) {
    await fn();
    calls++;
  }
  return (performance.now() - t0) / calls;
}

function callsPerSample(msPerCall: number): number {
  return Math.min(MAX_CALLS, Math.max(MIN_CALLS, Math.round(PLAN.sampleMs / msPerCall)));
}

/** Mean µs per call over `calls` calls; the last output is checked, outside the timing. */
async function sample(fn: () => Promise<unknown>, calls: number, check?: (output: unknown) => void): Promise<number> {
  if (performance.now() - started > DEADLINE_MS) throw new Error(`the run exceeded ${DEADLINE_MS / 60_000} minutes`);
  let output: unknown;
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) output = await fn();
  const us = ((performance.now() - t0) * 1000) / calls;
  check?.(output);
  return us;
}

function textOf(result: CallToolResult): string {
  const block = result.content[0];
  if (result.content.length !== 1 || block?.type !== 'text') fail(`expected one text block, got ${JSON.stringify(result).slice(0, 200)}`);
  return (block as { text: string }).text;
}

function unchanged(text: string) {
  return (result: CallToolResult, redactions: Redactions) => {
    const out = textOf(result);
    if (out !== text) fail(`ordinary text of ${text.length} characters was changed at ${firstDifference(out, text)}: ${JSON.stringify(out.slice(firstDifference(out, text), firstDifference(out, text) + 80))}`);
    if (redactions.credential + redactions.detected + redactions.invisible + redactions.truncatedBytes !== 0) fail(`ordinary text counted redactions ${JSON.stringify(redactions)}`);
  };
}

function truncated(text: string, cap: number) {
  const kept = Buffer.from(text, 'utf8').subarray(0, cap).toString('utf8');
  const omitted = Buffer.byteLength(text, 'utf8') - cap;
  const expected = `${kept}\n[truncated by mcp-warden: ${omitted} bytes omitted]`;
  return (result: CallToolResult, redactions: Redactions) => {
    const out = textOf(result);
    if (out !== expected) fail(`the truncated text is not the first ${cap} bytes and the marker (first difference at ${firstDifference(out, expected)})`);
    if (redactions.truncatedBytes !== omitted || redactions.credential + redactions.detected + redactions.invisible !== 0) fail(`truncation counted ${JSON.stringify(redactions)}`);
  };
}

function cleaned(planted: { text: string; segments: string[] }) {
  return (result: CallToolResult, redactions: Redactions) => {
    const out = textOf(result);
    for (const secret of [...CREDENTIALS, ...INJECTED, ...DETECTABLE_VALUES]) {
      if (out.includes(secret)) fail(`a planted secret survived: ${secret}`);
    }
    if (findInvisible(out) !== undefined) fail(`an invisible character survived: ${findInvisible(out)}`);
    // Everything around the plants is kept, in order, unchanged.
    let at = 0;
    for (const segment of planted.segments) {
      const found = out.indexOf(segment, at);
      if (found === -1) fail(`ordinary text around the plants was changed near ${JSON.stringify(segment.slice(0, 60))}`);
      at = found + segment.length;
    }
    if (redactions.credential < INJECTED.length || redactions.detected < DETECTABLE.length || redactions.invisible < INVISIBLES.length) {
      fail(`too few redactions counted: ${JSON.stringify(redactions)}`);
    }
    if (!out.includes(REDACTED) || !out.includes(DETECTED)) fail('the redaction markers are missing');
  };
}

/**
 * Ordinary text, exactly `bytes` UTF-8 bytes: log lines, JSON-ish records and prose of a
 * notes service, made with a fixed-seed generator, with nothing a secret rule or a
 * credential form matches (checked: the run fails if the sanitiser changes any of it).
 */
function ordinaryText(bytes: number, typographic = false): string {
  const lines = ordinaryLines(typographic);
  let text = '';
  while (Buffer.byteLength(text, 'utf8') < bytes) text += `${lines.next().value!}\n`;
  let cut = Buffer.from(text, 'utf8').subarray(0, bytes).toString('utf8');
  // A cut inside a multi-byte character leaves U+FFFD: drop it and pad with spaces.
  cut = cut.replace(/\ufffd$/, '');
  return cut + ' '.repeat(bytes - Buffer.byteLength(cut, 'utf8'));
}

/** Ordinary text of exactly `bytes` bytes with the secrets and invisible characters planted in it, spread evenly. */
function plantedText(bytes: number): { text: string; segments: string[] } {
  const plants = [...INJECTED, ...DETECTABLE, ...INVISIBLES];
  const plantBytes = plants.reduce((sum, plant) => sum + Buffer.byteLength(plant, 'utf8') + 2, 0);
  const per = Math.floor((bytes - plantBytes) / (plants.length + 1));
  const lines = ordinaryLines();
  const segments: string[] = [];
  const segment = (length: number) => {
    let text = '';
    while (text.length < length) text += `${lines.next().value!}\n`;
    // Only ASCII in the segments here, so that characters and bytes agree.
    return text.replace(/[^\n -~]/g, 'e').slice(0, length);
  };
  let text = '';
  for (const plant of plants) {
    const before = segment(per);
    segments.push(before);
    text += `${before} ${plant} `;
  }
  const last = segment(bytes - Buffer.byteLength(text, 'utf8'));
  segments.push(last);
  return { text: text + last, segments: segments.map((s) => s.trim()).filter((s) => s.length > 0) };
}

/** Log lines, JSON records and prose; with `typographic`, the prose has curly quotes, apostrophes and dashes. */
function* ordinaryLines(typographic = false): Generator<string> {
  const { pick, int } = seeded(0x5eed1234);
  const users = USERS;
  const folders = FOLDERS;
  const components = ['notes.sync', 'notes.index', 'scheduler', 'mailer', 'backup', 'search', 'api.v2', 'importer'];
  const levels = ['INFO', 'INFO', 'INFO', 'DEBUG', 'WARN', 'ERROR'];
  const sentences = [
    'The quarterly planning meeting moved to the small room on the second floor.',
    'Buy flour, eggs and coffee before Friday, and ask whether the bakery still takes orders for Sunday.',
    'In spring the garden needs the beds turned over, the roses cut back and the water butt cleaned.',
    'The letter to the landlord should mention the boiler, the damp patch in the hall and the broken latch.',
    'Reading list for the winter: essays on walking in cities, a history of maps, and the novel Ana recommended.',
    'Questions for the dentist: how long the crown lasts, what it costs, and whether the old filling can stay.',
    'Trains to Lyon leave at 07:12 and 09:48; the one back on Sunday evening is usually full.',
    'From the call about the new office: the lease starts in March, desks arrive a week later, parking is shared.',
    "Grandma's lentil soup: onions, carrots and celery first, then the lentils, cumin, a bay leaf and lemon at the end.",
    'For the hiking weekend pack the rain jacket, two pairs of socks, the map of the ridge path and enough water.',
  ];
  let clock = Date.UTC(2026, 10, 23, 6, 0, 0);
  for (;;) {
    clock += int(1, 5000);
    const time = new Date(clock).toISOString();
    switch (int(0, 3)) {
      case 0:
        yield `${time} ${pick(levels)} ${pick(components)}: synced ${int(1, 400)} notes for ${pick(users)} in ${int(3, 900)} ms (batch ${int(1, 12)} of 12)`;
        break;
      case 1:
        yield JSON.stringify({ time, level: pick(levels).toLowerCase(), folder: pick(folders), user: pick(users), notes: int(0, 500), ms: int(1, 250), path: `/api/v2/notes?folder=${pick(folders)}&page=${int(1, 40)}` });
        break;
      case 2:
        yield typographic ? `“${pick(sentences)}” — ${pick(sentences).replaceAll("'", '’')}` : `${pick(sentences)} ${pick(sentences)}`;
        break;
      default:
        yield `${time} ${pick(levels)} backup: /var/lib/notes/${pick(folders)}/2026-${String(int(1, 11)).padStart(2, '0')}.db written, ${int(2, 900)} MB in ${int(1, 300)} s`;
    }
  }
}

function firstDifference(x: string, y: string): number {
  let i = 0;
  while (i < x.length && i < y.length && x[i] === y[i]) i++;
  return i;
}

function fail(message: string): never {
  throw new Error(message);
}

function median(samples: readonly number[]): number {
  const sorted = [...samples].sort((x, y) => x - y);
  return sorted[Math.ceil(sorted.length / 2) - 1]!;
}

function report(): void {
  const machine = { date: new Date().toISOString(), node: process.version, cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, loadAverageAtStart: startLoad };
  const method = { ...PLAN, minCalls: MIN_CALLS, maxCalls: MAX_CALLS, defaultCapBytes: DEFAULT_CAP, raisedCapBytes: RAISED_CAP, credentials: CREDENTIALS.length, forms: FORMS.length, seconds: Math.round((performance.now() - started) / 1000) };
  const rows = cases.map((c) => {
    const ratios = c.us.map((us, i) => us / c.baselineUs[i]!);
    const us = median(c.us);
    return {
      case: c.name,
      group: c.group,
      bytes: c.bytes,
      capBytes: Number.isFinite(c.cap) ? c.cap : null,
      callsPerSample: c.calls,
      usPerCall: us,
      usPerKiB: us / (c.bytes / KIB),
      baselineUsPerCall: median(c.baselineUs),
      baselineUsPerKiB: median(c.baselineUs) / (c.bytes / KIB),
      ratio: median(ratios),
      ratioRange: [Math.min(...ratios), Math.max(...ratios)],
      usPerCallByRound: c.us,
    };
  });
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ machine, method, cases: rows }, null, 2)}\n`);
    return;
  }
  const out: string[] = [];
  out.push('mcp-warden benchmark: the output sanitiser (sanitizeResult), in process');
  out.push(`${machine.date}  Node ${machine.node}  ${machine.cpu}, ${machine.cores} cores  load average at start ${machine.loadAverageAtStart}`);
  out.push(
    `method: ${PLAN.rounds} rounds, cases in rotating order; per round and case one sample of about ${PLAN.sampleMs} ms (${MIN_CALLS} to ${MAX_CALLS} calls) of sanitizeResult ` +
      `and one of the baseline JSON.parse(JSON.stringify(result)); medians over the rounds; ${PLAN.warmupMs} ms warm-up per case; ` +
      `${CREDENTIALS.length} injected credentials (${FORMS.length} forms), detection rules on, default cap ${DEFAULT_CAP} bytes; ${method.seconds} s in all`,
  );
  out.push('');
  out.push(`${'case'.padEnd(64)}${'µs/call'.padStart(10)}${'µs/KiB'.padStart(9)}${'base µs/KiB'.padStart(13)}${'ratio'.padStart(9)}   ratio by round`);
  for (const row of rows) {
    out.push(
      `${row.case.padEnd(64)}${row.usPerCall.toFixed(0).padStart(10)}${row.usPerKiB.toFixed(1).padStart(9)}${row.baselineUsPerKiB.toFixed(2).padStart(13)}${`${row.ratio.toFixed(1)}x`.padStart(9)}   ${row.ratioRange[0]!.toFixed(1)}x to ${row.ratioRange[1]!.toFixed(1)}x`,
    );
  }
  out.push('(ratio: sanitizeResult / JSON.parse(JSON.stringify(result)) of the same result, per round; base: that baseline)');
  const perKiB = (group: Case['group']) =>
    rows
      .filter((row) => row.group === group)
      .map((row) => `${row.bytes / KIB} KiB ${row.usPerKiB.toFixed(1)} µs (${row.ratio.toFixed(1)}x)`)
      .join(', ');
  out.push('');
  out.push('sanitiser cost per KiB (ratio to the JSON round trip):');
  out.push(`  ordinary text (Latin-1):   ${perKiB('ordinary')}`);
  out.push(`  typographic (two-byte):    ${perKiB('typographic')}`);
  out.push(`  with secrets planted:      ${perKiB('planted')}`);
  out.push(`  cut by the default cap:    ${perKiB('truncated')} (per KiB of the whole result)`);
  process.stdout.write(`${out.join('\n')}\n`);
}
