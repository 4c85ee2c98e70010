import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client, ProtocolError, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { parse } from 'yaml';
import type { Broker } from '../../src/broker.ts';
import { loadConfig, sha256Hex } from '../../src/config/load.ts';
import { startHttpFront, type HttpFront } from '../../src/front/http.ts';
import { openStateStore } from '../../src/state/store.ts';
import type { KillSwitchState } from '../../src/state/switches.ts';
import { CLI, ROOT, startBroker, stdioManifest, tempDir, waitFor, writeConfig, writeManifest } from '../helpers.ts';
import { everythingManifest } from '../fixtures/repo-manifests.ts';
import { SURFACE_PROMPTS, SURFACE_TOOLS } from '../fixtures/surface-tools.ts';

// Resources, prompts and completion through the real broker: server-everything as the demo
// workspace grants it, and a hostile server (test/fixtures/surface-server.ts) that tries to
// leak the credential the broker injects into it. Agents of both eras, over stdio (the
// CLI) and over the HTTP front (an in-process broker).

const { dir, cleanup } = tempDir('warden-surface-int-');
const CANARY = 'canary-surface-2c9e71f04b';
const CANARY_B64 = Buffer.from(CANARY).toString('base64');
const DETECTABLE = 'ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8';
const TOKEN = 'surface-agent-token-0123456789';
const SURFACE_SERVER = join(ROOT, 'test/fixtures/surface-server.ts');
const EVERYTHING_PROMPTS = (parse(readFileSync(join(ROOT, 'manifests/everything.manifest.yaml'), 'utf8')) as { prompts: { name: string }[] }).prompts;

const GRANTED_PROMPTS = ['everything__simple-prompt', 'everything__args-prompt', 'everything__completable-prompt', 'surface__brief'];
const STATIC_DOCS = ['architecture', 'extension', 'features', 'how-it-works', 'instructions', 'startup', 'structure'].map((name) => `demo://resource/static/document/${name}.md`);

function policy(name: string): Record<string, unknown> {
  return {
    version: 1,
    servers: { everything: { manifest: 'everything.json' }, surface: { manifest: 'surface.json' } },
    credentials: { surface: { API_TOKEN: { env: 'WARDEN_SURFACE_CANARY' } } },
    agents: {
      demo: {
        tokenSha256: sha256Hex(TOKEN),
        allow: [
          { tools: ['everything__echo'] },
          { prompts: ['everything__simple-prompt', 'everything__args-prompt', 'everything__completable-prompt'] },
          { prompts: ['surface__*'] },
          { resources: ['demo://resource/static/document/*', 'demo://resource/dynamic/text/*'], server: 'everything' },
          { resources: ['surface://docs/*'], server: 'surface' },
        ],
      },
      // Both servers offer this document, and this agent is granted it on both.
      twice: {
        tokenSha256: sha256Hex(`${TOKEN}-twice`),
        allow: [
          { resources: ['demo://resource/static/document/*'], server: 'everything' },
          { resources: ['demo://resource/static/document/architecture.md'], server: 'surface' },
        ],
      },
    },
    limits: { maxResultBytes: 2048 },
    audit: { file: `audit-${name}.jsonl` },
    state: { dir: `state-${name}` },
  };
}

let stdioConfig: string;
let httpConfig: string;
let broker: Broker;
let front: HttpFront;

before(async () => {
  writeManifest(join(dir, 'manifests/everything.json'), everythingManifest('everything'));
  const tools = SURFACE_TOOLS.map((tool) => ({ ...tool, access: 'read' }));
  writeManifest(join(dir, 'manifests/surface.json'), { ...stdioManifest('surface', SURFACE_SERVER, tools), prompts: SURFACE_PROMPTS['signed'], credentials: [{ name: 'API_TOKEN' }] });
  stdioConfig = writeConfig(join(dir, 'stdio.yaml'), policy('stdio'));
  httpConfig = writeConfig(join(dir, 'http.yaml'), policy('http'));
  process.env['WARDEN_SURFACE_CANARY'] = CANARY;
  const config = loadConfig(httpConfig);
  assert.equal(config.rejected.size, 0, [...config.rejected.values()].map((rejection) => rejection.message).join('\n'));
  broker = await startBroker(config, { audit: undefined });
  for (const [server, backend] of broker.backends) assert.equal(backend.quarantine, undefined, `${server} matches its signed manifest`);
  front = await startHttpFront(broker, { host: '127.0.0.1', port: 0 });
});

