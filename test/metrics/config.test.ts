import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parse } from 'yaml';
import { readFileSync } from 'node:fs';
import { writeWorkspace } from '../../src/cli/init.ts';
import { loadConfig } from '../../src/config/load.ts';
import { sameListener } from '../../src/config/metrics.ts';
import { WardenError } from '../../src/errors.ts';
import { expectWardenError, runCli, startBroker, tempDir, writeConfig } from '../helpers.ts';

const { dir, cleanup } = tempDir('warden-metrics-config-');
after(cleanup);

let counter = 0;
function load(extra: Record<string, unknown>) {
  return loadConfig(writeConfig(join(dir, `config-${counter++}.yaml`), { version: 1, servers: {}, agents: { a: { allow: [] } }, ...extra }));
}

describe('metrics config', () => {
  it('is off without a metrics section, on with one, on loopback port 9464 by default', () => {
    const off = load({});
    assert.equal(off.metrics.enabled, false);
    const on = load({ metrics: {} });
    assert.equal(on.metrics.enabled, true);
    assert.deepEqual(on.metrics.listen, { host: '127.0.0.1', port: 9464 });
    assert.equal(on.metrics.allowNonLoopback, false);
    assert.deepEqual(load({ metrics: { listen: '[::1]:9100' } }).metrics.listen, { host: '::1', port: 9100 });
  });

  it('refuses the address of the agents\' listener, and any address that overlaps it', () => {
    for (const [http, metrics] of [
      ['127.0.0.1:7070', '127.0.0.1:7070'],
      [undefined, '127.0.0.1:7070'], // http.listen's default
      ['127.0.0.1:8000', 'localhost:8000'],
      ['[::1]:8000', 'localhost:8000'],
      ['127.0.0.1:8000', '0.0.0.0:8000'],
      ['[::]:8000', '[::1]:8000'],
    ] as const) {
      const extra = { ...(http ? { http: { listen: http, allowedHosts: ['warden.example'] } } : {}), metrics: { listen: metrics, allowNonLoopback: true } };
      expectWardenError(() => load(extra), 'WARDEN_CONFIG_INVALID', /at \/metrics\/listen: .*agents' HTTP listener/);
    }
    // Port 0 picks a free port: never the same as another listener's.
    assert.equal(load({ http: { listen: '127.0.0.1:0' }, metrics: { listen: '127.0.0.1:0' } }).metrics.listen.port, 0);
    assert.equal(load({ http: { listen: '127.0.0.1:7070' }, metrics: { listen: '127.0.0.1:7071' } }).metrics.listen.port, 7071);
  });

  it('refuses an address that is not host:port', () => {
    for (const listen of ['nope', '127.0.0.1', '127.0.0.1:', '127.0.0.1:70000', '::1:9464', '[::1]', 'http://127.0.0.1:9464', '127.0.0.1:9464/metrics', ' 127.0.0.1:9464']) {
      expectWardenError(() => load({ metrics: { listen } }), 'WARDEN_CONFIG_INVALID', /at \/metrics\/listen: expected host:port/);
    }
    expectWardenError(() => load({ metrics: { listen: 9464 } }), 'WARDEN_CONFIG_INVALID', /\/metrics\/listen/);
    expectWardenError(() => load({ metrics: { path: '/m' } }), 'WARDEN_CONFIG_INVALID', /\/metrics: has unknown property "path"/);
  });

  it('listens beyond loopback only when asked to in so many words', () => {
    for (const listen of ['0.0.0.0:9464', '10.1.2.3:9464', '[::]:9464', 'metrics.example:9464']) {
      expectWardenError(() => load({ metrics: { listen } }), 'WARDEN_CONFIG_INVALID', /at \/metrics\/listen: .*not a loopback address.*allowNonLoopback/);
    }
    const open = load({ metrics: { listen: '0.0.0.0:9464', allowNonLoopback: true, allowedHosts: ['prometheus.internal'] } });
    assert.deepEqual(open.metrics.listen, { host: '0.0.0.0', port: 9464 });
    assert.deepEqual(open.metrics.allowedHosts, ['prometheus.internal']);
  });

  it('overlap is judged on canonical addresses', () => {
    assert.equal(sameListener({ host: '127.0.0.1', port: 1 }, { host: '127.0.0.2', port: 1 }), false);
    assert.equal(sameListener({ host: '::ffff:127.0.0.1', port: 1 }, { host: '127.0.0.1', port: 1 }), true);
    assert.equal(sameListener({ host: 'LOCALHOST', port: 1 }, { host: 'localhost', port: 1 }), true);
    assert.equal(sameListener({ host: '127.0.0.1', port: 1 }, { host: '127.0.0.1', port: 2 }), false);
  });

  it('a reload that changes the metrics listener is refused: it needs a restart', async () => {
    const file = writeConfig(join(dir, 'reload.yaml'), { version: 1, servers: {}, agents: { a: { allow: [] } }, metrics: { listen: '127.0.0.1:9464' } });
    const broker = await startBroker(loadConfig(file));
    try {
      writeConfig(file, { version: 1, servers: {}, agents: { a: { allow: [] } }, metrics: { listen: '127.0.0.1:9465' } });
      await assert.rejects(broker.applyConfig(loadConfig(file)), (error: unknown) => error instanceof WardenError && error.code === 'WARDEN_RELOAD_REFUSED' && /metrics changed/.test(error.message));
    } finally {
      await broker.close();
    }
  });

  it('init\'s workspace has metrics and health on loopback', () => {
    const workspace = writeWorkspace(join(dir, 'ws'), false);
    const raw = parse(readFileSync(workspace.config, 'utf8')) as { metrics?: { listen?: string } };
    assert.equal(raw.metrics?.listen, '127.0.0.1:9464');
    const config = loadConfig(workspace.config);
    assert.equal(config.metrics.enabled, true);
    assert.deepEqual(config.metrics.listen, { host: '127.0.0.1', port: 9464 });
  });
});

describe('serve --metrics', () => {
  const config = () => writeConfig(join(dir, 'serve.yaml'), { version: 1, servers: {}, agents: { a: { allow: [] } } });

  it('refuses an address that is not host:port, a non-loopback one, and the agents\' listener', () => {
    const file = config();
    const bad = runCli(['serve', '--config', file, '--stdio', '--agent', 'a', '--metrics', 'nope']);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /WARDEN_USAGE: --metrics expects HOST:PORT/);
    const open = runCli(['serve', '--config', file, '--stdio', '--agent', 'a', '--metrics', '0.0.0.0:0']);
    assert.equal(open.code, 2, open.stderr);
    assert.match(open.stderr, /--metrics: .*allowNonLoopback/);
    const same = runCli(['serve', '--config', file, '--http', '--listen', '127.0.0.1:7999', '--metrics', 'localhost:7999']);
    assert.equal(same.code, 2, same.stderr);
    assert.match(same.stderr, /--metrics: .*agents' HTTP listener/);
  });

  it('is in the help', () => {
    const help = runCli(['serve', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--metrics HOST:PORT/);
  });
});
