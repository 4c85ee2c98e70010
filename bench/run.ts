// npm run bench: what mcp-warden adds to a tool call. One echo tool, reached over stdio
//   (a) directly, (b) through a bare pass-through proxy built from the same SDK,
//   (c) through mcp-warden with everything on (audit file, injected credential, output
//       sanitisation, per-call identity tokens), (d) the same without identity tokens,
// all measured side by side in one run, in interleaved rounds, and reported as ratios.
// Besides the echo (5 and 4096 bytes), one result of 100 KiB: `list_notes` of a notes
// server seeded (through each setup, before the rounds) with log-like notes whose list is
// exactly 102400 bytes of JSON, under a result cap raised for that tool only, so the
// broker sanitises all of it rather than truncating it.
// The machine may be shared and noisy: compare the ratios, not the absolute times.
//
//   node bench/run.ts [--quick] [--json] [--client-era legacy|auto]
//
// Exits with 1 if any call fails or returns anything but the expected text (the echo, or
// the whole 100 KiB list unchanged), or if the audit trail does not hold one record per
// call; with 3 if the run exceeds its time limit.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Client } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { parse, stringify } from 'yaml';
import { formatEnvelope } from '../src/manifest/envelope.ts';
import { readSigningKey, writeKeyPair } from '../src/manifest/keys.ts';
import { signManifestSource } from '../src/manifest/sign.ts';
import { FOLDERS, seeded, USERS } from './seeded.ts';

const HELP = `Usage: node bench/run.ts [--quick] [--json] [--client-era legacy|auto]

--quick        a short smoke run (fewer rounds and samples; figures are rough)
--json         print the results as JSON on stdout
--client-era   version negotiation of the benchmark's own client towards each setup
               (default: legacy, the SDK's default)
`;

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    json: { type: 'boolean' },
    'client-era': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  process.stdout.write(HELP);
  process.exit(0);
}
const clientEra = values['client-era'] ?? 'legacy';
if (clientEra !== 'legacy' && clientEra !== 'auto') {
  process.stderr.write(`bench: --client-era must be legacy or auto\n${HELP}`);
  process.exit(2);
}

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PLAN = values.quick
  ? { warmup: 50, rounds: 3, sequential: 100, concurrentTotal: 320, largeSequential: 20, hugeWarmup: 5, hugeSequential: 8 }
  : { warmup: 200, rounds: 15, sequential: 300, concurrentTotal: 1000, largeSequential: 60, hugeWarmup: 10, hugeSequential: 20 };
const CONCURRENCY = 32;
/** No single call may take longer than this; the SDK then fails it. */
const CALL_TIMEOUT_MS = 15_000;
/** A run that takes longer than this is broken, not slow. */
const DEADLINE_MS = (values.quick ? 3 : 8) * 60_000;
const SMALL = 'hello';
const LARGE_BYTES = 4096;
const LARGE = largePayload(LARGE_BYTES);
/** The 100 KiB case: list_notes returns exactly this many bytes once the notes of hugeNotes are added. */
const HUGE_BYTES = 100 * 1024;
const HUGE_TOOL = 'list_notes';
const HUGE = hugeNotes(HUGE_BYTES);
/** The broker's result cap for the benchmark's broker (limits.maxResultBytes): above HUGE_BYTES. */
const HUGE_CAP_BYTES = 128 * 1024;
/** Every other tool of the notes manifest keeps the default cap (64 KiB), set on the tool itself. */
const DEFAULT_CAP_BYTES = 64 * 1024;
const STDERR_LINES_KEPT = 20;

type Key = 'a' | 'b' | 'c' | 'd';
type Phase = 'sequential' | 'concurrent' | 'large' | 'huge';

/** CPU time (user + system, ms) spent during one kind of phase, and the calls made in it. */
interface CpuTally {
  hop: number;
  downstream: number;
  client: number;
  calls: number;
}

interface Setup {
  readonly key: Key;
  readonly label: string;
  /** How the setup names the notes server's tools: '' or 'notes__'. */
  readonly prefix: string;
  readonly command: string;
  readonly args: readonly string[];
  /** The audit file of a broker setup. */
  readonly audit?: string;
  readonly identityTokens?: boolean;
  client?: Client;
  transport?: StdioClientTransport;
  readonly stderrTail: string[];
  readonly latencies: number[];
  readonly largeLatencies: number[];
  readonly hugeLatencies: number[];
  readonly throughputs: number[];
  /** Per round: p50 of that round's sequential calls. */
  readonly roundP50s: number[];
  /** Per round: p50 of that round's 100 KiB calls. */
  readonly roundHugeP50s: number[];
  /** The 100 KiB text this setup's list_notes must return, once its notes are added. */
  hugeText?: string;
  calls: number;
  /** The processes whose CPU time is read: the proxy (none for a direct call) and the notes server. */
  processes?: { readonly hop?: number; readonly downstream: readonly number[] };
  readonly cpu: Record<Phase, CpuTally>;
  clientEra?: string;
  downstreamEra?: string;
}

interface AuditCheck {
  readonly setup: Key;
  readonly calls: number;
  readonly records: number;
  readonly ok: number;
  readonly withIdentityToken: number;
}

