// What code tools and code mode cost. The example code tools (sandboxes/text-tools.js,
// manifests/text.manifest.yaml signed for a temporary workspace) run in sandbox worker
// processes (isolated-vm, a fresh isolate per run). Each measurement is side by side, in
// interleaved rounds, within one run:
//   1 latency, calls back to back: text__slugify from a warm pool (2 workers, 2 warm isolates
//               each) through the broker in process, through `mcp-warden serve --stdio` with
//               the SDK client, and SandboxPool.run alone (the worker's share); from cold
//               isolates (warmIsolates 0: every run makes its isolate); against the cheapest
//               tools that need no sandbox, through the same pipeline: the notes server's
//               `echo` (a stdio MCP server) and a native HTTP tool on a loopback API;
//   2 the same with a pause before each call (an agent thinking between calls): a worker
//               makes its next warm isolate after answering, so only then is it ready;
//   3 cold worker: SandboxPool.start() of a new 1-worker pool to its first result, against
//               a bare `node -e 0`, with and without --no-node-snapshot (Node's own start);
//   4 throughput: 8 callers, 2 workers against 1;
//   5 code mode: one warden__run_code run making 10 inner calls (text__word_stats) against
//               the same 10 calls made by the agent, one after another and all at once; and
//               the bytes of what reaches the agent either way.
// The machine may be shared and noisy: compare the ratios, not the absolute times.
//
//   node bench/sandbox.ts [--quick] [--json]
//
// Exits with 1 if any call fails or returns anything but the expected answer, or if the
// audit trails do not hold one record per call; with 3 if the run exceeds its time limit.
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual, parseArgs } from 'node:util';
import { Client } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { pino } from 'pino';
import { parse, stringify } from 'yaml';
import { Broker } from '../src/broker.ts';
import { loadConfig } from '../src/config/load.ts';
import type { WardenConfig } from '../src/config/types.ts';
import { formatEnvelope } from '../src/manifest/envelope.ts';
import { readSigningKey, writeKeyPair } from '../src/manifest/keys.ts';
import { signManifestSource } from '../src/manifest/sign.ts';
import { runLimits } from '../src/sandbox/failures.ts';
import { SandboxPool } from '../src/sandbox/pool.ts';
import type { ModuleJob, RunOutcome } from '../src/sandbox/protocol.ts';

