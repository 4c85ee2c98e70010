import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { Client, ProtocolError, type JSONRPCMessage } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { parse } from 'yaml';
import { IDEMPOTENCY_META_KEY } from '../../src/pipeline/stages/deduplicate.ts';
import { DEFAULTS_FORM, ENUMS_FORM, USER_FORM } from '../../examples/conformance-server/forms.ts';
import { CLI, ROOT, refusalCode, stdioManifest, tempDir, textOf, waitFor, writeConfig, writeManifest } from '../helpers.ts';

// A downstream server's sampling and elicitation requests, its log messages during a call
// and resource subscriptions, through the real broker (`mcp-warden serve --stdio`) for all
// four era combinations: the conformance fixture pinned to the 2025 handshake (legacy) or
// to 2026-07-28 (modern), and an agent of either era. Audit records are read from the
// trail files each broker process writes.

const { dir, cleanup } = tempDir('warden-server-requests-');
const FIXTURE = join(ROOT, 'examples/conformance-server/server.ts');
const SOURCE = parse(readFileSync(join(ROOT, 'examples/conformance-server/conformance.manifest.yaml'), 'utf8')) as { description: string; tools: unknown[]; prompts: unknown[] };

type DownEra = 'legacy' | 'modern';

/** The tool of the roots server written in the roots tests. */
const ROOTS_TOOLS = [{ name: 'list_roots', description: 'Asks the client for its roots and returns them as JSON.', inputSchema: { type: 'object', properties: {} } }];
type AgentEra = 'legacy' | 'modern';

const AGENTS = {
  granted: {
    allow: [
      // test_update_watched_resource is a write.
      { tools: ['*'], access: ['read', 'write'] },
      { serverRequests: ['sampling', 'elicitation'], server: 'conformance' },
      { resources: ['test://watched-resource', 'test://static-text'], server: 'conformance' },
    ],
  },
  ungranted: { allow: [{ tools: ['*'] }, { resources: ['test://**'], server: 'conformance' }] },
} as const;

/**
 * The configs of one downstream era, in one folder (one audit trail): `solo` and `stranger`
 * each let one agent alone use the server, `shared` lets both. Over stdio a server's
 * question can be tied to its call only while one agent alone uses the server (see
 * McpBackend#callOfMessage); `shared` shows what happens otherwise.
 */
interface Workspace {
  readonly solo: string;
  readonly stranger: string;
  readonly shared: string;
}

function writeWorkspace(era: DownEra): Workspace {
  const base = join(dir, era);
  writeManifest(join(base, 'manifests/conformance.json'), { ...stdioManifest('conformance', FIXTURE, SOURCE.tools, { era }), description: SOURCE.description, prompts: SOURCE.prompts });
  const config = (name: string, agents: Partial<typeof AGENTS>) =>
    writeConfig(join(base, `${name}.yaml`), {
      version: 1,
      servers: { conformance: { manifest: 'conformance.json', prefix: false } },
      // A question nobody answers is given up on after this long (the hosts here answer at once).
      limits: { answerTimeoutMs: 5000 },
      agents,
    });
  return { solo: config('solo', { granted: AGENTS.granted }), stranger: config('stranger', { ungranted: AGENTS.ungranted }), shared: config('shared', AGENTS) };
}

/** Every audit record the brokers of one workspace wrote (each process writes its own chain file), each with where it is. */
function auditRecords(era: DownEra): Record<string, unknown>[] {
  const folder = join(dir, era, 'audit');
  let names: string[];
  try {
    names = readdirSync(folder).filter((name) => name.endsWith('.jsonl'));
  } catch {
    return [];
  }
  const records: Record<string, unknown>[] = [];
  for (const name of names) {
    readFileSync(join(folder, name), 'utf8').split('\n').forEach((line, index) => {
      if (line.trim() === '') return;
      try {
        records.push({ ...(JSON.parse(line) as Record<string, unknown>), [AT]: `${name}:${index}` });
      } catch {
        // A line still being written.
      }
    });
  }
  return records;
}

/** Where a record is (file and line), kept out of its fields. */
const AT = Symbol('at');

/** The records written so far: a test looks only at records written after its mark. */
function mark(era: DownEra): ReadonlySet<string> {
  return new Set(auditRecords(era).map((record) => (record as Record<symbol, string>)[AT]!));
}

/** The audit record matching the predicate, written after the mark, waited for (records are written asynchronously). */
async function auditRecord(era: DownEra, since: ReadonlySet<string>, predicate: (record: Record<string, unknown>) => boolean, what: string): Promise<Record<string, unknown>> {
  let found: Record<string, unknown> | undefined;
  const fresh = (record: Record<string, unknown>) => !since.has((record as Record<symbol, string>)[AT]!) && predicate(record);
  const ok = await waitFor(() => (found = auditRecords(era).find(fresh)) !== undefined, 200, 50);
  assert.ok(ok && found, `no audit record: ${what}`);
  return found;
}

/** Elicitation answers carrying this username are rewritten on the wire into a malformed answer. */
const BOGUS = 'bogus-answer-marker-5d1f';

