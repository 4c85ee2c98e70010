// Start-up with many signed manifests. Verification happens when the broker starts (never
// on the call path), so this is where its cost shows. Two measurements, side by side in
// interleaved rounds:
//   load    loadConfig in this process: read, verify (Ed25519, canonical form, schema,
//           policy) and compile N signed manifests (every tool's input schema), against
//           the same config with none; and the envelope checks alone (signatures,
//           strict parse, canonical form), to show what verification itself costs;
//   ready   `mcp-warden serve --http` as a new process, from spawn to its "serving" line,
//           with N signed manifests (every server connected and pinned: all of them
//           point at one loopback notes server over Streamable HTTP) against none.
// The machine may be shared and noisy: compare medians within one run.
//
//   node bench/startup.ts [--quick] [--manifests N]
//
// Exits 1 if a manifest is refused or the broker fails to start, 3 past its time limit.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parse, stringify } from 'yaml';
import { loadConfig } from '../src/config/load.ts';
import { compileTrust } from '../src/manifest/trust.ts';
import { verifyEnvelope } from '../src/manifest/verify.ts';
import { formatEnvelope } from '../src/manifest/envelope.ts';
import { readSigningKey, writeKeyPair } from '../src/manifest/keys.ts';
import { signManifestSource } from '../src/manifest/sign.ts';