after(async () => {
  await front?.close();
  await broker?.close();
  delete process.env['WARDEN_SURFACE_CANARY'];
  cleanup();
});

type Era = 'legacy' | 'modern';
type Transport = 'stdio' | 'http';

async function connect(transport: Transport, era: Era, token = TOKEN, agent = 'demo'): Promise<Client> {
  const client = new Client({ name: 'surface-agent', version: '1.0.0' }, { versionNegotiation: { mode: era === 'modern' ? { pin: '2026-07-28' } : 'legacy' } });
  if (transport === 'stdio') {
    await client.connect(
      new StdioClientTransport({
        command: process.execPath,
        args: [CLI, 'serve', '--config', stdioConfig, '--stdio', '--agent', agent],
        env: { PATH: process.env['PATH'] ?? '', WARDEN_SURFACE_CANARY: CANARY },
        stderr: 'ignore',
      }),
    );
  } else {
    await client.connect(new StreamableHTTPClientTransport(new URL(front.url), { requestInit: { headers: { Authorization: `Bearer ${token}` } } }));
  }
  assert.equal(client.getProtocolEra(), era);
  return client;
}

/** The protocol error a request ends in: its JSON-RPC code and the broker's data. */
async function rpcError(pending: Promise<unknown>): Promise<{ code: number; data: { code?: string; correlationId?: string } | undefined }> {
  try {
    await pending;
  } catch (error) {
    assert.ok(error instanceof ProtocolError, `expected a protocol error, got ${String(error)}`);
    return { code: error.code, data: error.data as { code?: string; correlationId?: string } | undefined };
  }
  assert.fail('expected the request to be refused');
}

/** Refused with this broker code and JSON-RPC code; returns the correlation id of its audit record. */
async function refusedWith(pending: Promise<unknown>, wardenCode: string, rpcCodes: readonly number[]): Promise<string> {
  const { code, data } = await rpcError(pending);
  assert.equal(data?.code, wardenCode);
  assert.ok(rpcCodes.includes(code), `${wardenCode}: JSON-RPC code ${code}, expected one of ${rpcCodes.join(', ')}`);
  assert.match(String(data?.correlationId), /^[0-9a-f-]{36}$/);
  return data!.correlationId!;
}

// Invalid params. A resource not found is -32002 in the 2025 revisions and -32602 in
// 2026-07-28; the SDK answers -32602 on every revision, and clients accept either.
const INVALID_PARAMS = [-32602];
const NOT_FOUND = [-32002, -32602];
const INTERNAL = [-32603];

