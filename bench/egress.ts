// What the egress controls and native HTTP tools cost. One loopback JSON API, reached
//   (a) with a plain undici Agent (keep-alive),
//   (b) through the broker's egress dispatcher (request check per request; the address
//       check per connection, so once with keep-alive),
//   (c) with the plain Agent on a fresh connection each time, and
//   (c') through the egress dispatcher on a fresh connection each time (the address check
//       on every call): c'/c is what the connect-time check costs,
//   (d) as a native HTTP tool through the broker's whole call pipeline, in process (audit
//       file, credential injected and redacted, output sanitising, scope),
// in interleaved rounds in one process, reported as ratios to (a). The machine may be
// shared and noisy: compare the ratios, not the absolute times.
//
//   node bench/egress.ts [--quick] [--json]
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { Agent, request, type Dispatcher } from 'undici';
import { stringify } from 'yaml';
import { createEgressAgent } from '../src/backends/egress-agent.ts';
import { Broker } from '../src/broker.ts';
import { loadConfig } from '../src/config/load.ts';
import { formatEnvelope } from '../src/manifest/envelope.ts';
import { readSigningKey, writeKeyPair } from '../src/manifest/keys.ts';
import { signManifestSource } from '../src/manifest/sign.ts';

const { values } = parseArgs({ options: { quick: { type: 'boolean' }, json: { type: 'boolean' } } });
const PLAN = values.quick ? { warmup: 100, rounds: 3, perRound: 200 } : { warmup: 500, rounds: 11, perRound: 600 };

const body = JSON.stringify({ id: 1, title: 'VPN drops every hour', status: 'open', internal: { assignee: 'dana@example.internal' } });
const api = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(body);
});
await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
const port = (api.address() as AddressInfo).port;
const origin = `http://127.0.0.1:${port}`;

const dir = mkdtempSync(join(tmpdir(), 'mcp-warden-bench-egress-'));
let broker: Broker | undefined;
const dispatchers: Dispatcher[] = [];
try {
  const key = writeKeyPair(join(dir, 'publisher'));
  const manifest = {
    manifestVersion: 1,
    name: 'bench.api',
    version: '1',
    serial: 1,
    transport: { type: 'http-api', baseUrl: `${origin}/api` },
    credentials: [{ name: 'KEY', header: 'Authorization', prefix: 'Bearer ' }],
    tools: [
      {
        name: 'get',
        description: 'Read an item.',
        access: 'read',
        inputSchema: { type: 'object', properties: { id: { type: 'integer' } }, required: ['id'], additionalProperties: false },
        http: { method: 'GET', path: '/items/{id}' },
        outputFields: ['/id', '/title', '/status'],
      },
    ],
  };
  writeFileSync(join(dir, 'api.signed.json'), formatEnvelope(signManifestSource(manifest, 'api.yaml', readSigningKey(key.keyFile), { now: Date.now(), validDays: 1 }).envelope));
  writeFileSync(join(dir, 'key'), 'bench-api-key-0123456789\n');
  const rule = { destination: origin, addresses: ['127.0.0.1'] };
  writeFileSync(
    join(dir, 'warden.yaml'),
    stringify({
      version: 1,
      manifestsDir: '.',
      servers: { api: { manifest: 'api.signed.json', name: 'bench.api' } },
      trust: { publishers: { bench: { keys: [key.publicKey], namespaces: ['bench.*'] } } },
      credentials: { api: { KEY: { file: 'key' } } },
      egress: { allow: [rule] },
      rateLimits: { perAgent: { perMinute: 1_000_000, burst: 100_000 }, perTool: { perMinute: 1_000_000, burst: 100_000 } },
      agents: { bench: { allow: [{ tools: ['api__get'] }] } },
    }),
  );
  const config = loadConfig(join(dir, 'warden.yaml'));
  broker = new Broker(config, { logger: pino({ level: 'silent' }) });
  await broker.start();

  const plain = new Agent();
  const egress = createEgressAgent(config.egress);
  dispatchers.push(plain, egress);
  const get = async (dispatcher: Dispatcher, reset = false): Promise<void> => {
    const response = await request(`${origin}/api/items/1`, { dispatcher, headers: reset ? { connection: 'close' } : {} });
    if (response.statusCode !== 200) throw new Error(`status ${response.statusCode}`);
    await response.body.text();
  };
  const setups: Record<string, () => Promise<void>> = {
    'a plain undici': () => get(plain),
    'b egress dispatcher': () => get(egress),
    'c plain, new connection': () => get(plain, true),
    "c' egress, new connection": () => get(egress, true),
    'd native tool, broker': async () => {
      const result = await broker!.callTool('bench', 'api__get', { id: 1 });
      if (result.isError) throw new Error(JSON.stringify(result.content));
    },
  };

  const samples = new Map<string, number[]>(Object.keys(setups).map((name) => [name, []]));
  for (const run of Object.values(setups)) for (let i = 0; i < PLAN.warmup; i++) await run();
  const names = Object.keys(setups);
  for (let round = 0; round < PLAN.rounds; round++) {
    // Rotate the order each round so no setup always runs first or last.
    for (const name of [...names.slice(round % names.length), ...names.slice(0, round % names.length)]) {
      const run = setups[name]!;
      for (let i = 0; i < PLAN.perRound; i++) {
        const started = performance.now();
        await run();
        samples.get(name)!.push(performance.now() - started);
      }
    }
  }

  const quantile = (list: readonly number[], q: number) => {
    const sorted = [...list].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  };
  const base = samples.get('a plain undici')!;
  // (c') is compared with (c), the same work without the checks; the others with (a).
  const rows = names.map((name) => {
    const list = samples.get(name)!;
    const against = name.startsWith("c'") ? samples.get('c plain, new connection')! : base;
    return { setup: name, versus: name.startsWith("c'") ? 'c' : 'a', calls: list.length, p50Ms: quantile(list, 0.5), p99Ms: quantile(list, 0.99), p50Ratio: quantile(list, 0.5) / quantile(against, 0.5), p99Ratio: quantile(list, 0.99) / quantile(against, 0.99) };
  });
  if (values.json) process.stdout.write(`${JSON.stringify({ plan: PLAN, rows }, null, 2)}\n`);
  else {
    console.log(`egress and native HTTP tools: ${PLAN.rounds} interleaved rounds of ${PLAN.perRound} sequential calls per setup, one loopback API`);
    console.log('setup                       p50 ms   p99 ms   p50 ratio  p99 ratio  (to)');
    for (const row of rows) {
      console.log(`${row.setup.padEnd(26)} ${row.p50Ms.toFixed(3).padStart(7)}  ${row.p99Ms.toFixed(3).padStart(7)}   ${row.p50Ratio.toFixed(2).padStart(8)}   ${row.p99Ratio.toFixed(2).padStart(8)}   (${row.versus})`);
    }
  }
} finally {
  await broker?.close();
  for (const dispatcher of dispatchers) await dispatcher.close();
  await new Promise<void>((resolve) => api.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
}