const started = performance.now();
const startLoad = loadavg().map((x) => x.toFixed(2)).join(' ');
const workdir = mkdtempSync(join(tmpdir(), 'mcp-warden-bench-'));
const guard = setTimeout(() => {
  process.stderr.write(`bench: FAILED: the run exceeded ${DEADLINE_MS / 60_000} minutes\n`);
  rmSync(workdir, { recursive: true, force: true });
  process.exit(3);
}, DEADLINE_MS);
guard.unref();
const notes = [process.execPath, join(ROOT, 'examples/notes-server/server.ts')];
// The broker resolves `node` on PATH when it loads the manifest: put this Node first. The
// broker hands the notes server its API token from this variable.
const env: Record<string, string> = {
  ...(process.env as Record<string, string>),
  PATH: `${dirname(process.execPath)}:${process.env['PATH'] ?? ''}`,
  BENCH_NOTES_API_TOKEN: 'bench-notes-api-token-0123456789',
};

// The broker loads only signed manifests: sign the example one with a key made for this run.
const publisher = writeKeyPair(join(workdir, 'bench-publisher'));
const notesSource = parse(readFileSync(join(ROOT, 'manifests/notes.manifest.yaml'), 'utf8')) as { transport: Record<string, unknown>; tools: Record<string, unknown>[] };
notesSource.transport = { ...notesSource.transport, command: process.execPath, args: [join(ROOT, 'examples/notes-server/server.ts')], cwd: ROOT };
// The config's result cap (limits.maxResultBytes) is raised above 100 KiB below; a tool's own
// maxResultBytes can only tighten it, so every tool but list_notes is held at the default.
notesSource.tools = notesSource.tools.map((tool) => (tool['name'] === HUGE_TOOL ? tool : { ...tool, maxResultBytes: DEFAULT_CAP_BYTES }));
writeFileSync(
  join(workdir, 'notes.signed.json'),
  formatEnvelope(signManifestSource(notesSource, 'notes.manifest.yaml', readSigningKey(publisher.keyFile), { now: Date.now(), validDays: 1 }).envelope),
);

function writeConfig(name: string, identityTokens: boolean): { config: string; audit: string } {
  const audit = join(workdir, `${name}-audit.jsonl`);
  const config = join(workdir, `${name}.yaml`);
  writeFileSync(
    config,
    stringify({
      version: 1,
      manifestsDir: workdir,
      servers: { notes: { manifest: 'notes.signed.json', name: 'example.notes', ...(identityTokens ? { identity: { audience: 'notes', lifetimeSeconds: 60 } } : {}) } },
      trust: { publishers: { bench: { keys: [publisher.publicKey], namespaces: ['example.*'] } } },
      state: { dir: join(workdir, `${name}-state`) },
      ...(identityTokens ? { identity: { keyFile: join(workdir, 'broker-identity.key') } } : {}),
      credentials: { notes: { NOTES_API_TOKEN: { env: 'BENCH_NOTES_API_TOKEN' } } },
      // add_note only seeds the 100 KiB list before the rounds (a write: granted by class).
      agents: { bench: { allow: [{ tools: ['notes__echo', `notes__${HUGE_TOOL}`] }, { tools: ['notes__add_note'], access: ['write'] }] } },
      limits: { maxResultBytes: HUGE_CAP_BYTES },
      // The limiter runs on every call, as in production, but with limits this run never reaches.
      rateLimits: { concurrent: 10_000, perAgent: { perMinute: 1_000_000, concurrent: 10_000 }, perTool: { perMinute: 1_000_000, concurrent: 10_000 } },
      audit: { file: audit },
      log: { level: 'warn' },
    }),
  );
  return { config, audit };
}

const full = writeConfig('warden-full', true);
const noIdentity = writeConfig('warden-no-identity', false);
const warden = (config: string) => [join(ROOT, 'bin/mcp-warden'), 'serve', '--config', config, '--stdio', '--agent', 'bench'];
const tally = (): CpuTally => ({ hop: 0, downstream: 0, client: 0, calls: 0 });
const fresh = () => ({
  stderrTail: [] as string[],
  latencies: [] as number[],
  largeLatencies: [] as number[],
  hugeLatencies: [] as number[],
  throughputs: [] as number[],
  roundP50s: [] as number[],
  roundHugeP50s: [] as number[],
  calls: 0,
  cpu: { sequential: tally(), concurrent: tally(), large: tally(), huge: tally() },
});
const setups: Setup[] = [
  { key: 'a', label: '(a) direct', prefix: '', command: notes[0]!, args: notes.slice(1), ...fresh() },
  { key: 'b', label: '(b) SDK pass-through proxy', prefix: '', command: process.execPath, args: [join(ROOT, 'bench/passthrough-proxy.ts'), '--', ...notes], ...fresh() },
  { key: 'c', label: '(c) mcp-warden, everything on', prefix: 'notes__', command: process.execPath, args: warden(full.config), audit: full.audit, identityTokens: true, ...fresh() },
  { key: 'd', label: '(d) mcp-warden, no id tokens', prefix: 'notes__', command: process.execPath, args: warden(noIdentity.config), audit: noIdentity.audit, identityTokens: false, ...fresh() },
];

