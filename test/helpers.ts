import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { pino } from 'pino';
import { parse, stringify } from 'yaml';
import { Broker, type BrokerOptions } from '../src/broker.ts';
import { createHash } from 'node:crypto';
import { formatEnvelope } from '../src/manifest/envelope.ts';
import { ArtifactError, fileDigest } from '../src/manifest/artifacts.ts';
import { keyId, publicKeyOf } from '../src/manifest/ed25519.ts';
import { signManifestSource } from '../src/manifest/sign.ts';
import type { WardenConfig } from '../src/config/types.ts';
import { WardenError } from '../src/errors.ts';
import { ManifestRejection, type RejectionReason } from '../src/manifest/rejections.ts';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const CLI = join(ROOT, 'bin/mcp-warden');
export const NOTES_SERVER = join(ROOT, 'examples/notes-server/server.ts');
export const ROGUE_SERVER = join(ROOT, 'test/fixtures/rogue-server.ts');
export const EVERYTHING_SERVER = join(ROOT, 'node_modules/@modelcontextprotocol/server-everything/dist/index.js');

/** A fresh temporary folder, removed by the returned cleanup. */
export function tempDir(prefix = 'warden-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function writeYaml(file: string, data: unknown): string {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, typeof data === 'string' ? data : stringify(data));
  return file;
}

/** The test publisher: a fixed key, so every run signs the same bytes. Trusted for test.*. */
export const TEST_PUBLISHER = (() => {
  const seed = createHash('sha256').update('mcp-warden test publisher').digest();
  const publicKey = publicKeyOf(seed);
  return { seed, publicKey: publicKey.toString('base64'), keyId: keyId(publicKey) };
})();

export const TEST_TRUST = { publishers: { test: { keys: [TEST_PUBLISHER.publicKey], namespaces: ['test.*'] } } };

/** A manifest source signed by the test publisher, as the envelope file's text. */
export function signedManifestText(source: Record<string, unknown>, key: { seed: Buffer; keyId: string } = TEST_PUBLISHER, base?: string): string {
  return formatEnvelope(signManifestSource(source, 'test-manifest', key, { now: Date.now(), validDays: 30, ...(base === undefined ? {} : { moduleBase: base }) }).envelope);
}

/** Writes a manifest source signed by the test publisher (a string is written as it is). */
export function writeManifest(file: string, source: Record<string, unknown> | string): string {
  mkdirSync(dirname(file), { recursive: true });
  // Relative paths (a module, a stdio server's cwd) are taken from the signed file's folder, as manifest sign does.
  writeFileSync(file, typeof source === 'string' ? source : signedManifestText(source, TEST_PUBLISHER, dirname(resolve(file))));
  return file;
}

/**
 * Writes a config; the test publisher is trusted unless the data says who is. A server
 * entry without `name` gets the name of the signed manifest it points at when that file
 * already exists, else `test.<server key>` (stdioManifest's naming).
 */
export function writeConfig(file: string, data: Record<string, unknown>): string {
  const servers = (data['servers'] ?? {}) as Record<string, Record<string, unknown>>;
  const manifestsDir = resolve(dirname(file), String(data['manifestsDir'] ?? 'manifests'));
  const named = Object.fromEntries(Object.entries(servers).map(([key, entry]) => [key, 'name' in entry ? entry : { ...entry, name: signedName(join(manifestsDir, String(entry['manifest']))) ?? `test.${key}` }]));
  return writeYaml(file, { ...data, servers: named, ...('trust' in data ? {} : { trust: TEST_TRUST }) });
}

function signedName(file: string): string | undefined {
  try {
    const envelope = JSON.parse(readFileSync(file, 'utf8')) as { payload: string };
    return (JSON.parse(Buffer.from(envelope.payload, 'base64').toString('utf8')) as { name: string }).name;
  } catch {
    return undefined;
  }
}

/**
 * A stdio manifest for a Node script: the command is this Node binary, and both it and the
 * script are pinned to their digests now (what manifest sign would fill in).
 */
