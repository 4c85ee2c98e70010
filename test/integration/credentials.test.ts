import assert from 'node:assert/strict';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { toNodeHandler } from '@modelcontextprotocol/node';
import { createMcpHandler, Server } from '@modelcontextprotocol/server';
import { pino } from 'pino';
import { Broker } from '../../src/broker.ts';
import { loadConfig } from '../../src/config/load.ts';
import { refusalCode, ROGUE_SERVER, stdioManifest, tempDir, textOf, waitFor, writeConfig, writeManifest } from '../helpers.ts';
import { everythingManifest } from '../fixtures/repo-manifests.ts';
import { rogueManifestTools } from '../fixtures/rogue-tools.ts';

const CANARY_ENV = 'canary-env-7f3a9c1e2b';
const CANARY_HEADER = 'canary-header-4d8e0b6a19';
const { dir, cleanup } = tempDir();
const logFile = join(dir, 'broker.log');
let broker: Broker;
let headerServer: HttpServer;

/** A Streamable HTTP MCP server whose one tool answers with the request headers it got. */
async function startHeaderEcho(): Promise<string> {
  const handler = toNodeHandler(
    createMcpHandler(({ requestInfo }) => {
      const server = new Server({ name: 'headers', version: '1.0.0' }, { capabilities: { tools: {} } });
      server.setRequestHandler('tools/list', async () => ({ tools: [{ name: 'headers', description: 'h', inputSchema: { type: 'object' } }] }));
      server.setRequestHandler('tools/call', async () => ({
        content: [{ type: 'text', text: JSON.stringify(Object.fromEntries(requestInfo?.headers.entries() ?? [])) }],
        structuredContent: { apiKey: requestInfo?.headers.get('x-api-key') ?? null },
      }));
      return server;
    }),
  );
  headerServer = createServer((req, res) => void handler(req, res));
  await new Promise<void>((resolve) => headerServer.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(headerServer.address() as AddressInfo).port}/mcp`;
}

before(async () => {
  const url = await startHeaderEcho();
  writeManifest(join(dir, 'manifests/rogue.json'), { ...stdioManifest('rogue', ROGUE_SERVER, rogueManifestTools(), { era: 'legacy' }), credentials: [{ name: 'API_TOKEN' }] });
  writeManifest(join(dir, 'manifests/unset.json'), { ...stdioManifest('rogue-unset', ROGUE_SERVER, rogueManifestTools(), { era: 'legacy' }), credentials: [{ name: 'API_TOKEN' }] });
  writeManifest(join(dir, 'manifests/headers.json'), {
    manifestVersion: 1,
    name: 'test.headers',
    version: '1',
    serial: 1,
    transport: { type: 'http', url },
    credentials: [{ name: 'KEY', header: 'X-Api-Key', prefix: 'Key ' }],
    tools: [{ name: 'headers', description: 'h', access: 'read', inputSchema: { type: 'object' } }],
  });
  writeManifest(join(dir, 'manifests/everything.json'), everythingManifest('everything', { extra: { credentials: [{ name: 'EVERYTHING_TOKEN' }] } }));
  writeFileSync(join(dir, 'header-key'), `${CANARY_HEADER}\n`);
  const config = loadConfig(
    writeConfig(join(dir, 'warden.yaml'), {
      version: 1,
      servers: { rogue: { manifest: 'rogue.json' }, unset: { manifest: 'unset.json' }, headers: { manifest: 'headers.json', allowPlainHttp: true }, everything: { manifest: 'everything.json' } },
      credentials: {
        everything: { EVERYTHING_TOKEN: { env: 'WARDEN_TEST_CANARY' } },
        rogue: { API_TOKEN: { env: 'WARDEN_TEST_CANARY' } },
        unset: { API_TOKEN: { env: 'WARDEN_TEST_NOT_SET' } },
        headers: { KEY: { file: 'header-key' } },
      },
      egress: { allow: [{ destination: new URL(url).origin, addresses: ['127.0.0.1'] }] },
      agents: { a: { allow: [{ tools: ['*'] }] } },
    }),
  );
  assert.equal(config.rejected.size, 0);
  process.env['WARDEN_TEST_CANARY'] = CANARY_ENV;
  delete process.env['WARDEN_TEST_NOT_SET'];
  const logger = pino({ level: 'debug' }, pino.destination({ dest: logFile, sync: true }));
  broker = new Broker(config, { logger, backoff: { initialMs: 50, maxMs: 200 } });
  await broker.start();
});

after(async () => {
  await broker?.close();
  headerServer?.close();
  delete process.env['WARDEN_TEST_CANARY'];
  cleanup();
});

describe('credentials', () => {
  it('a stdio server gets its credential in its environment; the agent never sees the value', async () => {
    const result = await broker.callTool('a', 'rogue__env', {});
    const text = textOf(result);
    assert.ok(!text.includes(CANARY_ENV), 'the value is redacted from the result');
    const env = JSON.parse(text);
    assert.equal(env.API_TOKEN, '[redacted: credential]', 'the server did receive it, under the declared name');
    assert.equal(env.WARDEN_TEST_CANARY, undefined, 'the broker variable itself is not passed on');
  });

  it("server-everything's get-env shows the agent no secret", async () => {
    const result = await broker.callTool('a', 'everything__get-env', {});
    assert.equal(result.isError, undefined, textOf(result));
    const text = textOf(result);
    assert.match(text, /EVERYTHING_TOKEN/);
    assert.ok(!text.includes(CANARY_ENV));
    assert.match(text, /\[redacted: credential\]/);
  });

  it('an http server gets its credential in the declared header; the agent never sees the value', async () => {
    const result = await broker.callTool('a', 'headers__headers', {});
    const serialized = JSON.stringify(result);
    assert.ok(!serialized.includes(CANARY_HEADER));
    assert.equal(JSON.parse(textOf(result))['x-api-key'], 'Key [redacted: credential]');
    assert.deepEqual(result.structuredContent, { apiKey: 'Key [redacted: credential]' });
  });

  it('an arguments object cannot set or override the credential', async () => {
    const result = await broker.callTool('a', 'rogue__env', { API_TOKEN: 'from-agent' });
    assert.equal(refusalCode(result), 'WARDEN_ARGUMENTS_INVALID');
  });

  it('a missing credential makes only that server unavailable, with a clear reason in the audit', async () => {
    assert.ok(await waitFor(() => broker.backends.get('unset')?.state === 'down', 100, 20));
    const result = await broker.callTool('a', 'unset__env', {});
    assert.equal(refusalCode(result), 'WARDEN_SERVER_UNAVAILABLE');
    const audit = readFileSync(join(dir, 'audit/audit.jsonl'), 'utf8');
    assert.match(audit, /credential \\"API_TOKEN\\" is not available \(environment variable WARDEN_TEST_NOT_SET is not set\)/);
  });

  it('no credential value reaches the audit trail or the logs', () => {
    for (const file of [join(dir, 'audit/audit.jsonl'), logFile]) {
      const text = readFileSync(file, 'utf8');
      assert.ok(text.length > 0);
      for (const canary of [CANARY_ENV, CANARY_HEADER]) assert.ok(!text.includes(canary), `${canary} in ${file}`);
    }
  });
});
