import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, beforeEach, describe, it } from 'node:test';
import type { CompleteRequestParams, CompleteResult, GetPromptResult, ReadResourceResult, Resource, ResourceTemplateType } from '@modelcontextprotocol/server';
import type { AuditRecord, AuditTrail } from '../../src/audit/trail.ts';
import type { McpBackend } from '../../src/backends/mcp.ts';
import { loadConfig } from '../../src/config/load.ts';
import { WardenError } from '../../src/errors.ts';
import { memoryLimitStore } from '../../src/guard/rate-limits.ts';
import { secretForms } from '../../src/guard/sanitize-output.ts';
import type { KillSwitchState } from '../../src/state/switches.ts';
import { complete } from '../../src/surface/complete.ts';
import { SurfaceRefusal, type SurfaceDeps, type SurfaceRequest } from '../../src/surface/judge.ts';
import { getPrompt, listPrompts } from '../../src/surface/prompts.ts';
import { listResources, listResourceTemplates, readResource } from '../../src/surface/resources.ts';
import { MAX_LISTEN_STREAMS_PER_AGENT, MAX_SUBSCRIPTIONS_PER_SESSION, ResourceSubscriptions, type Subscriber } from '../../src/surface/subscriptions.ts';
import { tempDir, textToolsManifest, writeConfig, writeManifest } from '../helpers.ts';
import { everythingManifest } from '../fixtures/repo-manifests.ts';

// The resource, prompt and completion paths against fake MCP backends: what is judged,
// what is forwarded, what comes back, and the one audit record each request writes.
const { dir, cleanup } = tempDir('warden-surface-');
after(cleanup);

const CANARY = 'canary-Backend+Secret/99=';
writeManifest(join(dir, 'manifests/one.json'), everythingManifest('one'));
writeManifest(join(dir, 'manifests/two.json'), everythingManifest('two'));
writeManifest(join(dir, 'manifests/text.json'), textToolsManifest());
const config = loadConfig(
  writeConfig(join(dir, 'warden.yaml'), {
    version: 1,
    servers: { one: { manifest: 'one.json' }, two: { manifest: 'two.json' }, text: { manifest: 'text.json' } },
    agents: {
      alice: {
        allow: [
          { prompts: ['one__simple-prompt', 'one__args-prompt', 'one__completable-prompt'] },
          { resources: ['demo://resource/static/document/*', 'demo://resource/dynamic/text/*'], server: 'one' },
          // Both servers are granted the dynamic text resources: reading one is ambiguous.
          { resources: ['demo://resource/dynamic/text/*'], server: 'two' },
          { resources: ['text://x/*'], server: 'text' },
        ],
      },
      scoped: {
        allow: [
          { prompts: ['one__simple-prompt'] },
          { prompts: ['two__simple-prompt'], scopes: ['prompts'] },
          { resources: ['demo://resource/static/document/*'], server: 'one', scopes: ['docs'] },
        ],
      },
      limited: { rateLimit: { perMinute: 2, burst: 2 }, allow: [{ prompts: ['one__*'] }] },
      nothing: { allow: [{ tools: ['one__echo'] }] },
    },
  }),
);
assert.equal(config.rejected.size, 0, [...config.rejected.values()].map((r) => r.message).join('\n'));

/** A fake MCP backend: answers from fixed data and records what it was asked. */
class FakeBackend {
  quarantine: unknown = undefined;
  calls: { method: string; args: unknown[] }[] = [];
  resources: Resource[] = [];
  templates: ResourceTemplateType[] = [];
  read: (uri: string) => ReadResourceResult = (uri) => ({ contents: [{ uri, mimeType: 'text/plain', text: `content of ${uri}` }] });
  prompt: (name: string, args: Record<string, string>) => GetPromptResult = (name) => ({ messages: [{ role: 'user', content: { type: 'text', text: `prompt ${name}` } }] });
  completion: (params: CompleteRequestParams) => CompleteResult = () => ({ completion: { values: ['Engineering'], total: 1 } });
  failWith: Error | undefined;