/** Replaces, in a message the agent sends, an accepted elicitation carrying BOGUS with { action: 'bogus' }. */
function rewriteBogus(value: unknown, depth = 0): unknown {
  if (depth > 16 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((item) => rewriteBogus(item, depth + 1));
  const object = value as Record<string, unknown>;
  const content = object['content'] as Record<string, unknown> | undefined;
  if (object['action'] === 'accept' && content && typeof content === 'object' && content['username'] === BOGUS) return { action: 'bogus' };
  return Object.fromEntries(Object.entries(object).map(([key, item]) => [key, rewriteBogus(item, depth + 1)]));
}

interface Seen {
  sampling: Record<string, unknown>[];
  elicitation: Record<string, unknown>[];
  logs: Record<string, unknown>[];
  updates: string[];
  /** Progress notifications as they arrived on the wire (the SDK drops one read with its call's result). */
  progress: Record<string, unknown>[];
}

interface Host {
  readonly client: Client;
  readonly seen: Seen;
  /** What the host answers; replaced by tests. */
  sample: (params: Record<string, unknown>) => Record<string, unknown>;
  elicit: (params: Record<string, unknown>) => Record<string, unknown>;
}

const SAMPLED = 'sampled-by-the-host-3b8e';
const DEFAULT_SAMPLE = () => ({ role: 'assistant', content: { type: 'text', text: SAMPLED }, model: 'host-model-1', stopReason: 'endTurn' });
const DEFAULT_ELICIT = () => ({ action: 'accept', content: { username: 'ursula', email: 'ursula@example.test' } });

/** `mcp-warden serve --stdio` as an agent, with the host capabilities given. */
async function connectHost(config: string, agent: string, era: AgentEra, capabilities: { sampling?: boolean; elicitation?: boolean }): Promise<Host> {
  const client = new Client(
    { name: 'server-requests-host', version: '1.0.0' },
    {
      capabilities: { ...(capabilities.sampling ? { sampling: {} } : {}), ...(capabilities.elicitation ? { elicitation: { form: {} } } : {}) },
      versionNegotiation: { mode: era === 'modern' ? { pin: '2026-07-28' } : 'legacy' },
    },
  );
  const seen: Seen = { sampling: [], elicitation: [], logs: [], updates: [], progress: [] };
  const host: Host = { client, seen, sample: DEFAULT_SAMPLE, elicit: DEFAULT_ELICIT };
  if (capabilities.sampling) {
    client.setRequestHandler('sampling/createMessage', async (request) => {
      seen.sampling.push(request.params as Record<string, unknown>);
      return host.sample(request.params as Record<string, unknown>) as never;
    });
  }
  if (capabilities.elicitation) {
    client.setRequestHandler('elicitation/create', async (request) => {
      seen.elicitation.push(request.params as Record<string, unknown>);
      return host.elicit(request.params as Record<string, unknown>) as never;
    });
  }
  client.setNotificationHandler('notifications/message', (notification) => void seen.logs.push(notification.params as Record<string, unknown>));
  client.setNotificationHandler('notifications/resources/updated', (notification) => void seen.updates.push(notification.params.uri));
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [CLI, 'serve', '--config', config, '--stdio', '--agent', agent],
    env: { PATH: process.env['PATH'] ?? '' },
    stderr: 'ignore',
  });
  // The SDK checks a handler's answer before sending it; a malformed answer is made on the wire.
  const send = transport.send.bind(transport);
  transport.send = (message: JSONRPCMessage) => send(rewriteBogus(message) as JSONRPCMessage);
  await client.connect(transport);
  const deliver = transport.onmessage;
  transport.onmessage = (message: JSONRPCMessage, ...rest: unknown[]) => {
    if ('method' in message && message.method === 'notifications/progress') seen.progress.push(message.params as Record<string, unknown>);
    (deliver as ((message: JSONRPCMessage, ...rest: unknown[]) => void) | undefined)?.call(transport, message, ...rest);
  };
  assert.equal(client.getProtocolEra(), era);
  return host;
}

/**
 * A request after the call: over stdio the broker writes a notification it passes on before
 * its answer to a later request, so anything still coming for the call has come by then.
 * (ping is not a 2026-07-28 method.)
 */
async function barrier(host: Host): Promise<void> {
  assert.equal(textOf(await host.client.callTool({ name: 'test_simple_text', arguments: {} })), 'This is a simple text response for testing.');
}

/**
 * Changes the watched resource. A write: the broker runs a repeat of the same write once
 * (deduplicate stage), so each change carries an idempotency key of its own.
 */
function updateWatched(host: Host): ReturnType<Client['callTool']> {
  return host.client.callTool({ name: 'test_update_watched_resource', arguments: {}, _meta: { [IDEMPOTENCY_META_KEY]: randomUUID() } });
}

/** The _meta a 2026-07-28 request carries to ask for log messages at a level. */
function logMeta(level: string): Record<string, unknown> {
  return { 'io.modelcontextprotocol/logLevel': level };
}

/** The protocol error a request ends in, with the broker's code. */
async function rpcError(pending: Promise<unknown>): Promise<{ code: number; data: { code?: string } | undefined }> {
  try {
    await pending;
  } catch (error) {
    assert.ok(error instanceof ProtocolError, `expected a protocol error, got ${String(error)}`);
    return { code: error.code, data: error.data as { code?: string } | undefined };
  }
  assert.fail('expected the request to be refused');
}