const HELP = `Usage: node bench/sandbox.ts [--quick] [--json]

--quick   a short smoke run (fewer rounds and samples; figures are rough)
--json    print the results as JSON on stdout
`;
const { values } = parseArgs({ options: { quick: { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
if (values.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PLAN = values.quick
  ? { warmup: 50, b2bRounds: 3, b2bPerRound: 40, spacedRounds: 2, spacedPerRound: 10, coldWorkers: 3, tputRounds: 3, tputCalls: 100, cmRounds: 3, cmPerRound: 3 }
  : { warmup: 100, b2bRounds: 9, b2bPerRound: 60, spacedRounds: 7, spacedPerRound: 20, coldWorkers: 10, tputRounds: 5, tputCalls: 200, cmRounds: 7, cmPerRound: 6 };
/** The pause before each call when calls are spaced: longer than a worker takes to make its next warm isolate. */
const PAUSE_MS = 10;
const CALLERS = 8;
const INNER_CALLS = 10;
/** No single call may take longer than this; the SDK then fails it. */
const CALL_TIMEOUT_MS = 15_000;
/** A run that takes longer than this is broken, not slow. */
const DEADLINE_MS = (values.quick ? 2 : 4) * 60_000;
const TITLE = 'Hello, Wörld: a Small Title!';
const SLUG = 'hello-world-a-small-title';
const TARGET_WARM_P50_MS = 2;
const TARGET_COLD_MS = 60;
// The setups of measurements 1 and 2.
const POOL = 'slugify, SandboxPool.run alone';
const BROKER = 'slugify (code tool), broker';
const ECHO = 'echo (stdio server), broker';
const HTTP = 'get (HTTP API), broker';
const STDIO = 'slugify (code tool), stdio front';
const STDIO_ECHO = 'echo (stdio server), stdio front';
const COLD_POOL = 'slugify, SandboxPool.run alone, cold';
const COLD_BROKER = 'slugify, broker, cold isolate';

const started = performance.now();
const startLoad = loadavg().map((x) => x.toFixed(2)).join(' ');
const workdir = mkdtempSync(join(tmpdir(), 'mcp-warden-bench-sandbox-'));
const guard = setTimeout(() => {
  process.stderr.write(`bench: FAILED: the run exceeded ${DEADLINE_MS / 60_000} minutes\n`);
  rmSync(workdir, { recursive: true, force: true });
  process.exit(3);
}, DEADLINE_MS);
guard.unref();
const silent = pino({ level: 'silent' });

// Ten short texts for word_stats (plain prose: nothing secret detection should touch).
const WORDS = ['the', 'notes', 'store', 'keeps', 'short', 'texts', 'about', 'errands', 'meetings', 'and', 'ideas', 'for', 'later', 'review', 'with', 'care'];
const TEXTS = Array.from({ length: INNER_CALLS }, (_, doc) => Array.from({ length: 40 + doc * 3 }, (_, i) => WORDS[(i * (doc + 3) + doc) % WORDS.length]).join(' '));

// --- the workspace: three signed manifests, a loopback API, four configs ---------------
const publisher = writeKeyPair(join(workdir, 'bench-publisher'));
const sign = (source: unknown, file: string, out: string) =>
  writeFileSync(join(workdir, out), formatEnvelope(signManifestSource(source, file, readSigningKey(publisher.keyFile), { now: Date.now(), validDays: 1 }).envelope));
const textSource = parse(readFileSync(join(ROOT, 'manifests/text.manifest.yaml'), 'utf8')) as { transport: Record<string, unknown> };
textSource.transport = { ...textSource.transport, module: join(ROOT, 'sandboxes/text-tools.js') };
sign(textSource, 'text.manifest.yaml', 'text.signed.json');
const notesSource = parse(readFileSync(join(ROOT, 'manifests/notes.manifest.yaml'), 'utf8')) as { transport: Record<string, unknown> };
notesSource.transport = { ...notesSource.transport, command: process.execPath, args: [join(ROOT, 'examples/notes-server/server.ts')], cwd: ROOT };
sign(notesSource, 'notes.manifest.yaml', 'notes.signed.json');

const apiBody = JSON.stringify({ id: 1, title: 'VPN drops every hour', status: 'open' });
const api = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(apiBody);
});
await new Promise<void>((done) => api.listen(0, '127.0.0.1', done));
const origin = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
sign(
  {
    manifestVersion: 1,
    name: 'bench.api',
    version: '1',
    serial: 1,
    transport: { type: 'http-api', baseUrl: `${origin}/api` },
    tools: [
      {
        name: 'get',
        description: 'Read an item.',
        access: 'read',
        inputSchema: { type: 'object', properties: { id: { type: 'integer' } }, required: ['id'], additionalProperties: false },
        http: { method: 'GET', path: '/items/{id}' },
      },
    ],
  },
  'api.yaml',
  'api.signed.json',
);
writeFileSync(join(workdir, 'notes-token'), 'bench-notes-api-token-0123456789\n');

const SERVERS = {
  text: { manifest: 'text.signed.json', name: 'example.text' },
  notes: { manifest: 'notes.signed.json', name: 'example.notes' },
  api: { manifest: 'api.signed.json', name: 'bench.api' },
};
function writeConfig(name: string, servers: (keyof typeof SERVERS)[], tools: string[], sandbox: Record<string, unknown>): { file: string; audit: string } {
  const audit = join(workdir, `${name}-audit.jsonl`);
  const file = join(workdir, `${name}.yaml`);
  writeFileSync(
    file,
    stringify({
      version: 1,
      manifestsDir: workdir,
      servers: Object.fromEntries(servers.map((key) => [key, SERVERS[key]])),
      trust: { publishers: { bench: { keys: [publisher.publicKey], namespaces: ['example.*', 'bench.*'] } } },
      state: { dir: join(workdir, `${name}-state`) },
      ...(servers.includes('notes') ? { credentials: { notes: { NOTES_API_TOKEN: { file: join(workdir, 'notes-token') } } } } : {}),
      egress: { allow: [{ destination: origin, addresses: ['127.0.0.1'] }] },
      agents: { bench: { allow: [{ tools }] } },
      // The limiter runs on every call, as in production, but with limits this run never reaches.
      rateLimits: { concurrent: 10_000, perAgent: { perMinute: 1_000_000, concurrent: 10_000, burst: 100_000 }, perTool: { perMinute: 1_000_000, concurrent: 10_000, burst: 100_000 } },
      sandbox,
      audit: { file: audit },
      log: { level: 'warn' },
    }),
  );
  return { file, audit };
}
const CODE_TOOLS = ['text__slugify', 'text__word_stats'];
const configs = {
  main: writeConfig('main', ['text', 'notes', 'api'], [...CODE_TOOLS, 'notes__echo', 'api__get', 'warden__run_code'], { workers: 2, warmIsolates: 2, codeMode: { workers: 2 } }),
  stdio: writeConfig('stdio', ['text', 'notes'], [...CODE_TOOLS, 'notes__echo', 'warden__run_code'], { workers: 2, warmIsolates: 2, codeMode: { workers: 2 } }),
  cold: writeConfig('cold', ['text'], ['text__slugify'], { workers: 2, warmIsolates: 0, codeMode: { workers: 1 } }),
  single: writeConfig('single', ['text'], ['text__slugify'], { workers: 1, warmIsolates: 2, codeMode: { workers: 1 } }),
};

// --- what is measured --------------------------------------------------------------------
const auditedCalls = { main: 0, stdio: 0, cold: 0, single: 0 };
const brokers: Broker[] = [];
const pools: SandboxPool[] = [];
let client: Client | undefined;
const stderrTail: string[] = [];

async function startBroker(which: 'main' | 'cold' | 'single'): Promise<Broker> {
  const config = loadConfig(configs[which].file);
  if (config.rejected.size > 0) throw new Error(`${which}: manifests refused: ${JSON.stringify([...config.rejected])}`);
  const broker = new Broker(config, { logger: silent });
  brokers.push(broker);
  await broker.start();
  return broker;
}

function checkText(label: string, result: { content: unknown; isError?: unknown }, expected: string): void {
  const content = result.content as { type: string; text?: string }[];
  if (result.isError || content.length !== 1 || content[0]?.type !== 'text' || content[0].text !== expected) {
    throw new Error(`${label}: unexpected result ${JSON.stringify(result).slice(0, 300)}`);
  }
}
function checkOutcome(label: string, outcome: RunOutcome): void {
  if (!outcome.ok || outcome.output !== JSON.stringify(SLUG)) throw new Error(`${label}: unexpected outcome ${JSON.stringify(outcome).slice(0, 300)}`);
}
function deadline(): void {
  if (performance.now() - started > DEADLINE_MS) throw new Error(`the run exceeded ${DEADLINE_MS / 60_000} minutes`);
}

async function slugifyIn(broker: Broker, which: 'main' | 'cold' | 'single'): Promise<void> {
  deadline();
  auditedCalls[which]++;
  checkText(`text__slugify (${which})`, await broker.callTool('bench', 'text__slugify', { text: TITLE }), SLUG);
}
async function overStdio(name: string, args: Record<string, unknown>): Promise<Awaited<ReturnType<Client['callTool']>>> {
  deadline();
  auditedCalls.stdio++;
  return client!.callTool({ name, arguments: args }, { timeout: CALL_TIMEOUT_MS });
}

/** The job SandboxBackend sends for text__slugify, built the same way, for SandboxPool.run alone. */
function slugifyJob(config: WardenConfig): ModuleJob {
  const manifest = config.servers.get('text')!;
  const tool = manifest.tools.find((candidate) => candidate.name === 'slugify')!;
  return {
    kind: 'module',
    source: manifest.moduleSource!,
    filename: 'sandbox:///text/text-tools.js',
    exportName: 'slugify',
    input: JSON.stringify({ text: TITLE }),
    limits: runLimits(config.sandbox.limits, config.sandbox.maxLimits, tool.sandbox, config.limits.callTimeoutMs),
  };
}
function newPool(workers: number, warmIsolates: number, config: WardenConfig): SandboxPool {
  return new SandboxPool({ workers, warmIsolates, warmMemoryMb: config.sandbox.limits.memoryMb, workerMemoryMb: config.sandbox.workerMemoryMb, logger: silent });
}

type Samples = Map<string, { all: number[]; roundP50s: number[]; cpu: CpuTally }>;
/** Runs each setup perRound times per round, the order rotating each round; with pauseMs, a pause before each timed call. */
async function interleave(setups: Record<string, () => Promise<unknown>>, rounds: number, perRound: number, warmup: number, pauseMs = 0): Promise<Samples> {
  const names = Object.keys(setups);
  const samples: Samples = new Map(names.map((name) => [name, { all: [] as number[], roundP50s: [] as number[], cpu: tally() }]));
  for (const name of names) for (let i = 0; i < warmup; i++) await setups[name]!();
  for (let round = 0; round < rounds; round++) {
    for (const name of rotate(names, round)) {
      const list: number[] = [];
      await accountCpu(samples.get(name)!.cpu, perRound, async () => {
        for (let i = 0; i < perRound; i++) {
          if (pauseMs > 0) await sleep(pauseMs);
          const t0 = performance.now();
          await setups[name]!();
          list.push(performance.now() - t0);
        }
      });
      samples.get(name)!.all.push(...list);
      samples.get(name)!.roundP50s.push(quantile(list, 0.5));
    }
  }
  return samples;
}

/**
 * CPU time (user + system, ms) spent while a setup ran, and the calls it made: this process
 * (the broker in process, the pool's side, the benchmark's client), the sandbox worker
 * processes (every process below this one started with --no-node-snapshot: the pools of the
 * brokers in process and of the stdio front) and the other processes below this one (the
 * stdio front, the notes servers). Read from /proc (Linux only), in ticks of 10 ms.
 */
interface CpuTally {
  self: number;
  workers: number;
  other: number;
  calls: number;
}
function tally(): CpuTally {
  return { self: 0, workers: 0, other: 0, calls: 0 };
}
const PROC = existsSync('/proc/self/stat');
/** The CPU ticks of each process below this one, and whether it is a sandbox worker. */
function descendantTicks(): Map<number, { ticks: number; worker: boolean }> {
  const found = new Map<number, { ticks: number; worker: boolean }>();
  if (!PROC) return found;
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const fields = statFields(Number(entry));
    if (fields) parents.set(Number(entry), Number(fields[1]));
  }
  for (let frontier = [process.pid]; frontier.length > 0; ) {
    const children = [...parents].filter(([, parent]) => frontier.includes(parent)).map(([pid]) => pid);
    for (const pid of children) {
      const fields = statFields(pid);
      let cmdline = '';
      try {
        cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      } catch {
        // gone meanwhile
      }
      if (fields) found.set(pid, { ticks: Number(fields[11]) + Number(fields[12]), worker: cmdline.includes('--no-node-snapshot') });
    }
    frontier = children;
  }
  return found;
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
/** Runs a block of calls and adds the CPU time spent meanwhile (a process that ended during the block is not counted). */
async function accountCpu(into: CpuTally, calls: number, run: () => Promise<void>): Promise<void> {
  const before = descendantTicks();
  const self = process.cpuUsage();
  await run();
  const used = process.cpuUsage(self);
  into.self += (used.user + used.system) / 1000;
  for (const [pid, after] of descendantTicks()) {
    const ms = (after.ticks - (before.get(pid)?.ticks ?? 0)) * 10;
    if (after.worker) into.workers += ms;
    else into.other += ms;
  }
  into.calls += calls;
}
/** CPU µs per call. */
function cpuPerCall(cpu: CpuTally): { selfUs: number; workersUs: number; otherUs: number } | null {
  if (!PROC || cpu.calls === 0) return null;
  return { selfUs: (cpu.self * 1000) / cpu.calls, workersUs: (cpu.workers * 1000) / cpu.calls, otherUs: (cpu.other * 1000) / cpu.calls };
}

interface Row {
  readonly setup: string;
  readonly samples: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuPerCall: ReturnType<typeof cpuPerCall>;
}
function rows(samples: Samples): Row[] {
  return [...samples].map(([setup, { all, cpu }]) => ({ setup, samples: all.length, p50Ms: quantile(all, 0.5), p99Ms: quantile(all, 0.99), cpuPerCall: cpuPerCall(cpu) }));
}
/** The ratio of two setups' p50s, overall and as the median of the per-round ratios. */
function ratio(samples: Samples, over: string, under: string): { p50: number; byRoundMedian: number; byRoundRange: [number, number] } {
  const a = samples.get(over)!;
  const b = samples.get(under)!;
  const byRound = a.roundP50s.map((value, i) => value / b.roundP50s[i]!);
  return { p50: quantile(a.all, 0.5) / quantile(b.all, 0.5), byRoundMedian: quantile(byRound, 0.5), byRoundRange: [Math.min(...byRound), Math.max(...byRound)] };
}

// Code mode: the agent's code, and the summary it returns (the agent would otherwise work it out from 10 results).
const summaryCode = (parallel: boolean, all = false) => `const texts = ${JSON.stringify(TEXTS)};
${parallel ? 'const results = await Promise.all(texts.map((text) => tools.text.word_stats({ text })));' : 'const results = [];\nfor (const text of texts) results.push(await tools.text.word_stats({ text }));'}
${all ? 'return results;' : `let words = 0;
const counts = {};
for (const stats of results) {
  words += stats.words;
  for (const { word, count } of stats.top) counts[word] = (counts[word] ?? 0) + count;
}
const top = Object.entries(counts).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0];
return { documents: results.length, words, top: top[0] };`}`;
interface Stats {
  words: number;
  top: { word: string; count: number }[];
}
function summarise(results: readonly Stats[]): { documents: number; words: number; top: string } {
  let words = 0;
  const counts: Record<string, number> = {};
  for (const stats of results) {
    words += stats.words;
    for (const { word, count } of stats.top) counts[word] = (counts[word] ?? 0) + count;
  }
  const top = Object.entries(counts).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]!;
  return { documents: results.length, words, top: top[0] };
}
const bytes = (value: unknown) => Buffer.byteLength(JSON.stringify(value));

// --- the run -----------------------------------------------------------------------------
let failure: unknown;
const report: Record<string, unknown> = {};
try {
  const main = await startBroker('main');
  const job = slugifyJob(main.config);
  const warmPool = newPool(2, 2, main.config);
  pools.push(warmPool);
  await warmPool.start();

  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [join(ROOT, 'bin/mcp-warden'), 'serve', '--config', configs.stdio.file, '--stdio', '--agent', 'bench'],
    env: { PATH: `${dirname(process.execPath)}:${process.env['PATH'] ?? ''}` },
    cwd: ROOT,
    stderr: 'pipe',
  });
  transport.stderr?.on('data', (chunk: Buffer) => {
    stderrTail.push(...chunk.toString('utf8').split('\n').filter((line) => line !== '').map((line) => line.slice(0, 500)));
    stderrTail.splice(0, Math.max(0, stderrTail.length - 20));
  });
  client = new Client({ name: 'bench', version: '1.0.0' }, { versionNegotiation: { mode: 'legacy' } });
  await client.connect(transport, { timeout: CALL_TIMEOUT_MS });
  const listed = await client.listTools(undefined, { timeout: CALL_TIMEOUT_MS });
  for (const name of [...CODE_TOOLS, 'notes__echo', 'warden__run_code']) if (!listed.tools.some((tool) => tool.name === name)) throw new Error(`stdio: tools/list has no ${name}`);

  // 1 and 2. Warm pool and cold isolates, against the cheapest tools that need no sandbox,
  // in process and over stdio; once with calls back to back, once with a pause before each.
  const cold = await startBroker('cold');
  const coldPool = newPool(2, 0, main.config);
  pools.push(coldPool);
  await coldPool.start();
  const guestCpu = { 'back to back': [] as number[], spaced: [] as number[] };
  let pacing: keyof typeof guestCpu = 'back to back';
  const latencySetups = {
    [POOL]: async () => {
      deadline();
      const outcome = await warmPool.run(job);
      checkOutcome('SandboxPool.run', outcome);
      guestCpu[pacing].push(outcome.cpuMs);
    },
    [BROKER]: () => slugifyIn(main, 'main'),
    [ECHO]: async () => {
      deadline();
      auditedCalls.main++;
      checkText('notes__echo', await main.callTool('bench', 'notes__echo', { text: 'hello' }), 'hello');
    },
    [HTTP]: async () => {
      deadline();
      auditedCalls.main++;
      const result = await main.callTool('bench', 'api__get', { id: 1 });
      if (result.isError) throw new Error(`api__get: ${JSON.stringify(result).slice(0, 300)}`);
    },
    [STDIO]: async () => checkText('stdio text__slugify', await overStdio('text__slugify', { text: TITLE }), SLUG),
    [STDIO_ECHO]: async () => checkText('stdio notes__echo', await overStdio('notes__echo', { text: 'hello' }), 'hello'),
    [COLD_POOL]: async () => {
      deadline();
      checkOutcome('cold SandboxPool.run', await coldPool.run(job));
    },
    [COLD_BROKER]: () => slugifyIn(cold, 'cold'),
  };
  for (const [key, plan] of [
    ['backToBack', { rounds: PLAN.b2bRounds, perRound: PLAN.b2bPerRound, warmup: PLAN.warmup, pauseMs: 0 }],
    ['spaced', { rounds: PLAN.spacedRounds, perRound: PLAN.spacedPerRound, warmup: 0, pauseMs: PAUSE_MS }],
  ] as const) {
    pacing = key === 'spaced' ? 'spaced' : 'back to back';
    const samples = await interleave(latencySetups, plan.rounds, plan.perRound, plan.warmup, plan.pauseMs);
    const baseline = quantile(samples.get(ECHO)!.all, 0.5) <= quantile(samples.get(HTTP)!.all, 0.5) ? ECHO : HTTP;
    report[key] = {
      ...plan,
      rows: rows(samples),
      guestCpuMsP50: quantile(guestCpu[pacing], 0.5),
      baseline,
      ratios: {
        brokerOverBaseline: ratio(samples, BROKER, baseline),
        brokerOverEcho: ratio(samples, BROKER, ECHO),
        brokerOverHttp: ratio(samples, BROKER, HTTP),
        brokerOverPool: ratio(samples, BROKER, POOL),
        stdioOverStdioEcho: ratio(samples, STDIO, STDIO_ECHO),
        stdioOverBroker: ratio(samples, STDIO, BROKER),
        coldOverWarmBroker: ratio(samples, COLD_BROKER, BROKER),
        coldOverWarmPool: ratio(samples, COLD_POOL, POOL),
      },
    };
  }
  await cold.close();
  await coldPool.close();
  await warmPool.close();

  // 3. Cold worker: a new 1-worker pool, start() to its first result; against Node's own start.
  const bare = async (args: string[]): Promise<number> => {
    deadline();
    const t0 = performance.now();
    const child = spawn(process.execPath, args, { stdio: 'ignore', env: {} });
    const [code] = (await once(child, 'exit')) as [number | null];
    if (code !== 0) throw new Error(`node ${args.join(' ')} exited with ${code}`);
    return performance.now() - t0;
  };
  const coldStart = async (warmIsolates: number): Promise<{ ready: number; first: number }> => {
    deadline();
    const pool = newPool(1, warmIsolates, main.config);
    const t0 = performance.now();
    try {
      await pool.start();
      const t1 = performance.now();
      checkOutcome('new pool', await pool.run(job));
      return { ready: t1 - t0, first: performance.now() - t0 };
    } finally {
      await pool.close();
    }
  };
  const spawnSetups: Record<string, () => Promise<{ ready?: number; first: number }>> = {
    'node -e 0': async () => ({ first: await bare(['-e', '0']) }),
    'node --no-node-snapshot -e 0': async () => ({ first: await bare(['--no-node-snapshot', '-e', '0']) }),
    'new pool, warmIsolates 0': () => coldStart(0),
    'new pool, warmIsolates 2': () => coldStart(2),
  };
  const spawnTimes = new Map(Object.keys(spawnSetups).map((name) => [name, { ready: [] as number[], first: [] as number[] }]));
  for (const name of Object.keys(spawnSetups)) await spawnSetups[name]!(); // warm-up: file cache, stripped worker source
  for (let rep = 0; rep < PLAN.coldWorkers; rep++) {
    for (const name of rotate(Object.keys(spawnSetups), rep)) {
      const time = await spawnSetups[name]!();
      if (time.ready !== undefined) spawnTimes.get(name)!.ready.push(time.ready);
      spawnTimes.get(name)!.first.push(time.first);
    }
  }
  const bareSnapshotless = quantile(spawnTimes.get('node --no-node-snapshot -e 0')!.first, 0.5);
  report['coldWorker'] = {
    rows: [...spawnTimes].map(([setup, times]) => ({
      setup,
      samples: times.first.length,
      p50Ms: quantile(times.first, 0.5),
      maxMs: Math.max(...times.first),
      ...(times.ready.length > 0 ? { readyP50Ms: quantile(times.ready, 0.5), firstRunP50Ms: quantile(times.first.map((first, i) => first - times.ready[i]!), 0.5) } : {}),
      overBareSnapshotless: quantile(times.first, 0.5) / bareSnapshotless,
    })),
  };

  // 4. Throughput: CALLERS callers, 2 workers against 1.
  const single = await startBroker('single');
  const throughput = async (broker: Broker, which: 'main' | 'single'): Promise<number> => {
    let issued = 0;
    const caller = async (): Promise<void> => {
      while (issued < PLAN.tputCalls) {
        issued++;
        await slugifyIn(broker, which);
      }
    };
    const t0 = performance.now();
    await Promise.all(Array.from({ length: CALLERS }, caller));
    return PLAN.tputCalls / ((performance.now() - t0) / 1000);
  };
  const tputSetups = { '2 workers': () => throughput(main, 'main'), '1 worker': () => throughput(single, 'single') };
  const tput = new Map(Object.keys(tputSetups).map((name) => [name, [] as number[]]));
  const tputCpu = new Map(Object.keys(tputSetups).map((name) => [name, tally()]));
  for (const run of Object.values(tputSetups)) await run();
  for (let round = 0; round < PLAN.tputRounds; round++) {
    for (const name of rotate(Object.keys(tputSetups), round)) {
      await accountCpu(tputCpu.get(name)!, PLAN.tputCalls, async () => void tput.get(name)!.push(await tputSetups[name as keyof typeof tputSetups]()));
    }
  }
  const two = tput.get('2 workers')!;
  const one = tput.get('1 worker')!;
  const tputByRound = two.map((value, i) => value / one[i]!);
  report['throughput'] = {
    callers: CALLERS,
    callsPerRound: PLAN.tputCalls,
    rows: [...tput].map(([setup, list]) => ({ setup, callsPerS: quantile(list, 0.5), min: Math.min(...list), max: Math.max(...list), cpuPerCall: cpuPerCall(tputCpu.get(setup)!) })),
    ratio: { median: quantile(two, 0.5) / quantile(one, 0.5), byRoundMedian: quantile(tputByRound, 0.5), byRoundRange: [Math.min(...tputByRound), Math.max(...tputByRound)] },
  };
  await single.close();

  // 5. Code mode: one run of 10 inner calls against the agent making the 10 calls itself.
  const expected = summarise(TEXTS.map((text) => word_stats(text)));
  const sizes: Record<string, { requestBytes: number; resultBytes: number; messages: number }> = {};
  const direct = async (label: string, call: (text: string) => Promise<{ content: unknown; structuredContent?: unknown; isError?: unknown }>, parallel: boolean): Promise<void> => {
    deadline();
    const results = parallel ? await Promise.all(TEXTS.map(call)) : await sequence(TEXTS, call);
    for (const result of results) if (result.isError || result.structuredContent === undefined) throw new Error(`${label}: unexpected result ${JSON.stringify(result).slice(0, 300)}`);
    if (!isDeepStrictEqual(summarise(results.map((result) => result.structuredContent as Stats)), expected)) throw new Error(`${label}: the results do not add up`);
    sizes[label] ??= { requestBytes: TEXTS.reduce((sum, text) => sum + bytes({ name: 'text__word_stats', arguments: { text } }), 0), resultBytes: results.reduce((sum, result) => sum + bytes(result), 0), messages: TEXTS.length };
  };
  const runCode = async (label: string, call: (code: string) => Promise<{ content: unknown; structuredContent?: unknown; isError?: unknown }>, code: string, want: unknown): Promise<void> => {
    deadline();
    const result = await call(code);
    const structured = result.structuredContent as { result?: unknown } | undefined;
    if (result.isError || !isDeepStrictEqual(structured?.result, want)) throw new Error(`${label}: unexpected result ${JSON.stringify(result).slice(0, 300)}`);
    sizes[label] ??= { requestBytes: bytes({ name: 'warden__run_code', arguments: { code } }), resultBytes: bytes(result), messages: 1 };
  };
  const inProcess = (name: string, args: Record<string, unknown>, calls: number) => {
    auditedCalls.main += calls;
    return main.callTool('bench', name, args);
  };
  const stdio = (name: string, args: Record<string, unknown>, calls: number) => {
    auditedCalls.stdio += calls - 1;
    return overStdio(name, args);
  };
  const sequentialCode = summaryCode(false);
  const parallelCode = summaryCode(true);
  const codeMode = await interleave(
    {
      '10 calls one by one, broker': () => direct('10 calls one by one, broker', (text) => inProcess('text__word_stats', { text }, 1), false),
      '10 calls at once, broker': () => direct('10 calls at once, broker', (text) => inProcess('text__word_stats', { text }, 1), true),
      'run_code, 10 awaits, broker': () => runCode('run_code, 10 awaits, broker', (code) => inProcess('warden__run_code', { code }, 1 + INNER_CALLS), sequentialCode, expected),
      'run_code, Promise.all, broker': () => runCode('run_code, Promise.all, broker', (code) => inProcess('warden__run_code', { code }, 1 + INNER_CALLS), parallelCode, expected),
      '10 calls one by one, stdio front': () => direct('10 calls one by one, stdio front', (text) => stdio('text__word_stats', { text }, 1), false),
      'run_code, 10 awaits, stdio front': () => runCode('run_code, 10 awaits, stdio front', (code) => stdio('warden__run_code', { code }, 1 + INNER_CALLS), sequentialCode, expected),
    },
    PLAN.cmRounds,
    PLAN.cmPerRound,
    Math.ceil(PLAN.warmup / 40),
  );
  // What reaches the agent when the code hands back every result unchanged: code mode saves round trips, not bytes, then.
  await runCode('run_code returning all 10 results, broker', (code) => inProcess('warden__run_code', { code }, 1 + INNER_CALLS), summaryCode(true, true), TEXTS.map((text) => word_stats(text)));
  report['codeMode'] = {
    innerTool: 'text__word_stats',
    innerCalls: INNER_CALLS,
    rows: rows(codeMode),
    ratios: {
      runCodeOverOneByOne: ratio(codeMode, 'run_code, 10 awaits, broker', '10 calls one by one, broker'),
      runCodeParallelOverAtOnce: ratio(codeMode, 'run_code, Promise.all, broker', '10 calls at once, broker'),
      stdioRunCodeOverOneByOne: ratio(codeMode, 'run_code, 10 awaits, stdio front', '10 calls one by one, stdio front'),
    },
    sizes,
  };
} catch (error) {
  failure = error;
} finally {
  await client?.close().catch(() => undefined);
  for (const broker of brokers) await broker.close().catch(() => undefined);
  for (const pool of pools) await pool.close().catch(() => undefined);
  await new Promise<void>((done) => api.close(() => done()));
}
try {
  if (failure === undefined) report['audit'] = (['main', 'stdio', 'cold', 'single'] as const).map(checkAudit);
} catch (error) {
  failure = error;
} finally {
  // A worker that died says why in the audit trail.
  if (failure !== undefined) for (const { audit } of Object.values(configs)) for (const line of workerEvents(audit)) stderrTail.push(line);
  rmSync(workdir, { recursive: true, force: true });
}
if (failure !== undefined) {
  process.stderr.write(`bench: FAILED: ${failure instanceof Error ? failure.message : String(failure)}\n`);
  if (stderrTail.length > 0) process.stderr.write(`--- last stderr lines of mcp-warden serve --stdio, and sandbox worker events:\n${stderrTail.join('\n')}\n`);
  process.exit(1);
}
clearTimeout(guard);
print();