  #answer<T>(method: string, args: unknown[], value: () => T): Promise<T> {
    this.calls.push({ method, args });
    if (this.failWith) return Promise.reject(this.failWith);
    return Promise.resolve(value());
  }
  listResources(): Promise<Resource[]> {
    return this.#answer('listResources', [], () => structuredClone(this.resources));
  }
  listResourceTemplates(): Promise<ResourceTemplateType[]> {
    return this.#answer('listResourceTemplates', [], () => structuredClone(this.templates));
  }
  readResource(uri: string): Promise<ReadResourceResult> {
    return this.#answer('readResource', [uri], () => this.read(uri));
  }
  getPrompt(name: string, args: Record<string, string>): Promise<GetPromptResult> {
    return this.#answer('getPrompt', [name, args], () => this.prompt(name, args));
  }
  complete(params: CompleteRequestParams): Promise<CompleteResult> {
    return this.#answer('complete', [params], () => this.completion(params));
  }
  subscribeResource(uri: string): Promise<void> {
    return this.#answer('subscribeResource', [uri], () => undefined);
  }
  unsubscribeResource(uri: string): Promise<void> {
    return this.#answer('unsubscribeResource', [uri], () => undefined);
  }
}

let backends: Map<string, FakeBackend>;
let records: AuditRecord[];
let killSwitch: KillSwitchState;
let healthy: boolean;
let deps: SurfaceDeps;

beforeEach(() => {
  backends = new Map([
    ['one', new FakeBackend()],
    ['two', new FakeBackend()],
  ]);
  records = [];
  killSwitch = 'off';
  healthy = true;
  const audit: AuditTrail = {
    get healthy() {
      return healthy;
    },
    write(record) {
      records.push(record);
    },
    close() {},
  };
  deps = {
    config: () => config,
    // "text" is a sandbox server: no MCP backend.
    backend: (server) => backends.get(server) as unknown as McpBackend | undefined,
    audit,
    secretForms: () => secretForms([CANARY]),
    killSwitch: () => killSwitch,
    limits: memoryLimitStore(),
  };
});

const alice: SurfaceRequest = { agentName: 'alice' };