/** One workspace per downstream era, written when first needed. */
let legacyWorkspace: Workspace | undefined;
let modernWorkspace: Workspace | undefined;

after(cleanup);

for (const downEra of ['legacy', 'modern'] as const) {
  for (const agentEra of ['legacy', 'modern'] as const) {
    describe(`server requests: ${downEra} downstream, ${agentEra === 'legacy' ? '2025' : '2026-07-28'} agent`, () => {
      /** The granted agent, its host able to sample and elicit. */
      let host: Host;
      /** An agent without a serverRequests grant, its host able to answer both. */
      let stranger: Host;
      /** The granted agent again, its host able to elicit but not to sample. */
      let mute: Host;
      /** The granted agent on a broker whose config lets another agent use the same server. */
      let shared: Host;

      before(async () => {
        const workspace = downEra === 'legacy' ? (legacyWorkspace ??= writeWorkspace('legacy')) : (modernWorkspace ??= writeWorkspace('modern'));
        [host, stranger, mute, shared] = await Promise.all([
          connectHost(workspace.solo, 'granted', agentEra, { sampling: true, elicitation: true }),
          connectHost(workspace.stranger, 'ungranted', agentEra, { sampling: true, elicitation: true }),
          connectHost(workspace.solo, 'granted', agentEra, { elicitation: true }),
          connectHost(workspace.shared, 'granted', agentEra, { sampling: true, elicitation: true }),
        ]);
      });

      after(async () => {
        await Promise.all([host?.client.close(), stranger?.client.close(), mute?.client.close(), shared?.client.close()]);
      });

      /** The audit records a test looks at are those written after it began. */
      let since: ReadonlySet<string>;
      beforeEach(() => {
        since = mark(downEra);
      });
      const freshServerRequests = () => auditRecords(downEra).filter((record) => record['event'] === 'server.request' && !since.has((record as Record<symbol, string>)[AT]!));

      it('sampling reaches the granted host; its answer reaches the server; one audit record tied to the call', async () => {
        const result = await host.client.callTool({ name: 'test_sampling', arguments: { prompt: 'Say hello in one word' } });
        assert.notEqual(result.isError, true, textOf(result));
        assert.equal(textOf(result), `LLM response: ${SAMPLED}`);
        assert.equal(host.seen.sampling.length, 1);
        const asked = host.seen.sampling[0]!;
        assert.deepEqual(asked['messages'], [{ role: 'user', content: { type: 'text', text: 'Say hello in one word' } }]);
        assert.equal(asked['maxTokens'], 100);
        const record = await auditRecord(downEra, since, (r) => r['event'] === 'server.request' && r['agent'] === 'granted' && r['method'] === 'sampling/createMessage' && r['outcome'] === 'ok', 'sampling ok');
        assert.equal(record['decision'], 'allow');
        assert.equal(record['server'], 'conformance');
        assert.equal(record['reason'], null);
        assert.equal(record['model'], 'host-model-1');
        assert.ok((record['requestBytes'] as number) > 0 && (record['answerBytes'] as number) > 0);
        // The answer's text is not in the audit trail: what the answer was, never what it said.
        assert.ok(!JSON.stringify(record).includes(SAMPLED));
        const call = await auditRecord(downEra, since, (r) => r['event'] === 'tools/call' && r['correlationId'] === record['correlationId'], 'the call of the sampling request');
        assert.equal(call['agent'], 'granted');
        assert.equal(call['tool'], 'test_sampling');
        assert.equal(freshServerRequests().length, 1);
      });

      it('elicitation reaches the granted host with the form as sent; the accepted answer reaches the server', async () => {
        host.seen.elicitation.length = 0;
        const result = await host.client.callTool({ name: 'test_elicitation', arguments: { message: 'Who are you?' } });
        assert.notEqual(result.isError, true, textOf(result));
        assert.equal(textOf(result), 'User response: action=accept, content={"username":"ursula","email":"ursula@example.test"}');
        assert.equal(host.seen.elicitation.length, 1);
        const asked = host.seen.elicitation[0]!;
        assert.equal(asked['message'], 'Who are you?');
        assert.deepEqual(asked['requestedSchema'], USER_FORM);
        const record = await auditRecord(downEra, since, (r) => r['event'] === 'server.request' && r['agent'] === 'granted' && r['method'] === 'elicitation/create' && r['outcome'] === 'ok', 'elicitation ok');
        assert.equal(record['action'], 'accept');
        assert.ok(!JSON.stringify(record).includes('ursula'), 'the answer content is not audited');
      });

      for (const [tool, schema] of [
        ['test_elicitation_sep1034_defaults', DEFAULTS_FORM],
        ['test_elicitation_sep1330_enums', ENUMS_FORM],
      ] as const) {
        it(`${tool}: the requested schema reaches the host intact`, async () => {
          host.seen.elicitation.length = 0;
          host.elicit = () => ({ action: 'accept', content: tool === 'test_elicitation_sep1034_defaults' ? { name: 'Jane', age: 31 } : { untitledSingle: 'option2', untitledMulti: ['option1', 'option3'] } });
          try {
            const result = await host.client.callTool({ name: tool, arguments: {} });
            assert.notEqual(result.isError, true, textOf(result));
            assert.equal(host.seen.elicitation.length, 1);
            assert.deepEqual(host.seen.elicitation[0]!['requestedSchema'], schema);
            assert.equal(
              textOf(result),
              tool === 'test_elicitation_sep1034_defaults'
                ? 'Elicitation completed: action=accept, content={"name":"Jane","age":31}'
                : 'Elicitation completed: action=accept, content={"untitledSingle":"option2","untitledMulti":["option1","option3"]}',
            );
          } finally {
            host.elicit = DEFAULT_ELICIT;
          }
        });
      }

      it('a host that declines: the server sees decline, without content', async () => {
        host.elicit = () => ({ action: 'decline', content: { username: 'should-not-pass' } });
        try {
          const result = await host.client.callTool({ name: 'test_elicitation', arguments: { message: 'Who are you?' } });
          assert.notEqual(result.isError, true, textOf(result));
          assert.equal(textOf(result), 'User response: action=decline, content={}');
          const record = await auditRecord(downEra, since, (r) => r['event'] === 'server.request' && r['agent'] === 'granted' && r['action'] === 'decline', 'elicitation declined');
          assert.equal(record['outcome'], 'ok');
        } finally {
          host.elicit = DEFAULT_ELICIT;
        }
      });

      it('an agent without a serverRequests grant: its host is never asked, the call fails, the refusal is audited (no-grant)', async () => {
        for (const [tool, args, method] of [
          ['test_sampling', { prompt: 'hi' }, 'sampling/createMessage'],
          ['test_elicitation', { message: 'hi' }, 'elicitation/create'],
        ] as const) {
          const result = await stranger.client.callTool({ name: tool, arguments: args });
          assert.equal(result.isError, true, `${tool}: ${textOf(result)}`);
          assert.match(textOf(result), /WARDEN_SERVER_REQUEST_DENIED/);
          // A 2025 server turns the refused request into its own error result; a 2026-07-28 call is refused by the broker.
          if (downEra === 'modern') assert.equal(refusalCode(result), 'WARDEN_SERVER_REQUEST_DENIED');
          const record = await auditRecord(downEra, since, (r) => r['event'] === 'server.request' && r['agent'] === 'ungranted' && r['method'] === method, `${method} refused`);
          assert.equal(record['decision'], 'deny');
          assert.equal(record['outcome'], 'refused');
          assert.equal(record['reason'], 'no-grant');
          assert.equal(record['server'], 'conformance');
          assert.match(String(record['correlationId']), /^[0-9a-f-]{36}$/);
          // The refused request was not measured: it never got that far.
          assert.equal(record['requestBytes'], undefined);
        }
        assert.equal(stranger.seen.sampling.length, 0);
        assert.equal(stranger.seen.elicitation.length, 0);
        // The agent's tool calls still work.
        assert.equal(textOf(await stranger.client.callTool({ name: 'test_simple_text', arguments: {} })), 'This is a simple text response for testing.');
      });

      it('a host that did not declare sampling: refused (host-cannot-answer); its elicitation still works', async () => {
        const result = await mute.client.callTool({ name: 'test_sampling', arguments: { prompt: 'hi' } });
        assert.equal(result.isError, true, textOf(result));
        assert.match(textOf(result), /WARDEN_SERVER_REQUEST_DENIED/);
        const record = await auditRecord(downEra, since, (r) => r['event'] === 'server.request' && r['reason'] === 'host-cannot-answer', 'host-cannot-answer');
        assert.equal(record['agent'], 'granted');
        assert.equal(record['method'], 'sampling/createMessage');
        assert.equal(record['decision'], 'deny');
        const elicited = await mute.client.callTool({ name: 'test_elicitation', arguments: { message: 'still there?' } });
        assert.notEqual(elicited.isError, true, textOf(elicited));
        assert.equal(mute.seen.elicitation.length, 1);
      });

      // Whatever the host does with a question, the call ends with it: for a 2025-era agent
      // the broker asks the host itself within the agent's request, for a 2026-07-28 agent
      // the answer comes with the retry. Neither leaves the call waiting for an answer that
      // will not come (the record would then say answer-timeout).
      it('a malformed answer from the host is refused (invalid-answer); the call ends with it and the next calls work', async () => {
        host.elicit = () => ({ action: 'accept', content: { username: BOGUS, email: 'x@example.test' } });
        try {
          const result = await host.client.callTool({ name: 'test_elicitation', arguments: { message: 'bogus?' } });
          assert.equal(result.isError, true, textOf(result));
          assert.ok(!textOf(result).includes('action=bogus'), textOf(result));
          const record = await auditRecord(downEra, since, (r) => r['event'] === 'server.request' && r['agent'] === 'granted' && r['outcome'] !== 'ok' && r['method'] === 'elicitation/create', 'malformed answer refused');
          assert.equal(record['reason'], 'invalid-answer');
          assert.equal(record['decision'], 'deny');
          const call = await auditRecord(downEra, since, (r) => r['event'] === 'tools/call' && r['correlationId'] === record['correlationId'], 'the refused call');
          assert.equal(call['tool'], 'test_elicitation');
        } finally {
          host.elicit = DEFAULT_ELICIT;
        }
        assert.equal(textOf(await host.client.callTool({ name: 'test_simple_text', arguments: {} })), 'This is a simple text response for testing.');
        const again = await host.client.callTool({ name: 'test_elicitation', arguments: { message: 'again?' } });
        assert.equal(textOf(again), 'User response: action=accept, content={"username":"ursula","email":"ursula@example.test"}');
      });

      it('a host that fails the question (an error answer): the call does not wait for an answer that will not come', async () => {
        host.elicit = () => {
          throw new Error('the user closed the dialog');
        };
        try {
          if (agentEra === 'legacy') {
            // The broker asked the host itself: the error goes straight to the waiting call.
            const result = await host.client.callTool({ name: 'test_elicitation', arguments: { message: 'will fail' } });
            assert.equal(result.isError, true, textOf(result));
            assert.ok(!textOf(result).includes('action=accept'), textOf(result));
          } else {
            // A 2026-07-28 client gives up its own request and never retries: the call waits
            // for the answer time (5 s here), then the question is withdrawn and the call cancelled.
            await assert.rejects(host.client.callTool({ name: 'test_elicitation', arguments: { message: 'will fail' } }), /the user closed the dialog/);
          }
          const record = await auditRecord(downEra, since, (r) => r['event'] === 'server.request' && r['agent'] === 'granted' && r['outcome'] !== 'ok' && r['method'] === 'elicitation/create', 'failed answer');
          assert.equal(record['outcome'], 'failed');
          assert.equal(record['reason'], agentEra === 'legacy' ? 'host-failed' : 'answer-timeout');
          // The call has ended (its record is written when it does), so it is no longer in flight.
          const call = await auditRecord(downEra, since, (r) => r['event'] === 'tools/call' && r['correlationId'] === record['correlationId'], 'the failed call');
          assert.equal(call['tool'], 'test_elicitation');
          assert.notEqual(call['outcome'], 'ok');
        } finally {
          host.elicit = DEFAULT_ELICIT;
        }
        const again = await host.client.callTool({ name: 'test_elicitation', arguments: { message: 'again?' } });
        assert.equal(textOf(again), 'User response: action=accept, content={"username":"ursula","email":"ursula@example.test"}');
      });

      it('progress and log messages after the host has answered still reach the agent', async () => {
        // On `mute`, whose session level no other test relies on.
        mute.seen.logs.length = 0;
        mute.seen.progress.length = 0;
        mute.seen.elicitation.length = 0;
        if (agentEra === 'legacy') await mute.client.setLoggingLevel('debug');
        mute.elicit = () => ({ action: 'accept', content: { go: true } });
        let result;
        try {
          result = await mute.client.callTool(
            { name: 'test_elicitation_then_report', arguments: {}, ...(agentEra === 'modern' ? { _meta: logMeta('debug') } : {}) },
            { onprogress: () => undefined },
          );
        } finally {
          mute.elicit = DEFAULT_ELICIT;
        }
        assert.equal(textOf(result), 'Reported after: action=accept');
        assert.equal(mute.seen.elicitation.length, 1);
        await barrier(mute);
        // A 2026-07-28 client reports progress of its own while it fulfils a question; only the server's counts here.
        assert.deepEqual(mute.seen.progress.filter((update) => update['total'] === 2).map((update) => update['progress']), [1, 2]);
        assert.deepEqual(mute.seen.logs.map((log) => log['data']), ['Reported after the answer']);
      });

      // Over stdio a 2025-era server's question carries nothing that ties it to the call that
      // caused it, so with two agents using the server it is refused rather than guessed. A
      // 2026-07-28 server's question comes in the answer to the broker's own request, which
      // names its call: it is tied to it even with other calls in flight (docs/policy.md).
      if (downEra === 'legacy') {
        it('a 2025-era stdio server used by two agents: its question cannot be tied to a call and is refused (unattributable), never guessed', async () => {
          const result = await shared.client.callTool({ name: 'test_sampling', arguments: { prompt: 'hi' } });
          assert.equal(result.isError, true, textOf(result));
          assert.match(textOf(result), /WARDEN_SERVER_REQUEST_DENIED/);
          assert.equal(shared.seen.sampling.length, 0);
          const record = await auditRecord(downEra, since, (r) => r['event'] === 'server.request' && r['reason'] === 'unattributable', 'unattributable');
          assert.equal(record['decision'], 'deny');
          assert.equal(record['method'], 'sampling/createMessage');
          assert.equal(record['agent'], undefined);
        });
      } else {
        it('a 2026-07-28 stdio server used by two agents: its question is tied to its own call, also with another call in flight', async () => {
          shared.seen.sampling.length = 0;
          const [sampled, other] = await Promise.all([
            shared.client.callTool({ name: 'test_sampling', arguments: { prompt: 'whose call?' } }),
            shared.client.callTool({ name: 'test_tool_with_progress', arguments: {} }),
          ]);
          assert.equal(textOf(sampled), `LLM response: ${SAMPLED}`);
          assert.match(textOf(other), /^Progress reported under token/);
          assert.equal(shared.seen.sampling.length, 1);
          const record = await auditRecord(downEra, since, (r) => r['event'] === 'server.request' && r['method'] === 'sampling/createMessage', 'tied to its call');
          assert.equal(record['decision'], 'allow');
          assert.equal(record['agent'], 'granted');
          const call = await auditRecord(downEra, since, (r) => r['event'] === 'tools/call' && r['correlationId'] === record['correlationId'], 'the sampling call');
          assert.equal(call['tool'], 'test_sampling');
        });
      }

      describe('log messages during a call', () => {
        if (agentEra === 'legacy') {
          it('a session that set no level gets none', async () => {
            host.seen.logs.length = 0;
            const result = await host.client.callTool({ name: 'test_tool_with_logging', arguments: {} });
            assert.equal(textOf(result), 'Tool with logging executed successfully');
            await barrier(host);
            assert.equal(host.seen.logs.length, 0);
          });
        } else {
          it('a request without the log level _meta gets none', async () => {
            host.seen.logs.length = 0;
            const result = await host.client.callTool({ name: 'test_tool_with_logging', arguments: {} });
            assert.equal(textOf(result), 'Tool with logging executed successfully');
            await barrier(host);
            assert.equal(host.seen.logs.length, 0);
          });
        }

        it('level debug: the agent gets the server\'s three messages, cleaned, counted in the call\'s audit record', async () => {
          host.seen.logs.length = 0;
          if (agentEra === 'legacy') await host.client.setLoggingLevel('debug');
          const result = await host.client.callTool({ name: 'test_tool_with_logging', arguments: {}, ...(agentEra === 'modern' ? { _meta: logMeta('debug') } : {}) });
          assert.equal(textOf(result), 'Tool with logging executed successfully');
          assert.ok(await waitFor(() => host.seen.logs.length >= 3, 100, 20), `got ${host.seen.logs.length} log messages`);
          assert.deepEqual(
            host.seen.logs.map((log) => [log['level'], log['data'], log['logger']]),
            [
              ['info', 'Tool execution started', 'conformance-server'],
              ['info', 'Tool processing data', 'conformance-server'],
              ['info', 'Tool execution completed', 'conformance-server'],
            ],
          );
          const record = await auditRecord(downEra, since, (r) => r['event'] === 'tools/call' && r['agent'] === 'granted' && r['tool'] === 'test_tool_with_logging' && r['logMessages'] !== undefined, 'logMessages counted');
          assert.deepEqual(record['logMessages'], { forwarded: 3 });
        });

        it('level error: the info messages are not passed on', async () => {
          host.seen.logs.length = 0;
          if (agentEra === 'legacy') await host.client.setLoggingLevel('error');
          const result = await host.client.callTool({ name: 'test_tool_with_logging', arguments: {}, ...(agentEra === 'modern' ? { _meta: logMeta('error') } : {}) });
          assert.equal(textOf(result), 'Tool with logging executed successfully');
          await barrier(host);
          assert.equal(host.seen.logs.length, 0);
        });
      });

      if (agentEra === 'legacy') {
        describe('resource subscriptions (2025-era agent)', () => {
          it('subscribe: an update is delivered; unsubscribe: no more, and the downstream subscription ends', async () => {
            host.seen.updates.length = 0;
            assert.deepEqual(await host.client.subscribeResource({ uri: 'test://watched-resource' }), {});
            const first = await updateWatched(host);
            // A 2025 downstream counts its subscribed connections: the broker's one subscription.
            if (downEra === 'legacy') assert.match(textOf(first), /; 1 subscribed connection\(s\) notified$/);
            assert.ok(await waitFor(() => host.seen.updates.length >= 1, 100, 20), 'the update reached the agent');
            assert.deepEqual(host.seen.updates, ['test://watched-resource']);
            const subscribed = await auditRecord(downEra, since, (r) => r['event'] === 'resources/subscribe' && r['agent'] === 'granted', 'resources/subscribe');
            assert.equal(subscribed['decision'], 'allow');

            assert.deepEqual(await host.client.unsubscribeResource({ uri: 'test://watched-resource' }), {});
            const second = await updateWatched(host);
            if (downEra === 'legacy') assert.match(textOf(second), /; 0 subscribed connection\(s\) notified$/);
            await barrier(host);
            assert.deepEqual(host.seen.updates, ['test://watched-resource']);
            await auditRecord(downEra, since, (r) => r['event'] === 'resources/unsubscribe' && r['agent'] === 'granted', 'resources/unsubscribe');
          });

          it('subscribing to a URI the agent is not granted: WARDEN_RESOURCE_NOT_FOUND, nothing subscribed downstream', async () => {
            const { data } = await rpcError(host.client.subscribeResource({ uri: 'test://static-binary' }));
            assert.equal(data?.code, 'WARDEN_RESOURCE_NOT_FOUND');
            const { data: outside } = await rpcError(host.client.subscribeResource({ uri: 'file:///etc/passwd' }));
            assert.equal(outside?.code, 'WARDEN_RESOURCE_NOT_FOUND');
            const record = await auditRecord(downEra, since, (r) => r['event'] === 'resources/subscribe' && r['agent'] === 'granted' && r['uri'] === 'test://static-binary', 'refused subscribe');
            assert.equal(record['decision'], 'deny');
            if (downEra === 'legacy') assert.match(textOf(await updateWatched(host)), /; 0 subscribed connection\(s\) notified$/);
          });

          it('unsubscribing from a URI the session never subscribed to: WARDEN_RESOURCE_NOT_FOUND', async () => {
            const { data } = await rpcError(host.client.unsubscribeResource({ uri: 'test://static-text' }));
            assert.equal(data?.code, 'WARDEN_RESOURCE_NOT_FOUND');
          });
        });
      }
      if (agentEra === 'modern') {
        describe('resource subscriptions (2026-07-28 agent, subscriptions/listen)', () => {
          it('the listen acknowledgement names only the granted URIs; updates arrive on the stream; closing it ends the downstream subscription', async () => {
            assert.equal(host.client.getServerCapabilities()?.resources?.subscribe, true);
            host.seen.updates.length = 0;
            const subscription = await host.client.listen({ resourceSubscriptions: ['test://watched-resource', 'test://static-binary', 'file:///etc/passwd', 'test://watched-resource'], resourcesListChanged: true });
            try {
              assert.deepEqual(subscription.honoredFilter, { resourcesListChanged: true, resourceSubscriptions: ['test://watched-resource'] });
              const first = await updateWatched(host);
              if (downEra === 'legacy') assert.match(textOf(first), /; 1 subscribed connection\(s\) notified$/);
              assert.ok(await waitFor(() => host.seen.updates.length >= 1, 100, 20), 'the update reached the agent');
              assert.deepEqual(host.seen.updates, ['test://watched-resource']);
              const allowed = await auditRecord(downEra, since, (r) => r['event'] === 'resources/subscribe' && r['agent'] === 'granted' && r['uri'] === 'test://watched-resource', 'subscribe of the granted URI');
              assert.equal(allowed['decision'], 'allow');
              for (const uri of ['test://static-binary', 'file:///etc/passwd']) {
                const refused = await auditRecord(downEra, since, (r) => r['event'] === 'resources/subscribe' && r['agent'] === 'granted' && r['uri'] === uri, `subscribe of ${uri}`);
                assert.equal(refused['decision'], 'deny');
                assert.equal(refused['reason'], 'WARDEN_RESOURCE_NOT_FOUND');
              }
            } finally {
              const t0 = performance.now();
              await subscription.close();
              console.log('CLOSE', performance.now() - t0);
            }
            // The stream is gone, and with it the broker's subscription downstream (a 2025
            // downstream counts it) once the broker has read the cancel.
            if (downEra === 'legacy') assert.ok(await waitFor(async () => /; 0 subscribed connection\(s\) notified$/.test(textOf(await updateWatched(host))), 20, 50), 'the downstream subscription ended');
            await barrier(host);
            const settled = host.seen.updates.length;
            await updateWatched(host);
            await barrier(host);
            assert.equal(host.seen.updates.length, settled, 'no update after the stream closed');
          });

          it('two streams naming the same URI each get the update once', async () => {
            host.seen.updates.length = 0;
            const [one, two] = await Promise.all([
              host.client.listen({ resourceSubscriptions: ['test://watched-resource'] }),
              host.client.listen({ resourceSubscriptions: ['test://watched-resource', 'test://static-text'] }),
            ]);
            try {
              assert.deepEqual(two.honoredFilter, { resourceSubscriptions: ['test://watched-resource', 'test://static-text'] });
              await updateWatched(host);
              assert.ok(await waitFor(() => host.seen.updates.length >= 2, 100, 20), `got ${host.seen.updates.length} updates`);
              await barrier(host);
              assert.deepEqual(host.seen.updates, ['test://watched-resource', 'test://watched-resource']);
            } finally {
              await Promise.all([one.close(), two.close()]);
            }
          });

          it('an agent with no grant for the URIs: the acknowledgement names none, each refusal is audited', async () => {
            const subscription = await stranger.client.listen({ resourceSubscriptions: ['file:///etc/passwd'], toolsListChanged: true });
            try {
              assert.deepEqual(subscription.honoredFilter, { toolsListChanged: true });
            } finally {
              await subscription.close();
            }
            const refused = await auditRecord(downEra, since, (r) => r['event'] === 'resources/subscribe' && r['agent'] === 'ungranted' && r['uri'] === 'file:///etc/passwd', 'refused subscribe');
            assert.equal(refused['decision'], 'deny');
          });

          it('a listen naming more than 100 resources is refused whole, with a code, and audited', async () => {
            const uris = Array.from({ length: 101 }, (_, index) => `test://many/${index}`);
            const { code, data } = await rpcError(host.client.listen({ resourceSubscriptions: uris }));
            assert.equal(code, -32602);
            assert.equal(data?.code, 'WARDEN_ARGUMENTS_INVALID');
            const record = await auditRecord(downEra, since, (r) => r['event'] === 'subscriptions/listen' && r['agent'] === 'granted', 'refused listen');
            assert.equal(record['decision'], 'deny');
            assert.equal(record['resources'], 101);
            // Nothing was subscribed for it, and the connection still works.
            assert.equal(auditRecords(downEra).filter((r) => r['event'] === 'resources/subscribe' && String(r['uri']).startsWith('test://many/') && !since.has((r as Record<symbol, string>)[AT]!)).length, 0);
            await barrier(host);
          });
        });
      }
    });
  }
}