function audit(name: Transport): Record<string, unknown>[] {
  return readFileSync(join(dir, `audit-${name}.jsonl`), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
}

function setKillSwitch(name: Transport, state: KillSwitchState): void {
  const store = openStateStore(join(dir, `state-${name}`), 'read-write');
  try {
    store.killSwitch.set(state, 'test', Date.now());
  } finally {
    store.close();
  }
}

const noLeak = (value: unknown): void => {
  const json = JSON.stringify(value);
  for (const form of [CANARY, CANARY_B64, CANARY_B64.replace(/=+$/, ''), Buffer.from(CANARY).toString('hex'), DETECTABLE]) assert.ok(!json.includes(form), `${form} leaked: ${json.slice(0, 400)}`);
  assert.ok(!/\\u200b|\\u202e|\\u001b|\u200b|\u202e|\u001b|\u{e0041}/u.test(json), `an invisible character leaked: ${json.slice(0, 400)}`);
};

const COMBINATIONS: readonly [Transport, Era][] = [
  ['stdio', 'legacy'],
  ['stdio', 'modern'],
  ['http', 'legacy'],
  ['http', 'modern'],
];

for (const [transport, era] of COMBINATIONS) {
  describe(`${era} agent over ${transport}`, () => {
    let client: Client;
    before(async () => {
      client = await connect(transport, era);
    });
    after(async () => {
      await client?.close();
    });

    it('the broker offers prompts, resources and completions', () => {
      const capabilities = client.getServerCapabilities();
      assert.ok(capabilities?.prompts);
      assert.ok(capabilities?.resources);
      assert.ok(capabilities?.completions);
    });

    it('prompts/list: only the granted prompts, with the signed definitions under their exposed names', async () => {
      const { prompts } = await client.listPrompts();
      assert.deepEqual(prompts.map((prompt) => prompt.name).sort(), [...GRANTED_PROMPTS].sort());
      for (const prompt of prompts.filter((candidate) => candidate.name.startsWith('everything__'))) {
        const signed = EVERYTHING_PROMPTS.find((candidate) => `everything__${candidate.name}` === prompt.name);
        assert.deepEqual({ ...prompt, _meta: undefined }, { ...signed, name: prompt.name, _meta: undefined });
      }
      const brief = prompts.find((prompt) => prompt.name === 'surface__brief');
      assert.deepEqual(brief?.arguments, SURFACE_PROMPTS['signed']![0]!['arguments']);
    });

    it('prompts/get: a granted prompt, with its arguments, from the live server', async () => {
      const simple = await client.getPrompt({ name: 'everything__simple-prompt' });
      assert.equal(simple.messages.length, 1);
      const args = await client.getPrompt({ name: 'everything__args-prompt', arguments: { city: 'Paris', state: 'Texas' } });
      const text = (args.messages[0]?.content as { text?: string }).text ?? '';
      assert.match(text, /Paris/);
      assert.match(text, /Texas/);
    });

    it('prompts/get: ungranted, unknown or malformed names are refused as not found (-32602)', async () => {
      for (const name of ['everything__resource-prompt', 'everything__nope', 'resource-prompt', 'surface__exfiltrate', '__proto__', 'a'.repeat(500)]) {
        await refusedWith(client.getPrompt({ name, arguments: {} }), 'WARDEN_PROMPT_NOT_FOUND', INVALID_PARAMS);
      }
    });

    it('prompts/get: unknown or missing required arguments are refused (-32602)', async () => {
      await refusedWith(client.getPrompt({ name: 'everything__args-prompt', arguments: { city: 'Paris', evil: 'x' } }), 'WARDEN_ARGUMENTS_INVALID', INVALID_PARAMS);
      await refusedWith(client.getPrompt({ name: 'everything__args-prompt', arguments: { state: 'Texas' } }), 'WARDEN_ARGUMENTS_INVALID', INVALID_PARAMS);
      await refusedWith(client.getPrompt({ name: 'everything__args-prompt' }), 'WARDEN_ARGUMENTS_INVALID', INVALID_PARAMS);
      await refusedWith(client.getPrompt({ name: 'everything__simple-prompt', arguments: { extra: 'x' } }), 'WARDEN_ARGUMENTS_INVALID', INVALID_PARAMS);
    });

    it('prompts/get: a non-string argument never reaches the server', async () => {
      // The SDK's request schema refuses it before the broker's handler runs.
      const { code } = await rpcError(client.getPrompt({ name: 'everything__args-prompt', arguments: { city: 5 as unknown as string } }));
      assert.ok([-32602, -32603].includes(code), String(code));
    });

    it('resources/list: the granted resources of each server, nothing that climbs or is not granted', async () => {
      const { resources } = await client.listResources();
      // The URI that carried the credential is listed masked (reading it finds nothing).
      assert.deepEqual(resources.map((resource) => resource.uri).sort(), [...STATIC_DOCS, 'surface://docs/a.md', 'surface://docs/big.bin', 'surface://docs/leak.md', 'surface://docs/multi.md', 'surface://docs/[redacted: credential]'].sort());
      noLeak(resources);
      const a = resources.find((resource) => resource.uri === 'surface://docs/a.md');
      assert.equal(a?._meta, undefined);
      assert.equal((a as { icons?: unknown } | undefined)?.icons, undefined);
    });

    it('resources/templates/list: only templates a grant covers', async () => {
      const { resourceTemplates } = await client.listResourceTemplates();
      assert.deepEqual(resourceTemplates.map((template) => template.uriTemplate).sort(), ['demo://resource/dynamic/text/{resourceId}', 'surface://docs/{name}']);
      noLeak(resourceTemplates);
    });

    it('resources/read: a granted URI is read from its server', async () => {
      const doc = await client.readResource({ uri: 'demo://resource/static/document/architecture.md' });
      assert.equal(doc.contents[0]?.uri, 'demo://resource/static/document/architecture.md');
      assert.ok(((doc.contents[0] as { text?: string }).text ?? '').length > 0);
      const dynamic = await client.readResource({ uri: 'demo://resource/dynamic/text/3' });
      assert.match((dynamic.contents[0] as { text?: string }).text ?? '', /Resource 3/);
    });

    it('resources/read: ungranted URIs are not found; hostile ones are invalid', async () => {
      for (const uri of ['demo://resource/dynamic/blob/3', 'surface://secret/keys', 'demo://resource/static/document/sub/x.md', 'file:///etc/passwd']) {
        await refusedWith(client.readResource({ uri }), 'WARDEN_RESOURCE_NOT_FOUND', NOT_FOUND);
      }
      for (const uri of ['demo://resource/static/document/../../x', 'surface://docs/../../etc/passwd', 'surface://docs/%2e%2e/x', 'surface://docs/a%2Fb', 'surface://docs/a\\b', 'surface://docs/a\u0000', 'surface://docs/a\u200b.md', `surface://docs/${'a'.repeat(3000)}`, 'nope', '']) {
        await refusedWith(client.readResource({ uri }), 'WARDEN_RESOURCE_URI_INVALID', INVALID_PARAMS);
      }
    });

    it('resources/read: a credential the server puts in contents never reaches the agent, in any form', async () => {
      const leak = await client.readResource({ uri: 'surface://docs/leak.md' });
      noLeak(leak);
      const text = (leak.contents[0] as { text?: string }).text ?? '';
      assert.match(text, /\[redacted: credential\]/);
      assert.match(text, /\[redacted: secret\]/);
      assert.match(text, /red/);
      const a = await client.readResource({ uri: 'surface://docs/a.md' });
      assert.equal(a.contents[0]?._meta, undefined);
      noLeak(a);
    });

    it('resources/read: contents the agent did not ask for pass only if granted', async () => {
      const multi = await client.readResource({ uri: 'surface://docs/multi.md' });
      assert.deepEqual(multi.contents.map((entry) => entry.uri), ['surface://docs/multi.md', 'surface://docs/sibling.md']);
      noLeak(multi);
    });

    it('resources/read: a blob over the size limit is withheld whole', async () => {
      const big = await client.readResource({ uri: 'surface://docs/big.bin' });
      const entry = big.contents[0] as { blob?: string; text?: string };
      assert.equal(entry.blob, undefined);
      assert.match(entry.text ?? '', /withheld by mcp-warden/);
    });

    it('prompts/get: the hostile server\'s messages are cleaned (text, image _meta, embedded resource, description)', async () => {
      const brief = await client.getPrompt({ name: 'surface__brief', arguments: { topic: 'security' } });
      noLeak(brief);
      assert.equal(brief.messages.length, 3);
      assert.deepEqual(brief.messages.map((message) => message.role), ['user', 'assistant', 'user']);
      const image = brief.messages[1]!.content as { type: string; data?: string; _meta?: unknown };
      assert.equal(image.type, 'image');
      assert.ok(image.data);
      assert.equal(image._meta, undefined);
      assert.equal(brief._meta?.['leaked'], undefined);
    });

    it('completion/complete: works for a granted prompt, refused for an ungranted one', async () => {
      const result = await client.complete({ ref: { type: 'ref/prompt', name: 'everything__completable-prompt' }, argument: { name: 'department', value: 'E' } });
      assert.deepEqual(result.completion.values, ['Engineering']);
      await refusedWith(client.complete({ ref: { type: 'ref/prompt', name: 'everything__resource-prompt' }, argument: { name: 'resourceType', value: 'T' } }), 'WARDEN_PROMPT_NOT_FOUND', INVALID_PARAMS);
      await refusedWith(client.complete({ ref: { type: 'ref/prompt', name: 'completable-prompt' }, argument: { name: 'department', value: 'E' } }), 'WARDEN_PROMPT_NOT_FOUND', INVALID_PARAMS);
      const hostile = await client.complete({ ref: { type: 'ref/prompt', name: 'surface__brief' }, argument: { name: 'topic', value: 'se' } });
      assert.equal(hostile.completion.values[0], 'se-one');
      noLeak(hostile);
    });

    it('completion/complete: for a resource template a grant covers', async () => {
      const result = await client.complete({ ref: { type: 'ref/resource', uri: 'surface://docs/{name}' }, argument: { name: 'name', value: 'a' } });
      assert.equal(result.completion.values[0], 'a-one');
      noLeak(result);
      await refusedWith(client.complete({ ref: { type: 'ref/resource', uri: 'surface://secret/{name}' }, argument: { name: 'name', value: 'a' } }), 'WARDEN_RESOURCE_NOT_FOUND', NOT_FOUND);
    });
  });
}

describe('the audit trail', () => {
  for (const transport of ['stdio', 'http'] as const) {
    it(`${transport}: every request writes one record with its event, decision and reason`, async () => {
      const client = await connect(transport, 'modern');
      const before = audit(transport).length;
      const refusals: [string, string, string][] = [];
      try {
        await client.listPrompts();
        await client.getPrompt({ name: 'everything__simple-prompt' });
        await client.listResources();
        await client.listResourceTemplates();
        await client.readResource({ uri: 'demo://resource/dynamic/text/1' });
        await client.complete({ ref: { type: 'ref/prompt', name: 'everything__completable-prompt' }, argument: { name: 'department', value: 'S' } });
        refusals.push([await refusedWith(client.getPrompt({ name: 'everything__resource-prompt' }), 'WARDEN_PROMPT_NOT_FOUND', INVALID_PARAMS), 'prompts/get', 'WARDEN_PROMPT_NOT_FOUND']);
        refusals.push([await refusedWith(client.readResource({ uri: 'demo://resource/dynamic/blob/1' }), 'WARDEN_RESOURCE_NOT_FOUND', NOT_FOUND), 'resources/read', 'WARDEN_RESOURCE_NOT_FOUND']);
        refusals.push([await refusedWith(client.readResource({ uri: 'demo://resource/static/document/../x' }), 'WARDEN_RESOURCE_URI_INVALID', INVALID_PARAMS), 'resources/read', 'WARDEN_RESOURCE_URI_INVALID']);
        refusals.push([await refusedWith(client.getPrompt({ name: 'everything__args-prompt', arguments: { city: 'x', evil: 'y' } }), 'WARDEN_ARGUMENTS_INVALID', INVALID_PARAMS), 'prompts/get', 'WARDEN_ARGUMENTS_INVALID']);
        refusals.push([await refusedWith(client.complete({ ref: { type: 'ref/prompt', name: 'nope' }, argument: { name: 'a', value: 'b' } }), 'WARDEN_PROMPT_NOT_FOUND', INVALID_PARAMS), 'completion/complete', 'WARDEN_PROMPT_NOT_FOUND']);
      } finally {
        await client.close();
      }
      const records = audit(transport).slice(before).filter((record) => String(record['event']).match(/^(prompts|resources|completion)\//));
      assert.deepEqual(
        records.map((record) => [record['event'], record['decision'], record['reason']]),
        [
          ['prompts/list', 'allow', null],
          ['prompts/get', 'allow', null],
          ['resources/list', 'allow', null],
          ['resources/templates/list', 'allow', null],
          ['resources/read', 'allow', null],
          ['completion/complete', 'allow', null],
          ['prompts/get', 'deny', 'WARDEN_PROMPT_NOT_FOUND'],
          ['resources/read', 'deny', 'WARDEN_RESOURCE_NOT_FOUND'],
          ['resources/read', 'deny', 'WARDEN_RESOURCE_URI_INVALID'],
          ['prompts/get', 'deny', 'WARDEN_ARGUMENTS_INVALID'],
          ['completion/complete', 'deny', 'WARDEN_PROMPT_NOT_FOUND'],
        ],
      );
      for (const record of records) assert.equal(record['agent'], 'demo');
      // A refusal's correlation id names its record.
      for (const [correlationId, event, reason] of refusals) {
        const record = records.find((candidate) => candidate['correlationId'] === correlationId);
        assert.equal(record?.['event'], event);
        assert.equal(record?.['reason'], reason);
      }
      assert.equal(records.find((record) => record['event'] === 'resources/read' && record['decision'] === 'allow')?.['server'], 'everything');
      assert.equal(records.find((record) => record['event'] === 'prompts/get' && record['decision'] === 'allow')?.['prompt'], 'everything__simple-prompt');
      // Neither the credential nor the argument values reach the audit trail.
      assert.ok(!JSON.stringify(audit(transport)).includes(CANARY));
    });
  }

  it('a read of cleaned contents records what was redacted', async () => {
    const client = await connect('http', 'legacy');
    try {
      await client.readResource({ uri: 'surface://docs/leak.md' });
    } finally {
      await client.close();
    }
    const record = audit('http').filter((candidate) => candidate['event'] === 'resources/read').at(-1);
    const redactions = record?.['redactions'] as { credential: number; detected: number; invisible: number } | undefined;
    assert.ok(redactions && redactions.credential >= 2 && redactions.detected >= 1 && redactions.invisible >= 1, JSON.stringify(record));
  });
});

describe('a URI granted on two servers', () => {
  it('is refused as ambiguous and read from neither; other URIs still read', async () => {
    const client = await connect('http', 'modern', `${TOKEN}-twice`);
    try {
      await refusedWith(client.readResource({ uri: 'demo://resource/static/document/architecture.md' }), 'WARDEN_RESOURCE_AMBIGUOUS', INTERNAL);
      const features = await client.readResource({ uri: 'demo://resource/static/document/features.md' });
      assert.equal(features.contents[0]?.uri, 'demo://resource/static/document/features.md');
      // Listed from both servers: the agent sees each offer, the read is what refuses.
      const { resources } = await client.listResources();
      assert.equal(resources.filter((resource) => resource.uri === 'demo://resource/static/document/architecture.md').length, 2);
    } finally {
      await client.close();
    }
  });
});

describe('the kill switch', () => {
  // One at a time: a refusal must not arrive before its promise is awaited.
  const everyRequest = (client: Client): (() => Promise<unknown>)[] => [
    () => client.listPrompts(),
    () => client.getPrompt({ name: 'everything__simple-prompt' }),
    () => client.listResources(),
    () => client.listResourceTemplates(),
    () => client.readResource({ uri: 'demo://resource/dynamic/text/1' }),
    () => client.complete({ ref: { type: 'ref/prompt', name: 'everything__completable-prompt' }, argument: { name: 'department', value: 'E' } }),
  ];

  it('http: on refuses every surface request; readonly and off serve them', async () => {
    const client = await connect('http', 'legacy');
    try {
      setKillSwitch('http', 'on');
      broker.refreshState();
      assert.equal(broker.killSwitch, 'on');
      for (const request of everyRequest(client)) await refusedWith(request(), 'WARDEN_KILL_SWITCH', INTERNAL);
      setKillSwitch('http', 'readonly');
      broker.refreshState();
      for (const request of everyRequest(client)) await request();
      setKillSwitch('http', 'off');
      broker.refreshState();
      for (const request of everyRequest(client)) await request();
    } finally {
      setKillSwitch('http', 'off');
      broker.refreshState();
      await client.close();
    }
    const refused = audit('http').filter((record) => record['reason'] === 'WARDEN_KILL_SWITCH');
    assert.deepEqual(refused.map((record) => record['event']).sort(), ['completion/complete', 'prompts/get', 'prompts/list', 'resources/list', 'resources/read', 'resources/templates/list']);
  });

  it('stdio: a broker process sees the switch and refuses; off restores', async () => {
    const client = await connect('stdio', 'modern');
    try {
      setKillSwitch('stdio', 'on');
      const refusedNow = async () => (await rpcError(client.listPrompts()).catch(() => undefined))?.data?.code === 'WARDEN_KILL_SWITCH';
      assert.ok(await waitFor(refusedNow, 100, 50), 'the kill switch was not applied');
      for (const request of everyRequest(client)) await refusedWith(request(), 'WARDEN_KILL_SWITCH', INTERNAL);
      setKillSwitch('stdio', 'off');
      assert.ok(await waitFor(async () => (await client.listPrompts().then(() => true, () => false)), 100, 50), 'off was not applied');
      for (const request of everyRequest(client)) await request();
    } finally {
      setKillSwitch('stdio', 'off');
      await client.close();
    }
  });
});