let failure: unknown;
const audits: AuditCheck[] = [];
try {
  for (const setup of setups) await connect(setup);
  for (const setup of setups) {
    await seed(setup);
    for (let i = 0; i < PLAN.warmup; i++) await callOnce(setup, SMALL);
    await throughput(setup);
    for (let i = 0; i < PLAN.warmup / 10; i++) await callOnce(setup, LARGE);
    for (let i = 0; i < PLAN.hugeWarmup; i++) await callHuge(setup);
    setup.processes = findProcesses(setup);
  }
  for (let round = 0; round < PLAN.rounds; round++) {
    // Rotate the order so that no setup always runs first (or last) in a round.
    const order = setups.map((_, i) => setups[(i + round) % setups.length]!);
    for (const setup of order) {
      const samples: number[] = [];
      await accountCpu(setup, 'sequential', async () => {
        for (let i = 0; i < PLAN.sequential; i++) samples.push(await timed(() => callOnce(setup, SMALL)));
      });
      setup.latencies.push(...samples);
      setup.roundP50s.push(quantile(samples, 0.5));
      await accountCpu(setup, 'concurrent', async () => void setup.throughputs.push(await throughput(setup)));
      await accountCpu(setup, 'large', async () => {
        for (let i = 0; i < PLAN.largeSequential; i++) setup.largeLatencies.push(await timed(() => callOnce(setup, LARGE)));
      });
      const hugeSamples: number[] = [];
      await accountCpu(setup, 'huge', async () => {
        for (let i = 0; i < PLAN.hugeSequential; i++) hugeSamples.push(await timed(() => callHuge(setup)));
      });
      setup.hugeLatencies.push(...hugeSamples);
      setup.roundHugeP50s.push(quantile(hugeSamples, 0.5));
    }
  }
} catch (error) {
  failure = error;
} finally {
  await Promise.all(setups.map((setup) => setup.client?.close().catch(() => undefined)));
}
try {
  if (failure === undefined) for (const setup of setups) if (setup.audit) audits.push(checkAudit(setup));
} catch (error) {
  failure = error;
} finally {
  rmSync(workdir, { recursive: true, force: true });
}
if (failure !== undefined) {
  process.stderr.write(`bench: FAILED: ${failure instanceof Error ? failure.message : String(failure)}\n`);
  for (const setup of setups) {
    if (setup.stderrTail.length > 0) process.stderr.write(`--- last stderr lines of ${setup.label}:\n${setup.stderrTail.join('\n')}\n`);
  }
  process.exit(1);
}
clearTimeout(guard);
report();

async function connect(setup: Setup): Promise<void> {
  const transport = new StdioClientTransport({ command: setup.command, args: [...setup.args], env, cwd: ROOT, stderr: 'pipe' });
  keepTail(transport.stderr as Readable | null, setup);
  const client = new Client({ name: 'bench', version: '1.0.0' }, { versionNegotiation: { mode: clientEra as 'legacy' | 'auto' } });
  await client.connect(transport, { timeout: CALL_TIMEOUT_MS });
  setup.client = client;
  setup.transport = transport;
  setup.clientEra = client.getProtocolEra();
  // As a real agent does: list the tools once, then call. The SDK client keeps the list
  // and consults it on each call (output schema); through a proxy, the proxy's own
  // downstream client does the same with the list it forwards or reads at connect.
  const { tools } = await client.listTools(undefined, { timeout: CALL_TIMEOUT_MS });
  for (const name of ['echo', HUGE_TOOL, 'add_note']) {
    if (!tools.some((tool) => tool.name === setup.prefix + name)) throw new Error(`${setup.label}: tools/list has no ${setup.prefix}${name}`);
  }
}

/**
 * Adds the notes whose list is the 100 KiB result, one add_note call each, 8 in flight (each
 * setup has a notes server of its own, holding its two initial notes). The ids they get
 * depend on the order the calls arrive in, so the list each setup must return is built from
 * the ids its server gave: the same titles and ids, the same size, possibly in another order.
 */
async function seed(setup: Setup): Promise<void> {
  const ids = new Map<number, string>();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < HUGE.titles.length) {
      const title = HUGE.titles[next++]!;
      const answer = await call(setup, setup.prefix + 'add_note', { title, body: '' });
      const id = (JSON.parse(answer) as { id?: unknown }).id;
      if (typeof id !== 'number' || ids.has(id)) throw new Error(`${setup.label}: add_note answered ${answer}`);
      ids.set(id, title);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  const notes = [...ids].sort(([x], [y]) => x - y).map(([id, title]) => ({ id, title }));
  if (notes[0]?.id !== HUGE.initial.length + 1 || notes.at(-1)?.id !== HUGE.initial.length + notes.length) throw new Error(`${setup.label}: add_note gave ids ${notes[0]?.id} to ${notes.at(-1)?.id}`);
  setup.hugeText = JSON.stringify([...HUGE.initial, ...notes]);
  if (Buffer.byteLength(setup.hugeText, 'utf8') !== HUGE_BYTES) throw new Error(`${setup.label}: the list would be ${Buffer.byteLength(setup.hugeText, 'utf8')} bytes`);
  await callHuge(setup);
}

/** Keeps the last lines a setup writes on stderr, to show them if the run fails. */
function keepTail(stream: Readable | null | undefined, setup: Setup): void {
  if (!stream) return;
  let partial = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      const era = /^passthrough: downstream era (\w+)/.exec(line);
      if (era) setup.downstreamEra = era[1];
      setup.stderrTail.push(line.slice(0, 500));
      if (setup.stderrTail.length > STDERR_LINES_KEPT) setup.stderrTail.shift();
    }
  });
  stream.on('error', () => undefined);
}

