// Remote (Streamable HTTP, type: http) servers: https only, verified against the CA the
// config names (or Node's default set), public-key pins, mutual TLS, and plain http only
// for a loopback address the config allows. Through a real broker and its audit.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { Broker } from '../../src/broker.ts';
import { spkiPin } from '../../src/backends/egress-agent.ts';
import { loadConfig } from '../../src/config/load.ts';
import { canonicalAddress } from '../../src/guard/address-class.ts';
import type { WardenConfig } from '../../src/config/types.ts';
import { buildManifest } from '../../src/manifest/load.ts';
import {
  expectRejection,
  expectWardenError,
  NOTES_SERVER,
  NOTES_TOOLS,
  refusalCode,
  startBroker,
  stdioManifest,
  tempDir,
  textOf,
  waitFor,
  writeConfig,
  writeManifest,
} from '../helpers.ts';
import { HTTPS_MCP_TOOLS, startHttpsMcpServer, TLS_DIR, tlsFixture, type HttpsMcpOptions, type HttpsMcpServer } from '../fixtures/https-mcp-server.ts';

const { dir, cleanup } = tempDir('warden-remote-tls-');
after(cleanup);

/** The pin-sha256 of loopback.crt's key, as the spec gives it. */
const LOOPBACK_PIN = 'PYKyXYQqoGmNqCqJyB8QADauQi5isVkvNnAzpQ1lQd4=';
/** The pin-sha256 of a fixture certificate, computed by the broker's own function. */
const pinOf = (file: string) => spkiPin(new X509Certificate(tlsFixture(file)).raw);

let counter = 0;
/** A fresh folder for one case: its own config, manifests, state and audit. */
function caseDir(name: string): string {
  const folder = join(dir, `${name}-${counter++}`);
  mkdirSync(folder, { recursive: true });
  return folder;
}

interface RemoteSetup {
  /** The server's URL as the manifest names it. */
  readonly url: string;
  /** transport.tls of the manifest. */
  readonly tls?: Record<string, unknown>;
  readonly credentials?: Record<string, unknown>[];
  /** Extra keys of the config's server entry (tls, allowPlainHttp). */
  readonly entry?: Record<string, unknown>;
  /** The config's credentials for this server. */
  readonly credentialSources?: Record<string, unknown>;
  /** Manifest tools; the fixture's unless given. */
  readonly tools?: Record<string, unknown>[];
}

/** Signs a manifest for the remote server, writes a config for it (server key "remote", agent "a") and loads it. */
function remoteConfig(folder: string, setup: RemoteSetup): WardenConfig {
  writeManifest(join(folder, 'manifests/remote.json'), {
    manifestVersion: 1,
    name: 'test.remote',
    version: '1.0.0',
    serial: 1,
    transport: { type: 'http', url: setup.url, ...(setup.tls ? { tls: setup.tls } : {}) },
    ...(setup.credentials ? { credentials: setup.credentials } : {}),
    tools: setup.tools ?? HTTPS_MCP_TOOLS,
  });
  const url = new URL(setup.url);
  // The egress rule names the server's address (loopback and private addresses must be listed).
  const literal = canonicalAddress(url.hostname);
  return loadConfig(
    writeConfig(join(folder, 'warden.yaml'), {
      version: 1,
      servers: { remote: { manifest: 'remote.json', ...setup.entry } },
      ...(setup.credentialSources ? { credentials: { remote: setup.credentialSources } } : {}),
      agents: { a: { allow: [{ tools: ['*'] }] } },
      egress: { allow: [{ destination: url.origin, addresses: [literal ?? '127.0.0.1'] }] },
      limits: { connectTimeoutMs: 5000 },
    }),
  );
}

/** The test CA copied next to the config and named relatively (tls.ca is relative to the config file). */
function withTestCa(folder: string): Record<string, unknown> {
  mkdirSync(join(folder, 'trust'), { recursive: true });
  copyFileSync(join(TLS_DIR, 'test-ca.crt'), join(folder, 'trust/test-ca.pem'));
  return { tls: { ca: 'trust/test-ca.pem' } };
}

