import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { SignJWT, UnsecuredJWT } from 'jose';
import { pino } from 'pino';
import type { AgentPolicy, OAuthSettings } from '../../src/config/types.ts';
import { agentForSubject, createAccessTokenVerifier, MAX_ACCESS_TOKEN_HEADER, protectedResourceMetadata, type TokenVerdict } from '../../src/front/oauth.ts';
import { compileGrants } from '../../src/policy/grants.ts';
import { closedPort, encodePart, newSigningKey, startIdp, type TestIdp } from '../fixtures/oauth-idp.ts';

const RESOURCE = 'https://warden.example.test/mcp';
const logger = pino({ level: 'silent' });
let idp: TestIdp;

before(async () => {
  idp = await startIdp();
});
after(async () => {
  await idp?.close();
});

function settings(overrides: Partial<OAuthSettings> = {}): OAuthSettings {
  return {
    issuer: idp.issuer,
    resource: RESOURCE,
    metadataUrl: 'https://warden.example.test/.well-known/oauth-protected-resource/mcp',
    authorizationServers: [idp.issuer],
    keys: { url: idp.jwksUrl },
    algorithms: ['RS256', 'ES256'],
    clockSkewSeconds: 30,
    subjectClaim: 'sub',
    jwksTimeoutMs: 5_000,
    jwksCooldownMs: 60 * 60_000, // no refetch within a test unless a test lowers it
    jwksCacheMs: 60 * 60_000,
    ...overrides,
  };
}

const bearer = (token: string) => `Bearer ${token}`;
const now = () => Math.floor(Date.now() / 1000);
/** A valid token's claims for this broker. */
const claims = (extra: Record<string, unknown> = {}) => ({ sub: 'client-1', aud: RESOURCE, scope: 'notes.read notes.write', ...extra });

function reasonOf(verdict: TokenVerdict): string {
  return verdict.ok ? 'ok' : verdict.reason;
}

