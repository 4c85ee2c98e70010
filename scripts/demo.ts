// npm run demo: a scripted agent goes through mcp-warden and every call it tries is shown
// with the broker's verdict. It uses a fresh workspace written by `init`, over stdio
// (as an MCP host would start it) and over Streamable HTTP (with and without a token):
// read tools, a write that waits for a person's approval (given with the approvals
// command), a retried write that runs once, a rate limit, the kill switch, native HTTP
// tools on a small local API (started here) whose redirect to the cloud metadata address
// the egress policy refuses, code tools in isolated-vm sandboxes, and code mode: the
// agent's own JavaScript calling its tools, each call checked like a direct one. Beyond
// tools: the reference server's prompts and resources (listed, read, refused when not
// granted, a hostile URI refused before any grant is tried), and its requests to the
// agent's host during a call: a form for the user (elicitation, granted; the host here
// answers it with a fixed answer) and a completion from the user's model (sampling, not
// granted, so the host is never asked).
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { Client, ProtocolError, StreamableHTTPClientTransport, type CallToolResult } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { writeWorkspace } from '../src/cli/init.ts';
import { startTicketsApi } from '../examples/tickets-api/server.ts';
import { cliScript, packageRoot } from '../src/paths.ts';

interface Row {
  transport: string;
  call: string;
  verdict: string;
  detail: string;
  correlationId?: string;
}

const CLI = cliScript(packageRoot());
const execFileAsync = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'mcp-warden-demo-'));
const rows: Row[] = [];
/** What the demo's host answers when a server asks its user to fill in a form. */
const FORM_ANSWER = { action: 'accept', content: { name: 'Ada Lovelace', check: true, email: 'ada@example.test' } } as const;

