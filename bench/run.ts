// npm run bench: latency and throughput of one echo tool reached over stdio
//   (a) directly, (b) through a bare SDK pass-through proxy, (c) through mcp-warden,
// measured side by side in one run, in interleaved rounds, and reported as ratios.
// The machine is shared and noisy: compare the ratios, not the absolute times.
//
//   node bench/run.ts [--quick] [--json]
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Client } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { stringify } from 'yaml';
import { sanitizeResult, secretForms } from '../src/guard/sanitize-output.ts';

const { values } = parseArgs({ options: { quick: { type: 'boolean' }, json: { type: 'boolean' } } });
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PLAN = values.quick
  ? { warmup: 50, rounds: 2, sequential: 100, concurrentTotal: 320 }
  : { warmup: 200, rounds: 9, sequential: 300, concurrentTotal: 1200 };
const CONCURRENCY = 32;
const DEADLINE_MS = 10 * 60_000; // a run that takes longer than this is broken, not slow
const PAYLOAD = 'hello';

interface Setup {
  readonly key: 'a' | 'b' | 'c';
  readonly label: string;
  readonly tool: string;
  client?: Client;
  readonly latencies: number[];
  readonly throughputs: number[];
}

const started = performance.now();
const workdir = mkdtempSync(join(tmpdir(), 'mcp-warden-bench-'));
const notes = [process.execPath, join(ROOT, 'examples/notes-server/server.ts')];
// The broker resolves `node` on PATH when it loads the manifest: put this Node first.
const env = { PATH: `${dirname(process.execPath)}:${process.env['PATH'] ?? ''}`, BENCH_NOTES_API_TOKEN: 'bench-notes-api-token-0123456789' };

const config = join(workdir, 'warden.yaml');
writeFileSync(
  config,
  stringify({
    version: 1,
    manifestsDir: join(ROOT, 'manifests'),
    servers: { notes: { manifest: 'notes.manifest.yaml' } },
    credentials: { notes: { NOTES_API_TOKEN: { env: 'BENCH_NOTES_API_TOKEN' } } },
    agents: { bench: { allow: [{ tools: ['notes__echo'] }] } },
    audit: { file: join(workdir, 'audit.jsonl') },
    log: { level: 'warn' },
  }),
);

const setups: Setup[] = [
  { key: 'a', label: '(a) direct', tool: 'echo', latencies: [], throughputs: [] },
  { key: 'b', label: '(b) SDK pass-through proxy', tool: 'echo', latencies: [], throughputs: [] },
  { key: 'c', label: '(c) mcp-warden, all checks', tool: 'notes__echo', latencies: [], throughputs: [] },
];
const commands: Record<Setup['key'], string[]> = {
  a: notes,
  b: [process.execPath, join(ROOT, 'bench/passthrough-proxy.ts'), '--', ...notes],
  c: [process.execPath, join(ROOT, 'bin/mcp-warden'), 'serve', '--config', config, '--stdio', '--agent', 'bench'],
};

try {
  for (const setup of setups) {
    const [command, ...args] = commands[setup.key];
    const client = new Client({ name: 'bench', version: '1.0.0' });
    await client.connect(new StdioClientTransport({ command: command!, args, env, cwd: ROOT, stderr: 'ignore' }));
    setup.client = client;
    // As a real agent does: list the tools once, then call. (Through a proxy, this also
    // fills its downstream client's tool cache, which the SDK consults on every call.)
    const { tools } = await client.listTools();
    if (!tools.some((tool) => tool.name === setup.tool)) throw new Error(`${setup.label}: tools/list has no ${setup.tool}`);
    for (let i = 0; i < PLAN.warmup; i++) await callOnce(setup);
  }

  for (let round = 0; round < PLAN.rounds; round++) {
    // Rotate the order so no setup always runs first (or last) in a round.
    const order = setups.map((_, i) => setups[(i + round) % setups.length]!);
    for (const setup of order) {
      for (let i = 0; i < PLAN.sequential; i++) {
        const t0 = performance.now();
        await callOnce(setup);
        setup.latencies.push(performance.now() - t0);
      }
      setup.throughputs.push(await throughput(setup));
    }
  }
} finally {
  await Promise.all(setups.map((setup) => setup.client?.close()));
  rmSync(workdir, { recursive: true, force: true });
}

const sanitizer = measureSanitizer();

const summary = setups.map((setup) => ({
  setup: setup.label,
  p50Ms: quantile(setup.latencies, 0.5),
  p99Ms: quantile(setup.latencies, 0.99),
  throughputPerS: median(setup.throughputs),
}));
const [a, b, c] = summary as [(typeof summary)[0], (typeof summary)[0], (typeof summary)[0]];
const ratios = {
  p50_c_over_b: c.p50Ms / b.p50Ms,
  p99_c_over_b: c.p99Ms / b.p99Ms,
  throughput_c_over_b: c.throughputPerS / b.throughputPerS,
  p50_b_over_a: b.p50Ms / a.p50Ms,
  p50_c_over_a: c.p50Ms / a.p50Ms,
  throughput_c_over_a: c.throughputPerS / a.throughputPerS,
};
const targets = {
  p50: { limit: 1.2, measured: ratios.p50_c_over_b, met: ratios.p50_c_over_b <= 1.2 },
  throughput: { limit: 0.8, measured: ratios.throughput_c_over_b, met: ratios.throughput_c_over_b >= 0.8 },
};
const machine = { node: process.version, cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, date: new Date().toISOString() };
const method = { ...PLAN, concurrency: CONCURRENCY, transport: 'stdio', payload: PAYLOAD, seconds: Math.round((performance.now() - started) / 1000) };

