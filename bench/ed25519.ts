// Ed25519 verification: tweetnacl (pure JavaScript, nacl.sign.detached.verify) against
// mcp-warden's verifySignature (node:crypto / OpenSSL, plus our own S < L check), on the
// same signatures over ~4 KiB messages, the size of a typical signed manifest.
//
// Method: a fixed set of key pairs signs one random 4 KiB message each. Both verifiers
// first have to accept every signature (and refuse a tampered one), or the run fails.
// After a warm-up, the two are measured in interleaved rounds: each round times N single
// verifications with one verifier, then N with the other, and the order alternates from
// round to round, so that noise from a shared machine falls on both. Every verification is
// timed on its own (process.hrtime.bigint); the report gives the median per verification
// over all rounds, the ratio of the medians, the per-round ratios, and what verifying 200
// manifests one after another would take (signature check only; no parsing, no I/O).
// Compare the ratio rather than the absolute times.
//
//   node bench/ed25519.ts [--quick]
//
// Exits with 1 if a verifier gives a wrong answer, with 3 if the run exceeds its time limit.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import nacl from 'tweetnacl';
import { generateKeyPair, signMessage, verifySignature } from '../src/manifest/ed25519.ts';

const HELP = `Usage: node bench/ed25519.ts [--quick]

--quick   a short smoke run (few verifications per round; figures are rough)
`;

const { values } = parseArgs({ options: { quick: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
if (values.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PLAN = values.quick ? { keys: 8, warmup: 10, rounds: 5, perRound: 20 } : { keys: 16, warmup: 50, rounds: 5, perRound: 200 };
/** tweetnacl dominates the run; N per round is lowered if it would spend more than this. */
const BUDGET_MS = values.quick ? 4_000 : 18_000;
/** A run that takes longer than this is broken, not slow. */
const DEADLINE_MS = (values.quick ? 1 : 2) * 60_000;
const MESSAGE_BYTES = 4096;
const MANIFESTS = 200;

type Name = 'tweetnacl' | 'warden';
type Verifier = (message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array) => boolean;

const VERIFIERS: Record<Name, Verifier> = {
  tweetnacl: (message, signature, publicKey) => nacl.sign.detached.verify(message, signature, publicKey),
  warden: verifySignature,
};
const LABELS: Record<Name, string> = {
  tweetnacl: `tweetnacl ${packageVersion('tweetnacl')} nacl.sign.detached.verify`,
  warden: 'mcp-warden verifySignature (node:crypto)',
};

interface Signed {
  message: Buffer;
  signature: Buffer;
  publicKey: Buffer;
}

const started = performance.now();
const deadline = setTimeout(() => {
  process.stderr.write(`bench: the run took longer than ${DEADLINE_MS / 1000} s\n`);
  process.exit(3);
}, DEADLINE_MS);
deadline.unref();

const samples: Signed[] = [];
for (let i = 0; i < PLAN.keys; i++) {
  const { seed, publicKey } = generateKeyPair();
  const message = randomBytes(MESSAGE_BYTES);
  samples.push({ message, signature: signMessage(message, seed), publicKey });
}

// Correctness gate: both must accept every signature and refuse a tampered one.
for (const name of Object.keys(VERIFIERS) as Name[]) {
  for (const { message, signature, publicKey } of samples) {
    const tampered = Buffer.from(message);
    tampered[0] = tampered[0]! ^ 1;
    if (!VERIFIERS[name](message, signature, publicKey) || VERIFIERS[name](tampered, signature, publicKey)) {
      process.stderr.write(`bench: ${name} gave a wrong answer before timing\n`);
      process.exit(1);
    }
  }
}

/** Times `count` verifications, one by one; returns milliseconds per verification. */
function run(name: Name, count: number, offset: number): number[] {
  const verify = VERIFIERS[name];
  const times: number[] = [];
  let wrong = 0;
  for (let i = 0; i < count; i++) {
    const { message, signature, publicKey } = samples[(offset + i) % samples.length]!;
    const t0 = process.hrtime.bigint();
    const ok = verify(message, signature, publicKey);
    const t1 = process.hrtime.bigint();
    if (!ok) wrong++;
    times.push(Number(t1 - t0) / 1e6);
  }
  if (wrong > 0) {
    process.stderr.write(`bench: ${name} refused ${wrong} valid signature(s)\n`);
    process.exit(1);
  }
  return times;
}

// Warm-up (JIT, OpenSSL key set-up), which also gives a first estimate of tweetnacl's cost.
run('warden', PLAN.warmup, 0);
const warm = median(run('tweetnacl', PLAN.warmup, 0));
const affordable = Math.floor(BUDGET_MS / (PLAN.rounds * warm));
const perRound = Math.max(5, Math.min(PLAN.perRound, affordable));

const all: Record<Name, number[]> = { tweetnacl: [], warden: [] };
const roundRatios: number[] = [];
for (let round = 0; round < PLAN.rounds; round++) {
  const order: Name[] = round % 2 === 0 ? ['tweetnacl', 'warden'] : ['warden', 'tweetnacl'];
  const medians = {} as Record<Name, number>;
  for (const name of order) {
    const times = run(name, perRound, round * perRound);
    all[name].push(...times);
    medians[name] = median(times);
  }
  roundRatios.push(medians.tweetnacl / medians.warden);
}
clearTimeout(deadline);

const med: Record<Name, number> = { tweetnacl: median(all.tweetnacl), warden: median(all.warden) };
const out: string[] = [];
out.push(`Ed25519 verification, ${MESSAGE_BYTES}-byte messages, ${PLAN.keys} keys${values.quick ? ' (--quick: rough figures)' : ''}`);
out.push(`machine: ${cpus()[0]?.model ?? 'unknown'}, ${cpus().length} cores, node ${process.version}, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
out.push(`method: ${PLAN.rounds} interleaved rounds x ${perRound} verifications each, order alternating${perRound < PLAN.perRound ? ` (lowered from ${PLAN.perRound} to fit the time budget)` : ''}`);
out.push('');
const width = Math.max(...Object.values(LABELS).map((label) => label.length));
for (const name of ['tweetnacl', 'warden'] as const) {
  out.push(`${LABELS[name].padEnd(width)}   median ${ms(med[name])} per verify   p10 ${ms(quantile(all[name], 0.1))}   p90 ${ms(quantile(all[name], 0.9))}   ${MANIFESTS} manifests ${ms(med[name] * MANIFESTS)}`);
}
out.push('');
out.push(`ratio tweetnacl / warden: ${med.tweetnacl / med.warden >= 10 ? (med.tweetnacl / med.warden).toFixed(0) : (med.tweetnacl / med.warden).toFixed(1)}x   (by round: ${roundRatios.map((r) => r.toFixed(1)).join(', ')})`);
out.push(`run took ${((performance.now() - started) / 1000).toFixed(1)} s`);
process.stdout.write(`${out.join('\n')}\n`);

function ms(value: number): string {
  return value >= 100 ? `${value.toFixed(0)} ms` : value >= 1 ? `${value.toFixed(2)} ms` : `${value.toFixed(3)} ms`;
}

function median(list: readonly number[]): number {
  return quantile(list, 0.5);
}

function quantile(list: readonly number[], q: number): number {
  if (list.length === 0) return Number.NaN;
  const sorted = [...list].sort((a, b) => a - b);
  const position = (sorted.length - 1) * q;
  const low = Math.floor(position);
  const high = Math.ceil(position);
  return sorted[low]! + (sorted[high]! - sorted[low]!) * (position - low);
}

function packageVersion(name: string): string {
  try {
    return (JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}
