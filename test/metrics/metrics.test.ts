import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { memoryAuditTrail, type AuditRecord } from '../../src/audit/trail.ts';
import { Broker } from '../../src/broker.ts';
import { loadConfig, sha256Hex } from '../../src/config/load.ts';
import { ConfigReloader } from '../../src/config/reload.ts';
import { startHttpFront, type HttpFront } from '../../src/front/http.ts';
import { BrokerMetrics } from '../../src/metrics/broker-metrics.ts';
import { startMetricsListener, type MetricsListener } from '../../src/metrics/listener.ts';
import { openStateStore } from '../../src/state/store.ts';
import { NOTES_SERVER, NOTES_TOOLS, refusalCode, startBroker, stdioManifest, tempDir, writeConfig, writeManifest, writeYaml } from '../helpers.ts';
import { get, parseSamples, scrape, seriesOf, valueOf } from './scrape.ts';

const { dir, cleanup } = tempDir('warden-metrics-');
const TOKEN = 'metrics-agent-token-0123456789';
const silent = pino({ level: 'silent' });
let configFile: string;
let broker: Broker;
let trail: ReturnType<typeof memoryAuditTrail>;
let listener: MetricsListener;
let front: HttpFront;

function policy(): Record<string, unknown> {
  return {
    version: 1,
    servers: { notes: { manifest: 'notes.json' }, broken: { manifest: 'broken.json' }, api: { manifest: 'api.json' } },
    credentials: {
      notes: { NOTES_API_TOKEN: { file: 'secrets/notes-token' } },
      broken: { NOTES_API_TOKEN: { env: 'WARDEN_METRICS_TEST_NEVER_SET' } },
    },
    agents: {
      alice: {
        tokenSha256: sha256Hex(TOKEN),
        allow: [
          { tools: ['notes__echo', 'notes__get_note', 'notes__server_info', 'broken__echo', 'api__fetch', 'warden__run_code'] },
          { tools: ['notes__add_note'], access: ['write'], approval: 'required' },
        ],
      },
    },
    approvals: { waitSeconds: 0 },
    sandbox: { workers: 1, warmIsolates: 1, limits: { cpuMs: 200 }, codeMode: { workers: 1 } },
  };
}

before(async () => {
  delete process.env['WARDEN_METRICS_TEST_NEVER_SET'];
  const credentials = { credentials: [{ name: 'NOTES_API_TOKEN' }] };
  writeManifest(join(dir, 'manifests/notes.json'), { ...stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS), ...credentials });
  writeManifest(join(dir, 'manifests/broken.json'), { ...stdioManifest('broken', NOTES_SERVER, NOTES_TOOLS), ...credentials });
  writeManifest(join(dir, 'manifests/api.json'), {
    manifestVersion: 1,
    name: 'test.api',
    version: '1.0.0',
    serial: 1,
    // No egress rule allows it: every request is refused before a connection is made.
    transport: { type: 'http-api', baseUrl: 'http://127.0.0.1:9/api' },
    tools: [{ name: 'fetch', description: 'Fetches.', access: 'read', inputSchema: { type: 'object', properties: {}, additionalProperties: false }, http: { method: 'GET', path: '/thing' } }],
  });
  writeYaml(join(dir, 'secrets/notes-token'), `${randomBytes(18).toString('base64url')}\n`);
  configFile = writeConfig(join(dir, 'warden.yaml'), policy());
  const config = loadConfig(configFile);
  assert.equal(config.rejected.size, 0);
  trail = memoryAuditTrail();
  const metrics = new BrokerMetrics();
  // No retry of the server without its credential while the test runs: its state stays down.
  broker = await startBroker(config, { audit: trail, metrics, backoff: { initialMs: 600_000, maxMs: 600_000 } });
  listener = await startMetricsListener({ scrape: () => metrics.scrape(), ready: () => broker.ready }, { host: '127.0.0.1', port: 0 }, { allowedHosts: [], logger: silent });
  front = await startHttpFront(broker, { host: '127.0.0.1', port: 0 });
});

after(async () => {
  await front?.close();
  await listener?.close();
  await broker?.close();
  cleanup();
});