/** The refusal a request ends in: a SurfaceRefusal with this code, whose correlation id is its audit record's. */
async function refused(pending: Promise<unknown>, code: string): Promise<SurfaceRefusal> {
  try {
    await pending;
  } catch (error) {
    assert.ok(error instanceof SurfaceRefusal, `expected a SurfaceRefusal, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    assert.equal(records.at(-1)?.['correlationId'], error.correlationId);
    assert.equal(records.at(-1)?.['decision'], 'deny');
    assert.equal(records.at(-1)?.['reason'], code);
    assert.equal(records.at(-1)?.['outcome'], 'refused');
    return error;
  }
  assert.fail(`expected a refusal with ${code}, but the request was served`);
}

function lastRecord(): AuditRecord {
  const record = records.at(-1);
  assert.ok(record);
  return record;
}

describe('resources/read', () => {
  it('reads a URI exactly one server is granted, and audits it', async () => {
    const result = await readResource(deps, alice, 'demo://resource/static/document/architecture.md');
    assert.deepEqual(result, { contents: [{ uri: 'demo://resource/static/document/architecture.md', mimeType: 'text/plain', text: 'content of demo://resource/static/document/architecture.md' }] });
    assert.deepEqual(backends.get('one')!.calls.map((call) => call.method), ['readResource']);
    assert.equal(backends.get('two')!.calls.length, 0);
    assert.equal(records.length, 1);
    assert.equal(lastRecord()['event'], 'resources/read');
    assert.equal(lastRecord()['decision'], 'allow');
    assert.equal(lastRecord()['reason'], null);
    assert.equal(lastRecord()['outcome'], 'ok');
    assert.equal(lastRecord()['server'], 'one');
    assert.equal(lastRecord()['agent'], 'alice');
    assert.equal(lastRecord()['uri'], 'demo://resource/static/document/architecture.md');
  });

  it('refuses an ungranted URI as not found, without asking any server', async () => {
    for (const uri of ['demo://resource/dynamic/blob/1', 'demo://resource/static/document/sub/x.md', 'file:///etc/passwd']) {
      await refused(readResource(deps, alice, uri), 'WARDEN_RESOURCE_NOT_FOUND');
    }
    assert.equal(backends.get('one')!.calls.length + backends.get('two')!.calls.length, 0);
  });

  it('refuses hostile URIs before any grant is tried', async () => {
    for (const uri of ['demo://resource/static/document/../../secret', 'demo://resource/static/document/%2e%2e', 'demo://resource/static/document/a%2fb', 'demo://resource/static/document/a\\b', 'demo://resource/static/document/a\u0000', 'demo://resource/static/document/a\u200b', `demo://resource/static/document/${'a'.repeat(3000)}`, 'nope', '', 42, null, undefined, { uri: 'x' }]) {
      await refused(readResource(deps, alice, uri), 'WARDEN_RESOURCE_URI_INVALID');
    }
    assert.equal(backends.get('one')!.calls.length, 0);
    // The audit record quotes a string URI, bounded.
    assert.ok(records.every((record) => record['uri'] === null || String(record['uri']).length <= 512));
  });

  it('refuses a URI granted on two servers as ambiguous, reading from neither', async () => {
    await refused(readResource(deps, alice, 'demo://resource/dynamic/text/1'), 'WARDEN_RESOURCE_AMBIGUOUS');
    assert.equal(backends.get('one')!.calls.length + backends.get('two')!.calls.length, 0);
  });

  it('a granted URI on a server that is not an MCP server is not found', async () => {
    await refused(readResource(deps, alice, 'text://x/a'), 'WARDEN_RESOURCE_NOT_FOUND');
  });

  it('passes only the contents whose URIs the grants cover; the rest are dropped and counted', async () => {
    backends.get('one')!.read = (uri) => ({
      contents: [
        { uri, text: 'asked for' },
        { uri: 'demo://resource/static/document/other.md', text: 'also granted' },
        { uri: 'file:///etc/shadow', text: 'root:x' },
        { uri: 'demo://resource/static/document/../../../etc/passwd', text: 'climbed' },
        { uri: 'demo://resource/dynamic/blob/1', blob: 'AAAA' },
      ],
    });
    const result = await readResource(deps, alice, 'demo://resource/static/document/a.md');
    assert.deepEqual(result.contents.map((entry) => entry.uri), ['demo://resource/static/document/a.md', 'demo://resource/static/document/other.md']);
    assert.equal(lastRecord()['droppedContents'], 3);
  });

  it('cleans what it returns: a credential and invisible characters never reach the agent; the record counts them', async () => {
    backends.get('one')!.read = (uri) => ({ contents: [{ uri, text: `token ${CANARY} b64 ${Buffer.from(CANARY).toString('base64')}\u200b\u202e` }], _meta: { leak: CANARY } }) as ReadResourceResult;
    const result = await readResource(deps, alice, 'demo://resource/static/document/a.md');
    const json = JSON.stringify(result);
    assert.ok(!json.includes(CANARY));
    assert.ok(!json.includes(Buffer.from(CANARY).toString('base64')));
    assert.ok(!/\\u200b|\\u202e|\u200b|\u202e/.test(json));
    const redactions = lastRecord()['redactions'] as { credential: number; invisible: number };
    assert.equal(redactions.credential, 2);
    assert.equal(redactions.invisible, 2);
  });

  it('a downstream failure is refused with its code, and a credential in its message is masked', async () => {
    backends.get('one')!.failWith = new WardenError('WARDEN_DOWNSTREAM_ERROR', `the server said: ${CANARY}`);
    const refusal = await refused(readResource(deps, alice, 'demo://resource/static/document/a.md'), 'WARDEN_DOWNSTREAM_ERROR');
    assert.ok(!refusal.message.includes(CANARY), refusal.message);
  });

  it('an unexpected failure is refused as WARDEN_INTERNAL, its text only in the audit record', async () => {
    backends.get('one')!.failWith = new TypeError(`oops ${CANARY}`);
    const refusal = await refused(readResource(deps, alice, 'demo://resource/static/document/a.md'), 'WARDEN_INTERNAL');
    assert.ok(!refusal.message.includes('oops'));
  });

  it('a grant with scopes applies only to a session holding them', async () => {
    await refused(readResource(deps, { agentName: 'scoped' }, 'demo://resource/static/document/a.md'), 'WARDEN_RESOURCE_NOT_FOUND');
    await refused(readResource(deps, { agentName: 'scoped', oauth: { scopes: new Set(['other']), subject: 's' } }, 'demo://resource/static/document/a.md'), 'WARDEN_RESOURCE_NOT_FOUND');
    await readResource(deps, { agentName: 'scoped', oauth: { scopes: new Set(['docs']), subject: 'sub-1' } }, 'demo://resource/static/document/a.md');
    assert.equal(lastRecord()['oauthSubject'], 'sub-1');
  });
});