type AuditRow = Record<string, unknown>;
function records(broker: Broker): AuditRow[] {
  return (broker.audit as unknown as { records: AuditRow[] }).records;
}
const refusals = (rows: readonly AuditRow[]) => rows.filter((r) => r['event'] === 'egress.refused' && r['server'] === 'remote');
const readies = (rows: readonly AuditRow[]) => rows.filter((r) => r['event'] === 'server.state' && r['server'] === 'remote' && r['state'] === 'ready');
const downs = (rows: readonly AuditRow[]) => rows.filter((r) => r['event'] === 'server.state' && r['server'] === 'remote' && r['state'] === 'down');

/** Fast retries, so "never ready" is judged over several connection attempts. */
const RETRY = { backoff: { initialMs: 50, maxMs: 200 } } as const;

/** Starts a broker for a config (by default startBroker with RETRY); withServer closes it. */
type RunBroker = (config: WardenConfig, start?: (config: WardenConfig) => Promise<Broker>) => Promise<Broker>;

/**
 * Starts the fixture HTTPS server and runs body with it; at the end closes every broker body
 * started with run (except those it closed itself with stop), then the server.
 */
async function withServer(
  options: HttpsMcpOptions,
  body: (server: HttpsMcpServer, run: RunBroker, stop: (broker: Broker) => Promise<void>) => Promise<void>,
): Promise<void> {
  const server = await startHttpsMcpServer(options);
  const open: Broker[] = [];
  const run: RunBroker = async (config, start = (c) => startBroker(c, RETRY)) => {
    const broker = await start(config);
    open.push(broker);
    return broker;
  };
  const stop = async (broker: Broker) => {
    await broker.close();
    open.splice(open.indexOf(broker), 1);
  };
  try {
    await body(server, run, stop);
  } finally {
    for (const broker of open) await broker.close();
    await server.close();
  }
}

/**
 * A server the broker must refuse: waits (bounded) for at least two audited refusals, i.e.
 * the first attempt and a retry, then checks it never became ready and calls are refused.
 */
async function expectRefused(broker: Broker, server: HttpsMcpServer, reason: string): Promise<void> {
  assert.ok(await waitFor(() => refusals(records(broker)).length >= 2, 200, 25), `expected egress.refused records; audit: ${JSON.stringify(records(broker).filter((r) => r['server'] === 'remote'))}`);
  const refused = refusals(records(broker));
  for (const record of refused) {
    assert.equal(record['reason'], reason, JSON.stringify(record));
    assert.equal(record['origin'], server.origin, JSON.stringify(record));
  }
  assert.equal(readies(records(broker)).length, 0, 'the server was never ready');
  assert.notEqual(broker.backends.get('remote')?.state, 'ready');
  const result = await broker.callTool('a', 'remote__echo', { text: 'hello' });
  assert.equal(refusalCode(result), 'WARDEN_SERVER_UNAVAILABLE', JSON.stringify(result));
  assert.deepEqual(server.requests, [], 'no HTTP request reached the server');
}