describe('access token verifier', () => {
  it('accepts a valid token: subject, scopes and token id, and fetches the keys once', async () => {
    const before = idp.fetches;
    const verify = createAccessTokenVerifier(settings(), logger);
    const verdict = await verify(bearer(await idp.sign(claims({ jti: 'token-42' }))));
    assert.ok(verdict.ok, reasonOf(verdict));
    assert.equal(verdict.subject, 'client-1');
    assert.deepEqual([...verdict.scopes].sort(), ['notes.read', 'notes.write']);
    assert.equal(verdict.tokenId, 'token-42');
    for (let i = 0; i < 5; i++) assert.ok((await verify(bearer(await idp.sign(claims())))).ok);
    assert.equal(idp.fetches - before, 1, 'the key set is cached');
  });

  it('reads scopes from scope (space-separated), scp (a list or a string), and none at all', async () => {
    const verify = createAccessTokenVerifier(settings(), logger);
    const scopesOf = async (extra: Record<string, unknown>) => {
      const verdict = await verify(bearer(await idp.sign(claims({ scope: undefined, ...extra }))));
      assert.ok(verdict.ok, reasonOf(verdict));
      return [...verdict.scopes].sort();
    };
    assert.deepEqual(await scopesOf({ scope: '  a   b ' }), ['a', 'b']);
    assert.deepEqual(await scopesOf({ scp: ['x', 'y'] }), ['x', 'y']);
    assert.deepEqual(await scopesOf({ scp: 'x y' }), ['x', 'y']);
    assert.deepEqual(await scopesOf({}), []);
    assert.equal(reasonOf(await verify(bearer(await idp.sign(claims({ scope: 42 }))))), 'malformed');
    assert.equal(reasonOf(await verify(bearer(await idp.sign(claims({ scope: undefined, scp: [1, 2] }))))), 'malformed');
  });

  it('maps the subject from the configured claim', async () => {
    const verify = createAccessTokenVerifier(settings({ subjectClaim: 'client_id' }), logger);
    const verdict = await verify(bearer(await idp.sign(claims({ client_id: 'opaque-0oa1b2' }))));
    assert.ok(verdict.ok && verdict.subject === 'opaque-0oa1b2');
    assert.deepEqual((await verify(bearer(await idp.sign(claims())))), { ok: false, reason: 'missing-claim', detail: { claim: 'client_id' } });
    for (const value of [42, '', 'x'.repeat(257), ['a']]) {
      assert.equal(reasonOf(await verify(bearer(await idp.sign(claims({ client_id: value }))))), 'missing-claim', JSON.stringify(value).slice(0, 20));
    }
  });

  it('refuses expired and not-yet-valid tokens, with the configured skew and no more', async () => {
    const verify = createAccessTokenVerifier(settings({ clockSkewSeconds: 30 }), logger);
    const check = async (extra: Record<string, unknown>) => reasonOf(await verify(bearer(await idp.sign(claims(extra)))));
    assert.equal(await check({ exp: now() - 10 }), 'ok', 'within the skew');
    assert.equal(await check({ exp: now() - 120 }), 'expired');
    assert.equal(await check({ nbf: now() + 10 }), 'ok', 'within the skew');
    assert.equal(await check({ nbf: now() + 120 }), 'not-yet-valid');
    assert.equal(await check({ iat: now() + 10 }), 'ok', 'within the skew');
    assert.equal(await check({ iat: now() + 120 }), 'not-yet-valid');
    assert.equal(await check({ exp: undefined }), 'missing-claim', 'a token without exp never expires: refused');
    assert.equal(await check({ exp: 'tomorrow' }), 'malformed');
    const strict = createAccessTokenVerifier(settings({ clockSkewSeconds: 0 }), logger);
    assert.equal(reasonOf(await strict(bearer(await idp.sign(claims({ exp: now() - 10 }))))), 'expired');
  });

  it('refuses a wrong issuer and a wrong audience; accepts an audience list holding the resource', async () => {
    const verify = createAccessTokenVerifier(settings(), logger);
    const check = async (extra: Record<string, unknown>) => reasonOf(await verify(bearer(await idp.sign(claims(extra)))));
    assert.equal(await check({ iss: 'https://evil.example' }), 'wrong-issuer');
    assert.equal(await check({ iss: `${idp.issuer}/` }), 'wrong-issuer', 'compared exactly');
    assert.equal(await check({ iss: undefined }), 'missing-claim');
    assert.equal(await check({ aud: 'https://other.example.test/mcp' }), 'wrong-audience');
    assert.equal(await check({ aud: `${RESOURCE}/` }), 'wrong-audience', 'compared exactly');
    assert.equal(await check({ aud: undefined }), 'missing-claim');
    assert.equal(await check({ aud: ['https://other.example.test', RESOURCE] }), 'ok');
  });

  it('refuses alg none, and HS256 signed with the public key as the secret (key confusion)', async () => {
    const verify = createAccessTokenVerifier(settings(), logger);
    const unsigned = new UnsecuredJWT({ iss: idp.issuer, exp: now() + 300, ...claims() }).encode();
    assert.deepEqual(await verify(bearer(unsigned)), { ok: false, reason: 'algorithm-not-allowed', detail: { alg: 'none' } });
    const handMade = `${encodePart({ alg: 'none', kid: idp.key.kid })}.${encodePart({ iss: idp.issuer, exp: now() + 300, ...claims() })}.`;
    assert.equal(reasonOf(await verify(bearer(handMade))), 'algorithm-not-allowed');
    for (const secret of [idp.key.publicPem, JSON.stringify(idp.key.publicJwk), idp.key.publicJwk.n!]) {
      const confused = await new SignJWT({ iss: idp.issuer, exp: now() + 300, ...claims() }).setProtectedHeader({ alg: 'HS256', kid: idp.key.kid }).sign(new TextEncoder().encode(secret));
      assert.deepEqual(await verify(bearer(confused)), { ok: false, reason: 'algorithm-not-allowed', detail: { alg: 'HS256' } });
    }
    // An asymmetric algorithm that is not on this allowlist is refused the same way.
    const ps = await newSigningKey(idp.key.kid, 'PS256');
    const token = await new SignJWT({ iss: idp.issuer, exp: now() + 300, ...claims() }).setProtectedHeader({ alg: 'PS256', kid: ps.kid }).sign(ps.privateKey);
    assert.equal(reasonOf(await verify(bearer(token))), 'algorithm-not-allowed');
  });

  it('refuses a tampered payload and a token signed by a key the provider does not publish', async () => {
    const verify = createAccessTokenVerifier(settings(), logger);
    const [header, , signature] = (await idp.sign(claims())).split('.');
    const tampered = `${header}.${encodePart({ iss: idp.issuer, exp: now() + 300, ...claims({ sub: 'admin', scope: 'notes.read notes.write admin' }) })}.${signature}`;
    assert.equal(reasonOf(await verify(bearer(tampered))), 'bad-signature');
    const stranger = await newSigningKey(idp.key.kid);
    assert.equal(reasonOf(await verify(bearer(await idp.sign(claims(), { key: stranger })))), 'bad-signature', 'same kid, other key');
  });

  it('an unknown kid refetches the key set at most once per cooldown', async () => {
    const unpublished = await idp.newKey('key-unpublished', { publish: false });
    const verify = createAccessTokenVerifier(settings(), logger);
    const start = idp.fetches;
    assert.deepEqual(await verify(bearer(await idp.sign(claims(), { key: unpublished }))), { ok: false, reason: 'unknown-key', detail: { kid: 'key-unpublished' } });
    assert.equal(idp.fetches - start, 1, 'the first lookup fetches the set');
    for (let i = 0; i < 10; i++) assert.equal(reasonOf(await verify(bearer(await idp.sign(claims(), { key: unpublished })))), 'unknown-key');
    assert.equal(idp.fetches - start, 1, 'within the cooldown an unknown kid does not fetch again');
    assert.ok((await verify(bearer(await idp.sign(claims())))).ok, 'known keys keep working');
  });

  it('a rotated key is picked up by the refetch for its unknown kid once the cooldown has passed', async () => {
    const verify = createAccessTokenVerifier(settings({ jwksCooldownMs: 0 }), logger);
    assert.ok((await verify(bearer(await idp.sign(claims())))).ok);
    const start = idp.fetches;
    const rotated = await idp.newKey('key-rotated');
    const verdict = await verify(bearer(await idp.sign(claims(), { key: rotated })));
    assert.ok(verdict.ok, reasonOf(verdict));
    assert.equal(idp.fetches - start, 1);
  });

  it('refuses malformed, oversized and non-JWT tokens without fetching keys', async () => {
    const verify = createAccessTokenVerifier(settings({ keys: { url: `http://127.0.0.1:${await closedPort()}/jwks` } }), logger);
    const cases: [string, string][] = [
      ['Bearer a.b.c', 'malformed'],
      [`Bearer ${encodePart('text')}.${encodePart({})}.abc`, 'malformed'],
      [`Bearer ${encodePart({ alg: 'RS256' })}.not-json.abc`, 'malformed'],
      [`Bearer ${encodePart({ alg: 'RS256', crit: ['x'], x: 1 })}.${encodePart({})}.abc`, 'malformed'],
      [`Bearer ${encodePart({ kid: 'k' })}.${encodePart({})}.abc`, 'malformed'],
      ['Bearer not-a-jwt', 'invalid-token'],
      ['Bearer a.b.c.d.e', 'invalid-token'],
      ['Basic dXNlcjpwYXNz', 'invalid-token'],
      ['Bearer a..c', 'invalid-token'],
      [`Bearer ${'a'.repeat(MAX_ACCESS_TOKEN_HEADER)}.b.c`, 'oversized'],
    ];
    for (const [header, reason] of cases) assert.equal(reasonOf(await verify(header)), reason, header.slice(0, 60));
  });

  it('never throws and never accepts on arbitrary input', async () => {
    const verify = createAccessTokenVerifier(settings({ keys: { file: 'keys.json', jwks: { keys: [idp.key.publicJwk] } } }), logger);
    const part = fc.oneof(fc.base64String({ maxLength: 60 }).map((text) => text.replace(/=/g, '').replace(/\+/g, '-').replace(/\//g, '_')), fc.json({ maxDepth: 2 }).map((json) => Buffer.from(json).toString('base64url')));
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.string({ maxLength: 200 }), fc.tuple(part, part, part).map((parts) => `Bearer ${parts.join('.')}`)), async (header) => {
        assert.equal((await verify(header)).ok, false);
      }),
      { numRuns: 200 },
    );
  });

  it('keys from a file: valid tokens pass, unknown keys are refused, nothing is fetched', async () => {
    const start = idp.fetches;
    const verify = createAccessTokenVerifier(settings({ keys: { file: 'keys.json', jwks: { keys: [idp.key.publicJwk] } } }), logger);
    assert.ok((await verify(bearer(await idp.sign(claims())))).ok);
    const other = await newSigningKey('key-other');
    assert.equal(reasonOf(await verify(bearer(await idp.sign(claims(), { key: other })))), 'unknown-key');
    assert.equal(idp.fetches, start);
  });
});

