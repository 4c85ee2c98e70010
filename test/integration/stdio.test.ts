import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import type { Client } from '@modelcontextprotocol/client';
import { parse } from 'yaml';
import { writeWorkspace } from '../../src/cli/init.ts';
import { openStateStore } from '../../src/state/store.ts';
import { CLI, connectStdio, refusalCode, ROGUE_SERVER, stdioManifest, tempDir, textOf, waitFor, writeConfig, writeManifest } from '../helpers.ts';
import { rogueManifestTools } from '../fixtures/rogue-tools.ts';

const { dir, cleanup } = tempDir();
const workspace = writeWorkspace(join(dir, 'ws'), false);
let client: Client;

before(async () => {
  client = await connectStdio(workspace.config, 'demo');
});
after(async () => {
  await client?.close();
  cleanup();
});

const EXPECTED_TOOLS = [
  'notes__list_notes',
  'notes__get_note',
  'notes__search_notes',
  'notes__add_note',
  'notes__echo',
  'notes__server_info',
  'everything__echo',
  'everything__get-sum',
  // Write tools whose server asks the host during the call (elicitation granted, sampling not).
  'everything__trigger-elicitation-request',
  'everything__trigger-sampling-request',
  // The tickets API's native tools (their API is not running here; listing needs none).
  'tickets__list_tickets',
  'tickets__get_ticket',
  'tickets__get_attachment',
  'tickets__create_ticket',
  // The example code tools, and code mode (granted to demo by its exact name).
  'text__word_stats',
  'text__csv_to_json',
  'text__slugify',
  'warden__run_code',
];

