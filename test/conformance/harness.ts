// What the conformance test and test/conformance/run.ts share: a temporary workspace with the
// conformance fixture's manifest signed by the test publisher, a broker serving it over
// Streamable HTTP, the bearer proxy in front of that (the suite cannot send a token), and a
// way to run the suite's CLI against it.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { parse } from 'yaml';
import { Broker } from '../../src/broker.ts';
import { loadConfig, sha256Hex } from '../../src/config/load.ts';
import { startHttpFront, type HttpFront } from '../../src/front/http.ts';
import { ROOT, stdioManifest, tempDir, writeConfig, writeManifest } from '../helpers.ts';
import { startBearerProxy, type BearerProxy } from './bearer-proxy.ts';

export const FIXTURE = join(ROOT, 'examples/conformance-server/server.ts');
export const MANIFEST = join(ROOT, 'examples/conformance-server/conformance.manifest.yaml');
export const EXPECTED_FAILURES = join(ROOT, 'test/conformance/expected-failures.yml');
/** The suite's CLI, installed by npm ci (a pinned devDependency). */
export const SUITE = join(ROOT, 'node_modules/.bin/conformance');
const TOKEN = 'conformance-suite-token-0123456789abcdef';

export interface ConformanceBroker {
  /** The workspace: warden.yaml, manifests/, state/; removed by close() unless kept. */
  readonly dir: string;
  /** The URL the suite is given: the bearer proxy in front of the broker's /mcp. */
  readonly url: string;
  readonly broker: Broker;
  close(): Promise<void>;
}

/**
 * Signs the fixture's manifest (named test.conformance, this Node binary and the script
 * pinned), writes a config that grants one agent every tool, prompt and test:// resource of
 * the fixture under their own names, and starts the broker, its HTTP front and the proxy.
 */
export async function startConformanceBroker(options: { keep?: boolean } = {}): Promise<ConformanceBroker> {
  const { dir, cleanup } = tempDir('warden-conformance-');
  let proxy: BearerProxy | undefined;
  let broker: Broker | undefined;
  let front: HttpFront | undefined;
  const close = async (): Promise<void> => {
    await proxy?.close();
    await front?.close();
    await broker?.close();
    if (!options.keep) cleanup();
  };
  try {
    // The proxy first: its port is the one the suite's requests name in Host and Origin.
    proxy = await startBearerProxy(TOKEN);
    const source = parse(readFileSync(MANIFEST, 'utf8')) as { tools: unknown[]; prompts: unknown[]; description: string; transport: { era: string } };
    writeManifest(join(dir, 'manifests/conformance.json'), {
      ...stdioManifest('conformance', FIXTURE, source.tools, { era: source.transport.era }),
      description: source.description,
      prompts: source.prompts,
    });
    const config = loadConfig(
      writeConfig(join(dir, 'warden.yaml'), {
        version: 1,
        // Unprefixed: the suite calls test_simple_text, not conformance__test_simple_text.
        servers: { conformance: { manifest: 'conformance.json', prefix: false } },
        agents: {
          suite: {
            tokenSha256: sha256Hex(TOKEN),
            allow: [{ tools: ['*'], access: ['read', 'write'] }, { prompts: ['*'] }, { resources: ['test://**'], server: 'conformance' }, { serverRequests: ['sampling', 'elicitation'], server: 'conformance' }],
          },
        },
        // dns-rebinding-protection sends Origin: http://127.0.0.1:<the port of the URL it was given>.
        http: { allowedOrigins: [`http://127.0.0.1:${proxy.port}`] },
      }),
    );
    assert.equal(config.rejected.size, 0, `manifest rejected: ${JSON.stringify([...config.rejected])}`);
    broker = new Broker(config, { logger: pino({ level: 'silent' }), audit: 'memory' });
    await broker.start();
    for (const [server, backend] of broker.backends) assert.equal(backend.quarantine, undefined, `${server} does not match its signed manifest`);
    front = await startHttpFront(broker, { host: '127.0.0.1', port: 0 });
    proxy.target = { host: '127.0.0.1', port: front.address.port };
    return { dir, url: `http://127.0.0.1:${proxy.port}/mcp`, broker, close };
  } catch (error) {
    await close();
    throw error;
  }
}

export interface SuiteRun {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `conformance server --url URL ...args` to completion, killed after timeoutMs. */
export function runSuite(url: string, args: readonly string[], options: { timeoutMs: number; echo?: boolean }): Promise<SuiteRun> {
  assert.ok(existsSync(SUITE), `${SUITE} is missing: run npm ci (the suite is a devDependency)`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SUITE, 'server', '--url', url, ...args], {
      cwd: ROOT,
      env: { PATH: process.env['PATH'] ?? '' },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: options.timeoutMs,
      killSignal: 'SIGKILL',
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      if (options.echo) process.stdout.write(chunk);
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      if (options.echo) process.stderr.write(chunk);
    });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

export interface Check {
  readonly id: string;
  readonly name: string;
  readonly status: 'SUCCESS' | 'FAILURE' | 'WARNING' | 'INFO' | 'SKIPPED';
  readonly errorMessage?: string;
  readonly details?: unknown;
}

/** Each scenario's checks, from the suite's -o folder (server-<scenario>-<ISO time>/checks.json each). */
export function readResults(outputDir: string): Map<string, Check[]> {
  const results = new Map<string, Check[]>();
  if (!existsSync(outputDir)) return results;
  for (const entry of readdirSync(outputDir).sort()) {
    const scenario = /^server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$/.exec(entry)?.[1];
    const file = join(outputDir, entry, 'checks.json');
    if (scenario === undefined || !existsSync(file)) continue;
    assert.ok(!results.has(scenario), `${scenario} has two results in ${outputDir}`);
    results.set(scenario, JSON.parse(readFileSync(file, 'utf8')) as Check[]);
  }
  return results;
}

/** As the suite judges a scenario against a baseline: any FAILURE or WARNING check fails it. */
export const scenarioFailed = (checks: readonly Check[]): boolean => checks.some((check) => check.status === 'FAILURE' || check.status === 'WARNING');

/** The scenario names under server: in an expected-failures file. */
export function expectedFailures(file = EXPECTED_FAILURES): string[] {
  return (parse(readFileSync(file, 'utf8')) as { server?: string[] } | null)?.server ?? [];
}