if (values.json) {
  process.stdout.write(`${JSON.stringify({ machine, method, summary, ratios, targets, sanitizer }, null, 2)}\n`);
} else {
  const row = (cells: string[]) => `${cells[0]!.padEnd(30)} ${cells[1]!.padStart(9)} ${cells[2]!.padStart(9)} ${cells[3]!.padStart(15)}`;
  console.log(`mcp-warden benchmark: echo tool over stdio, ${machine.node}, ${machine.cpu} x${machine.cores}, ${machine.date}`);
  console.log(
    `method: ${PLAN.rounds} interleaved rounds; per round and setup ${PLAN.sequential} sequential calls (latency) and ${PLAN.concurrentTotal} calls at ${CONCURRENCY} in flight (throughput); ${PLAN.warmup} warm-up calls; ${method.seconds} s\n`,
  );
  console.log(row(['setup', 'p50 ms', 'p99 ms', 'throughput/s']));
  for (const line of summary) console.log(row([line.setup, line.p50Ms.toFixed(3), line.p99Ms.toFixed(3), line.throughputPerS.toFixed(0)]));
  console.log('');
  console.log(`(c)/(b) p50 latency   ${ratios.p50_c_over_b.toFixed(2)}x   target <= 1.20x   ${targets.p50.met ? 'PASS' : 'MISS'}`);
  console.log(`(c)/(b) throughput    ${ratios.throughput_c_over_b.toFixed(2)}x   target >= 0.80x   ${targets.throughput.met ? 'PASS' : 'MISS'}`);
  console.log(`(c)/(b) p99 latency   ${ratios.p99_c_over_b.toFixed(2)}x`);
  console.log(`(b)/(a) p50 latency   ${ratios.p50_b_over_a.toFixed(2)}x   (cost of any stdio proxy hop)`);
  console.log(`(c)/(a) p50 latency   ${ratios.p50_c_over_a.toFixed(2)}x,  throughput ${ratios.throughput_c_over_a.toFixed(2)}x`);
  console.log(
    `\noutput sanitiser, in process, 100 KiB text result with 2 credentials: ${sanitizer.usPerKiB.toFixed(2)} µs per KiB (${sanitizer.usPerResult.toFixed(0)} µs per result; a plain JSON copy of the same result: ${sanitizer.copyUsPerResult.toFixed(0)} µs)`,
  );
}

/** The sanitiser's cost on a large result, measured in process against a plain copy of it. */
function measureSanitizer(): { usPerKiB: number; usPerResult: number; copyUsPerResult: number } {
  const forms = secretForms(['bench-credential-0123456789', 'another-credential-abcdef']);
  const line = 'ordinary tool output with numbers 12345 and words, nothing secret in it at all.\n';
  const text = line.repeat(Math.ceil((100 * 1024) / line.length)).slice(0, 100 * 1024);
  const result = { content: [{ type: 'text' as const, text }] };
  const iterations = values.quick ? 50 : 300;
  const time = (fn: () => unknown) => {
    for (let i = 0; i < 10; i++) fn();
    const t0 = performance.now();
    for (let i = 0; i < iterations; i++) fn();
    return ((performance.now() - t0) * 1000) / iterations;
  };
  const usPerResult = time(() => sanitizeResult(result, { secretForms: forms, maxTextBytes: 1024 * 1024 }));
  const copyUsPerResult = time(() => JSON.parse(JSON.stringify(result)));
  return { usPerKiB: usPerResult / 100, usPerResult, copyUsPerResult };
}

async function callOnce(setup: Setup): Promise<void> {
  if (performance.now() - started > DEADLINE_MS) throw new Error(`benchmark exceeded ${DEADLINE_MS / 60_000} minutes`);
  const result = await setup.client!.callTool({ name: setup.tool, arguments: { text: PAYLOAD } });
  const content = result.content as { type: string; text?: string }[];
  // A benchmark that measures errors measures nothing: every answer must be the echo.
  if (result.isError || content[0]?.text !== PAYLOAD) {
    throw new Error(`${setup.label}: unexpected result ${JSON.stringify(result).slice(0, 300)}`);
  }
}

async function throughput(setup: Setup): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < PLAN.concurrentTotal) {
      next++;
      await callOnce(setup);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return PLAN.concurrentTotal / ((performance.now() - t0) / 1000);
}

function quantile(samples: number[], q: number): number {
  const sorted = [...samples].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
}

function median(samples: number[]): number {
  return quantile(samples, 0.5);
}