describe('access token verifier: the key set cannot be had', () => {
  it('a JWKS endpoint that is down refuses tokens (jwks-unavailable), and is not retried within the cooldown', async () => {
    const verify = createAccessTokenVerifier(settings({ keys: { url: `http://127.0.0.1:${await closedPort()}/jwks` } }), logger);
    for (let i = 0; i < 3; i++) assert.equal(reasonOf(await verify(bearer(await idp.sign(claims())))), 'jwks-unavailable');
  });

  for (const mode of ['not-json', 'not-jwks', 'error', 'redirect', 'huge'] as const) {
    it(`a JWKS endpoint that answers ${mode} refuses tokens, fetched once per cooldown`, async () => {
      idp.mode = mode;
      try {
        const verify = createAccessTokenVerifier(settings(), logger);
        const start = idp.fetches;
        for (let i = 0; i < 5; i++) assert.equal(reasonOf(await verify(bearer(await idp.sign(claims())))), 'jwks-unavailable');
        assert.equal(idp.fetches - start, 1, 'a failed fetch is not repeated within the cooldown');
      } finally {
        idp.mode = 'ok';
      }
    });
  }

  it('with no cooldown, each token tries again and the endpoint coming back is picked up', async () => {
    idp.mode = 'error';
    const verify = createAccessTokenVerifier(settings({ jwksCooldownMs: 0 }), logger);
    const start = idp.fetches;
    assert.equal(reasonOf(await verify(bearer(await idp.sign(claims())))), 'jwks-unavailable');
    assert.equal(reasonOf(await verify(bearer(await idp.sign(claims())))), 'jwks-unavailable');
    assert.equal(idp.fetches - start, 2);
    idp.mode = 'ok';
    assert.ok((await verify(bearer(await idp.sign(claims())))).ok);
  });
});