async function callOnce(setup: Setup, text: string): Promise<void> {
  await checkedCall(setup, setup.prefix + 'echo', { text }, text);
}

/** list_notes: the whole 100 KiB text, unchanged (not truncated, nothing redacted). */
async function callHuge(setup: Setup): Promise<void> {
  await checkedCall(setup, setup.prefix + HUGE_TOOL, {}, setup.hugeText!);
}

/** A call whose answer must be exactly `expected`: a benchmark that measures errors measures nothing. */
async function checkedCall(setup: Setup, name: string, args: Record<string, unknown>, expected: string): Promise<void> {
  const got = await call(setup, name, args);
  if (got !== expected) {
    const at = firstDifference(got, expected);
    const detail = got.length > 300 ? `a text of ${Buffer.byteLength(got, 'utf8')} bytes (expected ${Buffer.byteLength(expected, 'utf8')}), first difference at ${at}: ${JSON.stringify(got.slice(Math.max(0, at - 40), at + 120))}` : JSON.stringify(got);
    throw new Error(`${setup.label}: ${name}: unexpected result ${detail}`);
  }
}

/** The text of a call's one text block; anything else (an error, other blocks) fails the run. */
async function call(setup: Setup, name: string, args: Record<string, unknown>): Promise<string> {
  if (performance.now() - started > DEADLINE_MS) throw new Error(`the run exceeded ${DEADLINE_MS / 60_000} minutes`);
  setup.calls++;
  const result = await setup.client!.callTool({ name, arguments: args }, { timeout: CALL_TIMEOUT_MS });
  const content = result.content as { type: string; text?: string }[];
  if (result.isError || content.length !== 1 || content[0]?.type !== 'text' || typeof content[0].text !== 'string') {
    throw new Error(`${setup.label}: ${name}: unexpected result ${JSON.stringify(result).slice(0, 300)}`);
  }
  return content[0].text;
}

function firstDifference(x: string, y: string): number {
  let i = 0;
  while (i < x.length && i < y.length && x[i] === y[i]) i++;
  return i;
}

async function timed(run: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await run();
  return performance.now() - t0;
}

