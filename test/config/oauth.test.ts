import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../src/config/load.ts';
import { expectWardenError, tempDir, writeConfig } from '../helpers.ts';
import { newSigningKey, type SigningKey } from '../fixtures/oauth-idp.ts';

const { dir, cleanup } = tempDir();
after(cleanup);
let key: SigningKey;
before(async () => {
  key = await newSigningKey('key-1');
  writeFileSync(join(dir, 'idp-jwks.json'), JSON.stringify({ keys: [key.publicJwk] }));
});

const OAUTH = { issuer: 'https://login.example.com/', resource: 'https://warden.example.com/mcp', jwksUrl: 'https://login.example.com/keys' };

let counter = 0;
function load(oauth: Record<string, unknown> | undefined, agents: Record<string, unknown> = { bot: { oauthSubject: 'client-1', allow: [] } }) {
  const file = writeConfig(join(dir, `oauth-${counter++}.yaml`), { version: 1, servers: {}, agents, ...(oauth ? { http: { oauth } } : {}) });
  return loadConfig(file);
}

describe('http.oauth in the config', () => {
  it('loads with its defaults and derives the metadata URL from the resource', () => {
    const config = load(OAUTH);
    const oauth = config.http.oauth;
    assert.ok(oauth);
    assert.deepEqual(oauth.algorithms, ['RS256', 'PS256', 'ES256', 'EdDSA', 'Ed25519']);
    assert.equal(oauth.clockSkewSeconds, 30);
    assert.equal(oauth.subjectClaim, 'sub');
    assert.deepEqual(oauth.authorizationServers, ['https://login.example.com/']);
    assert.deepEqual(oauth.keys, { url: 'https://login.example.com/keys' });
    assert.equal(oauth.metadataUrl, 'https://warden.example.com/.well-known/oauth-protected-resource/mcp');
    assert.equal(oauth.jwksCooldownMs, 30_000);
    assert.equal(config.agents.get('bot')?.oauthSubject, 'client-1');
    assert.deepEqual(config.warnings, []);
  });

  it('refuses HMAC algorithms and none, saying why', () => {
    for (const algorithm of ['HS256', 'HS512', 'hs384']) {
      expectWardenError(() => load({ ...OAUTH, algorithms: ['RS256', algorithm] }), 'WARDEN_CONFIG_INVALID', /at \/http\/oauth\/algorithms\/1: .*HMAC.*public key.*asymmetric algorithms only/);
    }
    expectWardenError(() => load({ ...OAUTH, algorithms: ['none'] }), 'WARDEN_CONFIG_INVALID', /algorithms\/0: "none" means unsigned tokens/);
    expectWardenError(() => load({ ...OAUTH, algorithms: ['RSA-OAEP'] }), 'WARDEN_CONFIG_INVALID', /"RSA-OAEP" is not a signature algorithm/);
  });

  it('needs exactly one of jwksUrl and jwksFile', () => {
    expectWardenError(() => load({ ...OAUTH, jwksFile: 'idp-jwks.json' }), 'WARDEN_CONFIG_INVALID', /at \/http\/oauth: give jwksUrl or jwksFile, not both/);
    const { jwksUrl: _, ...neither } = OAUTH;
    expectWardenError(() => load(neither), 'WARDEN_CONFIG_INVALID', /at \/http\/oauth: give jwksUrl .* or jwksFile/);
  });

  it('fetches keys over https, or plain http to a loopback address written as an address', () => {
    for (const url of ['http://login.example.com/keys', 'http://localhost:8080/keys', 'http://10.0.0.5/keys', 'ftp://login.example.com/keys', 'not a url']) {
      expectWardenError(() => load({ ...OAUTH, jwksUrl: url }), 'WARDEN_CONFIG_INVALID', /at \/http\/oauth\/jwksUrl: /);
    }
    expectWardenError(() => load({ ...OAUTH, jwksUrl: 'https://user:secret@login.example.com/keys' }), 'WARDEN_CONFIG_INVALID', /must not hold credentials/);
    for (const url of ['http://127.0.0.1:8080/keys', 'http://[::1]:8080/keys']) assert.ok(load({ ...OAUTH, jwksUrl: url }).http.oauth);
  });

  it('checks the resource identifier', () => {
    for (const resource of ['warden.example.com/mcp', 'http://warden.example.com/mcp', 'https://warden.example.com/mcp#x', 'https://warden.example.com/mcp?tenant=1']) {
      expectWardenError(() => load({ ...OAUTH, resource }), 'WARDEN_CONFIG_INVALID', /at \/http\/oauth\/resource: /);
    }
    const proxied = load({ ...OAUTH, resource: 'https://gw.example.com/warden/mcp' });
    assert.equal(proxied.http.oauth?.metadataUrl, 'https://gw.example.com/.well-known/oauth-protected-resource/warden/mcp');
    assert.match(proxied.warnings.join('\n'), /\/http\/oauth\/resource: its path is \/warden\/mcp/);
  });

  it('caps the clock skew and bounds the JWKS settings', () => {
    expectWardenError(() => load({ ...OAUTH, clockSkewSeconds: 301 }), 'WARDEN_CONFIG_INVALID', /clockSkewSeconds/);
    expectWardenError(() => load({ ...OAUTH, clockSkewSeconds: -1 }), 'WARDEN_CONFIG_INVALID', /clockSkewSeconds/);
    expectWardenError(() => load({ ...OAUTH, jwksCooldownSeconds: 0 }), 'WARDEN_CONFIG_INVALID', /jwksCooldownSeconds/);
    expectWardenError(() => load({ ...OAUTH, subjectClaim: 'sub claim' }), 'WARDEN_CONFIG_INVALID', /subjectClaim/);
    expectWardenError(() => load({ ...OAUTH, audience: 'x' }), 'WARDEN_CONFIG_INVALID', /has unknown property "audience"/);
  });

  it('refuses two agents with the same subject', () => {
    const agents = { a: { oauthSubject: 'client-1', allow: [] }, b: { oauthSubject: 'client-1', allow: [] } };
    expectWardenError(() => load(OAUTH, agents), 'WARDEN_CONFIG_INVALID', /at \/agents\/b\/oauthSubject: the same subject as agent "a"/);
  });

  it('a JWKS file: public asymmetric keys only', () => {
    assert.deepEqual(load({ ...OAUTH, jwksUrl: undefined, jwksFile: 'idp-jwks.json' }).http.oauth?.keys, { file: join(dir, 'idp-jwks.json'), jwks: { keys: [key.publicJwk] } });
    const bad: [string, unknown, RegExp][] = [
      ['secret.json', { keys: [{ kty: 'oct', k: 'c2VjcmV0' }] }, /kty "oct"; only public keys/],
      ['private.json', { keys: [{ ...key.publicJwk, d: 'AAAA' }] }, /private key material \("d"\)/],
      ['empty.json', { keys: [] }, /not a JWKS with keys/],
      ['broken.json', { keys: [{ kty: 'RSA', n: 'AQAB' }] }, /not a usable public key/],
      ['text.json', 'not json', /is not JSON/],
    ];
    for (const [file, content, pattern] of bad) {
      writeFileSync(join(dir, file), typeof content === 'string' ? content : JSON.stringify(content));
      expectWardenError(() => load({ ...OAUTH, jwksUrl: undefined, jwksFile: file }), 'WARDEN_CONFIG_INVALID', pattern);
    }
    expectWardenError(() => load({ ...OAUTH, jwksUrl: undefined, jwksFile: 'missing.json' }), 'WARDEN_CONFIG_INVALID', /cannot be read \(ENOENT\)/);
  });

  it('grant scopes: checked by the schema; warned about where they can never apply', () => {
    expectWardenError(() => load(OAUTH, { bot: { oauthSubject: 'c', allow: [{ tools: ['*'], scopes: ['two words'] }] } }), 'WARDEN_CONFIG_INVALID', /scopes\/0/);
    expectWardenError(() => load(OAUTH, { bot: { oauthSubject: 'c', allow: [{ tools: ['*'], scopes: [] }] } }), 'WARDEN_CONFIG_INVALID', /scopes/);
    const config = load(OAUTH, { bot: { oauthSubject: 'c', allow: [{ tools: ['*'], scopes: ['notes.read', 'https://api.example.com/notes'] }] }, stdio: { allow: [{ tools: ['*'], scopes: ['x'] }] } });
    assert.deepEqual(config.agents.get('bot')?.grants[0]?.scopes, ['notes.read', 'https://api.example.com/notes']);
    assert.match(config.warnings.join('\n'), /\/agents\/stdio\/allow\/0\/scopes: this grant never applies.*agent "stdio" has no oauthSubject/);
    const without = load(undefined, { bot: { oauthSubject: 'c', allow: [{ tools: ['*'], scopes: ['x'] }] } });
    assert.match(without.warnings.join('\n'), /\/agents\/bot\/oauthSubject: has no effect without http.oauth/);
    assert.match(without.warnings.join('\n'), /\/agents\/bot\/allow\/0\/scopes: .*http.oauth is not set/);
  });
});