describe('resources/list and resources/templates/list', () => {
  it('lists only the granted resources of each granted server, cleaned', async () => {
    backends.get('one')!.resources = [
      { uri: 'demo://resource/static/document/a.md', name: 'a', _meta: { x: 1 }, icons: [{ src: 'https://x' }] } as Resource,
      { uri: 'demo://resource/static/document/b.md', name: `b ${CANARY}`, description: 'd\u200b' },
      { uri: 'demo://resource/dynamic/blob/1', name: 'blob' },
      { uri: 'demo://resource/static/document/../../etc/passwd', name: 'climb' },
      { uri: 'file:///etc/passwd', name: 'passwd' },
      { uri: 42, name: 'bad' } as unknown as Resource,
    ];
    backends.get('two')!.resources = [{ uri: 'demo://resource/static/document/from-two.md', name: 'not granted on two' }, { uri: 'demo://resource/dynamic/text/9', name: 'granted on two' }];
    const { resources } = await listResources(deps, alice);
    assert.deepEqual(resources.map((resource) => resource.uri), ['demo://resource/static/document/a.md', 'demo://resource/static/document/b.md', 'demo://resource/dynamic/text/9']);
    assert.deepEqual(Object.keys(resources[0]!).sort(), ['name', 'uri']);
    assert.ok(!JSON.stringify(resources).includes(CANARY));
    assert.ok(!JSON.stringify(resources).includes('\u200b'));
    assert.equal(lastRecord()['event'], 'resources/list');
    assert.equal(lastRecord()['count'], 3);
    assert.equal(lastRecord()['decision'], 'allow');
  });

  it('a credential hidden in a listed URI is masked', async () => {
    backends.get('one')!.resources = [{ uri: `demo://resource/static/document/${CANARY}`, name: 'x' }];
    const { resources } = await listResources(deps, alice);
    assert.ok(!JSON.stringify(resources).includes(CANARY), JSON.stringify(resources));
  });

  it('a server that cannot answer adds nothing and is named in the record; the others still list', async () => {
    backends.get('one')!.failWith = new WardenError('WARDEN_SERVER_QUARANTINED', 'quarantined');
    backends.get('two')!.resources = [{ uri: 'demo://resource/dynamic/text/9', name: 'n' }];
    const { resources } = await listResources(deps, alice);
    assert.deepEqual(resources.map((resource) => resource.uri), ['demo://resource/dynamic/text/9']);
    assert.deepEqual(lastRecord()['unavailable'], ['one: WARDEN_SERVER_QUARANTINED']);
  });

  it('an agent without resource grants lists nothing and asks no server', async () => {
    assert.deepEqual(await listResources(deps, { agentName: 'nothing' }), { resources: [] });
    assert.deepEqual(await listResourceTemplates(deps, { agentName: 'nothing' }), { resourceTemplates: [] });
    assert.equal(backends.get('one')!.calls.length, 0);
  });

  it('lists the templates that can produce a granted URI, cleaned', async () => {
    backends.get('one')!.templates = [
      { uriTemplate: 'demo://resource/dynamic/text/{resourceId}', name: 'text', _meta: { x: CANARY } } as ResourceTemplateType,
      { uriTemplate: 'demo://resource/dynamic/blob/{resourceId}', name: 'blob' },
      { uriTemplate: 'demo://{+anything}', name: 'everything' },
    ];
    const { resourceTemplates } = await listResourceTemplates(deps, alice);
    assert.deepEqual(resourceTemplates, [{ uriTemplate: 'demo://resource/dynamic/text/{resourceId}', name: 'text' }]);
    assert.equal(lastRecord()['event'], 'resources/templates/list');
  });

  it('a template carrying invisible characters or a credential does not pass them on', async () => {
    backends.get('one')!.templates = [{ uriTemplate: `demo://resource/dynamic/text/{id}\u200b${CANARY}`, name: 't' }];
    const { resourceTemplates } = await listResourceTemplates(deps, alice);
    const json = JSON.stringify(resourceTemplates);
    assert.ok(!json.includes(CANARY), json);
    assert.ok(!json.includes('\u200b'), json);
  });
});