// The example tickets API, on an ephemeral loopback port; init signs its manifest for
// that address and writes the key the API checks.
const ticketsApi = await startTicketsApi({ keyFile: join(dir, 'workspace/secrets/tickets-api-key') });
try {
  // Metrics on a free port: npm start's broker may hold the demo's usual one.
  const workspace = writeWorkspace(join(dir, 'workspace'), false, { ticketsApiUrl: ticketsApi.url, metricsListen: '127.0.0.1:0' });
  console.log(`mcp-warden demo: workspace written by init at ${workspace.dir}`);
  console.log(`mcp-warden demo: the example tickets API listens on ${ticketsApi.url}\n`);

  // 1. stdio, exactly as an MCP host starts the broker. This host can show its user a form
  // (elicitation) and ask its model (sampling); it notes each question a server asks it.
  const asked: { method: string; params: Record<string, unknown> }[] = [];
  const stdio = new Client({ name: 'demo-agent', version: '1.0.0' }, { capabilities: { sampling: {}, elicitation: { form: {} } } });
  stdio.setRequestHandler('elicitation/create', async (request) => {
    asked.push({ method: 'elicitation/create', params: request.params });
    return FORM_ANSWER;
  });
  stdio.setRequestHandler('sampling/createMessage', async (request) => {
    asked.push({ method: 'sampling/createMessage', params: request.params });
    return { role: 'assistant', content: { type: 'text', text: 'A completion from the user\'s model.' }, model: 'demo-host-model' };
  });
  await stdio.connect(
    new StdioClientTransport({ command: process.execPath, args: [CLI, 'serve', '--config', workspace.config, '--stdio', '--agent', 'demo'], stderr: 'ignore' }),
  );
  const { tools } = await stdio.listTools();
  console.log(`tools/list for agent "demo" shows ${tools.length} tools:\n  ${tools.map((tool) => tool.name).join('\n  ')}\n`);

  const script: [string, Record<string, unknown>][] = [
    ['notes__list_notes', {}],
    ['notes__search_notes', { query: 'coffee' }],
    ['notes__delete_note', { id: 1 }],
    ['notes__debug_dump', {}],
    ['notes__get_note', { id: 999 }],
    ['notes__get_note', { id: '1' }],
    ['notes__server_info', {}],
    ['everything__get-sum', { a: 19, b: 23 }],
    ['everything__echo', { message: 'hello through the broker' }],
    ['everything__get-env', {}],
    ['filesystem__read_file', { path: '/etc/passwd' }],
    // Native HTTP tools: the broker makes the request itself, with the API key injected.
    ['tickets__list_tickets', { status: 'open' }],
    ['tickets__get_ticket', { id: 1 }],
    ['tickets__create_ticket', { title: 'Printer on floor 3 is jammed' }],
    // The API answers with a redirect to 169.254.169.254: the egress policy refuses it.
    ['tickets__get_attachment', { id: 1 }],
    // Code tools: a signed JavaScript module, run in a fresh isolated-vm isolate per call.
    ['text__word_stats', { text: 'the broker checks the call, then the sandbox runs the code', top: 2 }],
    ['text__slugify', { text: 'Quarterly Report: Q3 2026!' }],
  ];
  const call = async (name: string, args: Record<string, unknown>, note = '') => {
    const result = (await stdio.callTool({ name, arguments: args })) as CallToolResult;
    const row = { transport: 'stdio', call: `${name} ${JSON.stringify(args)}`, ...verdictOf(result) };
    if (note) row.detail = `${note}: ${row.detail}`;
    rows.push(row);
    return result;
  };
  for (const [name, args] of script) await call(name, args);

  // Code mode: one call runs the agent's code, which reads every note and counts words
  // through the tools above; only the summary comes back into the conversation.
  const summary = [
    'const notes = JSON.parse(await tools.notes.list_notes({}));',
    "let text = '';",
    "for (const { id } of notes) text += JSON.parse(await tools.notes.get_note({ id })).body + '\\n';",
    'const stats = await tools.text.word_stats({ text, top: 3 });',
    'console.log(`read ${notes.length} notes`);',
    'return { notes: notes.length, words: stats.words, top: stats.top.map((entry) => entry.word) };',
  ].join('\n');
  console.log(`warden__run_code, the agent's code:\n${indent(summary)}`);
  await call('warden__run_code', { code: summary }, 'code mode, 1 + n + 1 tool calls');
  // Each call the code makes is validated like a direct one: the refusal reaches the code as an error.
  await call('warden__run_code', { code: "try { await tools.notes.get_note({ id: '1' }); } catch (error) { return error.code; }" }, 'code mode, a bad inner call');
  await call('warden__run_code', { code: 'while (true) {}' }, 'code mode, an endless loop');

  // What the security team sees when it asks why (exit status 1: the request would be refused).
  const egressCheck = await execFileAsync(process.execPath, [CLI, 'egress', 'check', '--config', workspace.config, 'http://169.254.169.254/latest/meta-data/'], { encoding: 'utf8', timeout: 60_000 }).catch(
    (error: { stdout?: string }) => ({ stdout: error.stdout ?? '' }),
  );
  console.log(`$ mcp-warden egress check http://169.254.169.254/latest/meta-data/\n${indent(egressCheck.stdout)}`);

  // What a stdio server runs is pinned in its signed manifest (init filled in the digests);
  // the broker checks them before every start and restart.
  const verified = (await cli('manifest', 'verify', '--config', workspace.config, join(workspace.dir, 'manifests/notes.manifest.signed.json'))).stdout;
  console.log(`$ mcp-warden manifest verify --config warden.yaml manifests/notes.manifest.signed.json\n${indent(verified)}`);

  // A write that needs a person's approval: the call is held until someone decides with
  // the approvals command, which the agent has no way to reach.
  console.log(`$ mcp-warden policy explain --agent demo --tool notes__add_note\n${indent((await cli('policy', 'explain', '--config', workspace.config, '--agent', 'demo', '--tool', 'notes__add_note')).stdout)}`);
  const note = { title: 'Call the plumber', body: 'Tuesday morning' };
  const held = call('notes__add_note', note, 'held, then approved by security-team');
  const approval = await pendingApproval(workspace.config);
  console.log(`$ mcp-warden approvals show ${approval}\n${indent((await cli('approvals', 'show', approval, '--config', workspace.config)).stdout)}`);
  await cli('approvals', 'approve', approval, '--config', workspace.config, '--by', 'security-team');
  await held;
  await call('notes__add_note', note, 'a retry: the recorded result, the tool ran once');
  const refused = call('notes__add_note', { title: 'Wire money', body: 'to account 1234' }, 'held, then denied');
  await cli('approvals', 'deny', await pendingApproval(workspace.config), '--config', workspace.config, '--by', 'security-team', '--reason', 'not part of this task');
  await refused;

  // A rate limit: the config allows a burst of 3 searches, then one every 10 s. However many
  // tokens have come back since the search above, the 4th search in a row is refused at the latest.
  for (let i = 1; i <= 4; i++) {
    const result = await call('notes__search_notes', { query: `plumber ${i}` });
    if (result._meta?.['mcp-warden/refusal']) break;
  }

  // The kill switch, set by another process, applies within a second.
  await cli('killswitch', 'readonly', '--config', workspace.config, '--by', 'security-team');
  const readonlyTools = await waitForToolCount(stdio, (count) => count < tools.length);
  await call('notes__add_note', { title: 'During read-only mode', body: 'x' }, `killswitch readonly; tools/list now shows ${readonlyTools}`);
  await call('notes__list_notes', {}, 'killswitch readonly');
  await cli('killswitch', 'off', '--config', workspace.config, '--by', 'security-team');
  await waitForToolCount(stdio, (count) => count === tools.length);

  // Prompts and resources of the reference server are default deny too. A refused request
  // is a JSON-RPC error whose data names the code.
  const surface = async (request: string, answer: () => Promise<string>) => {
    try {
      rows.push({ transport: 'stdio', call: request, verdict: 'allowed', detail: await answer() });
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      const refusal = error.data as { code?: string; correlationId?: string } | undefined;
      if (!refusal?.code) throw error;
      rows.push({ transport: 'stdio', call: request, verdict: 'denied', detail: `${refusal.code}: ${error.message.replace(/^.*?\[[A-Z_]+\]: /, '')}`, ...(refusal.correlationId ? { correlationId: refusal.correlationId } : {}) });
    }
  };
  await surface('prompts/list', async () => {
    const { prompts } = await stdio.listPrompts();
    return `${prompts.length} prompts: ${prompts.map((prompt) => prompt.name).join(', ')}`;
  });
  await surface('prompts/get everything__args-prompt {"city":"Paris"}', async () => {
    const { messages } = await stdio.getPrompt({ name: 'everything__args-prompt', arguments: { city: 'Paris' } });
    return messages.map((message) => `${message.role}: ${message.content.type === 'text' ? message.content.text : `[${message.content.type}]`}`).join(' ');
  });
  // Declared in the signed manifest, not granted: refused like a prompt that does not exist.
  await surface('prompts/get everything__resource-prompt', async () => {
    const { messages } = await stdio.getPrompt({ name: 'everything__resource-prompt', arguments: { resourceType: 'Text', resourceId: '1' } });
    return `${messages.length} message(s)`;
  });
  const read = async (uri: string) => {
    const { contents } = await stdio.readResource({ uri });
    return contents.map((content) => ('text' in content ? `${content.mimeType ?? 'text'}, ${content.text.length} characters: ${content.text}` : `[blob, ${content.mimeType ?? 'binary'}]`)).join(' ');
  };
  let listed: string[] = [];
  await surface('resources/list', async () => {
    listed = (await stdio.listResources()).resources.map((resource) => resource.uri);
    const folder = listed[0]?.slice(0, listed[0].lastIndexOf('/') + 1) ?? '';
    const names = listed.every((uri) => uri.startsWith(folder)) ? `under ${folder}: ${listed.map((uri) => uri.slice(folder.length)).join(', ')}` : listed.join(', ');
    return `${listed.length} resources ${names}`;
  });
  await surface('resources/templates/list', async () => {
    const { resourceTemplates } = await stdio.listResourceTemplates();
    return `${resourceTemplates.length} template(s): ${resourceTemplates.map((template) => template.uriTemplate).join(', ')} (the blob template is not granted)`;
  });
  // A granted document, a blob that is not granted, and two hostile URIs. Each of those
  // would match a granted pattern (`*` stands for ".." or "%2e%2e"), so only the URI check,
  // made before any grant is tried, keeps them out.
  for (const uri of [listed[0] ?? '', 'demo://resource/dynamic/blob/1', 'demo://resource/static/document/..', 'demo://resource/dynamic/text/%2e%2e']) {
    await surface(`resources/read ${uri}`, () => read(uri));
  }

  // Requests from servers: during a call, the reference server asks the agent's host a
  // question. The broker relays what a serverRequests grant allows (elicitation, here) and
  // answers the rest itself with a refusal (sampling): the host is never asked.
  const serverRequestRows = new Map<Row, string>();
  const serverRequest = (tool: string, method: string, result: CallToolResult) => {
    const question = asked.find((entry) => entry.method === method);
    const code = /\[(WARDEN_[A-Z_]+)\]/.exec(textOf(result))?.[1] ?? 'no refusal code in the result';
    const row = { transport: 'stdio', call: `↳ ${method}, server to host`, verdict: question ? 'allowed' : 'denied', detail: question ? 'the host was asked and answered' : `${code}, the host was not asked` };
    rows.push(row);
    serverRequestRows.set(row, tool);
    return question;
  };
  const elicitation = 'everything__trigger-elicitation-request';
  const elicited = await call(elicitation, {});
  const form = serverRequest(elicitation, 'elicitation/create', elicited)?.params;
  const schema = form?.['requestedSchema'] as { properties?: Record<string, unknown>; required?: string[] } | undefined;
  const fields = Object.keys(schema?.properties ?? {}).map((name) => (schema?.required?.includes(name) ? `${name} (required)` : name));
  console.log(`${elicitation}: the server asked the host's user, through the broker (elicitation/create):`);
  console.log(form ? `${indent(`${String(form['message'])}\nfields: ${fields.join(', ')}`)}  the host answered: ${JSON.stringify(FORM_ANSWER)}` : '    the host was not asked');
  console.log(`  the tool returned:\n${indent(textOf(elicited))}`);
  const sampling = 'everything__trigger-sampling-request';
  // The tool call is allowed; the server's own request is refused, and the server reports
  // that refusal in its result's text.
  serverRequest(sampling, 'sampling/createMessage', await call(sampling, { prompt: 'Summarise my notes' }));
  await stdio.close();

  // 2. Streamable HTTP on an ephemeral loopback port.
  const server = spawn(process.execPath, [CLI, 'serve', '--config', workspace.config, '--http', '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the broker did not start within 30 s')), 30_000);
      createInterface({ input: server.stderr! }).on('line', (line) => {
        const match = /serving Streamable HTTP at (\S+)/.exec(line);
        if (match?.[1]) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      });
      server.once('exit', (code) => reject(new Error(`the broker exited with code ${code}`)));
    });
    const anonymous = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    rows.push({ transport: 'http', call: 'tools/list without a token', verdict: 'denied', detail: `HTTP ${anonymous.status}, ${anonymous.headers.get('www-authenticate')}` });

    const token = readFileSync(workspace.tokenFile, 'utf8').trim();
    const http = new Client({ name: 'demo-agent', version: '1.0.0' }, { versionNegotiation: { mode: 'auto' } });
    await http.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { Authorization: `Bearer ${token}` } } }));
    const listed = await http.listTools();
    rows.push({ transport: 'http', call: 'tools/list with the demo token', verdict: 'allowed', detail: `${listed.tools.length} tools (protocol era: ${http.getProtocolEra()})` });
    for (const [name, args] of [['notes__get_note', { id: 1 }], ['notes__delete_note', { id: 2 }]] as const) {
      const result = (await http.callTool({ name, arguments: args })) as CallToolResult;
      rows.push({ transport: 'http', call: `${name} ${JSON.stringify(args)}`, ...verdictOf(result) });
    }
    await http.close();
  } finally {
    server.kill('SIGTERM');
  }

  // The agent gets one refusal for unknown and ungranted tools alike (no existence
  // oracle); the audit trail, which only the operator reads, records why.
  const audit = readFileSync(join(workspace.dir, 'audit/audit.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
  const causes = new Map(audit.map((record) => [record['correlationId'], [record['cause'], record['access']].filter(Boolean).join(', ')]));
  // An egress refusal's record says which rule of the policy refused, and where the request would have gone.
  for (const record of audit.filter((entry) => entry['event'] === 'egress.refused')) {
    causes.set(record['correlationId'], `egress ${String(record['reason'])}${record['cause'] ? ` (${String(record['cause'])})` : ''}${record['address'] ? ` to ${String(record['address'])}, ${String(record['range'])}` : ''}`);
  }
  // A server's request is recorded under the correlation id of the call it came during.
  const callIds = new Map(audit.filter((record) => record['event'] === 'tools/call').map((record) => [record['tool'], record['correlationId']]));
  for (const [row, tool] of serverRequestRows) row.correlationId = callIds.get(tool) as string | undefined;
  for (const record of audit.filter((entry) => entry['event'] === 'server.request' && entry['correlationId'])) {
    causes.set(record['correlationId'], `server.request ${String(record['decision'])}${record['reason'] ? `, ${String(record['reason'])}` : ''}${record['action'] ? `, answer ${String(record['action'])}` : ''}`);
  }
  for (const row of rows) {
    const cause = row.correlationId === undefined ? undefined : causes.get(row.correlationId);
    if (cause) row.detail = `${row.detail.split(':')[0]} (audit: ${cause})`;
  }
  printTable(rows);
  console.log(`\nAgents see one refusal for unknown and ungranted tools alike; "audit:" is the reason the`);
  console.log(`broker recorded in its audit trail (${audit.length} records; the demo's temporary workspace is removed on exit).`);
} finally {
  await ticketsApi.close();
  rmSync(dir, { recursive: true, force: true });
}

/** Runs the CLI; fails the demo when it fails. */
async function cli(...args: string[]): Promise<{ stdout: string; stderr: string }> {
  try {
    return await execFileAsync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  } catch (error) {
    throw new Error(`mcp-warden ${args.join(' ')} failed: ${(error as { stderr?: string }).stderr ?? String(error)}`);
  }
}

/** The id of the newest pending approval, once the broker has opened one (bounded wait). */
async function pendingApproval(config: string): Promise<string> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const listed = JSON.parse((await cli('approvals', 'list', '--json', '--config', config)).stdout) as { approvals: { id: string }[] };
    if (listed.approvals[0]) return listed.approvals[0].id;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('no approval request appeared within 10 s');
}