describe('remote servers over verified TLS', () => {
  it('1. a server whose certificate the config CA (tls.ca) issued is ready and answers calls', async () => {
    await withServer({}, async (server, run) => {
      const folder = caseDir('trusted-ca');
      const config = remoteConfig(folder, { url: server.url, entry: withTestCa(folder) });
      assert.equal(config.rejected.size, 0, JSON.stringify([...config.rejected]));
      const broker = await run(config);
      assert.ok(await waitFor(() => broker.backends.get('remote')?.state === 'ready'), `state ${broker.backends.get('remote')?.state}; audit: ${JSON.stringify(records(broker))}`);
      const result = await broker.callTool('a', 'remote__echo', { text: 'over verified tls' });
      assert.equal(result.isError, undefined, JSON.stringify(result));
      assert.equal(textOf(result), 'over verified tls');
      assert.equal(textOf(await broker.callTool('a', 'remote__whoami', {})), '(none)', 'no client certificate without a clientCertificate credential');
      assert.equal(refusals(records(broker)).length, 0);
      assert.ok(server.requests.length > 0);
    });
  });

  it("2. without tls.ca (Node's default CAs do not include the test CA) the server is refused: tls-unverified", async () => {
    await withServer({}, async (server, run) => {
      const config = remoteConfig(caseDir('default-cas'), { url: server.url });
      assert.equal(config.rejected.size, 0);
      const broker = await run(config);
      await expectRefused(broker, server, 'tls-unverified');
    });
  });

  it('3. a self-signed certificate is refused even with tls.ca set: tls-unverified', async () => {
    await withServer({ certificate: 'self-signed' }, async (server, run) => {
      const folder = caseDir('self-signed');
      const config = remoteConfig(folder, { url: server.url, entry: withTestCa(folder) });
      assert.equal(config.rejected.size, 0);
      const broker = await run(config);
      await expectRefused(broker, server, 'tls-unverified');
    });
  });

  it('3b. NODE_TLS_REJECT_UNAUTHORIZED=0 in the broker\'s environment does not turn verification (or the pins) off', async () => {
    const saved = process.env['NODE_TLS_REJECT_UNAUTHORIZED'];
    process.env['NODE_TLS_REJECT_UNAUTHORIZED'] = '0';
    try {
      await withServer({ certificate: 'self-signed' }, async (server, run) => {
        const folder = caseDir('env-off');
        const broker = await run(remoteConfig(folder, { url: server.url, tls: { spki: [LOOPBACK_PIN] }, entry: withTestCa(folder) }));
        await expectRefused(broker, server, 'tls-unverified');
      });
    } finally {
      if (saved === undefined) delete process.env['NODE_TLS_REJECT_UNAUTHORIZED'];
      else process.env['NODE_TLS_REJECT_UNAUTHORIZED'] = saved;
    }
  });

  it('4a. the SPKI pin of loopback.crt is the one the spec gives, and a matching pin connects', async () => {
    assert.equal(pinOf('loopback.crt'), LOOPBACK_PIN);
    assert.notEqual(pinOf('self-signed.crt'), LOOPBACK_PIN);
    await withServer({}, async (server, run) => {
      const folder = caseDir('pin-match');
      // The pin of another key next to the right one: one match is enough (key rotation).
      const config = remoteConfig(folder, { url: server.url, tls: { spki: [pinOf('self-signed.crt'), LOOPBACK_PIN] }, entry: withTestCa(folder) });
      assert.equal(config.rejected.size, 0, JSON.stringify([...config.rejected]));
      const broker = await run(config);
      assert.ok(await waitFor(() => broker.backends.get('remote')?.state === 'ready'), `audit: ${JSON.stringify(records(broker))}`);
      assert.equal(textOf(await broker.callTool('a', 'remote__echo', { text: 'pinned' })), 'pinned');
      assert.equal(refusals(records(broker)).length, 0);
    });
  });

  it("4b. a pin of another key refuses the server, though the CA vouches for it: tls-pin-mismatch", async () => {
    await withServer({}, async (server, run) => {
      const folder = caseDir('pin-mismatch');
      const config = remoteConfig(folder, { url: server.url, tls: { spki: [pinOf('self-signed.crt')] }, entry: withTestCa(folder) });
      assert.equal(config.rejected.size, 0);
      const broker = await run(config);
      await expectRefused(broker, server, 'tls-pin-mismatch');
      assert.match(String(refusals(records(broker))[0]!['message']), new RegExp(LOOPBACK_PIN.replace(/[+/=]/g, '\\$&')), 'the refusal names the key found');
    });
  });
});