describe('subjects and metadata', () => {
  const agents = new Map<string, AgentPolicy>([
    ['crm-bot', { name: 'crm-bot', oauthSubject: '0oa1b2c3', grants: compileGrants([{ tools: ['crm__*'], scopes: ['crm.read'] }, { tools: ['crm__update'], access: ['write'], scopes: ['crm.write', 'crm.read'] }]), promptGrants: [], resourceGrants: [], serverRequestGrants: [], rateLimit: {} }],
    ['static', { name: 'static', grants: compileGrants([{ tools: ['*'] }]), promptGrants: [], resourceGrants: [], serverRequestGrants: [], rateLimit: {} }],
  ]);

  it('a subject maps only to the agent that names it, exactly', () => {
    assert.equal(agentForSubject('0oa1b2c3', agents), 'crm-bot');
    for (const subject of ['0OA1B2C3', '0oa1b2c3 ', 'static', 'crm-bot', '']) assert.equal(agentForSubject(subject, agents), undefined, subject);
  });

  it('the metadata document names the resource, the authorization servers and the scopes grants use', () => {
    assert.deepEqual(protectedResourceMetadata(settings(), agents), {
      resource: RESOURCE,
      authorization_servers: [idp.issuer],
      bearer_methods_supported: ['header'],
      scopes_supported: ['crm.read', 'crm.write'],
    });
    assert.ok(!('scopes_supported' in protectedResourceMetadata(settings(), new Map([...agents].filter(([name]) => name === 'static')))));
  });
});