describe('prompts/list and prompts/get', () => {
  it('lists only granted prompts, as the manifest defines them, under their exposed names', async () => {
    const { prompts } = await listPrompts(deps, alice);
    assert.deepEqual(prompts.map((prompt) => prompt.name), ['one__simple-prompt', 'one__args-prompt', 'one__completable-prompt']);
    const args = prompts.find((prompt) => prompt.name === 'one__args-prompt');
    assert.deepEqual(args?.arguments, [{ name: 'city', description: 'Name of the city', required: true }, { name: 'state', required: false }]);
    assert.equal(lastRecord()['event'], 'prompts/list');
    assert.equal(lastRecord()['count'], 3);
    // Listing asks no server: the manifest is the source.
    assert.equal(backends.get('one')!.calls.length, 0);
  });

  it('a quarantined server\'s prompts vanish from the list and cannot be got', async () => {
    backends.get('one')!.quarantine = { reason: 'drift' };
    assert.deepEqual((await listPrompts(deps, alice)).prompts, []);
    await refused(getPrompt(deps, alice, 'one__simple-prompt', {}), 'WARDEN_PROMPT_NOT_FOUND');
    assert.equal(backends.get('one')!.calls.length, 0);
  });

  it('scoped prompt grants apply only to sessions holding the scopes', async () => {
    assert.deepEqual((await listPrompts(deps, { agentName: 'scoped' })).prompts.map((prompt) => prompt.name), ['one__simple-prompt']);
    const session = { agentName: 'scoped', oauth: { scopes: new Set(['prompts']), subject: 's' } };
    assert.deepEqual((await listPrompts(deps, session)).prompts.map((prompt) => prompt.name), ['one__simple-prompt', 'two__simple-prompt']);
    await refused(getPrompt(deps, { agentName: 'scoped' }, 'two__simple-prompt', {}), 'WARDEN_PROMPT_NOT_FOUND');
    await getPrompt(deps, session, 'two__simple-prompt', {});
    assert.deepEqual(backends.get('two')!.calls.map((call) => call.args[0]), ['simple-prompt']);
  });

  it('gets a granted prompt from its server under the server\'s own name, with the arguments as strings', async () => {
    const result = await getPrompt(deps, alice, 'one__args-prompt', { city: 'Paris', state: 'IDF' });
    assert.deepEqual(result, { messages: [{ role: 'user', content: { type: 'text', text: 'prompt args-prompt' } }] });
    assert.deepEqual(backends.get('one')!.calls, [{ method: 'getPrompt', args: ['args-prompt', { city: 'Paris', state: 'IDF' }] }]);
    assert.equal(lastRecord()['event'], 'prompts/get');
    assert.equal(lastRecord()['prompt'], 'one__args-prompt');
    assert.equal(lastRecord()['server'], 'one');
    assert.match(String(lastRecord()['argsSha256']), /^[0-9a-f]{64}$/);
    // Argument values never reach the audit trail.
    assert.ok(!JSON.stringify(records).includes('Paris'));
  });

  it('refuses an ungranted, unknown or malformed prompt name as not found', async () => {
    for (const name of ['one__resource-prompt', 'two__simple-prompt', 'simple-prompt', 'nope', '', '__proto__', 'constructor', 42, null, undefined]) {
      await refused(getPrompt(deps, alice, name, {}), 'WARDEN_PROMPT_NOT_FOUND');
    }
    assert.equal(backends.get('one')!.calls.length, 0);
  });

  it('refuses arguments the signed definition does not allow', async () => {
    const cases: unknown[] = [
      {}, // city is required
      { state: 'x' }, // still no city
      { city: 'Paris', evil: 'x' }, // undeclared
      { city: 5 }, // not a string
      { city: ['Paris'] },
      { city: null },
      { city: { nested: 'x' } },
      ['Paris'], // not an object
      'city=Paris',
      JSON.parse('{"city":"Paris","__proto__":"x"}'),
      { city: 'x'.repeat(2 * 1024 * 1024) }, // over the argument size limit
    ];
    for (const args of cases) await refused(getPrompt(deps, alice, 'one__args-prompt', args), 'WARDEN_ARGUMENTS_INVALID');
    assert.equal(backends.get('one')!.calls.length, 0);
  });

  it('absent arguments are none: fine for a prompt without required arguments', async () => {
    await getPrompt(deps, alice, 'one__simple-prompt', undefined);
    assert.deepEqual(backends.get('one')!.calls[0]?.args, ['simple-prompt', {}]);
  });

  it('the prompt\'s messages come back cleaned', async () => {
    backends.get('one')!.prompt = () => ({ description: `d ${CANARY}`, messages: [{ role: 'assistant', content: { type: 'text', text: `use ${CANARY}\u{e0041}` } }], _meta: { x: CANARY } }) as GetPromptResult;
    const result = await getPrompt(deps, alice, 'one__simple-prompt', {});
    assert.ok(!JSON.stringify(result).includes(CANARY));
    assert.ok(!JSON.stringify(result).includes('\u{e0041}'));
    assert.equal(result.messages[0]?.role, 'assistant');
  });
});

