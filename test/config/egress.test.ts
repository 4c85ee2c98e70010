import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { DEFAULTS, loadConfig } from '../../src/config/load.ts';
import { WardenError } from '../../src/errors.ts';
import { tempDir, writeConfig, writeManifest } from '../helpers.ts';

// The config's egress section: compiled at load, a bad rule refused with its path, and
// legal-but-wrong settings warned about.

const { dir, cleanup } = tempDir();
after(cleanup);

let files = 0;
function load(data: Record<string, unknown>) {
  return loadConfig(writeConfig(join(dir, `warden-${files++}.yaml`), { version: 1, servers: {}, agents: {}, ...data }));
}

function refused(data: Record<string, unknown>, path: RegExp): void {
  assert.throws(
    () => load(data),
    (error: unknown) => error instanceof WardenError && error.code === 'WARDEN_CONFIG_INVALID' && path.test(error.message),
  );
}

describe('config: egress', () => {
  it('no egress section: no rule, the documented defaults', () => {
    const { egress } = load({});
    assert.equal(egress.rules.length, 0);
    assert.equal(egress.connectTimeoutMs, DEFAULTS.egressConnectTimeoutMs);
    assert.equal(egress.maxResponseBytes, DEFAULTS.egressMaxResponseBytes);
    assert.equal(egress.maxHeaderBytes, DEFAULTS.egressMaxHeaderBytes);
    assert.equal(egress.maxRedirects, DEFAULTS.egressMaxRedirects);
  });

  it('rules compile with their config path; limits are taken as written', () => {
    const { egress } = load({
      egress: {
        allow: [{ destination: 'https://api.example.com' }, { destination: 'http://127.0.0.1:8080', addresses: ['127.0.0.1'], methods: ['GET'], paths: ['/v1/'] }],
        connectTimeoutMs: 2000,
        maxResponseBytes: 4096,
        maxHeaderBytes: 2048,
        maxRedirects: 0,
      },
    });
    assert.deepEqual(egress.rules.map((rule) => [rule.path, rule.host, rule.port]), [['/egress/allow/0', 'api.example.com', 443], ['/egress/allow/1', '127.0.0.1', 8080]]);
    assert.deepEqual([egress.connectTimeoutMs, egress.maxResponseBytes, egress.maxHeaderBytes, egress.maxRedirects], [2000, 4096, 2048, 0]);
  });

  it('a bad rule is refused at load with its path: schema errors and rules that could never match', () => {
    refused({ egress: { allow: [{ destination: 'ftp://files.example.com' }] } }, /at \/egress\/allow\/0: destination/);
    refused({ egress: { allow: [{ destination: 'https://api.example.com/v1' }] } }, /at \/egress\/allow\/0: destination/);
    refused({ egress: { allow: [{ destination: 'http://10.0.0.5' }] } }, /at \/egress\/allow\/0: .*private address; list it under addresses/);
    refused({ egress: { allow: [{ destination: 'https://*.com' }] } }, /at \/egress\/allow\/0: .*wildcard/);
    refused({ egress: { allow: [{ destination: 'http://x.test', addresses: ['::ffff:127.0.0.1'] }] } }, /at \/egress\/allow\/0: .*IPv4-mapped/);
    refused({ egress: { allow: [{ destination: 'http://x.test', addresses: ['127.0.0.1/33'] }] } }, /at \/egress\/allow\/0: .*prefix length/);
    refused({ egress: { allow: [{ destination: 'http://x.test', addresses: ['fe80::1%eth0'] }] } }, /at \/egress\/allow\/0: .*not an IP address/);
    refused({ egress: { allow: [{ destination: 'http://x.test', methods: ['CONNECT'] }] } }, /at \/egress\/allow\/0\/methods\/0/);
    refused({ egress: { allow: [{ destination: 'http://x.test', paths: ['v1/'] }] } }, /at \/egress\/allow\/0\/paths\/0/);
    refused({ egress: { maxRedirects: 11 } }, /at \/egress\/maxRedirects/);
    refused({ egress: { allowAll: true } }, /at \/egress: has unknown property "allowAll"/);
  });

  it('a block that covers the cloud metadata address is a warning', () => {
    const config = load({ egress: { allow: [{ destination: 'http://api.internal', addresses: ['0.0.0.0/0', '10.0.0.0/8'] }, { destination: 'http://v6.internal', addresses: ['fd00::/8'] }] } });
    assert.deepEqual(
      config.warnings.filter((warning) => warning.includes('metadata')).map((warning) => warning.split(':')[0]),
      ['/egress/allow/0/addresses', '/egress/allow/1/addresses'],
    );
  });

  it('servers whose requests no rule allows are warned about, per native tool and per Streamable HTTP server', () => {
    writeManifest(join(dir, 'manifests/api.json'), {
      manifestVersion: 1,
      name: 'test.api',
      version: '1',
      serial: 1,
      transport: { type: 'http-api', baseUrl: 'https://api.example.com/v1' },
      tools: [
        { name: 'read', description: 'r', access: 'read', inputSchema: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] }, http: { method: 'GET', path: '/items/{id}' } },
        { name: 'write', description: 'w', access: 'write', inputSchema: { type: 'object' }, http: { method: 'POST', path: '/items' } },
      ],
    });
    writeManifest(join(dir, 'manifests/mcp.json'), { manifestVersion: 1, name: 'test.mcp', version: '1', serial: 1, transport: { type: 'http', url: 'https://mcp.example.com/mcp' }, tools: [] });
    const servers = { api: { manifest: 'api.json' }, remote: { manifest: 'mcp.json' } };
    const none = load({ servers });
    assert.deepEqual(none.warnings.filter((warning) => warning.startsWith('/servers/')).map((warning) => warning.split(':').slice(0, 2).join(':')), [
      '/servers/api: tool read',
      '/servers/api: tool write',
      '/servers/remote: no egress rule allows https',
    ]);
    // GET only under /v1/items/: the POST tool is still warned about, the server not at all once allowed.
    const some = load({ servers, egress: { allow: [{ destination: 'https://api.example.com', methods: ['GET'], paths: ['/v1/items/'] }, { destination: 'https://mcp.example.com' }] } });
    assert.deepEqual(some.warnings.filter((warning) => warning.startsWith('/servers/')).map((warning) => warning.split(':').slice(0, 2).join(':')), ['/servers/api: tool write']);
  });
});