/** One tools/call record per call made (a code-mode run and each of its inner calls), all ok. */
function checkAudit(which: keyof typeof auditedCalls): { config: string; calls: number; records: number; ok: number } {
  let records = 0;
  let ok = 0;
  for (const line of readFileSync(configs[which].audit, 'utf8').split('\n')) {
    if (line === '') continue;
    const record = JSON.parse(line) as Record<string, unknown>;
    if (record['event'] !== 'tools/call') continue;
    records++;
    if (record['outcome'] === 'ok') ok++;
  }
  const check = { config: which, calls: auditedCalls[which], records, ok };
  if (records !== check.calls || ok !== check.calls) throw new Error(`${which}: the audit trail does not match the calls made: ${JSON.stringify(check)}`);
  return check;
}

/** The sandbox.worker records of an audit file (a worker died or failed to start), a few. */
function workerEvents(file: string): string[] {
  try {
    return readFileSync(file, 'utf8').split('\n').filter((line) => line.includes('"sandbox.worker"')).slice(0, 5).map((line) => line.slice(0, 1000));
  } catch {
    return [];
  }
}

function print(): void {
  const machine = { date: new Date().toISOString(), node: process.version, cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, loadAverageAtStart: startLoad, loadAverageAtEnd: loadavg().map((x) => x.toFixed(2)).join(' '), tree: gitState() };
  const seconds = Math.round((performance.now() - started) / 1000);
  type Latency = { rounds: number; perRound: number; warmup: number; pauseMs: number; rows: Row[]; guestCpuMsP50: number; baseline: string; ratios: Record<string, ReturnType<typeof ratio>> };
  const backToBack = report['backToBack'] as Latency;
  const spaced = report['spaced'] as Latency;
  const coldWorker = report['coldWorker'] as { rows: { setup: string; samples: number; p50Ms: number; maxMs: number; readyP50Ms?: number; firstRunP50Ms?: number; overBareSnapshotless: number }[] };
  const tput = report['throughput'] as { rows: { setup: string; callsPerS: number; min: number; max: number; cpuPerCall: ReturnType<typeof cpuPerCall> }[]; ratio: { median: number; byRoundMedian: number; byRoundRange: [number, number] } };
  const codeMode = report['codeMode'] as { rows: Row[]; ratios: Record<string, ReturnType<typeof ratio>>; sizes: Record<string, { requestBytes: number; resultBytes: number; messages: number }> };
  const p50 = (list: Row[], setup: string) => list.find((row) => row.setup === setup)!.p50Ms;
  const coldWorkerP50 = coldWorker.rows.find((row) => row.setup === 'new pool, warmIsolates 2')!.p50Ms;
  const target = (limit: number, measured: number) => ({ limit, measured, met: measured <= limit });
  const targets = {
    warmP50Ms: {
      stdioFront: { backToBack: target(TARGET_WARM_P50_MS, p50(backToBack.rows, STDIO)), spaced: target(TARGET_WARM_P50_MS, p50(spaced.rows, STDIO)) },
      inProcess: { backToBack: target(TARGET_WARM_P50_MS, p50(backToBack.rows, BROKER)), spaced: target(TARGET_WARM_P50_MS, p50(spaced.rows, BROKER)) },
    },
    coldMs: {
      isolateThroughBrokerP50: { backToBack: target(TARGET_COLD_MS, p50(backToBack.rows, COLD_BROKER)), spaced: target(TARGET_COLD_MS, p50(spaced.rows, COLD_BROKER)) },
      newWorkerToFirstResultP50: target(TARGET_COLD_MS, coldWorkerP50),
    },
  };
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ machine, plan: PLAN, seconds, ...report, targets }, null, 2)}\n`);
    return;
  }
  const x = (value: number) => `${value.toFixed(2)}x`;
  const ms = (value: number) => value.toFixed(3).padStart(9);
  const r = (value: ReturnType<typeof ratio>) => `${x(value.p50)}  (by round: median ${x(value.byRoundMedian)}, ${x(value.byRoundRange[0])} to ${x(value.byRoundRange[1])})`;
  const us = (value: number | undefined) => (value === undefined ? '-' : value.toFixed(0)).padStart(9);
  const cpu = (value: ReturnType<typeof cpuPerCall>) => `${us(value?.selfUs)}${us(value?.workersUs)}${us(value?.otherUs)}`;
  const table = (list: Row[]) => list.map((row) => `${row.setup.padEnd(40)}${ms(row.p50Ms)}${ms(row.p99Ms)}${String(row.samples).padStart(9)}   ${cpu(row.cpuPerCall)}`);
  const header = (per: string) => `${'setup'.padEnd(40)}${'p50 ms'.padStart(9)}${'p99 ms'.padStart(9)}${'samples'.padStart(9)}   CPU µs per ${per}: this proc  workers    other`;
  const pass = (met: boolean) => (met ? 'PASS' : 'MISS');
  const out: string[] = [];
  out.push('mcp-warden benchmark: code tools and code mode');
  out.push(`${machine.date}  Node ${machine.node}  ${machine.cpu}, ${machine.cores} cores  load average at start ${machine.loadAverageAtStart}, at end ${machine.loadAverageAtEnd}; ${seconds} s in all`);
  out.push(`tree: ${machine.tree}`);
  out.push('');
  const latency = (title: string, data: Latency) => {
    out.push(title);
    out.push(header('call'));
    out.push(...table(data.rows));
    out.push(`guest CPU time per run (the isolate's cpuTime: compile, evaluate, call), p50: ${data.guestCpuMsP50.toFixed(3)} ms`);
    out.push(`code tool / cheapest non-sandbox tool (${data.baseline}), p50  ${r(data.ratios['brokerOverBaseline']!)}`);
    out.push(`code tool / echo (stdio server), broker p50           ${r(data.ratios['brokerOverEcho']!)}`);
    out.push(`code tool / get (HTTP API), broker p50                ${r(data.ratios['brokerOverHttp']!)}`);
    out.push(`code tool through the broker / SandboxPool.run alone  ${r(data.ratios['brokerOverPool']!)}`);
    out.push(`code tool / echo, both over the stdio front, p50      ${r(data.ratios['stdioOverStdioEcho']!)}`);
    out.push(`code tool, stdio front / broker in process, p50       ${r(data.ratios['stdioOverBroker']!)}`);
    out.push(`cold isolate / warm pool, through the broker, p50     ${r(data.ratios['coldOverWarmBroker']!)}`);
    out.push(`cold isolate / warm pool, SandboxPool.run alone, p50  ${r(data.ratios['coldOverWarmPool']!)}`);
    out.push('');
  };
  latency(
    `1. warm pool (2 workers, 2 warm isolates each) and cold isolates (2 workers, warmIsolates 0), calls back to back: ${backToBack.rounds} rotating rounds of ${backToBack.perRound} sequential calls per setup, ${backToBack.warmup} warm-up calls`,
    backToBack,
  );
  out.push('CPU µs per call (user + system, from /proc): this proc = this process (the brokers in process, the pools\' side, the client); workers = every');
  out.push('sandbox worker process (any pool: idle ones use none); other = the stdio front process and the notes servers.');
  out.push('');
  latency(`2. the same, spaced: a ${spaced.pauseMs} ms pause before each call (${spaced.rounds} rotating rounds of ${spaced.perRound} calls per setup)`, spaced);
  out.push(`3. cold worker: a new 1-worker pool, start() to its first result; ${PLAN.coldWorkers} rotating repetitions (after one warm-up each)`);
  out.push(`${'setup'.padEnd(32)}${'p50 ms'.padStart(9)}${'max ms'.padStart(9)}${'ready p50'.padStart(11)}${'1st run p50'.padStart(13)}   / bare --no-node-snapshot`);
  for (const row of coldWorker.rows) {
    out.push(`${row.setup.padEnd(32)}${row.p50Ms.toFixed(1).padStart(9)}${row.maxMs.toFixed(1).padStart(9)}${(row.readyP50Ms?.toFixed(1) ?? '-').padStart(11)}${(row.firstRunP50Ms?.toFixed(1) ?? '-').padStart(13)}   ${x(row.overBareSnapshotless)}`);
  }
  out.push('');
  out.push(`4. throughput: ${CALLERS} callers, ${PLAN.tputCalls} text__slugify calls through the broker per round, ${PLAN.tputRounds} rotating rounds`);
  for (const row of tput.rows) {
    out.push(`${row.setup.padEnd(12)}${row.callsPerS.toFixed(0).padStart(7)} calls/s (median; ${row.min.toFixed(0)}-${row.max.toFixed(0)} by round)   CPU µs per call: this process ${us(row.cpuPerCall?.selfUs).trim()}, workers ${us(row.cpuPerCall?.workersUs).trim()}, other ${us(row.cpuPerCall?.otherUs).trim()}`);
  }
  out.push(`2 workers / 1 worker  ${x(tput.ratio.median)}  (by round: median ${x(tput.ratio.byRoundMedian)}, ${x(tput.ratio.byRoundRange[0])} to ${x(tput.ratio.byRoundRange[1])})`);
  out.push('');
  out.push(`5. code mode: ${INNER_CALLS} text__word_stats calls, ${PLAN.cmRounds} rotating rounds of ${PLAN.cmPerRound} per setup (timed: all ${INNER_CALLS} calls, or the one run)`);
  out.push(header('sample'));
  out.push(...table(codeMode.rows));
  out.push(`run_code (10 awaits) / 10 calls one by one, broker      ${r(codeMode.ratios['runCodeOverOneByOne']!)}`);
  out.push(`run_code (Promise.all) / 10 calls at once, broker       ${r(codeMode.ratios['runCodeParallelOverAtOnce']!)}`);
  out.push(`run_code (10 awaits) / 10 calls one by one, stdio front ${r(codeMode.ratios['stdioRunCodeOverOneByOne']!)}`);
  out.push(`what crosses to and from the agent (tool results and call params as JSON, without the JSON-RPC envelope):`);
  for (const [label, size] of Object.entries(codeMode.sizes)) {
    out.push(`  ${label.padEnd(44)}${String(size.messages).padStart(3)} result(s), ${String(size.resultBytes).padStart(6)} bytes back, ${String(size.requestBytes).padStart(6)} bytes sent`);
  }
  out.push('');
  const t = (value: { measured: number; met: boolean }, digits = 3) => `${value.measured.toFixed(digits)} ms ${pass(value.met)}`;
  out.push(`targets: warm p50 <= ${TARGET_WARM_P50_MS} ms, end to end (stdio front): back to back ${t(targets.warmP50Ms.stdioFront.backToBack)}, spaced ${t(targets.warmP50Ms.stdioFront.spaced)}`);
  out.push(`                              broker in process: back to back ${t(targets.warmP50Ms.inProcess.backToBack)}, spaced ${t(targets.warmP50Ms.inProcess.spaced)}`);
  out.push(`         cold <= ${TARGET_COLD_MS} ms: a cold isolate through the broker, p50 back to back ${t(targets.coldMs.isolateThroughBrokerP50.backToBack, 1)}, spaced ${t(targets.coldMs.isolateThroughBrokerP50.spaced, 1)}`);
  out.push(`                      a new worker process to its first result, p50 ${t(targets.coldMs.newWorkerToFirstResultP50, 1)}`);
  out.push(`audit: ${(report['audit'] as ReturnType<typeof checkAudit>[]).map((check) => `${check.config} ${check.records} tools/call records for ${check.calls} calls, ${check.ok} ok`).join('; ')}`);
  process.stdout.write(`${out.join('\n')}\n`);
}