async function waitForToolCount(client: Client, done: (count: number) => boolean): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const count = (await client.listTools()).tools.length;
    if (done(count)) return count;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('the tool list did not change within 5 s');
}

function indent(text: string): string {
  return text.trimEnd().split('\n').map((line) => `    ${line}`).join('\n') + '\n';
}

function textOf(result: CallToolResult): string {
  return result.content.map((block) => (block.type === 'text' ? block.text : `[${block.type}]`)).join(' ');
}

function verdictOf(result: CallToolResult): { verdict: string; detail: string; correlationId?: string } {
  const text = textOf(result);
  const refusal = result._meta?.['mcp-warden/refusal'] as { code?: string; correlationId?: string } | undefined;
  if (refusal?.code) {
    return { verdict: 'denied', detail: `${refusal.code}: ${text.replace(/^mcp-warden refused the call \[[A-Z_]+\]: /, '')}`, ...(refusal.correlationId ? { correlationId: refusal.correlationId } : {}) };
  }
  if (result.isError) return { verdict: 'allowed, tool error', detail: text };
  return { verdict: 'allowed', detail: text };
}

function printTable(table: Row[]): void {
  const clip = (text: string, width: number) => (text.length > width ? `${text.slice(0, width - 1)}…` : text);
  const widths = { transport: 9, call: 52, verdict: 19, detail: 96 };
  const line = (row: Row) =>
    `${clip(row.transport, widths.transport).padEnd(widths.transport)} | ${clip(row.call, widths.call).padEnd(widths.call)} | ${clip(row.verdict, widths.verdict).padEnd(widths.verdict)} | ${clip(row.detail.replace(/\s+/g, ' '), widths.detail)}`;
  console.log(line({ transport: 'transport', call: 'call', verdict: 'verdict', detail: 'detail' }));
  console.log(`${'-'.repeat(widths.transport)}-+-${'-'.repeat(widths.call)}-+-${'-'.repeat(widths.verdict)}-+-${'-'.repeat(widths.detail)}`);
  for (const row of table) console.log(line(row));
}