// roots/list: the conformance fixture never asks for roots, so a server that does is written
// here, into the temporary folder, and pinned like any other. The broker answers from
// servers.<key>.roots in the config, the same for every agent, in both eras.
describe('roots/list', () => {
  const ROOTS = [{ uri: 'file:///srv/projects/alpha', name: 'Alpha' }, { uri: 'file:///srv/shared' }];
  let client: Client;
  let config: string;

  before(async () => {
    const base = join(dir, 'roots');
    const script = join(base, 'roots-server.mjs');
    mkdirSync(base, { recursive: true });
    writeFileSync(
      script,
      [
        `import { Server, inputRequired, inputResponse } from ${JSON.stringify(import.meta.resolve('@modelcontextprotocol/server'))};`,
        `import { serveStdio } from ${JSON.stringify(import.meta.resolve('@modelcontextprotocol/server/stdio'))};`,
        `const TOOLS = ${JSON.stringify(ROOTS_TOOLS)};`,
        'serveStdio(() => {',
        "  const server = new Server({ name: 'roots', version: '1.0.0' }, { capabilities: { tools: {} } });",
        "  server.setRequestHandler('tools/list', async () => ({ tools: TOOLS }));",
        "  server.setRequestHandler('tools/call', async (request, ctx) => {",
        "    const answer = inputResponse(ctx.mcpReq.inputResponses, 'roots');",
        "    if (answer.kind === 'missing') return inputRequired({ inputRequests: { roots: inputRequired.listRoots() } });",
        "    if (answer.kind !== 'roots') return { content: [{ type: 'text', text: 'expected roots, got ' + answer.kind }], isError: true };",
        "    return { content: [{ type: 'text', text: JSON.stringify(answer.roots) }] };",
        '  });',
        '  return server;',
        '});',
        '',
      ].join('\n'),
    );
    const tools = ROOTS_TOOLS.map((tool) => ({ ...tool, access: 'read' }));
    writeManifest(join(base, 'manifests/roots-legacy.json'), stdioManifest('roots-legacy', script, tools, { era: 'legacy' }));
    writeManifest(join(base, 'manifests/roots-modern.json'), stdioManifest('roots-modern', script, tools, { era: 'modern' }));
    writeManifest(join(base, 'manifests/bare.json'), stdioManifest('bare', script, tools, { era: 'legacy' }));
    config = writeConfig(join(base, 'warden.yaml'), {
      version: 1,
      servers: {
        rl: { manifest: 'roots-legacy.json', roots: ROOTS },
        rm: { manifest: 'roots-modern.json', roots: ROOTS },
        bare: { manifest: 'bare.json' },
      },
      agents: { reader: { allow: [{ tools: ['*'] }] } },
    });
    client = new Client({ name: 'roots-agent', version: '1.0.0' }, { capabilities: { roots: {} }, versionNegotiation: { mode: 'legacy' } });
    // The agent's host has roots of its own: they are never what a server is told.
    client.setRequestHandler('roots/list', async () => ({ roots: [{ uri: 'file:///home/agent/secret-project' }] }));
    await client.connect(new StdioClientTransport({ command: process.execPath, args: [CLI, 'serve', '--config', config, '--stdio', '--agent', 'reader'], env: { PATH: process.env['PATH'] ?? '' }, stderr: 'ignore' }));
  });

  after(async () => {
    await client?.close();
  });

  for (const [server, era] of [['rl', 'legacy'], ['rm', 'modern']] as const) {
    it(`a ${era} server is told the roots its config entry lists, never the host's; audited`, async () => {
      const before = rootsAudit().length;
      const result = await client.callTool({ name: `${server}__list_roots`, arguments: {} });
      assert.notEqual(result.isError, true, textOf(result));
      assert.deepEqual(JSON.parse(textOf(result)), ROOTS);
      assert.ok(await waitFor(() => rootsAudit().length > before, 100, 50), 'roots/list audited');
      const record = rootsAudit().filter((r) => r['server'] === server).at(-1)!;
      assert.equal(record['decision'], 'allow');
      assert.equal(record['outcome'], 'ok');
      assert.equal(record['roots'], 2);
    });
  }

  it('a server without roots in the config is told an empty list', async () => {
    const result = await client.callTool({ name: 'bare__list_roots', arguments: {} });
    assert.notEqual(result.isError, true, textOf(result));
    assert.deepEqual(JSON.parse(textOf(result)), []);
    assert.ok(await waitFor(() => rootsAudit().some((r) => r['server'] === 'bare' && r['roots'] === 0), 100, 50), 'roots/list audited for bare');
  });

  function rootsAudit(): Record<string, unknown>[] {
    const folder = join(dir, 'roots', 'audit');
    return readdirSync(folder)
      .filter((name) => name.endsWith('.jsonl'))
      .flatMap((name) => readFileSync(join(folder, name), 'utf8').split('\n'))
      .filter((line) => line.includes('"roots/list"'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }
});