describe('completion/complete', () => {
  const promptRef = (name: unknown) => ({ ref: { type: 'ref/prompt', name }, argument: { name: 'department', value: 'E' } }) as CompleteRequestParams;

  it('forwards a completion for a granted prompt under the server\'s own name; values cleaned', async () => {
    backends.get('one')!.completion = () => ({ completion: { values: ['Engineering', `Leak ${CANARY}`, 'Hid\u200bden', 42 as unknown as string], total: 4, hasMore: false } });
    const result = await complete(deps, alice, { ...promptRef('one__completable-prompt'), context: { arguments: { other: 'x' } } });
    assert.deepEqual(result.completion.values.length, 3);
    assert.ok(!JSON.stringify(result).includes(CANARY));
    assert.equal(result.completion.values[2], 'Hidden');
    assert.equal(result.completion.total, 4);
    assert.deepEqual(backends.get('one')!.calls[0]?.args[0], { ref: { type: 'ref/prompt', name: 'completable-prompt' }, argument: { name: 'department', value: 'E' }, context: { arguments: { other: 'x' } } });
    assert.equal(lastRecord()['event'], 'completion/complete');
    assert.equal(lastRecord()['server'], 'one');
  });

  it('caps the values at 100 and says there are more', async () => {
    backends.get('one')!.completion = () => ({ completion: { values: Array.from({ length: 150 }, (_, i) => `v${i}`) } });
    const result = await complete(deps, alice, promptRef('one__completable-prompt'));
    assert.equal(result.completion.values.length, 100);
    assert.equal(result.completion.hasMore, true);
  });

  it('refuses a completion for an ungranted or unknown prompt', async () => {
    for (const name of ['one__resource-prompt', 'two__completable-prompt', 'nope', 7]) {
      await refused(complete(deps, alice, promptRef(name)), 'WARDEN_PROMPT_NOT_FOUND');
    }
    assert.equal(backends.get('one')!.calls.length, 0);
  });

  it('refuses malformed requests as invalid arguments', async () => {
    const cases = [
      { ref: { type: 'ref/tool', name: 'one__echo' }, argument: { name: 'a', value: 'b' } },
      { ref: { type: 'ref/resource' }, argument: { name: 'a', value: 'b' } },
      { ref: { type: 'ref/prompt', name: 'one__completable-prompt' } },
      { ref: { type: 'ref/prompt', name: 'one__completable-prompt' }, argument: { name: 'a', value: 5 } },
      { ref: { type: 'ref/prompt', name: 'one__completable-prompt' }, argument: { name: 'a', value: 'x'.repeat(5000) } },
      { ref: { type: 'ref/prompt', name: 'one__completable-prompt' }, argument: { name: 'a', value: 'b' }, context: { arguments: { k: 5 } } },
      { ref: { type: 'ref/prompt', name: 'one__completable-prompt' }, argument: { name: 'a', value: 'b' }, context: { arguments: ['x'] } },
      { ref: { type: 'ref/prompt', name: 'one__completable-prompt' }, argument: { name: 'a', value: 'b' }, context: { arguments: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v'])) } },
      { ref: { type: 'ref/prompt', name: 'one__completable-prompt' }, argument: { name: 'a', value: 'b' }, context: { arguments: JSON.parse('{"__proto__":"x"}') } },
    ];
    for (const params of cases) await refused(complete(deps, alice, params as unknown as CompleteRequestParams), 'WARDEN_ARGUMENTS_INVALID');
    assert.equal(backends.get('one')!.calls.length, 0);
  });

  it('a resource-template completion goes to the one server whose grants cover the template', async () => {
    const params = (uri: string) => ({ ref: { type: 'ref/resource', uri }, argument: { name: 'resourceId', value: '1' } }) as CompleteRequestParams;
    await complete(deps, alice, params('demo://resource/static/document/{name}'));
    assert.equal(backends.get('one')!.calls.length, 1);
    await refused(complete(deps, alice, params('demo://resource/dynamic/text/{resourceId}')), 'WARDEN_RESOURCE_AMBIGUOUS');
    await refused(complete(deps, alice, params('demo://resource/dynamic/blob/{resourceId}')), 'WARDEN_RESOURCE_NOT_FOUND');
    await refused(complete(deps, alice, params('demo://resource/static/document/../{x}')), 'WARDEN_RESOURCE_NOT_FOUND');
    assert.equal(backends.get('one')!.calls.length + backends.get('two')!.calls.length, 1);
  });
});

describe('resource subscriptions of a listen stream', () => {
  const DOC = 'demo://resource/static/document/a.md';
  const stream = (request: SurfaceRequest = alice) => {
    const told: string[] = [];
    const subscriber: Subscriber = { request, notify: (uri) => void told.push(uri) };
    return { subscriber, told };
  };

  it('subscribes each URI the agent may read, once; leaves the rest out; one audit record per URI', async () => {
    const subscriptions = new ResourceSubscriptions(deps);
    const { subscriber, told } = stream();
    const ambiguous = 'demo://resource/dynamic/text/1';
    const granted = await subscriptions.listen(subscriber, [DOC, 'file:///etc/passwd', DOC, ambiguous, 'demo://resource/static/document/b.md']);
    assert.deepEqual(granted, [DOC, 'demo://resource/static/document/b.md']);
    assert.deepEqual(records.map((record) => [record['event'], record['uri'], record['reason']]), [
      ['resources/subscribe', DOC, null],
      ['resources/subscribe', 'file:///etc/passwd', 'WARDEN_RESOURCE_NOT_FOUND'],
      ['resources/subscribe', ambiguous, 'WARDEN_RESOURCE_AMBIGUOUS'],
      ['resources/subscribe', 'demo://resource/static/document/b.md', null],
    ]);
    assert.deepEqual(backends.get('one')!.calls.map((call) => [call.method, call.args[0]]), [
      ['subscribeResource', DOC],
      ['subscribeResource', 'demo://resource/static/document/b.md'],
    ]);
    subscriptions.updated('one', DOC);
    subscriptions.updated('two', DOC);
    assert.deepEqual(told, [DOC]);
    await subscriptions.dropSession(subscriber);
    assert.deepEqual(backends.get('one')!.calls.slice(2).map((call) => call.method), ['unsubscribeResource', 'unsubscribeResource']);
    subscriptions.updated('one', DOC);
    assert.deepEqual(told, [DOC]);
  });

  it('two streams share one downstream subscription; it ends with the last of them', async () => {
    const subscriptions = new ResourceSubscriptions(deps);
    const first = stream();
    const second = stream();
    await subscriptions.listen(first.subscriber, [DOC]);
    await subscriptions.listen(second.subscriber, [DOC]);
    assert.equal(backends.get('one')!.calls.length, 1);
    subscriptions.updated('one', DOC);
    assert.deepEqual([first.told, second.told], [[DOC], [DOC]]);
    await subscriptions.dropSession(first.subscriber);
    assert.equal(backends.get('one')!.calls.length, 1);
    await subscriptions.dropSession(second.subscriber);
    assert.deepEqual(backends.get('one')!.calls.map((call) => call.method), ['subscribeResource', 'unsubscribeResource']);
  });

  it('a list that is not URIs, or names more than the limit, is refused whole and audited as subscriptions/listen; nothing is subscribed', async () => {
    const subscriptions = new ResourceSubscriptions(deps);
    const tooMany = Array.from({ length: MAX_SUBSCRIPTIONS_PER_SESSION + 1 }, (_, index) => `demo://resource/static/document/${index}.md`);
    for (const [uris, count] of [['demo://x', null], [[DOC, 7], 2], [null, null], [{ 0: DOC, length: 1 }, null], [tooMany, tooMany.length]] as const) {
      const refusal = await refused(subscriptions.listen(stream().subscriber, uris), 'WARDEN_ARGUMENTS_INVALID');
      assert.equal(lastRecord()['event'], 'subscriptions/listen');
      assert.equal(lastRecord()['resources'], count);
      assert.ok(refusal.message.length > 0);
    }
    // The limit counts distinct URIs: the same URI many times is one.
    assert.deepEqual(await subscriptions.listen(stream().subscriber, Array.from({ length: 500 }, () => DOC)), [DOC]);
    assert.deepEqual(backends.get('one')!.calls.map((call) => call.method), ['subscribeResource']);
  });

  it('an agent may hold 32 streams with resources at once: the next is refused whole and audited; an ended one makes room', async () => {
    const subscriptions = new ResourceSubscriptions(deps);
    const streams = Array.from({ length: MAX_LISTEN_STREAMS_PER_AGENT }, () => stream().subscriber);
    for (const subscriber of streams) assert.deepEqual(await subscriptions.listen(subscriber, [DOC]), [DOC]);
    await refused(subscriptions.listen(stream().subscriber, [DOC]), 'WARDEN_RATE_LIMITED');
    assert.equal(lastRecord()['event'], 'subscriptions/listen');
    assert.equal(lastRecord()['open'], MAX_LISTEN_STREAMS_PER_AGENT);
    // Another agent's streams are counted apart.
    assert.deepEqual(await subscriptions.listen(stream({ agentName: 'scoped', oauth: { subject: 's', scopes: new Set(['docs']) } }).subscriber, [DOC]), [DOC]);
    await subscriptions.dropSession(streams[0]!);
    assert.deepEqual(await subscriptions.listen(stream().subscriber, [DOC]), [DOC]);
  });

  it('a stream that ends while its URIs are judged asks for no more', async () => {
    const subscriptions = new ResourceSubscriptions(deps);
    const { subscriber } = stream();
    const pending = subscriptions.listen(subscriber, [DOC, 'demo://resource/static/document/b.md']);
    await subscriptions.dropSession(subscriber);
    assert.deepEqual(await pending, []);
    // Whatever was subscribed downstream meanwhile is given back.
    const calls = backends.get('one')!.calls.map((call) => call.method);
    assert.equal(calls.filter((method) => method === 'subscribeResource').length, calls.filter((method) => method === 'unsubscribeResource').length);
  });

  it('an audit trail that throws ends every subscription of the stream and fails the listen', async () => {
    let writes = 0;
    deps = { ...deps, audit: { healthy: true, write: () => { if (++writes > 1) throw new Error('disk full'); }, close() {} } };
    const subscriptions = new ResourceSubscriptions(deps);
    const { subscriber } = stream();
    await assert.rejects(subscriptions.listen(subscriber, [DOC, 'demo://resource/static/document/b.md']), (error: unknown) => !(error instanceof SurfaceRefusal));
    assert.deepEqual(subscriptions.urisOf('one'), []);
  });
});

describe('every surface request: kill switch, rate limit, audit', () => {
  const everyRequest = (request: SurfaceRequest): [string, () => Promise<unknown>][] => [
    ['resources/list', () => listResources(deps, request)],
    ['resources/templates/list', () => listResourceTemplates(deps, request)],
    ['resources/read', () => readResource(deps, request, 'demo://resource/static/document/a.md')],
    ['prompts/list', () => listPrompts(deps, request)],
    ['prompts/get', () => getPrompt(deps, request, 'one__simple-prompt', {})],
    ['completion/complete', () => complete(deps, request, { ref: { type: 'ref/prompt', name: 'one__completable-prompt' }, argument: { name: 'department', value: 'E' } })],
  ];

  it('each writes exactly one audit record, with its event, agent and a fresh correlation id', async () => {
    for (const [event, run] of everyRequest(alice)) {
      const before = records.length;
      await run();
      assert.equal(records.length, before + 1, event);
      assert.equal(lastRecord()['event'], event);
      assert.equal(lastRecord()['agent'], 'alice');
      assert.equal(lastRecord()['decision'], 'allow');
      assert.equal(typeof lastRecord()['durationMs'], 'number');
    }
    assert.equal(new Set(records.map((record) => record['correlationId'])).size, records.length);
  });

  it('the kill switch on refuses them all without asking any server; readonly does not', async () => {
    killSwitch = 'on';
    for (const [event, run] of everyRequest(alice)) {
      await refused(run(), 'WARDEN_KILL_SWITCH');
      assert.equal(lastRecord()['event'], event);
    }
    assert.equal(backends.get('one')!.calls.length, 0);
    killSwitch = 'readonly';
    for (const [, run] of everyRequest(alice)) await run();
  });

  it('an audit trail that cannot be written refuses them all (fail closed)', async () => {
    healthy = false;
    for (const [, run] of everyRequest(alice)) await refused(run(), 'WARDEN_INTERNAL');
    assert.equal(backends.get('one')!.calls.length, 0);
  });

  it('a write to the audit trail that throws fails the request rather than answer unaudited', async () => {
    deps = { ...deps, audit: { healthy: true, write: () => { throw new Error('disk full'); }, close() {} } };
    await assert.rejects(listPrompts(deps, alice));
  });

  it('the agent\'s rate limit applies to them, whatever the request', async () => {
    const limited = { agentName: 'limited' };
    await listPrompts(deps, limited);
    await getPrompt(deps, limited, 'one__simple-prompt', {});
    await refused(listPrompts(deps, limited), 'WARDEN_RATE_LIMITED');
    assert.equal((lastRecord()['limit'] as { scope: string }).scope, 'agent');
    await refused(getPrompt(deps, limited, 'one__simple-prompt', {}), 'WARDEN_RATE_LIMITED');
    assert.equal(backends.get('one')!.calls.length, 1);
  });

  it('an agent no longer configured is refused', async () => {
    await refused(listPrompts(deps, { agentName: 'ghost' }), 'WARDEN_INTERNAL');
  });
});