describe('stdio agent on the init workspace', () => {
  it('lists exactly the granted tools, with the manifest definitions', async () => {
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((tool) => tool.name).sort(), [...EXPECTED_TOOLS].sort());
    const manifest = parse(readFileSync(join(workspace.dir, 'manifests/notes.manifest.yaml'), 'utf8'));
    const declared = manifest.tools.find((tool: { name: string }) => tool.name === 'search_notes');
    const exposed = tools.find((tool) => tool.name === 'notes__search_notes');
    assert.equal(exposed?.description, declared.description);
    assert.deepEqual(exposed?.inputSchema, declared.inputSchema);
    assert.equal(exposed?.annotations?.readOnlyHint, true);
    assert.equal(tools.find((tool) => tool.name === 'notes__add_note')?.annotations?.readOnlyHint, false);
    // Code mode's description lists this agent's tools as a typed API, itself excepted.
    const runCode = tools.find((tool) => tool.name === 'warden__run_code')?.description ?? '';
    assert.match(runCode, /declare const tools: \{/);
    for (const name of EXPECTED_TOOLS.filter((tool) => tool !== 'warden__run_code')) {
      const [server, tool] = name.split('__') as [string, string];
      assert.ok(runCode.includes(`  ${server}: {`) && (runCode.includes(` ${tool}(args:`) || runCode.includes(` "${tool}"(args:`)), name);
    }
    assert.ok(!runCode.includes('run_code('));
  });

  it('runs a code tool and code mode over stdio', async () => {
    const slug = await client.callTool({ name: 'text__slugify', arguments: { text: 'Over stdio!' } });
    assert.equal(textOf(slug), 'over-stdio');
    const run = await client.callTool({ name: 'warden__run_code', arguments: { code: "const notes = JSON.parse(await tools.notes.list_notes({})); return notes.length;" } });
    assert.equal(run.isError, undefined, textOf(run));
    assert.equal(typeof (run.structuredContent as { result?: unknown }).result, 'number');
  });

  it('calls tools on the example server and on server-everything; the write waits for a person', async () => {
    assert.match(textOf(await client.callTool({ name: 'notes__list_notes', arguments: {} })), /Welcome/);
    // The workspace grants add_note with approval: required. The call is held until the
    // approval, decided here through the state store as mcp-warden approvals does.
    const held = client.callTool({ name: 'notes__add_note', arguments: { title: 'from test', body: 'b' } });
    const state = openStateStore(join(workspace.dir, 'state'), 'read-write');
    try {
      let id: string | undefined;
      assert.ok(await waitFor(() => (id = state.approvals.list({ statuses: ['pending'], limit: 1 })[0]?.id) !== undefined, 200, 50), 'an approval request appears');
      state.approvals.decide(id!, 'approved', 'test', '', Date.now());
    } finally {
      state.close();
    }
    const added = await held;
    assert.equal(added.isError, undefined, JSON.stringify(added));
    assert.match(textOf(await client.callTool({ name: 'notes__search_notes', arguments: { query: 'from test' } })), /from test/);
    assert.equal(textOf(await client.callTool({ name: 'everything__echo', arguments: { message: 'hi' } })), 'Echo: hi');
    assert.match(textOf(await client.callTool({ name: 'everything__get-sum', arguments: { a: 2, b: 3 } })), /5/);
  });

  it('the demo workspace has its guards on: injected credential redacted, scope applied', async () => {
    const result = await client.callTool({ name: 'notes__server_info', arguments: {} });
    const token = readFileSync(join(workspace.dir, 'secrets/notes-api-token'), 'utf8').trim();
    assert.ok(!JSON.stringify(result).includes(token));
    assert.deepEqual(Object.keys(result.structuredContent as object).sort(), ['apiToken', 'name', 'notes', 'version']);
    assert.equal((result.structuredContent as { apiToken: string }).apiToken, '[redacted: credential]');
  });

  it('refuses, identically, what is ungranted, undeclared or unknown', async () => {
    const cases = [
      ['notes__delete_note', { id: 1 }], // declared destructive tool, not granted
      ['notes__debug_dump', {}], // declared read tool (every live tool is signed), not granted
      ['everything__get-env', {}], // declared read tool, not granted
      ['everything__toggle-simulated-logging', {}], // declared write tool, not granted
      ['no_such_tool', {}],
      ['__proto__', {}],
      ['constructor', {}],
    ] as const;
    for (const [name, args] of cases) {
      const result = await client.callTool({ name, arguments: args });
      assert.equal(result.isError, true, name);
      assert.equal(refusalCode(result), 'WARDEN_TOOL_NOT_FOUND', name);
      assert.equal(textOf(result).replace(name, 'X'), textOf(await client.callTool({ name: 'zzz', arguments: {} })).replace('zzz', 'X'));
    }
    // the notes that existed before are still there: nothing was deleted
    assert.match(textOf(await client.callTool({ name: 'notes__get_note', arguments: { id: 1 } })), /Welcome/);
  });

  it('serves a 2026-07-28 (modern) client too', async () => {
    const modern = await connectStdio(workspace.config, 'demo', { mode: 'auto' });
    try {
      assert.equal(modern.getProtocolEra(), 'modern');
      const { tools } = await modern.listTools();
      assert.equal(tools.length, EXPECTED_TOOLS.length);
      assert.equal(textOf(await modern.callTool({ name: 'notes__echo', arguments: { text: 'modern' } })), 'modern');
    } finally {
      await modern.close();
    }
  });

  it('writes an audit line for every list and call, without argument values', async () => {
    await client.callTool({ name: 'notes__echo', arguments: { text: 'audit-canary-value' } });
    const lines = readFileSync(join(workspace.dir, 'audit/audit.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    const calls = lines.filter((line) => line.event === 'tools/call');
    assert.ok(calls.length >= 10);
    for (const line of calls) {
      assert.match(line.correlationId, /^[0-9a-f-]{36}$/);
      assert.equal(line.agent, 'demo');
      assert.ok(['allow', 'deny'].includes(line.decision));
      assert.equal(typeof line.durationMs, 'number');
    }
    assert.ok(lines.some((line) => line.event === 'tools/list' && line.count === EXPECTED_TOOLS.length));
    assert.ok(!readFileSync(join(workspace.dir, 'audit/audit.jsonl'), 'utf8').includes('audit-canary-value'));
  });
});

describe('stdio protocol abuse', () => {
  it('answers malformed JSON-RPC and unknown methods with errors, and keeps serving', async () => {
    const child = spawn(process.execPath, [CLI, 'serve', '--config', workspace.config, '--stdio', '--agent', 'demo'], { stdio: ['pipe', 'pipe', 'ignore'] });
    const lines = createInterface({ input: child.stdout });
    const replies: Record<string, unknown>[] = [];
    lines.on('line', (line) => replies.push(JSON.parse(line)));
    const send = (text: string) => child.stdin.write(`${text}\n`);
    try {
      send('{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}');
      send('{"jsonrpc":"2.0","method":"notifications/initialized"}');
      send('this is not json');
      send('{"jsonrpc":"2.0","id":2,"method":"no/such/method"}');
      send('{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"notes__echo","arguments":"not an object"}}');
      send('{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"notes__echo","arguments":{"text":"still alive"}}}');
      const done = await waitForReply(replies, 4);
      assert.ok(done, `no reply to the last request; got ${JSON.stringify(replies)}`);
      const byId = new Map(replies.filter((r) => 'id' in r).map((r) => [r['id'], r]));
      assert.equal((byId.get(2)?.['error'] as { code: number }).code, -32601);
      assert.ok(byId.get(3)?.['error'], 'non-object arguments are a protocol error');
      assert.equal(((byId.get(4)?.['result'] as { content: { text: string }[] }).content[0])?.text, 'still alive');
    } finally {
      child.kill();
    }
  });
});

describe('downstream environment', () => {
  it('a downstream server gets the manifest env and a minimal set, never the broker environment', async () => {
    const { dir: own, cleanup: clean } = tempDir();
    try {
      writeManifest(join(own, 'manifests/rogue.json'), stdioManifest('rogue', ROGUE_SERVER, rogueManifestTools(), { env: { DECLARED: 'yes' }, era: 'legacy' }));
      const config = writeConfig(join(own, 'warden.yaml'), { version: 1, servers: { rogue: { manifest: 'rogue.json' } }, agents: { a: { allow: [{ tools: ['rogue__env'] }] } } });
      const agent = await connectStdio(config, 'a', { env: { BROKER_SECRET: 'must-not-leak' } });
      try {
        const env = JSON.parse(textOf(await agent.callTool({ name: 'rogue__env', arguments: {} })));
        assert.equal(env.DECLARED, 'yes');
        assert.equal(env.BROKER_SECRET, undefined);
        for (const key of Object.keys(env)) assert.ok(['DECLARED', 'PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'TERM'].includes(key), key);
      } finally {
        await agent.close();
      }
    } finally {
      clean();
    }
  });
});

async function waitForReply(replies: Record<string, unknown>[], id: number): Promise<boolean> {
  for (let i = 0; i < 200; i++) {
    if (replies.some((reply) => reply['id'] === id)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}