/** Calls per second for PLAN.concurrentTotal calls with CONCURRENCY in flight. */
async function throughput(setup: Setup): Promise<number> {
  let issued = 0;
  const worker = async (): Promise<void> => {
    while (issued < PLAN.concurrentTotal) {
      issued++;
      await callOnce(setup, SMALL);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return PLAN.concurrentTotal / ((performance.now() - t0) / 1000);
}

/** One tools/call record per call, each ok (and signed, where identity tokens are on). */
function checkAudit(setup: Setup): AuditCheck {
  const lines = readFileSync(setup.audit!, 'utf8').split('\n').filter((line) => line !== '');
  let records = 0;
  let ok = 0;
  let withIdentityToken = 0;
  for (const line of lines) {
    const record = JSON.parse(line) as Record<string, unknown>;
    if (record['event'] === 'server.state' && record['state'] === 'ready' && typeof record['era'] === 'string') setup.downstreamEra = record['era'];
    if (record['event'] !== 'tools/call') continue;
    records++;
    if (record['outcome'] === 'ok') ok++;
    if (record['identityToken'] !== undefined) withIdentityToken++;
  }
  const check = { setup: setup.key, calls: setup.calls, records, ok, withIdentityToken };
  const expectedTokens = setup.identityTokens ? setup.calls : 0;
  if (records !== setup.calls || ok !== setup.calls || withIdentityToken !== expectedTokens) {
    throw new Error(`${setup.label}: the audit trail does not match the calls made: ${JSON.stringify(check)}`);
  }
  return check;
}

function report(): void {
  const machine = {
    date: new Date().toISOString(),
    node: process.version,
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    loadAverageAtStart: startLoad,
    tree: gitState(),
  };
  const method = {
    ...PLAN,
    concurrency: CONCURRENCY,
    transport: 'stdio',
    payload: SMALL,
    largePayloadBytes: LARGE_BYTES,
    hugeResult: { tool: HUGE_TOOL, bytes: HUGE_BYTES, notesAdded: HUGE.titles.length, resultCapBytes: HUGE_CAP_BYTES, otherToolsCapBytes: DEFAULT_CAP_BYTES },
    clientEra,
    seconds: Math.round((performance.now() - started) / 1000),
  };
  const summary = Object.fromEntries(
    setups.map((setup) => [
      setup.key,
      {
        setup: setup.label,
        p50Ms: quantile(setup.latencies, 0.5),
        p99Ms: quantile(setup.latencies, 0.99),
        throughputPerS: median(setup.throughputs),
        throughputPerRound: setup.throughputs.map(Math.round),
        largeP50Ms: quantile(setup.largeLatencies, 0.5),
        largeP99Ms: quantile(setup.largeLatencies, 0.99),
        hugeP50Ms: quantile(setup.hugeLatencies, 0.5),
        hugeP99Ms: quantile(setup.hugeLatencies, 0.99),
        samples: { sequential: setup.latencies.length, large: setup.largeLatencies.length, huge: setup.hugeLatencies.length, calls: setup.calls },
        eras: { client: setup.clientEra ?? 'unknown', downstream: setup.key === 'a' ? null : (setup.downstreamEra ?? 'unknown') },
        cpuUsPerCall: setup.processes ? cpuPerCall(setup) : null,
      },
    ]),
  ) as Record<Key, { setup: string; p50Ms: number; p99Ms: number; throughputPerS: number; throughputPerRound: number[]; largeP50Ms: number; largeP99Ms: number; hugeP50Ms: number; hugeP99Ms: number; samples: object; eras: { client: string; downstream: string | null }; cpuUsPerCall: ReturnType<typeof cpuPerCall> | null }>;
  const { a, b, c, d } = summary;
  const perRound = (x: Setup, y: Setup, pick: (s: Setup) => number[]) => pick(x).map((value, i) => value / pick(y)[i]!);
  const [, sb, sc, sd] = setups as [Setup, Setup, Setup, Setup];
  const ratios = {
    p50_c_over_b: c.p50Ms / b.p50Ms,
    throughput_c_over_b: c.throughputPerS / b.throughputPerS,
    p99_c_over_b: c.p99Ms / b.p99Ms,
    p50_d_over_b: d.p50Ms / b.p50Ms,
    throughput_d_over_b: d.throughputPerS / b.throughputPerS,
    p50_b_over_a: b.p50Ms / a.p50Ms,
    throughput_b_over_a: b.throughputPerS / a.throughputPerS,
    p50_c_over_a: c.p50Ms / a.p50Ms,
    throughput_c_over_a: c.throughputPerS / a.throughputPerS,
    largeP50_c_over_b: c.largeP50Ms / b.largeP50Ms,
    largeP50_d_over_b: d.largeP50Ms / b.largeP50Ms,
    hugeP50_c_over_b: c.hugeP50Ms / b.hugeP50Ms,
    hugeP50_d_over_b: d.hugeP50Ms / b.hugeP50Ms,
    hugeP99_c_over_b: c.hugeP99Ms / b.hugeP99Ms,
    hugeP99_d_over_b: d.hugeP99Ms / b.hugeP99Ms,
    hugeP50_b_over_a: b.hugeP50Ms / a.hugeP50Ms,
    perRound: {
      p50_c_over_b: perRound(sc, sb, (s) => s.roundP50s),
      throughput_c_over_b: perRound(sc, sb, (s) => s.throughputs),
      p50_d_over_b: perRound(sd, sb, (s) => s.roundP50s),
      throughput_d_over_b: perRound(sd, sb, (s) => s.throughputs),
      hugeP50_c_over_b: perRound(sc, sb, (s) => s.roundHugeP50s),
      hugeP50_d_over_b: perRound(sd, sb, (s) => s.roundHugeP50s),
    },
  };
  // What the broker adds per KiB of a 100 KiB result, over the pass-through: wall-clock (p50
  // difference) and the proxy process's CPU time; the request is the same few bytes.
  const kib = HUGE_BYTES / 1024;
  const hugeCpu = (key: Key) => summary[key].cpuUsPerCall?.hop.huge;
  const perKiB = {
    p50Us_c_minus_b: ((c.hugeP50Ms - b.hugeP50Ms) * 1000) / kib,
    p50Us_d_minus_b: ((d.hugeP50Ms - b.hugeP50Ms) * 1000) / kib,
    proxyCpuUs_c_minus_b: setups.every((setup) => setup.processes) ? (hugeCpu('c')! - hugeCpu('b')!) / kib : null,
    proxyCpuUs_d_minus_b: setups.every((setup) => setup.processes) ? (hugeCpu('d')! - hugeCpu('b')!) / kib : null,
  };
  const perRoundMedian = Object.fromEntries(Object.entries(ratios.perRound).map(([name, list]) => [name, median(list)]));
  const targets = {
    p50: { setup: 'c', ratio: 'p50 (c)/(b)', limit: 1.2, measured: ratios.p50_c_over_b, met: ratios.p50_c_over_b <= 1.2 },
    throughput: { setup: 'c', ratio: 'throughput (c)/(b)', limit: 0.8, measured: ratios.throughput_c_over_b, met: ratios.throughput_c_over_b >= 0.8 },
  };

  if (values.json) {
    process.stdout.write(`${JSON.stringify({ machine, method, summary, ratios: { ...ratios, perRoundMedian }, hugeResultPerKiB: perKiB, targets, audit: audits }, null, 2)}\n`);
    return;
  }
  const x = (value: number) => `${value.toFixed(2)}x`;
  const range = (list: number[]) => `${x(Math.min(...list))} to ${x(Math.max(...list))}`;
  const out: string[] = [];
  out.push('mcp-warden benchmark: echo tool over stdio');
  out.push(`${machine.date}  Node ${machine.node}  ${machine.cpu}, ${machine.cores} cores  load average at start ${machine.loadAverageAtStart}`);
  out.push(`tree: ${machine.tree}`);
  out.push(
    `method: ${PLAN.rounds} rounds, setups in rotating order; per round and setup ${PLAN.sequential} sequential calls (latency), ` +
      `${PLAN.concurrentTotal} calls with ${CONCURRENCY} in flight (throughput), ${PLAN.largeSequential} sequential calls echoing ${LARGE_BYTES} bytes, ` +
      `${PLAN.hugeSequential} sequential ${HUGE_TOOL} calls returning ${HUGE_BYTES} bytes (${HUGE.titles.length} notes added first; result cap ${HUGE_CAP_BYTES} bytes for that tool); ` +
      `${PLAN.warmup} warm-up calls per setup; per setup ${PLAN.rounds * PLAN.sequential} latency samples, ${PLAN.rounds} throughput figures, ` +
      `${PLAN.rounds * PLAN.largeSequential} samples of ${LARGE_BYTES} bytes, ${PLAN.rounds * PLAN.hugeSequential} of ${HUGE_BYTES} bytes; ${method.seconds} s in all`,
  );
  out.push(`eras (client / proxy downstream): ${setups.map((s) => `${s.key} ${s.clientEra ?? '?'}${s.key === 'a' ? '' : ` / ${s.downstreamEra ?? '?'}`}`).join(', ')}`);
  out.push('');
  out.push(`${'setup'.padEnd(32)}${'p50 ms'.padStart(9)}${'p99 ms'.padStart(9)}${'calls/s'.padStart(10)}   calls/s range by round`);
  for (const setup of setups) {
    const s = summary[setup.key];
    const spread = `${Math.min(...s.throughputPerRound)}-${Math.max(...s.throughputPerRound)}`;
    out.push(`${s.setup.padEnd(32)}${s.p50Ms.toFixed(3).padStart(9)}${s.p99Ms.toFixed(3).padStart(9)}${s.throughputPerS.toFixed(0).padStart(10)}   ${spread}`);
  }
  out.push('');
  out.push(`echoing ${LARGE_BYTES} bytes (sequential)      p50 ms   p99 ms`);
  for (const setup of setups) {
    const s = summary[setup.key];
    out.push(`${s.setup.padEnd(32)}${s.largeP50Ms.toFixed(3).padStart(9)}${s.largeP99Ms.toFixed(3).padStart(9)}`);
  }
  out.push('');
  out.push(`${HUGE_TOOL}: ${HUGE_BYTES}-byte result (sequential)  p50 ms   p99 ms`);
  for (const setup of setups) {
    const s = summary[setup.key];
    out.push(`${s.setup.padEnd(32)}${s.hugeP50Ms.toFixed(3).padStart(9)}${s.hugeP99Ms.toFixed(3).padStart(9)}`);
  }
  out.push('');
  if (setups.every((setup) => setup.processes)) {
    const us = (value: number | undefined) => (value === undefined ? '-' : value.toFixed(0)).padStart(9);
    out.push('CPU time per call, µs (user + system)  proxy   proxy 32  proxy 4096  proxy 100K   notes 32  client 32  client 100K');
    for (const setup of setups) {
      const cpu = summary[setup.key].cpuUsPerCall!;
      const hop = setup.key === 'a' ? undefined : cpu.hop;
      out.push(
        `${summary[setup.key].setup.padEnd(36)}${us(hop?.sequential)}${us(hop?.concurrent)}${us(hop?.large).padStart(12)}${us(hop?.huge).padStart(12)}${us(cpu.downstream.concurrent)}${us(cpu.client.concurrent)}${us(cpu.client.huge).padStart(13)}`,
      );
    }
    out.push(`(proxy: the proxy or broker process, sequential calls; 32: with 32 in flight; 4096: echoing 4096 bytes; 100K: ${HUGE_TOOL} returning ${HUGE_BYTES} bytes; notes: the notes server)`);
    out.push('');
  }
  out.push(`(c)/(b) p50 latency    ${x(ratios.p50_c_over_b)}   target <= 1.20x   ${targets.p50.met ? 'PASS' : 'MISS'}   (by round: median ${x(median(ratios.perRound.p50_c_over_b))}, ${range(ratios.perRound.p50_c_over_b)})`);
  out.push(`(c)/(b) throughput     ${x(ratios.throughput_c_over_b)}   target >= 0.80x   ${targets.throughput.met ? 'PASS' : 'MISS'}   (by round: median ${x(median(ratios.perRound.throughput_c_over_b))}, ${range(ratios.perRound.throughput_c_over_b)})`);
  out.push(`(c)/(b) p99 latency    ${x(ratios.p99_c_over_b)}`);
  out.push(
    `(d)/(b) p50 latency    ${x(ratios.p50_d_over_b)}   throughput ${x(ratios.throughput_d_over_b)}   (without identity tokens; by round: p50 median ${x(median(ratios.perRound.p50_d_over_b))}, throughput median ${x(median(ratios.perRound.throughput_d_over_b))})`,
  );
  out.push(`(b)/(a) p50 latency    ${x(ratios.p50_b_over_a)}   throughput ${x(ratios.throughput_b_over_a)}   (any stdio proxy hop)`);
  out.push(`(c)/(a) p50 latency    ${x(ratios.p50_c_over_a)}   throughput ${x(ratios.throughput_c_over_a)}`);
  if (setups.every((setup) => setup.processes)) {
    const hop = (key: Key) => summary[key].cpuUsPerCall!.hop;
    out.push(
      `proxy CPU per call     (c)/(b) ${x(hop('c').concurrent / hop('b').concurrent)} with 32 in flight, ${x(hop('c').sequential / hop('b').sequential)} sequential; ` +
        `(d)/(b) ${x(hop('d').concurrent / hop('b').concurrent)} and ${x(hop('d').sequential / hop('b').sequential)}`,
    );
  }
  out.push(`${LARGE_BYTES} bytes: (c)/(b) p50 ${x(ratios.largeP50_c_over_b)}, (d)/(b) p50 ${x(ratios.largeP50_d_over_b)}`);
  out.push(
    `${HUGE_BYTES}-byte result: (c)/(b) p50 ${x(ratios.hugeP50_c_over_b)} (by round: median ${x(median(ratios.perRound.hugeP50_c_over_b))}, ${range(ratios.perRound.hugeP50_c_over_b)}), ` +
      `(d)/(b) p50 ${x(ratios.hugeP50_d_over_b)} (by round: median ${x(median(ratios.perRound.hugeP50_d_over_b))}, ${range(ratios.perRound.hugeP50_d_over_b)}); ` +
      `p99 (c)/(b) ${x(ratios.hugeP99_c_over_b)}, (d)/(b) ${x(ratios.hugeP99_d_over_b)}; (b)/(a) p50 ${x(ratios.hugeP50_b_over_a)}`,
  );
  const perKiBText = (value: number | null) => (value === null ? '-' : `${value.toFixed(1)} µs`);
  out.push(
    `${HUGE_BYTES}-byte result, added per KiB over (b): p50 (c) ${perKiBText(perKiB.p50Us_c_minus_b)}, (d) ${perKiBText(perKiB.p50Us_d_minus_b)}; ` +
      `proxy CPU (c) ${perKiBText(perKiB.proxyCpuUs_c_minus_b)}, (d) ${perKiBText(perKiB.proxyCpuUs_d_minus_b)}`,
  );
  out.push('');
  out.push(
    `audit: ${audits.map((check) => `${check.setup} ${check.records} tools/call records for ${check.calls} calls, ${check.ok} ok, ${check.withIdentityToken} with an identity token`).join('; ')}`,
  );
  process.stdout.write(`${out.join('\n')}\n`);
}

/**
 * The processes of a setup, found once after the warm-up: the process the client spawned
 * and its descendants (the notes server; the SDK's short-lived probe process has exited).
 * Linux only (/proc); elsewhere CPU time is not reported.
 */
function findProcesses(setup: Setup): Setup['processes'] {
  const root = setup.transport?.pid;
  if (!root || !existsSync('/proc/self/stat')) return undefined;
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const fields = statFields(Number(entry));
    if (fields) parents.set(Number(entry), Number(fields[1]));
  }
  const descendants: number[] = [];
  for (let frontier = [root]; frontier.length > 0; ) {
    const children = [...parents].filter(([, parent]) => frontier.includes(parent)).map(([pid]) => pid);
    descendants.push(...children);
    frontier = children;
  }
  return setup.key === 'a' ? { downstream: [root] } : { hop: root, downstream: descendants };
}

/** Fields of /proc/PID/stat after the command name: [state, ppid, ...]; utime and stime are 11 and 12. */
function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** CPU time (user + system) of processes, in ms; /proc counts in ticks of 10 ms. */
function cpuMs(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const fields = statFields(pid);
    if (!fields) throw new Error(`process ${pid} has gone away`);
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks * 10;
}

/** Runs one phase and adds the CPU time the setup's processes (and this client) spent in it. */
async function accountCpu(setup: Setup, phase: Phase, run: () => Promise<void>): Promise<void> {
  const processes = setup.processes;
  const before = { hop: processes?.hop ? cpuMs([processes.hop]) : 0, downstream: processes ? cpuMs(processes.downstream) : 0, client: process.cpuUsage(), calls: setup.calls };
  await run();
  const client = process.cpuUsage(before.client);
  const tallied = setup.cpu[phase];
  tallied.hop += processes?.hop ? cpuMs([processes.hop]) - before.hop : 0;
  tallied.downstream += processes ? cpuMs(processes.downstream) - before.downstream : 0;
  tallied.client += (client.user + client.system) / 1000;
  tallied.calls += setup.calls - before.calls;
}

/** CPU µs per call, by process group and phase. */
function cpuPerCall(setup: Setup): Record<'hop' | 'downstream' | 'client', Record<Phase, number>> {
  const per = (pick: (tally: CpuTally) => number) =>
    Object.fromEntries((Object.entries(setup.cpu) as [Phase, CpuTally][]).map(([phase, tallied]) => [phase, (pick(tallied) * 1000) / tallied.calls])) as Record<Phase, number>;
  return { hop: per((t) => t.hop), downstream: per((t) => t.downstream), client: per((t) => t.client) };
}

/** The commit measured, and whether its sources had uncommitted changes. */
function gitState(): string {
  if (!existsSync(join(ROOT, '.git'))) return 'not a git checkout';
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'bin', 'examples', 'manifests'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${commit}, with uncommitted changes in src/, bin/, examples/ or manifests/` : commit;
  } catch {
    return 'unknown';
  }
}

/** Plain prose, nothing a secret detector or credential match should touch. */
function largePayload(bytes: number): string {
  const words = ['the', 'notes', 'store', 'keeps', 'short', 'texts', 'about', 'errands', 'meetings', 'and', 'ideas', 'for', 'later'];
  let text = '';
  for (let i = 0; text.length < bytes; i++) text += `${words[i % words.length]}${i % 11 === 10 ? '.\n' : ' '}`;
  return text.slice(0, bytes);
}

/**
 * The notes to add so that list_notes returns exactly `bytes` bytes: log-like titles (at most
 * 200 characters, as the manifest allows), varied and made deterministically, with nothing a
 * secret detector or credential match should touch (the run fails if anything is changed).
 * The notes server starts with two notes, ids 1 and 2; added notes get 3, 4, ... (the size
 * of the list does not depend on which title gets which id).
 */
function hugeNotes(bytes: number): { titles: string[]; initial: { id: number; title: string }[] } {
  const initial = [
    { id: 1, title: 'Welcome' },
    { id: 2, title: 'Groceries' },
  ];
  const firstId = initial.length + 1;
  const entryBytes = (id: number, title: string) => 1 + Buffer.byteLength(JSON.stringify({ id, title }), 'utf8');
  const lines = logLines();
  const titles: string[] = [];
  let total = Buffer.byteLength(JSON.stringify(initial), 'utf8');
  // Whole lines while more than 400 bytes are left (a line takes at most about 230); then two fillers.
  while (bytes - total > 400) {
    const title = lines.next().value!;
    total += entryBytes(firstId + titles.length, title);
    titles.push(title);
  }
  const filler = (length: number) => {
    let text = '';
    while (text.length < length) text += `${lines.next().value!.replace(/[^ -~]|"|\\/g, '')} `;
    return text.slice(0, length).replace(/ $/, '.');
  };
  const rest = bytes - total;
  const overhead = (id: number) => entryBytes(id, '');
  const firstFill = Math.floor((rest - overhead(firstId + titles.length) - overhead(firstId + titles.length + 1)) / 2);
  titles.push(filler(firstFill));
  titles.push(filler(bytes - total - entryBytes(firstId + titles.length - 1, titles.at(-1)!) - overhead(firstId + titles.length)));
  const text = JSON.stringify([...initial, ...titles.map((title, i) => ({ id: firstId + i, title }))]);
  if (Buffer.byteLength(text, 'utf8') !== bytes || titles.some((title) => title.length < 1 || title.length > 200)) {
    throw new Error(`bench: the ${bytes}-byte list came out at ${Buffer.byteLength(text, 'utf8')} bytes`);
  }
  return { titles, initial };
}

/** Endless, varied, deterministic log lines of a notes service (a fixed-seed generator). */
function* logLines(): Generator<string> {
  const { pick, int } = seeded(0x2f6b1d37);
  const users = USERS;
  const folders = FOLDERS;
  const phrases = [
    'quarterly planning with the design team',
    'buy flour, eggs and coffee before Friday',
    'ideas for the garden in spring',
    'draft of the letter to the landlord',
    'reading list: essays on walking in cities',
    'questions for the dentist about the crown',
    'train times to Lyon and back on Sunday',
    'notes from the call about the new office',
    'recipe for the lentil soup grandma made',
    'things to pack for the hiking weekend',
    'agenda for the school board meeting',
    'birthday present ideas for Ana',
  ];
  const components = ['notes.sync', 'notes.index', 'scheduler', 'mailer', 'backup', 'search', 'api.v2', 'importer'];
  const levels = ['INFO', 'INFO', 'INFO', 'DEBUG', 'WARN', 'ERROR'];
  const days = ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday'];
  const messages: (() => string)[] = [
    () => `synced ${int(1, 400)} notes for ${pick(users)} in ${int(3, 900)} ms (batch ${int(1, 12)} of 12)`,
    () => `reindexed folder "${pick(folders)}" with ${int(10, 5000)} entries, ${int(0, 300)} skipped as unchanged`,
    () => `reminder "${pick(phrases)}" moved to ${pick(days)} ${int(7, 21)}:${String(int(0, 59)).padStart(2, '0')} at the request of ${pick(users)}`,
    () => `backup of /var/lib/notes/${pick(folders)}/2026-${String(int(1, 11)).padStart(2, '0')}.db finished: ${int(2, 900)} MB in ${int(1, 300)} s`,
    () => `GET /api/v2/notes?folder=${pick(folders)}&page=${int(1, 40)} answered 200 in ${int(1, 250)} ms, ${int(1, 64)} items`,
    () => `meeting notes "${pick(phrases)}" shared with ${pick(users)} and ${pick(users)}`,
    () => `search for "${pick(phrases).split(' ').slice(0, int(1, 4)).join(' ')}" returned ${int(0, 80)} results in ${int(2, 120)} ms`,
    () => `calendar import skipped ${int(1, 60)} events older than ${int(30, 365)} days; ${int(0, 20)} conflicts left for ${pick(users)}`,
    () => `retrying upload of attachment scan-${int(100, 999)}.pdf (${int(12, 4000)} KiB), attempt ${int(2, 5)} of 5: connection reset by peer`,
    () => `weekly digest for ${pick(users)} sent: ${int(0, 30)} new notes, ${int(0, 12)} reminders due, ${int(0, 5)} shared folders changed`,
  ];
  let clock = Date.UTC(2026, 10, 23, 6, 0, 0);
  const line = () => {
    clock += int(1, 5000);
    return `${new Date(clock).toISOString()} ${pick(levels)} ${pick(components)}: ${pick(messages)()}`;
  };
  // Two lines to a title where they fit (fewer notes to add), else one.
  for (;;) {
    const first = line();
    const second = line();
    yield (first.length + 3 + second.length <= 200 ? `${first} | ${second}` : first).slice(0, 200);
  }
}

/** Nearest-rank quantile. */
function quantile(samples: readonly number[], q: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function median(samples: readonly number[]): number {
  return quantile(samples, 0.5);
}