export function stdioManifest(name: string, script: string, tools: unknown[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  const pins = { command: fileDigest(process.execPath), files: [{ path: script, sha256: fileDigest(script) }] };
  return {
    manifestVersion: 1,
    name: `test.${name}`,
    version: '1.0.0',
    serial: 1,
    transport: { type: 'stdio', command: process.execPath, args: [script], cwd: ROOT, pins, ...extra },
    tools,
  };
}

/** The notes server's tools exactly as its live server offers them (the repository's manifest). */
export const NOTES_TOOLS: Record<string, unknown>[] = (parse(readFileSync(join(ROOT, 'manifests/notes.manifest.yaml'), 'utf8')) as { tools: Record<string, unknown>[] }).tools;

/** Connects an SDK client to `mcp-warden serve --stdio` as the given agent. */
export async function connectStdio(config: string, agent: string, options: { env?: Record<string, string>; mode?: 'auto' | 'legacy' } = {}): Promise<Client> {
  const client = new Client({ name: 'test-agent', version: '1.0.0' }, { versionNegotiation: { mode: options.mode ?? 'legacy' } });
  await client.connect(
    new StdioClientTransport({
      command: process.execPath,
      args: [CLI, 'serve', '--config', config, '--stdio', '--agent', agent],
      env: { PATH: process.env['PATH'] ?? '', ...options.env },
      stderr: 'ignore',
    }),
  );
  return client;
}

/** Polls until the predicate holds, at most `tries` times; never loops forever. */
export async function waitFor(predicate: () => boolean | Promise<boolean>, tries = 100, intervalMs = 50): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    if (await predicate()) return true;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  return false;
}

/** The text of a tool result's first content block. */
export function textOf(result: unknown): string {
  const content = (result as { content?: { type: string; text?: string }[] }).content ?? [];
  return content[0]?.text ?? '';
}

export function refusalCode(result: unknown): string | undefined {
  const meta = (result as { _meta?: Record<string, { code?: string }> })._meta;
  return meta?.['mcp-warden/refusal']?.code;
}

/** A started broker for in-process tests: silent log, audit in memory unless given. */
export async function startBroker(config: WardenConfig, options: BrokerOptions = {}): Promise<Broker> {
  const broker = new Broker(config, { logger: pino({ level: 'silent' }), audit: 'memory', ...options });
  await broker.start();
  return broker;
}

/** What fn throws, which must be a WardenError with this code (and a message matching pattern). */
export function expectWardenError(fn: () => unknown, code: string, pattern?: RegExp): WardenError {
  const caught = thrownBy(fn);
  assert.ok(caught instanceof WardenError, `expected a WardenError (${code}), got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (pattern) assert.match(caught.message, pattern);
  return caught;
}

/** What fn throws, which must be a ManifestRejection for this reason (and a message matching pattern). */
export function expectRejection(fn: () => unknown, reason: RejectionReason, pattern?: RegExp): ManifestRejection {
  const caught = thrownBy(fn);
  assert.ok(caught instanceof ManifestRejection, `expected a ManifestRejection (${reason}), got ${String(caught)}`);
  assert.equal(caught.reason, reason, caught.message);
  if (pattern) assert.match(caught.message, pattern);
  return caught;
}

function thrownBy(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  return undefined;
}

/** What fn throws, which must be an ArtifactError whose message matches pattern. */
export function expectArtifactError(fn: () => unknown, pattern: RegExp): ArtifactError {
  const caught = thrownBy(fn);
  assert.ok(caught instanceof ArtifactError, `expected an ArtifactError, got ${String(caught)}`);
  assert.match(caught.message, pattern);
  return caught;
}

/**
 * A publisher "acme" made by keygen in dir, and a config that trusts it for acme.* with
 * manifests in dir itself and no servers: for CLI tests of manifest sign and verify.
 */
export function acmeWorkspace(dir: string): { acme: { keyId: string; publicKey: string }; key: string; config: string } {
  const acme = keygenCli(dir, 'acme');
  const config = writeYaml(join(dir, 'warden.yaml'), {
    version: 1,
    manifestsDir: '.',
    servers: {},
    agents: {},
    trust: { publishers: { acme: { keys: [acme.publicKey], namespaces: ['acme.*'] } } },
    state: { dir: 'state' },
  });
  return { acme, key: join(dir, 'acme.key'), config };
}

/** Runs the CLI to completion. */
export function runCli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** A publisher key pair made by `mcp-warden keygen`: dir/prefix.key and dir/prefix.pub. */
export function keygenCli(dir: string, prefix: string): { keyId: string; publicKey: string } {
  const result = runCli(['keygen', '--out', join(dir, prefix)]);
  assert.equal(result.code, 0, result.stderr);
  const keyId = /key id: ([0-9a-f]{64})/.exec(result.stdout)?.[1];
  assert.ok(keyId, result.stdout);
  return { keyId, publicKey: readFileSync(join(dir, `${prefix}.pub`), 'utf8').trim() };
}

/** The example code tools' manifest (manifests/text.manifest.yaml), named test.<name>, its module path made absolute. */
export function textToolsManifest(name = 'text'): Record<string, unknown> {
  const source = parse(readFileSync(join(ROOT, 'manifests/text.manifest.yaml'), 'utf8')) as Record<string, unknown> & { transport: Record<string, unknown> };
  return { ...source, name: `test.${name}`, transport: { ...source.transport, module: join(ROOT, 'sandboxes/text-tools.js') } };
}
