import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { CLI, NOTES_SERVER, NOTES_TOOLS, refusalCode, runCli, stdioManifest, tempDir, waitFor, writeConfig, writeManifest } from '../helpers.ts';
import { get, scrape, valueOf } from '../metrics/scrape.ts';

const { dir, cleanup } = tempDir('warden-metrics-serve-');
after(cleanup);

describe('serve with metrics', () => {
  it('serve --stdio listens where the config says (port 0: a free one, printed on stderr) and answers', async () => {
    writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
    const config = writeConfig(join(dir, 'warden.yaml'), {
      version: 1,
      servers: { notes: { manifest: 'notes.json' } },
      agents: { demo: { allow: [{ tools: ['notes__echo'] }] } },
      metrics: { listen: '127.0.0.1:0' },
    });
    const transport = new StdioClientTransport({ command: process.execPath, args: [CLI, 'serve', '--config', config, '--stdio', '--agent', 'demo'], env: { PATH: process.env['PATH'] ?? '' }, stderr: 'pipe' });
    let stderr = '';
    transport.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const client = new Client({ name: 'metrics-test', version: '1.0.0' }, { versionNegotiation: { mode: 'legacy' } });
    await client.connect(transport);
    try {
      assert.ok(await waitFor(() => /metrics at http:\/\/127\.0\.0\.1:\d+\/metrics/.test(stderr), 200, 50), stderr);
      const base = /metrics at (http:\/\/127\.0\.0\.1:\d+)\/metrics/.exec(stderr)![1]!;
      assert.notEqual(new URL(base).port, '0');

      assert.equal(refusalCode(await client.callTool({ name: 'notes__echo', arguments: { text: 'hi' } })), undefined);
      assert.equal(refusalCode(await client.callTool({ name: 'notes__nothing', arguments: {} })), 'WARDEN_TOOL_NOT_FOUND');
      const samples = await scrape(base);
      assert.equal(valueOf(samples, 'mcp_warden_tool_calls_total', { tool: 'notes__echo', decision: 'allow', reason: 'none', outcome: 'ok' }), 1);
      assert.equal(valueOf(samples, 'mcp_warden_tool_calls_total', { tool: '(unknown)', decision: 'deny', reason: 'WARDEN_TOOL_NOT_FOUND', outcome: 'refused' }), 1);
      assert.equal(valueOf(samples, 'mcp_warden_server_state', { server: 'notes', state: 'ready' }), 1);
      assert.deepEqual([(await get(base, '/healthz')).status, (await get(base, '/healthz')).body], [200, 'ok\n']);
      assert.deepEqual([(await get(base, '/readyz')).status, (await get(base, '/readyz')).body], [200, 'ok\n']);
      assert.equal((await get(base, '/mcp', 'POST')).status, 404, 'not the agents\' listener');
    } finally {
      await client.close();
    }
  });

  it('serve --http --metrics listens beside the agents\' listener and closes it on SIGTERM', async () => {
    const config = writeConfig(join(dir, 'http.yaml'), { version: 1, servers: {}, agents: { demo: { allow: [] } } });
    const child = spawn(process.execPath, [CLI, 'serve', '--config', config, '--http', '--listen', '127.0.0.1:0', '--metrics', '127.0.0.1:0'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      assert.ok(await waitFor(() => /metrics at http:\/\/127\.0\.0\.1:\d+\/metrics/.test(stderr) && /serving Streamable HTTP/.test(stderr), 400, 50), stderr);
      const base = /metrics at (http:\/\/127\.0\.0\.1:\d+)\/metrics/.exec(stderr)![1]!;
      const mcp = /serving Streamable HTTP at (http:\S+)/.exec(stderr)![1]!;
      assert.notEqual(new URL(base).port, new URL(mcp).port);
      assert.equal((await get(base, '/readyz')).status, 200);
      assert.equal((await get(new URL(mcp).origin, '/metrics')).status, 404, 'metrics are not on the agents\' listener');
      child.kill('SIGTERM');
      assert.equal(await exited, 0, stderr);
      await assert.rejects(get(base, '/healthz'), /ECONNREFUSED/);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('a metrics address that is taken stops serve --http (exit 6); serve --stdio serves without metrics and says so', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const taken = `127.0.0.1:${(blocker.address() as AddressInfo).port}`;
    try {
      const config = writeConfig(join(dir, 'taken.yaml'), { version: 1, servers: {}, agents: { demo: { allow: [] } }, metrics: { listen: taken } });
      const http = runCli(['serve', '--config', config, '--http', '--listen', '127.0.0.1:0']);
      assert.equal(http.code, 6, http.stderr);
      assert.match(http.stderr, /WARDEN_LISTEN_FAILED: cannot listen for metrics on 127\.0\.0\.1:\d+: EADDRINUSE/);

      const transport = new StdioClientTransport({ command: process.execPath, args: [CLI, 'serve', '--config', config, '--stdio', '--agent', 'demo'], env: { PATH: process.env['PATH'] ?? '' }, stderr: 'pipe' });
      let stderr = '';
      transport.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const client = new Client({ name: 'metrics-test', version: '1.0.0' }, { versionNegotiation: { mode: 'legacy' } });
      await client.connect(transport);
      try {
        assert.deepEqual((await client.listTools()).tools, []);
        assert.ok(await waitFor(() => /warning: cannot listen for metrics .*EADDRINUSE; serving without metrics/.test(stderr), 200, 50), stderr);
      } finally {
        await client.close();
      }
    } finally {
      blocker.close();
    }
  });
});
