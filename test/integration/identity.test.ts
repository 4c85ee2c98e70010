import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createLocalJWKSet, decodeJwt, jwtVerify, type JSONWebKeySet } from 'jose';
import type { Broker } from '../../src/broker.ts';
import { loadConfig } from '../../src/config/load.ts';
import { CLI, ROGUE_SERVER, startBroker, stdioManifest, tempDir, textOf, writeConfig, writeManifest } from '../helpers.ts';
import { rogueManifestTools } from '../fixtures/rogue-tools.ts';

const { dir, cleanup } = tempDir();
let broker: Broker;
let configFile: string;

/** A tool server that records what it received: the test reads it back out of band. */
const received: string[] = [];

before(async () => {
  // One signed manifest serves both servers: the same release, so both are accepted.
  writeManifest(join(dir, 'manifests/rogue.json'), stdioManifest('rogue', ROGUE_SERVER, rogueManifestTools(), { era: 'legacy' }));
  configFile = writeConfig(join(dir, 'warden.yaml'), {
    version: 1,
    servers: { crm: { manifest: 'rogue.json', identity: { audience: 'https://crm.example', lifetimeSeconds: 120 } }, plain: { manifest: 'rogue.json' } },
    agents: { alice: { allow: [{ tools: ['*'] }] } },
  });
  const config = loadConfig(configFile);
  assert.equal(config.rejected.size, 0);
  broker = await startBroker(config);
  const backend = broker.backends.get('crm')!;
  const original = backend.callTool.bind(backend);
  backend.callTool = async (call) => {
    received.push(String(call.meta?.['dev.mcp-warden/identity'] ?? ''));
    return original(call);
  };
});

after(async () => {
  await broker?.close();
  cleanup();
});

describe('identity tokens', () => {
  it('a server that asks for it gets a short-lived EdDSA token naming the agent, tool and call', async () => {
    const result = await broker.callTool('alice', 'crm__meta', {});
    const token = received.at(-1) ?? '';
    const jwks = JSON.parse(spawnSync(process.execPath, [CLI, 'jwks', '--config', configFile], { encoding: 'utf8' }).stdout) as JSONWebKeySet;
    const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(jwks), { issuer: 'mcp-warden', audience: 'https://crm.example', algorithms: ['EdDSA'] });
    assert.equal(protectedHeader.alg, 'EdDSA');
    assert.equal(payload.sub, 'alice');
    assert.equal(payload['tool'], 'meta');
    assert.match(String(payload.jti), /^[0-9a-f-]{36}$/);
    assert.ok((payload.exp ?? 0) - (payload.iat ?? 0) <= 120);
    // the server echoed its _meta, token included: the agent gets it redacted
    assert.ok(!JSON.stringify(result).includes(token));
    assert.match(textOf(result), /redacted/);
  });

  it('every call gets its own token; a server that did not ask gets none', async () => {
    await broker.callTool('alice', 'crm__meta', {});
    assert.notEqual(received.at(-1), received.at(-2));
    assert.deepEqual(JSON.parse(textOf(await broker.callTool('alice', 'plain__meta', {}))), {});
  });

  it('a token for one server is refused by another audience', async () => {
    const jwks = JSON.parse(spawnSync(process.execPath, [CLI, 'jwks', '--config', configFile], { encoding: 'utf8' }).stdout) as JSONWebKeySet;
    await assert.rejects(jwtVerify(received.at(-1) ?? '', createLocalJWKSet(jwks), { audience: 'https://other.example' }));
    assert.equal(decodeJwt(received.at(-1) ?? '').aud, 'https://crm.example');
  });

  it('the signing key is created once, readable by its owner only, and jwks holds no private part', () => {
    assert.equal(statSync(join(dir, 'state/broker-identity.key')).mode & 0o777, 0o600);
    const out = spawnSync(process.execPath, [CLI, 'jwks', '--config', configFile], { encoding: 'utf8' }).stdout;
    const key = (JSON.parse(out) as JSONWebKeySet).keys[0] as Record<string, unknown>;
    assert.equal(key['kty'], 'OKP');
    assert.equal(key['crv'], 'Ed25519');
    assert.equal(key['d'], undefined);
  });
});

describe('broker identity key', () => {
  it('a key file that is not an Ed25519 PKCS#8 key is refused with a code, never replaced', async () => {
    const { loadBrokerIdentity } = await import('../../src/identity/broker-identity.ts');
    const { generateKeyPairSync } = await import('node:crypto');
    const { writeFileSync, readFileSync } = await import('node:fs');
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    for (const [name, content] of [['rsa.key', rsa], ['garbage.key', 'not a key']] as const) {
      const file = join(dir, name);
      writeFileSync(file, content);
      await assert.rejects(loadBrokerIdentity(file, 'mcp-warden'), (error: { code?: string }) => error.code === 'WARDEN_IDENTITY_KEY');
      assert.equal(readFileSync(file, 'utf8'), content);
    }
  });
});
