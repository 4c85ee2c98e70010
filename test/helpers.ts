import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { Broker, type BrokerOptions } from '../src/broker.ts';
import type { WardenConfig } from '../src/config/types.ts';

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

/** A stdio manifest for a Node script, with the command pinned to this Node binary. */
export function stdioManifest(name: string, script: string, tools: unknown[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    manifestVersion: 1,
    name,
    version: '1.0.0',
    transport: { type: 'stdio', command: process.execPath, args: [script], cwd: ROOT, ...extra },
    tools,
  };
}

export const NOTES_TOOLS = [
  { name: 'list_notes', description: 'List all notes (id and title).', access: 'read', inputSchema: { type: 'object', properties: {}, additionalProperties: false } },
  {
    name: 'add_note',
    description: 'Create a note. Returns its id.',
    access: 'write',
    inputSchema: {
      type: 'object',
      properties: { title: { type: 'string', minLength: 1, maxLength: 200 }, body: { type: 'string', maxLength: 10000 } },
      required: ['title', 'body'],
      additionalProperties: false,
    },
  },
  {
    name: 'echo',
    description: 'Return the text unchanged.',
    access: 'read',
    inputSchema: { type: 'object', properties: { text: { type: 'string', maxLength: 10000 } }, required: ['text'], additionalProperties: false },
  },
];

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