describe('remote servers: mutual TLS', () => {
  const CLIENT_CREDENTIAL = [{ name: 'CLIENT_TLS', clientCertificate: true }];
  const clientKey = tlsFixture('client.key');
  const otherKey = tlsFixture('self-signed.key');
  /** Lines of the private keys that must never appear in a log or the audit: the base64 after the common P-256 PKCS#8 prefix, and the next line. */
  const keyLines = [clientKey, otherKey].flatMap((pem) => {
    const lines = pem.split('\n');
    return [lines[1]!.slice(48), lines[2]!];
  });

  /** A broker with a debug log file and a file audit, as `serve` runs it (started through run, so withServer closes it). */
  async function fileBroker(folder: string, config: WardenConfig, run: RunBroker): Promise<{ broker: Broker; logFile: string; auditFile: string }> {
    const logFile = join(folder, 'broker.log');
    const broker = await run(config, async () => {
      const logger = pino({ level: 'debug' }, pino.destination({ dest: logFile, sync: true }));
      const started = new Broker(config, { logger, ...RETRY });
      await started.start();
      return started;
    });
    return { broker, logFile, auditFile: config.audit.file };
  }

  const auditOf = (file: string): AuditRow[] => readFileSync(file, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line) as AuditRow);

  it('5a. with the client certificate and its key, the server sees the client and answers', async () => {
    await withServer({ requireClientCertificate: true }, async (server, run, stop) => {
      const folder = caseDir('mtls-ok');
      writeFileSync(join(folder, 'client.pem'), `${tlsFixture('client.crt')}${clientKey}`);
      const config = remoteConfig(folder, { url: server.url, credentials: CLIENT_CREDENTIAL, credentialSources: { CLIENT_TLS: { file: 'client.pem' } }, entry: withTestCa(folder) });
      assert.equal(config.rejected.size, 0, JSON.stringify([...config.rejected]));
      const started = await fileBroker(folder, config, run);
      const { broker } = started;
      assert.ok(await waitFor(() => broker.backends.get('remote')?.state === 'ready'), `state ${broker.backends.get('remote')?.state}; audit: ${readFileSync(started.auditFile, 'utf8')}`);
      const result = await broker.callTool('a', 'remote__whoami', {});
      assert.equal(result.isError, undefined, JSON.stringify(result));
      assert.equal(textOf(result), 'mcp-warden test client');
      assert.ok(server.requests.length > 0 && server.requests.every((name) => name === 'mcp-warden test client'), JSON.stringify(server.requests));
      await stop(broker);
      for (const file of [started.logFile, started.auditFile]) {
        const text = readFileSync(file, 'utf8');
        for (const line of keyLines) assert.ok(!text.includes(line), `key text in ${file}`);
      }
    });
  });

  it('5b. a server requiring a client certificate is not reached without one (the control case: no clientCertificate credential)', async () => {
    await withServer({ requireClientCertificate: true }, async (server, run) => {
      const folder = caseDir('mtls-no-credential');
      const config = remoteConfig(folder, { url: server.url, entry: withTestCa(folder) });
      const broker = await run(config);
      assert.ok(await waitFor(() => downs(records(broker)).length >= 2, 200, 25), JSON.stringify(records(broker)));
      assert.equal(readies(records(broker)).length, 0);
      assert.equal(refusalCode(await broker.callTool('a', 'remote__echo', { text: 'x' })), 'WARDEN_SERVER_UNAVAILABLE');
      assert.deepEqual(server.requests, [], 'the listener served no request without a client certificate');
    });
  });

  it('5c. a clientCertificate credential with no source: unavailable, with a credential reason', async () => {
    await withServer({ requireClientCertificate: true }, async (server, run) => {
      const folder = caseDir('mtls-missing');
      const config = remoteConfig(folder, { url: server.url, credentials: CLIENT_CREDENTIAL, entry: withTestCa(folder) });
      assert.equal(config.rejected.size, 0);
      assert.ok(config.warnings.some((warning) => warning.startsWith('/credentials/remote/CLIENT_TLS')), JSON.stringify(config.warnings));
      const broker = await run(config);
      assert.ok(await waitFor(() => downs(records(broker)).length >= 1), JSON.stringify(records(broker)));
      assert.match(String(downs(records(broker))[0]!['reason']), /credential "CLIENT_TLS" is not available/);
      assert.equal(readies(records(broker)).length, 0);
      assert.equal(refusalCode(await broker.callTool('a', 'remote__whoami', {})), 'WARDEN_SERVER_UNAVAILABLE');
      assert.deepEqual(server.requests, []);
    });
  });

  for (const [label, content] of [
    ['only the certificate (no key)', () => tlsFixture('client.crt')],
    ['the certificate with a key that does not match it', () => `${tlsFixture('client.crt')}${otherKey}`],
    ['only the key (no certificate)', () => clientKey],
  ] as const) {
    it(`5d. a credential file holding ${label}: unavailable, and no key text in the log or the audit`, async () => {
      await withServer({ requireClientCertificate: true }, async (server, run, stop) => {
        const folder = caseDir('mtls-bad');
        writeFileSync(join(folder, 'client.pem'), content());
        const config = remoteConfig(folder, { url: server.url, credentials: CLIENT_CREDENTIAL, credentialSources: { CLIENT_TLS: { file: 'client.pem' } }, entry: withTestCa(folder) });
        assert.equal(config.rejected.size, 0);
        const started = await fileBroker(folder, config, run);
        const { broker } = started;
        assert.ok(await waitFor(() => auditOf(started.auditFile).filter((r) => r['event'] === 'server.state' && r['state'] === 'down').length >= 2, 200, 25), readFileSync(started.auditFile, 'utf8'));
        const rows = auditOf(started.auditFile);
        assert.equal(readies(rows).length, 0);
        const reason = String(downs(rows)[0]!['reason']);
        assert.match(reason, /CLIENT_TLS/, 'the reason names the credential');
        // The reason is the one the spec gives: not a certificate with its matching private key.
        assert.match(reason, /certificate/i, reason);
        assert.notEqual(broker.backends.get('remote')?.state, 'ready');
        assert.equal(refusalCode(await broker.callTool('a', 'remote__whoami', {})), 'WARDEN_SERVER_UNAVAILABLE');
        assert.deepEqual(server.requests, []);
        await stop(broker);
        const log = readFileSync(started.logFile, 'utf8');
        assert.match(log, /CLIENT_TLS/, 'the log gives the reason');
        for (const file of [started.logFile, started.auditFile]) {
          const text = readFileSync(file, 'utf8');
          assert.ok(text.length > 0);
          for (const line of keyLines) assert.ok(!text.includes(line), `key text ${line} in ${file}`);
          assert.ok(!text.includes('PRIVATE KEY'), `PEM key block in ${file}`);
        }
      });
    });
  }
});