// --- helpers -------------------------------------------------------------------------------
/** The commit measured, and whether its sources had uncommitted changes. */
function gitState(): string {
  if (!existsSync(join(ROOT, '.git'))) return 'not a git checkout';
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'bin', 'sandboxes', 'manifests'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${commit}, with uncommitted changes in src/, bin/, sandboxes/ or manifests/` : commit;
  } catch {
    return 'unknown';
  }
}

function rotate<T>(list: readonly T[], by: number): T[] {
  const shift = by % list.length;
  return [...list.slice(shift), ...list.slice(0, shift)];
}

async function sequence<T, R>(items: readonly T[], call: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  for (const item of items) results.push(await call(item));
  return results;
}

/** The example tool's word_stats, for the expected answers (the same code as sandboxes/text-tools.js). */
function word_stats(text: string, top = 5): Stats & { lines: number; characters: number } {
  const words = text.toLowerCase().match(/[\p{L}\p{N}']+/gu) ?? [];
  const counts = new Map<string, number>();
  for (const word of words) counts.set(word, (counts.get(word) ?? 0) + 1);
  const frequent = [...counts]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, top)
    .map(([word, count]) => ({ word, count }));
  return { words: words.length, lines: text === '' ? 0 : text.split('\n').length, characters: [...text].length, top: frequent };
}

/** Nearest-rank quantile. */
function quantile(samples: readonly number[], q: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
