import assert from 'node:assert/strict';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { SignJWT, UnsecuredJWT } from 'jose';
import { pino } from 'pino';
import type { AuditRecord } from '../../src/audit/trail.ts';
import { Broker } from '../../src/broker.ts';
import { loadConfig, sha256Hex } from '../../src/config/load.ts';
import { startHttpFront, type HttpFront } from '../../src/front/http.ts';
import { closedPort, encodePart, newSigningKey, startIdp, type TestIdp } from '../fixtures/oauth-idp.ts';
import { NOTES_SERVER, NOTES_TOOLS, refusalCode, stdioManifest, tempDir, textOf, writeConfig, writeManifest } from '../helpers.ts';

const { dir, cleanup } = tempDir();
const RESOURCE = 'https://warden.example.test/mcp';
const METADATA_URL = 'https://warden.example.test/.well-known/oauth-protected-resource/mcp';
const STATIC_TOKEN = 'static-token-0123456789abcdef';
const SUBJECT = '0oa-crm-client-7f3a';

interface Served {
  broker: Broker;
  front: HttpFront;
  records: AuditRecord[];
}

let idp: TestIdp;
let main: Served;
/** Brokers whose identity provider cannot be reached, or answers garbage. */
let down: Served;
let garbage: TestIdp;
let garbled: Served;
const presented: string[] = [];

async function serve(name: string, data: Record<string, unknown>): Promise<Served> {
  const config = loadConfig(writeConfig(join(dir, `${name}.yaml`), { version: 1, state: { dir: `state-${name}` }, audit: { file: `audit-${name}.jsonl` }, ...data }));
  const broker = new Broker(config, { logger: pino({ level: 'silent' }), audit: 'memory' });
  await broker.start();
  const front = await startHttpFront(broker, { host: '127.0.0.1', port: 0 });
  return { broker, front, records: (broker.audit as unknown as { records: AuditRecord[] }).records };
}

before(async () => {
  idp = await startIdp();
  garbage = await startIdp();
  garbage.mode = 'not-json';
  writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
  main = await serve('main', {
    servers: { notes: { manifest: 'notes.json' } },
    agents: {
      alice: { tokenSha256: sha256Hex(STATIC_TOKEN), allow: [{ tools: ['notes__echo', 'notes__list_notes'] }, { tools: ['notes__search_notes'], scopes: ['notes.read'] }] },
      'crm-bot': {
        oauthSubject: SUBJECT,
        allow: [
          { tools: ['notes__echo'] },
          { tools: ['notes__list_notes', 'notes__get_note'], scopes: ['notes.read'] },
          { tools: ['notes__add_note'], access: ['write'], scopes: ['notes.read', 'notes.write'] },
        ],
      },
    },
    http: { oauth: { issuer: idp.issuer, resource: RESOURCE, jwksUrl: idp.jwksUrl }, allowedOrigins: ['https://app.example.test'] },
  });
  const agents = { alice: { tokenSha256: sha256Hex(STATIC_TOKEN), allow: [] }, 'crm-bot': { oauthSubject: SUBJECT, allow: [] } };
  down = await serve('down', { servers: {}, agents, http: { oauth: { issuer: idp.issuer, resource: RESOURCE, jwksUrl: `http://127.0.0.1:${await closedPort()}/keys` } } });
  garbled = await serve('garbled', { servers: {}, agents, http: { oauth: { issuer: idp.issuer, resource: RESOURCE, jwksUrl: garbage.jwksUrl } } });
});

after(async () => {
  for (const served of [main, down, garbled]) {
    await served?.front.close();
    await served?.broker.close();
  }
  await idp?.close();
  await garbage?.close();
  cleanup();
});

/** A token for crm-bot from the identity provider, valid for five minutes. */
async function token(extra: Record<string, unknown> = {}): Promise<string> {
  const signed = await idp.sign({ sub: SUBJECT, aud: RESOURCE, ...extra });
  presented.push(signed);
  return signed;
}

async function connect(front: HttpFront, bearerToken: string): Promise<Client> {
  const client = new Client({ name: 'oauth-agent', version: '1.0.0' }, { versionNegotiation: { mode: 'legacy' } });
  await client.connect(new StreamableHTTPClientTransport(new URL(front.url), { requestInit: { headers: { Authorization: `Bearer ${bearerToken}` } } }));
  return client;
}

interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A raw HTTP request, for what an SDK client would never send. */
function raw(front: HttpFront, options: { path?: string; method?: string; headers?: Record<string, string>; body?: string }): Promise<RawResponse> {
  const url = new URL(front.url);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: url.hostname, port: url.port, path: options.path ?? url.pathname, method: options.method ?? 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...options.headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

const INIT = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } });
const names = async (client: Client) => (await client.listTools()).tools.map((tool) => tool.name).sort();
const now = () => Math.floor(Date.now() / 1000);