function lastCall(): AuditRecord | undefined {
  return trail.records.filter((record) => record.event === 'tools/call').at(-1);
}

describe('metrics from the audit trail', () => {
  it('counts allowed, refused and failing calls by tool, decision, reason and outcome', async () => {
    assert.equal(refusalCode(await broker.callTool('alice', 'notes__echo', { text: 'one' })), undefined);
    assert.equal(refusalCode(await broker.callTool('alice', 'notes__echo', { text: 'two' })), undefined);
    assert.equal(refusalCode(await broker.callTool('alice', 'notes__echo', { text: 3 })), 'WARDEN_ARGUMENTS_INVALID');
    assert.equal(refusalCode(await broker.callTool('alice', 'notes__delete_note', { id: 1 })), 'WARDEN_TOOL_NOT_FOUND');
    assert.equal(refusalCode(await broker.callTool('alice', 'notes__no_such_tool', {})), 'WARDEN_TOOL_NOT_FOUND');
    const missing = await broker.callTool('alice', 'notes__get_note', { id: 999 });
    assert.equal(missing.isError, true);
    assert.equal(refusalCode(missing), undefined, 'the tool itself failed');
    assert.equal(refusalCode(await broker.callTool('alice', 'broken__echo', { text: 'x' })), 'WARDEN_SERVER_UNAVAILABLE');

    const samples = await scrape(listener.url);
    const calls = (labels: Record<string, string>) => valueOf(samples, 'mcp_warden_tool_calls_total', labels);
    assert.equal(calls({ tool: 'notes__echo', decision: 'allow', reason: 'none', outcome: 'ok' }), 2);
    assert.equal(calls({ tool: 'notes__echo', decision: 'deny', reason: 'WARDEN_ARGUMENTS_INVALID', outcome: 'refused' }), 1);
    // A tool of the catalog keeps its name even when not granted; a made-up one does not.
    assert.equal(calls({ tool: 'notes__delete_note', decision: 'deny', reason: 'WARDEN_TOOL_NOT_FOUND', outcome: 'refused' }), 1);
    assert.equal(calls({ tool: '(unknown)', decision: 'deny', reason: 'WARDEN_TOOL_NOT_FOUND', outcome: 'refused' }), 1);
    assert.equal(calls({ tool: 'notes__get_note', decision: 'allow', reason: 'none', outcome: 'tool_error' }), 1);
    assert.equal(calls({ tool: 'broken__echo', decision: 'deny', reason: 'WARDEN_SERVER_UNAVAILABLE', outcome: 'refused' }), 1);
    assert.equal(seriesOf(samples, 'mcp_warden_tool_calls_total').length, 6);
    assert.equal(valueOf(samples, 'mcp_warden_agent_calls_total', { agent: 'alice', decision: 'allow' }), 3);
    assert.equal(valueOf(samples, 'mcp_warden_agent_calls_total', { agent: 'alice', decision: 'deny' }), 4);
    // Latency: one observation per call, in the tool's and outcome's histogram.
    assert.equal(valueOf(samples, 'mcp_warden_tool_call_duration_seconds_count', { tool: 'notes__echo', outcome: 'ok' }), 2);
    assert.equal(valueOf(samples, 'mcp_warden_tool_call_duration_seconds_count', { tool: 'notes__echo', outcome: 'refused' }), 1);
    assert.equal(valueOf(samples, 'mcp_warden_tool_call_duration_seconds_bucket', { tool: 'notes__echo', outcome: 'ok', le: '+Inf' }), 2);
    assert.equal(valueOf(samples, 'mcp_warden_audit_records_total', { event: 'tools/call' }), 7);
  });

  it('shows each server\'s state, read when scraped', async () => {
    const samples = await scrape(listener.url);
    const state = (server: string, value: string) => valueOf(samples, 'mcp_warden_server_state', { server, state: value });
    assert.equal(state('notes', 'ready'), 1);
    assert.equal(state('notes', 'down'), 0);
    assert.equal(state('api', 'ready'), 1);
    assert.equal(state('broken', 'down'), 1, 'its credential has no value');
    assert.equal(state('broken', 'ready'), 0);
    assert.equal(seriesOf(samples, 'mcp_warden_server_state').length, 3 * 5);
    assert.equal(valueOf(samples, 'mcp_warden_server_events_total', { server: 'notes', state: 'ready' }), 1);
    assert.equal(valueOf(samples, 'mcp_warden_server_events_total', { server: 'broken', state: 'down' }), 1);
    assert.equal(valueOf(samples, 'mcp_warden_ready'), 1);
    assert.equal(valueOf(samples, 'mcp_warden_audit_trail_healthy'), 1);
  });

  it('counts redactions by kind, from the call\'s record', async () => {
    const result = await broker.callTool('alice', 'notes__server_info', {});
    assert.equal(refusalCode(result), undefined);
    const redactions = lastCall()?.['redactions'] as { credential: number } | undefined;
    assert.ok(redactions && redactions.credential > 0, 'the injected token was removed');
    const samples = await scrape(listener.url);
    assert.equal(valueOf(samples, 'mcp_warden_redactions_total', { server: 'notes', kind: 'credential' }), redactions.credential);
    assert.equal(valueOf(samples, 'mcp_warden_redactions_total', { server: 'notes', kind: 'detected' }), undefined);
  });

  it('counts egress refusals by server and reason', async () => {
    assert.equal(refusalCode(await broker.callTool('alice', 'api__fetch', {})), 'WARDEN_EGRESS_DENIED');
    const samples = await scrape(listener.url);
    assert.equal(valueOf(samples, 'mcp_warden_egress_refusals_total', { server: 'api', reason: 'not-allowlisted' }), 1);
    assert.equal(seriesOf(samples, 'mcp_warden_egress_refusals_total').length, 1);
  });

  it('counts sandbox kills by the limit broken', async () => {
    const result = await broker.callTool('alice', 'warden__run_code', { code: 'for (;;);' });
    assert.equal(refusalCode(result), 'WARDEN_SANDBOX_LIMIT');
    const samples = await scrape(listener.url);
    assert.equal(valueOf(samples, 'mcp_warden_sandbox_kills_total', { reason: 'cpu' }), 1);
    assert.equal(seriesOf(samples, 'mcp_warden_sandbox_kills_total').length, 1);
    assert.equal(valueOf(samples, 'mcp_warden_tool_calls_total', { tool: 'warden__run_code', decision: 'allow', reason: 'WARDEN_SANDBOX_LIMIT', outcome: 'refused' }), 1);
  });

  it('shows approvals pending, requested and decided', async () => {
    const held = await broker.callTool('alice', 'notes__add_note', { title: 't', body: 'b' });
    assert.equal(refusalCode(held), 'WARDEN_APPROVAL_PENDING');
    let samples = await scrape(listener.url);
    assert.equal(valueOf(samples, 'mcp_warden_approvals_pending'), 1);
    assert.equal(valueOf(samples, 'mcp_warden_approvals_requested_total', { kind: 'out-of-band' }), 1);

    const store = openStateStore(join(dir, 'state'), 'read-write');
    try {
      const [pending] = store.approvals.list({ statuses: ['pending'], limit: 10 });
      assert.ok(pending);
      store.approvals.decide(pending.id, 'denied', 'security', 'not today', Date.now());
    } finally {
      store.close();
    }
    broker.refreshState();
    samples = await scrape(listener.url);
    assert.equal(valueOf(samples, 'mcp_warden_approvals_pending'), 0);
    assert.equal(valueOf(samples, 'mcp_warden_approvals_decided_total', { kind: 'out-of-band', verdict: 'denied' }), 1);
  });

  it('shows the kill switch and counts its changes', async () => {
    const store = openStateStore(join(dir, 'state'), 'read-write');
    try {
      store.killSwitch.set('readonly', 'security', Date.now());
      broker.refreshState();
      let samples = await scrape(listener.url);
      assert.equal(valueOf(samples, 'mcp_warden_kill_switch', { state: 'readonly' }), 1);
      assert.equal(valueOf(samples, 'mcp_warden_kill_switch', { state: 'off' }), 0);
      assert.equal(valueOf(samples, 'mcp_warden_ready'), 1, 'a kill switch is policy, not unreadiness');
      store.killSwitch.set('off', 'security', Date.now());
      broker.refreshState();
      samples = await scrape(listener.url);
      assert.equal(valueOf(samples, 'mcp_warden_kill_switch', { state: 'off' }), 1);
      assert.equal(valueOf(samples, 'mcp_warden_kill_switch_changes_total', { to: 'readonly' }), 1);
      assert.equal(valueOf(samples, 'mcp_warden_kill_switch_changes_total', { to: 'off' }), 1);
      assert.equal(valueOf(samples, 'mcp_warden_kill_switch_changes_total', { to: 'on' }), 0);
    } finally {
      store.close();
    }
  });

  it('counts config reloads applied and refused', async () => {
    let samples = await scrape(listener.url);
    assert.equal(valueOf(samples, 'mcp_warden_config_reloads_total', { result: 'applied' }), 0);
    assert.equal(valueOf(samples, 'mcp_warden_config_reloads_total', { result: 'refused' }), 0);
    await broker.applyConfig(loadConfig(configFile));
    const bad = writeYaml(join(dir, 'bad.yaml'), { version: 1, servers: {}, agents: {}, nonsense: true });
    assert.equal((await new ConfigReloader(broker, bad).reload('signal')).outcome, 'refused');
    samples = await scrape(listener.url);
    assert.equal(valueOf(samples, 'mcp_warden_config_reloads_total', { result: 'applied' }), 1);
    assert.equal(valueOf(samples, 'mcp_warden_config_reloads_total', { result: 'refused' }), 1);
    // The reloaded config's names are still label values.
    assert.equal(refusalCode(await broker.callTool('alice', 'notes__echo', { text: 'after' })), undefined);
    samples = await scrape(listener.url);
    assert.equal(valueOf(samples, 'mcp_warden_tool_calls_total', { tool: 'notes__echo', decision: 'allow', reason: 'none', outcome: 'ok' }), 3);
  });

  it('counts HTTP authentication failures by reason', async () => {
    const answer = await get(front.url, '/mcp', 'POST', { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' });
    assert.equal(answer.status, 401);
    const samples = await scrape(listener.url);
    assert.equal(valueOf(samples, 'mcp_warden_auth_failures_total', { reason: 'missing-token' }), 1);
  });

  it('exposes the process metrics without the runtime version', async () => {
    const samples = await scrape(listener.url);
    assert.ok(seriesOf(samples, 'process_resident_memory_bytes').length === 1 || seriesOf(samples, 'process_cpu_seconds_total').length === 1);
    assert.ok(seriesOf(samples, 'nodejs_eventloop_lag_seconds').length === 1);
    assert.equal(seriesOf(samples, 'nodejs_version_info').length, 0);
    const own = new Set(samples.map((sample) => sample.name).filter((name) => !name.startsWith('process_') && !name.startsWith('nodejs_')));
    for (const name of own) assert.match(name, /^mcp_warden_/);
  });
});

describe('label cardinality', () => {
  it('made-up tool names and agents share one label value, however many there are', async () => {
    const config = loadConfig(writeConfig(join(dir, 'second/warden.yaml'), { version: 1, servers: {}, agents: { bob: { allow: [{ tools: ['*'] }] } } }));
    const metrics = new BrokerMetrics();
    const second = await startBroker(config, { metrics });
    try {
      const names = Array.from({ length: 200 }, (_, i) => [`x__made_up_${i}`, `evil"} 1\nmcp_warden_ready 0 #${i}`, `ünïcode_${'z'.repeat(i)}`][i % 3]!);
      for (const name of names) assert.equal(refusalCode(await second.callTool('bob', name, {})), 'WARDEN_TOOL_NOT_FOUND');
      assert.equal(refusalCode(await second.callTool('mallory', 'x__y', {})), 'WARDEN_UNAUTHENTICATED');
      const { text } = await metrics.scrape();
      assert.doesNotMatch(text, /made_up|evil|ünïcode|mallory/);
      const samples = parseSamples(text);
      assert.deepEqual(
        seriesOf(samples, 'mcp_warden_tool_calls_total').map((sample) => [sample.labels, sample.value]),
        [
          [{ tool: '(unknown)', decision: 'deny', reason: 'WARDEN_TOOL_NOT_FOUND', outcome: 'refused' }, 200],
          [{ tool: '(unknown)', decision: 'deny', reason: 'WARDEN_UNAUTHENTICATED', outcome: 'refused' }, 1],
        ],
      );
      assert.equal(valueOf(samples, 'mcp_warden_agent_calls_total', { agent: 'bob', decision: 'deny' }), 200);
      assert.equal(valueOf(samples, 'mcp_warden_agent_calls_total', { agent: '(unknown)', decision: 'deny' }), 1);
      assert.equal(seriesOf(samples, 'mcp_warden_tool_call_duration_seconds_count').length, 1);
    } finally {
      await second.close();
    }
    // Two brokers in one process keep their own counts.
    const first = await scrape(listener.url);
    assert.ok((valueOf(first, 'mcp_warden_tool_calls_total', { tool: '(unknown)', decision: 'deny', reason: 'WARDEN_TOOL_NOT_FOUND', outcome: 'refused' }) ?? 0) < 200);
    assert.equal(valueOf(first, 'mcp_warden_tool_calls_total', { tool: '(unknown)', decision: 'deny', reason: 'WARDEN_UNAUTHENTICATED', outcome: 'refused' }), undefined);
  });
});

describe('health', () => {
  it('/healthz answers while the process serves; /readyz while the broker can serve calls', async () => {
    assert.deepEqual(await bodyOf('/healthz'), [200, 'ok\n']);
    assert.deepEqual(await bodyOf('/readyz'), [200, 'ok\n']);
    const head = await get(listener.url, '/readyz', 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
  });

  it('/readyz turns 503 when the audit trail cannot be written, before start and after close', async () => {
    let broken = false;
    const failing = {
      write(_record: AuditRecord) {
        if (broken) throw new Error('ENOSPC');
      },
      get healthy() {
        return !broken;
      },
      close() {},
    };
    const config = loadConfig(writeConfig(join(dir, 'third/warden.yaml'), { version: 1, servers: {}, agents: { bob: { allow: [] } } }));
    const metrics = new BrokerMetrics();
    const third = new Broker(config, { logger: silent, audit: failing, metrics });
    const health = await startMetricsListener({ scrape: () => metrics.scrape(), ready: () => third.ready }, { host: '127.0.0.1', port: 0 }, { allowedHosts: [], logger: silent });
    try {
      assert.deepEqual(await bodyOf('/readyz', health.url), [503, 'not ready\n'], 'not started yet');
      await third.start();
      assert.deepEqual(await bodyOf('/readyz', health.url), [200, 'ok\n']);
      broken = true;
      assert.equal(refusalCode(await third.callTool('bob', 'x__y', {})), 'WARDEN_INTERNAL');
      assert.deepEqual(await bodyOf('/readyz', health.url), [503, 'not ready\n']);
      assert.deepEqual(await bodyOf('/healthz', health.url), [200, 'ok\n'], 'the process still serves');
      const samples = await scrape(health.url);
      assert.equal(valueOf(samples, 'mcp_warden_audit_trail_healthy'), 0);
      assert.equal(valueOf(samples, 'mcp_warden_ready'), 0);
      broken = false;
      await third.close();
      assert.deepEqual(await bodyOf('/readyz', health.url), [503, 'not ready\n'], 'closed');
    } finally {
      await health.close();
    }
  });

  it('health answers carry no version, config, server name or reason', async () => {
    for (const path of ['/healthz', '/readyz']) {
      const answer = await get(listener.url, path);
      assert.match(answer.body, /^(ok|not ready)\n$/);
      assert.equal(answer.headers['server'], undefined);
      assert.equal(answer.headers['x-powered-by'], undefined);
      assert.equal(answer.headers['cache-control'], 'no-store');
    }
  });
});

async function bodyOf(path: string, base = listener.url): Promise<[number, string]> {
  const answer = await get(base, path);
  return [answer.status, answer.body];
}