describe('remote servers: plain http', () => {
  /** The example notes server over plain Streamable HTTP on a loopback port, as test/integration/http.test.ts starts it. */
  async function startNotesOverHttp(): Promise<{ child: ChildProcess; url: string }> {
    const child = spawn(process.execPath, [NOTES_SERVER, '--http', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
    const lines = createInterface({ input: child.stderr! });
    let url: string | undefined;
    lines.on('line', (line) => {
      url ??= /(http:\/\/127\.0\.0\.1:\d+\/mcp)/.exec(line)?.[1];
    });
    if (!(await waitFor(() => url !== undefined, 300, 50))) {
      child.kill();
      throw new Error('the notes server did not start');
    }
    return { child, url: url! };
  }

  const rejectedReason = (config: WardenConfig) => config.rejected.get('remote')?.reason;

  it('6a. a plain http URL without allowPlainHttp is rejected: insecure-transport', () => {
    const config = remoteConfig(caseDir('plain-no-allow'), { url: 'http://127.0.0.1:9/mcp', tools: NOTES_TOOLS });
    assert.equal(rejectedReason(config), 'insecure-transport', JSON.stringify([...config.rejected]));
    assert.equal(config.servers.has('remote'), false);
  });

  it('6b. with allowPlainHttp, a loopback address is accepted and the server works', async () => {
    const notes = await startNotesOverHttp();
    let broker: Broker | undefined;
    try {
      const config = remoteConfig(caseDir('plain-allowed'), { url: notes.url, tools: NOTES_TOOLS, entry: { allowPlainHttp: true } });
      assert.equal(config.rejected.size, 0, JSON.stringify([...config.rejected]));
      assert.ok(!config.warnings.some((warning) => warning.includes('allowPlainHttp')), JSON.stringify(config.warnings));
      broker = await startBroker(config, RETRY);
      assert.ok(await waitFor(() => broker!.backends.get('remote')?.state === 'ready'), JSON.stringify(records(broker)));
      assert.equal(textOf(await broker.callTool('a', 'remote__echo', { text: 'plain loopback' })), 'plain loopback');
    } finally {
      await broker?.close();
      notes.child.kill();
    }
  });

  it('6c. other loopback literals (127.0.0.0/8, [::1]) are accepted with allowPlainHttp', () => {
    for (const url of ['http://127.0.0.2:9/mcp', 'http://[::1]:9/mcp']) {
      const config = remoteConfig(caseDir('plain-loopback'), { url, tools: NOTES_TOOLS, entry: { allowPlainHttp: true } });
      assert.equal(config.rejected.size, 0, `${url}: ${JSON.stringify([...config.rejected])}`);
    }
  });

  it('6d. allowPlainHttp does not admit localhost or a non-loopback address: insecure-transport', () => {
    for (const url of ['http://localhost:9/mcp', 'http://10.0.0.1/mcp', 'http://192.168.1.5:8080/mcp', 'http://example.test/mcp']) {
      const config = remoteConfig(caseDir('plain-refused'), { url, tools: NOTES_TOOLS, entry: { allowPlainHttp: true } });
      assert.equal(rejectedReason(config), 'insecure-transport', `${url}: ${JSON.stringify([...config.rejected])}`);
      assert.match(config.rejected.get('remote')!.message, /loopback/);
    }
  });

  it('6e. allowPlainHttp on an https server is a warning', () => {
    const config = remoteConfig(caseDir('plain-on-https'), { url: 'https://127.0.0.1:9/mcp', entry: { allowPlainHttp: true } });
    assert.equal(config.rejected.size, 0);
    assert.ok(config.warnings.some((warning) => warning.startsWith('/servers/remote/allowPlainHttp')), JSON.stringify(config.warnings));
  });
});

describe('remote servers: config tls.ca', () => {
  it('7a. tls.ca naming a missing file is WARDEN_CONFIG_INVALID at /servers/<key>/tls/ca', () => {
    const folder = caseDir('ca-missing');
    expectWardenError(() => remoteConfig(folder, { url: 'https://127.0.0.1:9/mcp', entry: { tls: { ca: 'no-such-ca.pem' } } }), 'WARDEN_CONFIG_INVALID', /\/servers\/remote\/tls\/ca/);
  });

  it('7b. tls.ca naming a file that is not PEM is WARDEN_CONFIG_INVALID at /servers/<key>/tls/ca', () => {
    const folder = caseDir('ca-not-pem');
    writeFileSync(join(folder, 'not-a-ca.pem'), 'this is not a certificate\n');
    expectWardenError(() => remoteConfig(folder, { url: 'https://127.0.0.1:9/mcp', entry: { tls: { ca: 'not-a-ca.pem' } } }), 'WARDEN_CONFIG_INVALID', /\/servers\/remote\/tls\/ca/);
    // A private key is PEM but not a certificate.
    copyFileSync(join(TLS_DIR, 'client.key'), join(folder, 'key.pem'));
    const error = expectWardenError(() => remoteConfig(folder, { url: 'https://127.0.0.1:9/mcp', entry: { tls: { ca: 'key.pem' } } }), 'WARDEN_CONFIG_INVALID', /\/servers\/remote\/tls\/ca/);
    assert.ok(!error.message.includes(tlsFixture('client.key').split('\n')[2]!), 'the error does not quote the file');
  });

  it('7c. tls.ca on a plain-http server is a warning', () => {
    const folder = caseDir('ca-plain');
    const config = remoteConfig(folder, { url: 'http://127.0.0.1:9/mcp', tools: NOTES_TOOLS, entry: { allowPlainHttp: true, ...withTestCa(folder) } });
    assert.equal(config.rejected.size, 0, JSON.stringify([...config.rejected]));
    assert.ok(config.warnings.some((warning) => warning.startsWith('/servers/remote/tls')), JSON.stringify(config.warnings));
  });

  it('7d. a valid tls.ca is read relative to the config file', () => {
    const folder = caseDir('ca-ok');
    const config = remoteConfig(folder, { url: 'https://127.0.0.1:9/mcp', entry: withTestCa(folder) });
    assert.equal(config.serverTls.get('remote')?.ca, tlsFixture('test-ca.crt'));
  });
});

describe('remote servers: manifest rules', () => {
  const DATES = { issuedAt: '2026-01-01T00:00:00Z', expiresAt: '2099-01-01T00:00:00Z' };
  let built = 0;
  const build = (source: Record<string, unknown>) => buildManifest({ ...DATES, ...source }, join(dir, `manifest-${built++}.json`), { resolveCommand: false });
  const http = (url: string, extra: Record<string, unknown> = {}) => ({ manifestVersion: 1, name: 'test.remote', version: '1', serial: 1, transport: { type: 'http', url, ...extra }, tools: HTTPS_MCP_TOOLS });
  const CLIENT = { name: 'CLIENT_TLS', clientCertificate: true };

  it('8a. accepts an https server with pins and a client certificate credential', () => {
    const manifest = build({ ...http('https://127.0.0.1:9/mcp', { tls: { spki: [LOOPBACK_PIN] } }), credentials: [CLIENT] });
    assert.deepEqual(manifest.transport.type === 'http' && manifest.transport.spki, [LOOPBACK_PIN]);
    assert.equal(manifest.credentials[0]?.clientCertificate, true);
  });

  it('8b. an spki pin with an http URL is invalid-manifest', () => {
    expectRejection(() => build(http('http://127.0.0.1:9/mcp', { tls: { spki: [LOOPBACK_PIN] } })), 'invalid-manifest', /\/transport\/tls/);
  });

  it('8c. clientCertificate on a stdio server is invalid-manifest at /credentials/0', () => {
    expectRejection(() => build({ ...stdioManifest('s', NOTES_SERVER, NOTES_TOOLS), credentials: [CLIENT] }), 'invalid-manifest', /\/credentials\/0/);
  });

  it('8d. clientCertificate on an http-api server is invalid-manifest at /credentials/0', () => {
    const tools = [{ name: 'get', description: 'get', access: 'read', inputSchema: { type: 'object' }, http: { method: 'GET', path: '/x' } }];
    expectRejection(
      () => build({ manifestVersion: 1, name: 'test.api', version: '1', serial: 1, transport: { type: 'http-api', baseUrl: 'https://api.example.test' }, credentials: [CLIENT], tools }),
      'invalid-manifest',
      /\/credentials\/0/,
    );
  });

  it('8e. clientCertificate with a header (or prefix, or env) is invalid-manifest at /credentials/0', () => {
    for (const extra of [{ header: 'X-Client' }, { prefix: 'x ' }, { env: 'CLIENT' }]) {
      expectRejection(() => build({ ...http('https://127.0.0.1:9/mcp'), credentials: [{ ...CLIENT, ...extra }] }), 'invalid-manifest', /\/credentials\/0/);
    }
  });

  it('8f. clientCertificate with an http:// URL is invalid-manifest at /credentials/0', () => {
    expectRejection(() => build({ ...http('http://127.0.0.1:9/mcp'), credentials: [CLIENT] }), 'invalid-manifest', /\/credentials\/0/);
  });

  it('8g. two clientCertificate credentials are invalid-manifest at /credentials/1', () => {
    expectRejection(() => build({ ...http('https://127.0.0.1:9/mcp'), credentials: [CLIENT, { name: 'OTHER_TLS', clientCertificate: true }] }), 'invalid-manifest', /\/credentials\/1/);
  });

  it('8h. signing (writeManifest) refuses the same manifests', () => {
    const folder = caseDir('sign');
    for (const source of [
      http('http://127.0.0.1:9/mcp', { tls: { spki: [LOOPBACK_PIN] } }),
      { ...http('http://127.0.0.1:9/mcp'), credentials: [CLIENT] },
      { ...http('https://127.0.0.1:9/mcp'), credentials: [{ ...CLIENT, header: 'X-Client' }] },
    ]) {
      const error = expectWardenError(() => writeManifest(join(folder, 'bad.json'), source), 'WARDEN_MANIFEST_INVALID', /at \/(transport\/tls|credentials\/0)/);
      assert.equal(error.detail?.['reason'], 'invalid-manifest', error.message);
    }
  });
});