describe('HTTP front: OAuth access tokens', () => {
  it('a valid token lets an SDK client list and call the tools its scopes allow', async () => {
    const client = await connect(main.front, await token({ scope: 'notes.read', jti: 'token-id-1' }));
    try {
      assert.deepEqual(await names(client), ['notes__echo', 'notes__get_note', 'notes__list_notes']);
      assert.match(textOf(await client.callTool({ name: 'notes__list_notes', arguments: {} })), /Welcome/);
      assert.equal(textOf(await client.callTool({ name: 'notes__echo', arguments: { text: 'via oauth' } })), 'via oauth');
    } finally {
      await client.close();
    }
    const calls = main.records.filter((record) => record.event === 'tools/call' && record.tokenId === 'token-id-1');
    assert.equal(calls.length, 2);
    for (const call of calls) {
      assert.equal(call.agent, 'crm-bot');
      assert.equal(call.oauthSubject, SUBJECT);
    }
  });

  it('scopes gate the list and the call; a missing scope is a coded refusal that names it', async () => {
    const none = await connect(main.front, await token());
    const read = await connect(main.front, await token({ scp: ['notes.read'] }));
    const both = await connect(main.front, await token({ scope: 'notes.write notes.read' }));
    try {
      assert.deepEqual(await names(none), ['notes__echo']);
      assert.deepEqual(await names(both), ['notes__add_note', 'notes__echo', 'notes__get_note', 'notes__list_notes']);

      const listed = await none.callTool({ name: 'notes__list_notes', arguments: {} });
      assert.equal(refusalCode(listed), 'WARDEN_INSUFFICIENT_SCOPE');
      assert.match(textOf(listed), /needs the OAuth scope "notes\.read"/);
      assert.deepEqual((listed._meta?.['mcp-warden/refusal'] as { missingScopes?: string[] }).missingScopes, ['notes.read']);

      const write = await read.callTool({ name: 'notes__add_note', arguments: { title: 't', body: 'b' } });
      assert.equal(refusalCode(write), 'WARDEN_INSUFFICIENT_SCOPE');
      assert.match(textOf(write), /"notes\.write"/);
      assert.doesNotMatch(textOf(write), /"notes\.read"/, 'only what is missing is named');
      assert.match(textOf(await both.callTool({ name: 'notes__add_note', arguments: { title: 'scoped', body: 'written with notes.write' } })), /scoped|id/);

      // No grant covers it whatever the scopes: the usual refusal, which says nothing about scopes.
      assert.equal(refusalCode(await both.callTool({ name: 'notes__delete_note', arguments: { id: 1 } })), 'WARDEN_TOOL_NOT_FOUND');
      // Scopes come from the verified token, never from the message.
      const claimed = await none.callTool({ name: 'notes__list_notes', arguments: {}, _meta: { scope: 'notes.read', scopes: ['notes.read'] } });
      assert.equal(refusalCode(claimed), 'WARDEN_INSUFFICIENT_SCOPE');
    } finally {
      await Promise.all([none.close(), read.close(), both.close()]);
    }
    const refused = main.records.find((record) => record.event === 'tools/call' && record.cause === 'insufficient-scope');
    assert.deepEqual(refused?.missingScopes, ['notes.read']);
    assert.equal(refused?.reason, 'WARDEN_INSUFFICIENT_SCOPE');
  });

  it('a static token still works, and a grant that names scopes never applies to it', async () => {
    const alice = await connect(main.front, STATIC_TOKEN);
    try {
      assert.deepEqual(await names(alice), ['notes__echo', 'notes__list_notes']);
      assert.equal(textOf(await alice.callTool({ name: 'notes__echo', arguments: { text: 'static' } })), 'static');
      assert.equal(refusalCode(await alice.callTool({ name: 'notes__search_notes', arguments: { query: 'x' } })), 'WARDEN_TOOL_NOT_FOUND');
    } finally {
      await alice.close();
    }
  });

  it('serves the protected-resource metadata at both well-known paths, behind the Host and Origin checks', async () => {
    const expected = { resource: RESOURCE, authorization_servers: [idp.issuer], bearer_methods_supported: ['header'], scopes_supported: ['notes.read', 'notes.write'] };
    for (const path of ['/.well-known/oauth-protected-resource', '/.well-known/oauth-protected-resource/mcp']) {
      const res = await raw(main.front, { path, method: 'GET' });
      assert.equal(res.status, 200, path);
      assert.match(String(res.headers['content-type']), /application\/json/);
      assert.deepEqual(JSON.parse(res.body), expected);
      assert.equal((await raw(main.front, { path, method: 'HEAD' })).status, 200);
      assert.equal((await raw(main.front, { path, method: 'POST', body: '{}' })).status, 405);
      assert.equal((await raw(main.front, { path, method: 'GET', headers: { host: 'evil.example' } })).status, 403);
      assert.equal((await raw(main.front, { path, method: 'GET', headers: { origin: 'https://evil.example' } })).status, 403);
      assert.equal((await raw(main.front, { path, method: 'GET', headers: { origin: 'https://app.example.test' } })).status, 200);
    }
    for (const path of ['/.well-known/oauth-authorization-server', '/.well-known/oauth-protected-resource/other', '/.well-known/openid-configuration']) {
      assert.equal((await raw(main.front, { path, method: 'GET' })).status, 404, path);
    }
  });

  it('every 401 points at the metadata document; error="invalid_token" when a token was presented', async () => {
    const none = await raw(main.front, { body: INIT });
    assert.equal(none.status, 401);
    assert.equal(none.headers['www-authenticate'], `Bearer realm="mcp-warden", resource_metadata="${METADATA_URL}"`);
    const wrong = await raw(main.front, { body: INIT, headers: { authorization: `Bearer ${await token({ aud: 'https://other.example.test/mcp' })}` } });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.headers['www-authenticate'], `Bearer realm="mcp-warden", resource_metadata="${METADATA_URL}", error="invalid_token"`);
    assert.equal(JSON.parse(wrong.body).error.data.code, 'WARDEN_UNAUTHENTICATED');
  });

  it('refuses bad tokens with 401 and audits each with its reason, never the token', async () => {
    const base = { iss: idp.issuer, sub: SUBJECT, aud: RESOURCE, exp: now() + 300 };
    const unpublished = await idp.newKey('key-never-published', { publish: false });
    const [header, , signature] = (await token()).split('.');
    const cases: [string, string][] = [
      [await token({ exp: now() - 3600 }), 'expired'],
      [await token({ nbf: now() + 3600 }), 'not-yet-valid'],
      [await token({ iss: 'https://evil.example' }), 'wrong-issuer'],
      [await token({ aud: 'https://other.example.test/mcp' }), 'wrong-audience'],
      [new UnsecuredJWT(base).encode(), 'algorithm-not-allowed'],
      [await new SignJWT(base).setProtectedHeader({ alg: 'HS256', kid: idp.key.kid }).sign(new TextEncoder().encode(idp.key.publicPem)), 'algorithm-not-allowed'],
      [await idp.sign({ sub: SUBJECT, aud: RESOURCE }, { key: unpublished }), 'unknown-key'],
      [await idp.sign({ sub: SUBJECT, aud: RESOURCE }, { key: await newSigningKey(idp.key.kid) }), 'bad-signature'],
      [`${header}.${encodePart({ ...base, scope: 'notes.read notes.write' })}.${signature}`, 'bad-signature'],
      [await token({ sub: 'client-nobody-mapped' }), 'unknown-subject'],
      [`${encodePart({ alg: 'RS256' })}.bm90IGpzb24.c2ln`, 'malformed'],
      [`${'a'.repeat(9000)}.b.c`, 'oversized'],
      ['not-a-static-token', 'invalid-token'],
    ];
    const start = main.records.length;
    for (const [bad, reason] of cases) {
      presented.push(bad);
      const res = await raw(main.front, { body: INIT, headers: { authorization: `Bearer ${bad}` } });
      assert.equal(res.status, 401, reason);
      assert.match(String(res.headers['www-authenticate']), /error="invalid_token"/);
    }
    const failures = main.records.slice(start).filter((record) => record.event === 'auth.failure');
    assert.deepEqual(failures.map((record) => record.reason), cases.map(([, reason]) => reason));
    assert.equal(failures.find((record) => record.reason === 'unknown-subject')?.subject, 'client-nobody-mapped');
    assert.equal(failures.find((record) => record.reason === 'unknown-key')?.kid, 'key-never-published');
    const trail = JSON.stringify(main.records);
    for (const presentedToken of presented) assert.ok(!trail.includes(presentedToken), 'no token reaches the audit trail');
    for (const signaturePart of presented.map((presentedToken) => presentedToken.split('.')[2] ?? '').filter((part) => part.length >= 20)) {
      assert.ok(!trail.includes(signaturePart), 'not even a signature');
    }
    // An SDK client with a refused token does not get in.
    await assert.rejects(connect(main.front, await token({ exp: now() - 3600 })));
  });

  it('an identity provider that is down or answers garbage: 401, audited, and the broker keeps serving', async () => {
    for (const served of [down, garbled]) {
      for (let i = 0; i < 3; i++) {
        const res = await raw(served.front, { body: INIT, headers: { authorization: `Bearer ${await token()}` } });
        assert.equal(res.status, 401);
      }
      assert.deepEqual(served.records.filter((record) => record.event === 'auth.failure').map((record) => record.reason), ['jwks-unavailable', 'jwks-unavailable', 'jwks-unavailable']);
      // Static tokens do not depend on the identity provider; the metadata is still served.
      const alice = await connect(served.front, STATIC_TOKEN);
      assert.deepEqual((await alice.listTools()).tools, []);
      await alice.close();
      assert.equal((await raw(served.front, { path: '/.well-known/oauth-protected-resource/mcp', method: 'GET' })).status, 200);
    }
    assert.equal(garbage.fetches, 1, 'a failed fetch is not repeated within the cooldown');
    // The main broker is unaffected.
    const client = await connect(main.front, await token({ scope: 'notes.read' }));
    assert.ok((await names(client)).includes('notes__list_notes'));
    await client.close();
  });
});