const { values } = parseArgs({ options: { quick: { type: 'boolean' }, manifests: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
if (values.help) {
  process.stdout.write('Usage: node bench/startup.ts [--quick] [--manifests N]   (default N: 200)\n');
  process.exit(0);
}
const COUNT = Number(values.manifests ?? 200);
if (!Number.isInteger(COUNT) || COUNT < 1 || COUNT > 2000) {
  process.stderr.write('bench: --manifests must be a whole number from 1 to 2000\n');
  process.exit(2);
}
const ROUNDS = values.quick ? 3 : 7;
const DEADLINE_MS = (values.quick ? 2 : 5) * 60_000;
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'bin/mcp-warden');

const workdir = mkdtempSync(join(tmpdir(), 'mcp-warden-startup-'));
const children = new Set<ChildProcess>();
const guard = setTimeout(() => fail(`the run exceeded ${DEADLINE_MS / 60_000} minutes`, 3), DEADLINE_MS);
guard.unref();

function fail(message: string, code = 1): never {
  process.stderr.write(`bench: FAILED: ${message}\n`);
  for (const child of children) child.kill('SIGKILL');
  rmSync(workdir, { recursive: true, force: true });
  process.exit(code);
}

const median = (samples: readonly number[]) => [...samples].sort((a, b) => a - b)[Math.floor(samples.length / 2)]!;
const range = (samples: readonly number[]) => `${Math.min(...samples).toFixed(0)}-${Math.max(...samples).toFixed(0)}`;

/** Starts a process and resolves when a stderr line matches; rejects on exit or timeout. */
function waitForLine(command: string, args: string[], pattern: RegExp, timeoutMs: number): Promise<{ child: ChildProcess; line: string; ms: number }> {
  const started = performance.now();
  const child = spawn(command, args, { stdio: ['pipe', 'ignore', 'pipe'] });
  children.add(child);
  return new Promise((resolvePromise, reject) => {
    let buffered = '';
    const timer = setTimeout(() => reject(new Error(`no "${pattern.source}" within ${timeoutMs} ms; stderr: ${buffered.slice(-500)}`)), timeoutMs);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      buffered += chunk;
      const line = buffered.split('\n').find((candidate) => pattern.test(candidate));
      if (line) {
        clearTimeout(timer);
        resolvePromise({ child, line, ms: performance.now() - started });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code} before "${pattern.source}"; stderr: ${buffered.slice(-500)}`));
    });
  });
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  if (child.exitCode === null) child.kill('SIGKILL');
  children.delete(child);
}

try {
  const notes = await waitForLine(process.execPath, [join(ROOT, 'examples/notes-server/server.ts'), '--http', '0'], /listening on (http:\S+)/, 30_000);
  const url = /listening on (http:\S+)/.exec(notes.line)![1]!;

  const publisher = writeKeyPair(join(workdir, 'publisher'));
  const key = readSigningKey(publisher.keyFile);
  const source = parse(readFileSync(join(ROOT, 'manifests/notes.manifest.yaml'), 'utf8')) as Record<string, unknown>;
  delete source['credentials'];
  const servers: Record<string, { manifest: string; name: string }> = {};
  const now = Date.now();
  for (let i = 0; i < COUNT; i++) {
    const name = `n${String(i).padStart(4, '0')}`;
    // The same tools in each (the broker compiles every manifest's schemas anew; the live
    // server must match them, or the measurement would include 200 quarantines).
    const manifest = { ...source, name: `example.${name}`, transport: { type: 'http', url, era: 'legacy' } };
    writeFileSync(join(workdir, `${name}.signed.json`), formatEnvelope(signManifestSource(manifest, name, key, { now, validDays: 1 }).envelope));
    servers[name] = { manifest: `${name}.signed.json`, name: `example.${name}` };
  }
  const base = { version: 1, manifestsDir: workdir, agents: { bench: { allow: [{ tools: ['*'] }] } }, trust: { publishers: { bench: { keys: [publisher.publicKey], namespaces: ['example.*'] } } }, log: { level: 'warn' } };
  const configs = {
    signed: join(workdir, 'signed.yaml'),
    empty: join(workdir, 'empty.yaml'),
  };
  writeFileSync(configs.signed, stringify({ ...base, servers, audit: { file: join(workdir, 'signed-audit.jsonl') }, state: { dir: join(workdir, 'signed-state') } }));
  writeFileSync(configs.empty, stringify({ ...base, servers: {}, audit: { file: join(workdir, 'empty-audit.jsonl') }, state: { dir: join(workdir, 'empty-state') } }));

  const check = loadConfig(configs.signed);
  if (check.servers.size !== COUNT) fail(`${check.rejected.size} manifest(s) refused: ${[...check.rejected.values()][0]?.message}`);

  const trust = compileTrust(base.trust, configs.signed);
  const files = Object.values(servers).map((server) => readFileSync(join(workdir, server.manifest)));
  const verifyOnly: number[] = [];
  const load = { signed: [] as number[], empty: [] as number[] };
  const ready = { signed: [] as number[], empty: [] as number[] };
  for (let round = 0; round < ROUNDS; round++) {
    const order: ('signed' | 'empty')[] = round % 2 === 0 ? ['signed', 'empty'] : ['empty', 'signed'];
    for (const which of order) {
      const t0 = performance.now();
      loadConfig(configs[which]);
      load[which].push(performance.now() - t0);
    }
    const t1 = performance.now();
    for (const bytes of files) verifyEnvelope(bytes, trust, Date.now());
    verifyOnly.push(performance.now() - t1);
    for (const which of order) {
      const serve = await waitForLine(process.execPath, [CLI, 'serve', '--config', configs[which], '--http', '--listen', '127.0.0.1:0'], /serving Streamable HTTP/, 60_000);
      ready[which].push(serve.ms);
      await stop(serve.child);
    }
  }
  await stop(notes.child);

  const cpu = cpus()[0]?.model ?? 'unknown';
  process.stdout.write(`Start-up with ${COUNT} signed manifests
machine: ${cpu.trim()}, ${cpus().length} cores, node ${process.version}, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}
method: ${ROUNDS} interleaved rounds; medians (range) in ms

                                         ${COUNT} manifests    none        difference
signatures, parse, canonical form only   ${median(verifyOnly).toFixed(0).padStart(6)} (${range(verifyOnly)})
load + verify (in process)               ${median(load.signed).toFixed(0).padStart(6)} (${range(load.signed)})   ${median(load.empty).toFixed(1).padStart(6)}      ${(median(load.signed) - median(load.empty)).toFixed(0)} ms, ${((median(load.signed) - median(load.empty)) / COUNT).toFixed(2)} ms per manifest
spawn to ready (serve --http)            ${median(ready.signed).toFixed(0).padStart(6)} (${range(ready.signed)})   ${median(ready.empty).toFixed(0).padStart(6)}      ${(median(ready.signed) - median(ready.empty)).toFixed(0)} ms
target: ready with ${COUNT} signed manifests under 1000 ms: ${median(ready.signed) < 1000 ? 'MET' : 'MISSED'} (median ${median(ready.signed).toFixed(0)} ms)
`);
} catch (error) {
  fail(error instanceof Error ? error.message : String(error));
} finally {
  for (const child of children) child.kill('SIGKILL');
  rmSync(workdir, { recursive: true, force: true });
}
