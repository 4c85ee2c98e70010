import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { memoryAuditTrail } from '../../src/audit/trail.ts';
import type { McpBackend } from '../../src/backends/mcp.ts';
import { loadConfig } from '../../src/config/load.ts';
import type { WardenError } from '../../src/errors.ts';
import { resourceUriProblem } from '../../src/guard/resource-uri.ts';
import { memoryLimitStore } from '../../src/guard/rate-limits.ts';
import { openStateStore } from '../../src/state/store.ts';
import type { SurfaceDeps } from '../../src/surface/judge.ts';
import { getPrompt } from '../../src/surface/prompts.ts';
import { readResource } from '../../src/surface/resources.ts';
import { relayServerRequest } from '../../src/surface/server-requests.ts';
import { everythingManifest } from '../fixtures/repo-manifests.ts';
import { CLI, NOTES_SERVER, NOTES_TOOLS, stdioManifest, tempDir, textToolsManifest, writeConfig, writeManifest, writeYaml } from '../helpers.ts';

const { dir, cleanup } = tempDir('warden-policy-');
after(cleanup);

function run(args: string[]) {
  const result = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

const object = { type: 'object', properties: {}, additionalProperties: false };
const FILES_TOOLS = [
  { name: 'read_file', description: 'Read a file.', access: 'read', inputSchema: object, maxResultBytes: 2048 },
  { name: 'write_file', description: 'Write a file.', access: 'write', inputSchema: object, timeoutMs: 500_000 },
  { name: 'put', description: 'Store a value under a key; the same call twice changes nothing.', access: 'write', idempotent: true, inputSchema: object },
  { name: 'wipe', description: 'Delete every file.', access: 'destructive', inputSchema: object, timeoutMs: 5000 },
];
writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
writeManifest(join(dir, 'manifests/files.json'), stdioManifest('files', NOTES_SERVER, FILES_TOOLS));
// Not signed: refused with reason unsigned, so its tools do not exist.
writeYaml(join(dir, 'manifests/plain.yaml'), stdioManifest('plain', NOTES_SERVER, NOTES_TOOLS));

const POLICY = {
  version: 1,
  servers: { notes: { manifest: 'notes.json' }, files: { manifest: 'files.json' }, plain: { manifest: 'plain.yaml', name: 'test.plain' } },
  agents: {
    a: {
      allow: [
        { tools: ['notes__*'] }, // 0: every notes read tool
        { tools: ['notes__add_*'], access: ['write'] }, // 1: broad, no approval
        { tools: ['notes__add_note'], access: ['write'], approval: 'required' }, // 2: stricter: wins over 1
        { tools: ['files__write_file'], access: ['write'], approval: 'user', fallback: 'required' }, // 3
        { tools: ['files__wipe'], access: ['destructive'], approval: 'user' }, // 4: fallback refuse (default)
        { tools: ['files__*'], access: ['read', 'write'] }, // 5
        { tools: ['plain__*'] }, // 6: its manifest is refused
      ],
      rateLimit: { perMinute: 10 },
    },
    c: { allow: [{ tools: ['notes__delete_note', 'notes__list_notes'] }] }, // covers reads only
    empty: { allow: [{ tools: ['nothing__here'] }] },
  },
  rateLimits: { concurrent: 50, tools: [{ tools: ['files__*'], perMinute: 5, concurrent: 2 }] },
  limits: { callTimeoutMs: 20_000, maxCallTimeoutMs: 60_000, maxResultBytes: 50_000 },
  approvals: { waitSeconds: 20, expireSeconds: 600 },
  idempotency: { windowSeconds: 120 },
};
const CONFIG = writeConfig(join(dir, 'warden.yaml'), POLICY);
// The same policy with its own state store, for the kill switch and quarantine tests.
const SWITCHED = writeConfig(join(dir, 'switched.yaml'), { ...POLICY, state: { dir: 'switched-state' } });

function explain(agent: string, tool: string, config = CONFIG) {
  const result = run(['policy', 'explain', '--config', config, '--agent', agent, '--tool', tool, '--json']);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as Record<string, any>;
}

describe('policy: command line', () => {
  it('mcp-warden --help lists policy, approvals and killswitch, and exit code 11', () => {
    const help = run(['--help']);
    assert.equal(help.code, 0);
    for (const verb of ['policy', 'approvals', 'killswitch']) assert.match(help.stdout, new RegExp(`^  ${verb} +\\S`, 'm'));
    assert.match(help.stdout, /^ {2}11 approvals approve\/deny: no such approval, or it is no longer pending$/m);
  });

  it('--help explains both subcommands', () => {
    const help = run(['policy', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: mcp-warden policy explain/);
    assert.match(help.stdout, /policy list/);
    assert.match(help.stdout, /needs approval/);
  });

  it('usage errors exit 2 with WARDEN_USAGE', () => {
    const cases: string[][] = [
      ['policy'], // no subcommand
      ['policy', 'frob', '--config', CONFIG, '--agent', 'a'],
      ['policy', 'explain', '--agent', 'a', '--tool', 'notes__echo'], // no --config
      ['policy', 'explain', '--config', CONFIG, '--tool', 'notes__echo'], // no --agent
      ['policy', 'explain', '--config', CONFIG, '--agent', 'a'], // no --tool
      ['policy', 'list', '--config', CONFIG, '--agent', 'a', '--tool', 'notes__echo'],
      ['policy', 'explain', 'extra', '--config', CONFIG, '--agent', 'a', '--tool', 'notes__echo'],
      ['policy', 'list', '--config', CONFIG, '--agent', 'a', '--no-such-option'],
      ['policy', 'list', '--config', CONFIG, '--agent'], // option without its value
    ];
    for (const args of cases) {
      const result = run(args);
      assert.equal(result.code, 2, args.join(' '));
      assert.match(result.stderr, /WARDEN_USAGE/, args.join(' '));
    }
  });

  it('an unknown agent is WARDEN_AGENT_UNKNOWN (exit 2) listing the agents; a bad config exits 3', () => {
    const result = run(['policy', 'explain', '--config', CONFIG, '--agent', 'mallory', '--tool', 'notes__echo']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /WARDEN_AGENT_UNKNOWN: agent "mallory" is not in .*; agents: a, c, empty/);
    assert.equal(run(['policy', 'list', '--config', join(dir, 'missing.yaml'), '--agent', 'a']).code, 3);
  });
});

describe('policy explain', () => {
  it('allow: text names the decision, the grant, the tool and the limits', () => {
    const result = run(['policy', 'explain', '--config', CONFIG, '--agent', 'a', '--tool', 'notes__list_notes']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^decision: allow$/m);
    assert.match(result.stdout, /^decided by: \/agents\/a\/allow\/0: tools \[notes__\*\], access \[read\], approval none$/m);
    assert.match(result.stdout, /^tool: server notes \(test\.notes serial 1\), access read$/m);
    assert.match(result.stdout, /not deduplicated: a read tool/);
    assert.match(result.stdout, /^kill switch: off$/m);
    assert.match(result.stdout, /agent: +10 calls\/min, burst 10, 32 at once \(\/agents\/a\/rateLimit over \/rateLimits\/perAgent\)/);
    assert.match(result.stdout, /broker: +50 calls at once/);
    assert.match(result.stdout, /timeout: 20000 ms \(\/limits\/callTimeoutMs\)/);
    assert.match(result.stdout, /result: +at most 50000 bytes/);
  });

  it('allow, --json: the same facts as one object', () => {
    const facts = explain('a', 'files__read_file');
    assert.equal(facts['decision'], 'allow');
    assert.equal(facts['grant'].path, '/agents/a/allow/5');
    assert.deepEqual(facts['grant'].access, ['read', 'write']);
    assert.deepEqual(facts['alsoMatching'], []);
    assert.equal(facts['toolInfo'].server, 'files');
    assert.equal(facts['toolInfo'].deduplicated, false);
    assert.equal(facts['killSwitch'].state, 'off');
    assert.deepEqual(facts['limits'].tool, { perMinute: 5, burst: 5, concurrent: 2, source: '/rateLimits/tools/0: tools [files__*]' });
    assert.equal(facts['limits'].maxResultBytes, 2048, 'the manifest tightens the result cap');
    assert.equal(facts['limits'].timeoutMs, 20_000);
    assert.equal(facts['refusal'], undefined);
  });

  it('deny: a tool in no accepted manifest, an unknown server, a name without a server', () => {
    const noTool = explain('a', 'notes__launch_missiles');
    assert.equal(noTool['decision'], 'deny');
    assert.equal(noTool['cause'], 'no-such-tool');
    assert.equal(noTool['refusal'], 'WARDEN_TOOL_NOT_FOUND');
    assert.match(noTool['reason'], /server "notes" \(test\.notes serial 1\) has no tool "launch_missiles" in its signed manifest; its tools: notes__list_notes, /);
    assert.equal(noTool['limits'], undefined);
    const noServer = explain('a', 'ghost__list');
    assert.equal(noServer['cause'], 'no-such-server');
    assert.match(noServer['reason'], /no server "ghost".*servers: files, notes, plain/);
    assert.equal(explain('a', 'plainname')['cause'], 'no-such-tool');
  });

  it('deny: the server\'s manifest was refused, with the reason from the config load', () => {
    const result = run(['policy', 'explain', '--config', CONFIG, '--agent', 'a', '--tool', 'plain__list_notes']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^decision: deny$/m);
    assert.match(result.stdout, /the manifest of server "plain" was refused \[unsigned\]/);
    const facts = explain('a', 'plain__list_notes');
    assert.equal(facts['cause'], 'server-refused');
    assert.equal(facts['server'].status, 'refused');
    assert.equal(facts['server'].reason, 'unsigned');
  });

  it('deny: no grant covers the tool', () => {
    const facts = explain('c', 'notes__add_note');
    assert.equal(facts['decision'], 'deny');
    assert.equal(facts['cause'], 'not-granted');
    assert.match(facts['reason'], /no grant of agent "c" matches notes__add_note; add a grant to \/agents\/c\/allow with tools \[notes__add_note\] and access \[write\]/);
    assert.equal(facts['grant'], undefined);
    assert.equal(facts['toolInfo'].access, 'write', 'the tool is still described');
  });

  it('deny: a grant matches the name but not the access class, and says what to add', () => {
    const result = run(['policy', 'explain', '--config', CONFIG, '--agent', 'c', '--tool', 'notes__delete_note']);
    assert.equal(result.code, 0);
    assert.match(result.stdout, /^decision: deny$/m);
    assert.match(result.stdout, /grant \/agents\/c\/allow\/0 covers \[read\]; add destructive to its access/);
    assert.match(result.stdout, /^matches the name only: \/agents\/c\/allow\/0/m);
    const facts = explain('c', 'notes__delete_note');
    assert.equal(facts['cause'], 'wrong-access');
    assert.deepEqual(facts['matchNameOnly'].map((grant: { path: string }) => grant.path), ['/agents/c/allow/0']);
    // Agent a's broad notes__* grant covers reads only: delete_note is refused the same way.
    assert.equal(explain('a', 'notes__delete_note')['cause'], 'wrong-access');
  });

  it('needs approval, required: out of band, with the hold and expiry; the stricter grant wins over an earlier one', () => {
    const result = run(['policy', 'explain', '--config', CONFIG, '--agent', 'a', '--tool', 'notes__add_note']);
    assert.equal(result.code, 0);
    assert.match(result.stdout, /^decision: needs approval \(out of band\)$/m);
    assert.match(result.stdout, /held up to 20 s.*expires after 600 s/);
    assert.match(result.stdout, /^decided by: \/agents\/a\/allow\/2: .*approval required \(the strictest approval among the matching grants wins/m);
    assert.match(result.stdout, /^also matches: \/agents\/a\/allow\/1: tools \[notes__add_\*\], access \[write\], approval none$/m);
    assert.match(result.stdout, /writes are deduplicated: repeats within 120 s get the first result/);
    const facts = explain('a', 'notes__add_note');
    assert.equal(facts['decision'], 'needs-approval');
    assert.deepEqual(facts['approval'], { by: 'out-of-band', holdSeconds: 20, expireSeconds: 600 });
    assert.equal(facts['grant'].path, '/agents/a/allow/2');
    assert.deepEqual(facts['alsoMatching'].map((grant: { path: string }) => grant.path), ['/agents/a/allow/1']);
    assert.equal(facts['toolInfo'].deduplicated, true);
    assert.equal(facts['toolInfo'].deduplicationWindowSeconds, 120);
  });

  it('needs approval, user: with each fallback; the user grant wins over a broader one without approval', () => {
    const fallsBack = run(['policy', 'explain', '--config', CONFIG, '--agent', 'a', '--tool', 'files__write_file']);
    assert.match(fallsBack.stdout, /^decision: needs approval \(by the user; if the host cannot ask: falls back to out-of-band approval\)$/m);
    const writeFacts = explain('a', 'files__write_file');
    assert.equal(writeFacts['decision'], 'needs-approval');
    assert.equal(writeFacts['approval'].by, 'user');
    assert.equal(writeFacts['approval'].whenHostCannotAsk, 'out-of-band');
    assert.equal(writeFacts['grant'].path, '/agents/a/allow/3');
    assert.equal(writeFacts['grant'].fallback, 'required');
    assert.deepEqual(writeFacts['alsoMatching'].map((grant: { path: string }) => grant.path), ['/agents/a/allow/5']);
    // The manifest asks for 500 s; the config's maximum caps it.
    assert.equal(writeFacts['limits'].timeoutMs, 60_000);
    assert.match(writeFacts['limits'].timeoutSource, /maxCallTimeoutMs/);

    const refused = run(['policy', 'explain', '--config', CONFIG, '--agent', 'a', '--tool', 'files__wipe']);
    assert.match(refused.stdout, /^decision: needs approval \(by the user; if the host cannot ask: refused\)$/m);
    assert.match(refused.stdout, /WARDEN_APPROVAL_UNAVAILABLE/);
    const wipeFacts = explain('a', 'files__wipe');
    assert.equal(wipeFacts['approval'].whenHostCannotAsk, 'refused');
    assert.equal(wipeFacts['limits'].timeoutMs, 5000);
    assert.equal(wipeFacts['limits'].timeoutSource, 'the manifest\'s timeoutMs');
  });

  it('a write the manifest signs idempotent is not deduplicated', () => {
    const facts = explain('a', 'files__put');
    assert.equal(facts['decision'], 'allow');
    assert.equal(facts['toolInfo'].idempotent, true);
    assert.equal(facts['toolInfo'].deduplicated, false);
    assert.equal(facts['toolInfo'].deduplicationWindowSeconds, null);
  });

  it('the kill switch changes the decision: readonly refuses writes only, on refuses everything', () => {
    const set = (state: string) => assert.equal(run(['killswitch', state, '--config', SWITCHED, '--by', 'ops']).code, 0);
    set('readonly');
    const write = explain('a', 'notes__add_note', SWITCHED);
    assert.equal(write['decision'], 'deny');
    assert.equal(write['cause'], 'kill-switch');
    assert.equal(write['refusal'], 'WARDEN_READ_ONLY_MODE');
    assert.equal(write['otherwise'], 'needs-approval');
    assert.equal(write['killSwitch'].state, 'readonly');
    assert.equal(write['killSwitch'].changedBy, 'ops');
    assert.equal(explain('a', 'notes__list_notes', SWITCHED)['decision'], 'allow', 'reads still work');

    set('on');
    const text = run(['policy', 'explain', '--config', SWITCHED, '--agent', 'a', '--tool', 'notes__list_notes']);
    assert.match(text.stdout, /^decision: deny$/m);
    assert.match(text.stdout, /the kill switch is on \(set by ops at /);
    assert.match(text.stdout, /with the kill switch off, the decision would be: allow/);
    const read = explain('a', 'notes__list_notes', SWITCHED);
    assert.equal(read['refusal'], 'WARDEN_KILL_SWITCH');
    // A tool the agent was never granted is still "not granted": the switch comes after authorize.
    assert.equal(explain('c', 'notes__add_note', SWITCHED)['cause'], 'not-granted');
    const listing = run(['policy', 'list', '--config', SWITCHED, '--agent', 'a']);
    assert.match(listing.stdout, /^kill switch: on \(set by ops at .*\): the agent sees no tools/m);

    set('off');
    assert.equal(explain('a', 'notes__list_notes', SWITCHED)['decision'], 'allow');
    assert.doesNotMatch(run(['policy', 'list', '--config', SWITCHED, '--agent', 'a']).stdout, /kill switch/);
  });

  it('a server quarantined in the state store is denied until a new release', () => {
    const config = loadConfig(SWITCHED, { state: 'read-only' });
    const manifest = config.servers.get('files');
    assert.ok(manifest);
    const store = openStateStore(config.state.dir, 'read-write');
    store.recordQuarantine(manifest.name, manifest.digest, { reason: 'drift', diffDigest: 'd'.repeat(64), since: new Date().toISOString() });
    store.close();
    const facts = explain('a', 'files__read_file', SWITCHED);
    assert.equal(facts['decision'], 'deny');
    assert.equal(facts['cause'], 'quarantined');
    assert.equal(facts['refusal'], 'WARDEN_SERVER_QUARANTINED');
    assert.equal(facts['otherwise'], 'allow');
    assert.equal(explain('a', 'notes__list_notes', SWITCHED)['decision'], 'allow', 'other servers are not affected');
  });

  it('an unprintable tool name is echoed escaped', () => {
    const result = run(['policy', 'explain', '--config', CONFIG, '--agent', 'a', '--tool', 'notes__\u001b[31mx']);
    assert.equal(result.code, 0);
    assert.ok(!result.stdout.includes('\u001b'), result.stdout);
    assert.match(result.stdout, /\\u\{1b\}/);
  });
});

describe('policy list', () => {
  it('text: every tool the agent may use, sorted, with access, approval, deduplication and tool limits', () => {
    const result = run(['policy', 'list', '--config', CONFIG, '--agent', 'a']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^agent "a": 11 tool\(s\); agent limit 10 calls\/min, burst 10, 32 at once/m);
    assert.match(result.stdout, /^ {2}notes__add_note +write +approval out of band +deduplicated 120 s +600 calls\/min, burst 100, 32 at once \(\/rateLimits\/perTool\)$/m);
    assert.match(result.stdout, /^ {2}files__wipe +destructive +approval by user \(else refused\) +deduplicated 120 s +5 calls\/min, burst 5, 2 at once \(\/rateLimits\/tools\/0: tools \[files__\*\]\)$/m);
    assert.match(result.stdout, /^ {2}files__write_file +write +approval by user \(else out of band\)/m);
    assert.doesNotMatch(result.stdout, /notes__delete_note|plain__/);
    assert.doesNotMatch(result.stdout, /kill switch/);
    const names = [...result.stdout.matchAll(/^ {2}(\S+)/gm)].map((match) => match[1]);
    assert.deepEqual(names, [...names].sort());
  });

  it('--json: the same list, sorted by name', () => {
    const result = run(['policy', 'list', '--config', CONFIG, '--agent', 'a', '--json']);
    assert.equal(result.code, 0);
    const listing = JSON.parse(result.stdout);
    assert.equal(listing.agent, 'a');
    assert.equal(listing.killSwitch.state, 'off');
    assert.deepEqual(
      listing.tools.map((tool: { name: string }) => tool.name),
      ['files__put', 'files__read_file', 'files__wipe', 'files__write_file', 'notes__add_note', 'notes__debug_dump', 'notes__echo', 'notes__get_note', 'notes__list_notes', 'notes__search_notes', 'notes__server_info'],
    );
    const byName = new Map(listing.tools.map((tool: { name: string }) => [tool.name, tool]));
    assert.deepEqual(byName.get('notes__add_note'), {
      name: 'notes__add_note',
      server: 'notes',
      access: 'write',
      grant: '/agents/a/allow/2',
      approval: 'required',
      deduplicated: true,
      deduplicationWindowSeconds: 120,
      limit: { perMinute: 600, burst: 100, concurrent: 32, source: '/rateLimits/perTool' },
      timeoutMs: 20_000,
      maxResultBytes: 50_000,
      quarantined: false,
    });
    assert.equal((byName.get('files__write_file') as { fallback: string }).fallback, 'required');
  });

  it('an agent whose grants match nothing gets an empty list and says so', () => {
    const result = run(['policy', 'list', '--config', CONFIG, '--agent', 'empty']);
    assert.equal(result.code, 0);
    assert.match(result.stdout, /agent "empty" may use no tools/);
    assert.deepEqual(JSON.parse(run(['policy', 'list', '--config', CONFIG, '--agent', 'empty', '--json']).stdout).tools, []);
  });
});

describe('policy explain: outbound requests and egress', () => {
  // A config of its own, so the servers above keep their listings and messages.
  const egressDir = join(dir, 'egress');
  const input = { type: 'object', properties: { id: { type: 'string' } }, required: ['id'], additionalProperties: false };
  writeManifest(join(egressDir, 'manifests/api.json'), {
    manifestVersion: 1,
    name: 'test.api',
    version: '1.0.0',
    serial: 1,
    transport: { type: 'http-api', baseUrl: 'http://127.0.0.1:7071/api' },
    tools: [
      { name: 'get_item', description: 'Read an item.', access: 'read', inputSchema: input, http: { method: 'GET', path: '/items/{id}' } },
      { name: 'get_part', description: 'Read a part of an item.', access: 'read', inputSchema: input, http: { method: 'GET', path: '/items/{id}/part' } },
      { name: 'delete_item', description: 'Delete an item.', access: 'destructive', inputSchema: input, http: { method: 'DELETE', path: '/items/{id}' } },
      { name: 'stats', description: 'Counts.', access: 'read', inputSchema: object, http: { method: 'GET', path: '/stats' } },
    ],
  });
  const mcpTool = [{ name: 'echo', description: 'Echo.', access: 'read', inputSchema: object }];
  writeManifest(join(egressDir, 'manifests/remote.json'), { manifestVersion: 1, name: 'test.remote', version: '1.0.0', serial: 1, transport: { type: 'http', url: 'http://127.0.0.1:7090/mcp' }, tools: mcpTool });
  writeManifest(join(egressDir, 'manifests/far.json'), { manifestVersion: 1, name: 'test.far', version: '1.0.0', serial: 1, transport: { type: 'http', url: 'https://mcp.example.com/mcp' }, tools: mcpTool });
  writeManifest(join(egressDir, 'manifests/named.json'), { manifestVersion: 1, name: 'test.named', version: '1.0.0', serial: 1, transport: { type: 'http', url: 'https://mcp.example.org/mcp' }, tools: mcpTool });
  writeManifest(join(egressDir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
  const EGRESS_CONFIG = writeConfig(join(egressDir, 'warden.yaml'), {
    version: 1,
    servers: { api: { manifest: 'api.json' }, remote: { manifest: 'remote.json', allowPlainHttp: true }, far: { manifest: 'far.json' }, named: { manifest: 'named.json' }, notes: { manifest: 'notes.json' } },
    agents: { a: { allow: [{ tools: ['api__*', 'remote__*', 'far__*', 'named__*', 'notes__list_notes'], access: ['read', 'destructive'] }] } },
    egress: {
      allow: [
        { destination: 'http://127.0.0.1:7071', addresses: ['127.0.0.1'], methods: ['GET'], paths: ['/api/items/'] },
        { destination: 'http://127.0.0.1:7090', addresses: ['127.0.0.1'], methods: ['POST'], paths: ['/mcp'] },
        { destination: 'https://*.example.org' },
      ],
    },
  });

  it('a native HTTP tool: the request it makes, and the rule that allows it (checked up to the first placeholder)', () => {
    const result = run(['policy', 'explain', '--config', EGRESS_CONFIG, '--agent', 'a', '--tool', 'api__get_part']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^decision: allow$/m);
    assert.match(result.stdout, /^request: GET http:\/\/127\.0\.0\.1:7071\/api\/items\/\{id\}\/part$/m);
    assert.match(result.stdout, /^ {2}egress: allowed by \/egress\/allow\/0 \(http:\/\/127\.0\.0\.1:7071\), checked for GET http:\/\/127\.0\.0\.1:7071\/api\/items\/$/m);
    const facts = explain('a', 'api__get_item', EGRESS_CONFIG);
    assert.deepEqual(facts['request'], { method: 'GET', url: 'http://127.0.0.1:7071/api/items/{id}' });
    assert.deepEqual(facts['egress'], {
      method: 'GET',
      url: 'http://127.0.0.1:7071/api/items/',
      verdict: 'allow',
      reason: null,
      message: 'rule /egress/allow/0 (http://127.0.0.1:7071) allows GET /api/items/ on http://127.0.0.1:7071',
      rule: { path: '/egress/allow/0', destination: 'http://127.0.0.1:7071' },
      unmatched: null,
    });
  });

  it('a native HTTP tool the egress rules refuse: deny not-allowlisted with what did not match; the policy decision is unchanged', () => {
    const method = explain('a', 'api__delete_item', EGRESS_CONFIG);
    assert.equal(method['decision'], 'allow', 'the grant still covers it');
    assert.deepEqual(method['request'], { method: 'DELETE', url: 'http://127.0.0.1:7071/api/items/{id}' });
    assert.equal(method['egress'].verdict, 'deny');
    assert.equal(method['egress'].reason, 'not-allowlisted');
    assert.equal(method['egress'].unmatched, 'method-or-path');
    assert.equal(method['egress'].rule, null);
    const path = explain('a', 'api__stats', EGRESS_CONFIG);
    assert.equal(path['egress'].url, 'http://127.0.0.1:7071/api/stats');
    assert.equal(path['egress'].verdict, 'deny');
    assert.match(path['egress'].message, /no egress rule allows GET \/api\/stats on http:\/\/127\.0\.0\.1:7071/);
    const text = run(['policy', 'explain', '--config', EGRESS_CONFIG, '--agent', 'a', '--tool', 'api__delete_item']);
    assert.match(text.stdout, /^ {2}egress: deny \[not-allowlisted\]: no egress rule allows DELETE \/api\/items\/ on http:\/\/127\.0\.0\.1:7071, .*every call of this tool is refused \(WARDEN_EGRESS_DENIED\)/m);
    // The same check config load warns with.
    const warnings = loadConfig(EGRESS_CONFIG).warnings.join('\n');
    assert.match(warnings, /tool delete_item: no egress rule allows DELETE \/api\/items\//);
    assert.match(warnings, /tool stats: /);
    assert.doesNotMatch(warnings, /tool get_item:/);
  });

  it('a Streamable HTTP server\'s tool: the egress verdict for POST to the server URL', () => {
    const allowed = explain('a', 'remote__echo', EGRESS_CONFIG);
    assert.equal(allowed['request'], undefined);
    assert.deepEqual(allowed['egress'], {
      method: 'POST',
      url: 'http://127.0.0.1:7090/mcp',
      verdict: 'allow',
      reason: null,
      message: 'rule /egress/allow/1 (http://127.0.0.1:7090) allows POST /mcp on http://127.0.0.1:7090',
      rule: { path: '/egress/allow/1', destination: 'http://127.0.0.1:7090' },
      unmatched: null,
    });
    const text = run(['policy', 'explain', '--config', EGRESS_CONFIG, '--agent', 'a', '--tool', 'remote__echo']);
    assert.match(text.stdout, /^server URL: POST http:\/\/127\.0\.0\.1:7090\/mcp \(Streamable HTTP\)$/m);
    assert.match(text.stdout, /^ {2}egress: allowed by \/egress\/allow\/1/m);

    const refused = explain('a', 'far__echo', EGRESS_CONFIG);
    assert.equal(refused['egress'].verdict, 'deny');
    assert.equal(refused['egress'].reason, 'not-allowlisted');
    assert.equal(refused['egress'].unmatched, 'origin');
    const farText = run(['policy', 'explain', '--config', EGRESS_CONFIG, '--agent', 'a', '--tool', 'far__echo']);
    assert.match(farText.stdout, /^ {2}egress: deny \[not-allowlisted\]: no egress rule allows https:\/\/mcp\.example\.com, .*the broker cannot connect to this server/m);

    // A host name: its addresses are checked only when the broker connects, and the text says so.
    const named = run(['policy', 'explain', '--config', EGRESS_CONFIG, '--agent', 'a', '--tool', 'named__echo']);
    assert.match(named.stdout, /^ {2}egress: allowed by \/egress\/allow\/2 \(https:\/\/\*\.example\.org\), checked for POST https:\/\/mcp\.example\.org\/mcp; the addresses of mcp\.example\.org are checked when the broker connects/m);
    assert.doesNotMatch(text.stdout, /addresses of/, 'an IP-address host needs no lookup');
  });

  it('a stdio tool has no request or egress facts; a refused tool none either', () => {
    const stdio = explain('a', 'notes__list_notes', EGRESS_CONFIG);
    assert.equal(stdio['request'], undefined);
    assert.equal(stdio['egress'], undefined);
    assert.doesNotMatch(run(['policy', 'explain', '--config', EGRESS_CONFIG, '--agent', 'a', '--tool', 'notes__list_notes']).stdout, /egress|request:/);
    assert.equal(explain('a', 'api__nothing', EGRESS_CONFIG)['egress'], undefined);
  });
});

describe('policy explain and list: prompts, resources and requests from servers', () => {
  // Two MCP servers with the reference server's prompts and resources, and a code-tool server.
  const surfaceDir = join(dir, 'surface');
  writeManifest(join(surfaceDir, 'manifests/one.json'), everythingManifest('one'));
  writeManifest(join(surfaceDir, 'manifests/two.json'), everythingManifest('two'));
  writeManifest(join(surfaceDir, 'manifests/text.json'), textToolsManifest());
  const SURFACE_POLICY = {
    version: 1,
    servers: { one: { manifest: 'one.json' }, two: { manifest: 'two.json' }, text: { manifest: 'text.json' } },
    agents: {
      alice: {
        allow: [
          { prompts: ['one__simple-prompt', 'one__args-*'] }, // 0
          { prompts: ['one__*-prompt'] }, // 1: also matches the prompts of 0
          { resources: ['demo://resource/static/document/*', 'demo://resource/dynamic/text/*'], server: 'one' }, // 2
          { resources: ['demo://resource/dynamic/text/*'], server: 'two' }, // 3: the dynamic text resources are ambiguous
          { serverRequests: ['elicitation'], server: 'one' }, // 4: alice alone reaches one
          { serverRequests: ['sampling'], server: 'two' }, // 5: bob reaches two as well
          { tools: ['one__echo', 'one__get-sum'] }, // 6
          { resources: ['text://x/*'], server: 'text' }, // 7: not an MCP server
        ],
      },
      bob: { allow: [{ tools: ['two__echo'] }] },
      // Scoped grants count only for a session with an access token; this command answers for one without.
      // (They still reach a server: carol makes two shared, as bob does; one stays alice's alone.)
      carol: { allow: [{ prompts: ['two__simple-prompt'], scopes: ['prompts'] }, { serverRequests: ['elicitation'], server: 'two', scopes: ['ask'] }] },
    },
  };
  const SURFACE = writeConfig(join(surfaceDir, 'warden.yaml'), SURFACE_POLICY);
  const SURFACE_SWITCHED = writeConfig(join(surfaceDir, 'switched.yaml'), { ...SURFACE_POLICY, state: { dir: 'switched-state' } });

  function surface(agent: string, selector: string[], config = SURFACE) {
    const result = run(['policy', 'explain', '--config', config, '--agent', agent, ...selector, '--json']);
    assert.equal(result.code, 0, result.stderr);
    return JSON.parse(result.stdout) as Record<string, any>;
  }

  it('usage errors exit 2: two selectors, --server where it does not belong or is missing, an unknown kind, an oversize argument', () => {
    const base = ['policy', 'explain', '--config', SURFACE, '--agent', 'alice'];
    const cases: [string[], RegExp][] = [
      [[...base, '--tool', 'one__echo', '--prompt', 'one__simple-prompt'], /exactly one of --tool TOOL, --prompt PROMPT, --resource URI or --server-request KIND \(this has --tool and --prompt\)/],
      [[...base, '--resource', 'demo://x', '--server-request', 'sampling', '--server', 'one'], /exactly one of/],
      [[...base, '--server', 'one'], /exactly one of/],
      [[...base, '--prompt', 'one__simple-prompt', '--server', 'one'], /--server applies to --resource and --server-request/],
      [[...base, '--server-request', 'sampling'], /--server-request needs --server SERVER/],
      [[...base, '--server-request', 'roots', '--server', 'one'], /not "roots"; a server asking roots\/list gets the roots under \/servers\/<key>\/roots/],
      [[...base, '--server-request', 'Sampling', '--server', 'one'], /--server-request is sampling or elicitation/],
      [[...base, '--resource', `demo://${'x'.repeat(5000)}`], /--resource is longer than 4096 characters/],
      [['policy', 'list', '--config', SURFACE, '--agent', 'alice', '--prompt', 'one__simple-prompt'], /--prompt applies to policy explain/],
      [['policy', 'list', '--config', SURFACE, '--agent', 'alice', '--server', 'one'], /--server applies to policy explain/],
    ];
    for (const [args, message] of cases) {
      const result = run(args);
      assert.equal(result.code, 2, args.join(' '));
      assert.match(result.stderr, /WARDEN_USAGE/, args.join(' '));
      assert.match(result.stderr, message, args.join(' '));
    }
  });

  it('a control character in a kind is refused and echoed escaped', () => {
    const result = run(['policy', 'explain', '--config', SURFACE, '--agent', 'alice', '--server-request', 'sampling\u001b[2J', '--server', 'one']);
    assert.equal(result.code, 2);
    assert.ok(!result.stderr.includes('\u001b'), result.stderr);
    assert.match(result.stderr, /not "sampling\\u\{1b\}\[2J"/);
  });

  it('prompt, allow: the first grant that covers it decides, the others also match; text and JSON', () => {
    const text = run(['policy', 'explain', '--config', SURFACE, '--agent', 'alice', '--prompt', 'one__args-prompt']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^agent "alice", prompt "one__args-prompt"$/m);
    assert.match(text.stdout, /^decision: allow$/m);
    assert.match(text.stdout, /^ {2}why: grant \/agents\/alice\/allow\/0 covers one__args-prompt$/m);
    assert.match(text.stdout, /^server: one \(test\.one serial 1, stdio\)$/m);
    assert.match(text.stdout, /^prompt: as its signed manifest defines it; arguments: city \(required\), state$/m);
    assert.match(text.stdout, /^decided by: \/agents\/alice\/allow\/0: prompts \[one__simple-prompt, one__args-\*\]$/m);
    assert.match(text.stdout, /^also matches: \/agents\/alice\/allow\/1: prompts \[one__\*-prompt\]$/m);
    assert.match(text.stdout, /^kill switch: off$/m);
    const facts = surface('alice', ['--prompt', 'one__args-prompt']);
    assert.deepEqual(Object.keys(facts).slice(0, 4), ['agent', 'kind', 'prompt', 'decision']);
    assert.equal(facts['kind'], 'prompt');
    assert.equal(facts['decision'], 'allow');
    assert.deepEqual(facts['grant'], { path: '/agents/alice/allow/0', prompts: ['one__simple-prompt', 'one__args-*'] });
    assert.deepEqual(facts['alsoMatching'], [{ path: '/agents/alice/allow/1', prompts: ['one__*-prompt'] }]);
    assert.deepEqual(facts['server'], { key: 'one', status: 'accepted', manifest: 'test.one', serial: 1, transport: 'stdio' });
    assert.equal(facts['refusal'], undefined);
  });

  it('prompt, deny: not granted, no such prompt, a refused or unknown server, a scoped grant', () => {
    const notGranted = surface('alice', ['--prompt', 'two__simple-prompt']);
    assert.equal(notGranted['decision'], 'deny');
    assert.equal(notGranted['cause'], 'not-granted');
    assert.equal(notGranted['refusal'], 'WARDEN_PROMPT_NOT_FOUND');
    assert.match(notGranted['reason'], /no prompt grant of agent "alice" matches two__simple-prompt; add a grant to \/agents\/alice\/allow with prompts \[two__simple-prompt\]/);
    const missing = surface('alice', ['--prompt', 'one__launch']);
    assert.equal(missing['cause'], 'no-such-prompt');
    assert.match(missing['reason'], /server "one" \(test\.one serial 1\) has no prompt "launch" in its signed manifest; its prompts: one__simple-prompt, /);
    assert.equal(surface('alice', ['--prompt', 'ghost__p'])['cause'], 'no-such-server');
    assert.equal(surface('alice', ['--prompt', 'text__p'])['reason'], 'server "text" (test.text serial 1) has no prompt "p" in its signed manifest; its prompts: none');
    assert.equal(surface('carol', ['--prompt', 'two__simple-prompt'])['cause'], 'not-granted', 'a scoped grant does not count without an access token');
    const escaped = run(['policy', 'explain', '--config', SURFACE, '--agent', 'alice', '--prompt', 'one__\u001b[31mx\u202e']);
    assert.equal(escaped.code, 0);
    assert.ok(!/[\u001b\u202e]/.test(escaped.stdout), escaped.stdout);
    assert.match(escaped.stdout, /\\u\{1b\}\[31mx\\u\{202e\}/);
  });

  it('resource, allow: the one server whose grants cover the URI; --server agrees or is told where the read goes', () => {
    const uri = 'demo://resource/static/document/architecture.md';
    const text = run(['policy', 'explain', '--config', SURFACE, '--agent', 'alice', '--resource', uri]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^decision: allow$/m);
    assert.match(text.stdout, /^ {2}why: grant \/agents\/alice\/allow\/2 covers the URI on server "one", and no other server's grants cover it$/m);
    assert.match(text.stdout, /^decided by: \/agents\/alice\/allow\/2: server one, resources \[demo:\/\/resource\/static\/document\/\*, demo:\/\/resource\/dynamic\/text\/\*\]$/m);
    const facts = surface('alice', ['--resource', uri, '--server', 'one']);
    assert.equal(facts['kind'], 'resource');
    assert.equal(facts['resource'], uri);
    assert.equal(facts['decision'], 'allow');
    assert.deepEqual(facts['grantedOn'], ['one']);
    assert.equal(facts['grant'].path, '/agents/alice/allow/2');
    const elsewhere = surface('alice', ['--resource', uri, '--server', 'two']);
    assert.equal(elsewhere['decision'], 'deny');
    assert.equal(elsewhere['cause'], 'other-server');
    assert.match(elsewhere['reason'], /a read of this URI goes to server "one" \(grant \/agents\/alice\/allow\/2\), never to "two"/);
  });

  it('resource, deny: the broker\'s URI rules first, then no grant, two servers, a server that is not an MCP server', () => {
    for (const hostile of ['file:///a/../etc/passwd', 'demo://resource/static/document/%2e%2e/x', 'demo://resource/static/document/a\u001bb', 'demo://resource/static/document/\uff0e\uff0e/x', `demo://resource/static/document/${'a'.repeat(2100)}`]) {
      const facts = surface('alice', ['--resource', hostile]);
      assert.equal(facts['decision'], 'deny', hostile);
      assert.equal(facts['cause'], 'uri-refused', hostile);
      assert.equal(facts['refusal'], 'WARDEN_RESOURCE_URI_INVALID', hostile);
      assert.equal(facts['reason'], `the broker refuses this URI before any grant is tried: ${resourceUriProblem(hostile)}`);
    }
    const text = run(['policy', 'explain', '--config', SURFACE, '--agent', 'alice', '--resource', 'file:///a/../etc/passwd']);
    assert.match(text.stdout, /^ {2}why: the broker refuses this URI before any grant is tried: the URI contains a "\." or "\.\." path segment$/m);
    assert.match(text.stdout, /^ {2}the agent is answered WARDEN_RESOURCE_URI_INVALID$/m);

    const blob = surface('alice', ['--resource', 'demo://resource/dynamic/blob/1']);
    assert.equal(blob['cause'], 'not-granted');
    assert.equal(blob['refusal'], 'WARDEN_RESOURCE_NOT_FOUND');
    assert.equal(surface('alice', ['--resource', 'demo://resource/dynamic/blob/1', '--server', 'ghost'])['cause'], 'no-such-server');

    const ambiguous = surface('alice', ['--resource', 'demo://resource/dynamic/text/1']);
    assert.equal(ambiguous['cause'], 'ambiguous');
    assert.equal(ambiguous['refusal'], 'WARDEN_RESOURCE_AMBIGUOUS');
    assert.deepEqual(ambiguous['grantedOn'], ['one', 'two']);
    assert.deepEqual(ambiguous['alsoMatching'].map((grant: { path: string }) => grant.path), ['/agents/alice/allow/2', '/agents/alice/allow/3']);
    assert.match(ambiguous['reason'], /granted on more than one server \(one by \/agents\/alice\/allow\/2, two by \/agents\/alice\/allow\/3\); the broker does not guess/);

    const notMcp = surface('alice', ['--resource', 'text://x/1']);
    assert.equal(notMcp['cause'], 'not-an-mcp-server');
    assert.equal(notMcp['refusal'], 'WARDEN_RESOURCE_NOT_FOUND');
  });

  it('server request, allow: the grant, and the terms of the relay', () => {
    const text = run(['policy', 'explain', '--config', SURFACE, '--agent', 'alice', '--server-request', 'elicitation', '--server', 'one']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^agent "alice", server request "elicitation" from server "one"$/m);
    assert.match(text.stdout, /^decision: allow$/m);
    assert.match(text.stdout, /^decided by: \/agents\/alice\/allow\/4: server one, serverRequests \[elicitation\]$/m);
    assert.match(text.stdout, /agent "alice" may call 2 of one's tools/);
    assert.match(text.stdout, /^ {2}stdio, 2025 era: nothing ties a request to a call, so one is relayed only while one agent's grants reach the server \(a server pinned to era: modern, or one with era: auto that negotiates 2026-07-28, is not limited so\): only "alice" does/m);
    const facts = surface('alice', ['--server-request', 'elicitation', '--server', 'one']);
    assert.deepEqual(Object.keys(facts).slice(0, 4), ['agent', 'kind', 'serverRequest', 'decision']);
    assert.equal(facts['kind'], 'server-request');
    assert.equal(facts['serverRequest'], 'elicitation');
    assert.equal(facts['decision'], 'allow');
    assert.deepEqual(facts['grant'], { path: '/agents/alice/allow/4', server: 'one', serverRequests: ['elicitation'] });
    assert.deepEqual(facts['terms'], { callableTools: 2, maxBytes: 262_144, answerTimeoutMs: 300_000, attribution: { agentsReaching: ['alice'], sole: true } });
  });

  it('server request, deny: the other kind, no grant, a stdio server other agents reach, not an MCP server, an unknown server', () => {
    const sampling = surface('alice', ['--server-request', 'sampling', '--server', 'one']);
    assert.equal(sampling['decision'], 'deny');
    assert.equal(sampling['cause'], 'not-granted');
    assert.equal(sampling['refusal'], 'WARDEN_SERVER_REQUEST_DENIED');
    assert.match(sampling['reason'], /grant \/agents\/alice\/allow\/4 lets it ask for elicitation only; add sampling to its serverRequests/);
    const none = surface('bob', ['--server-request', 'sampling', '--server', 'two']);
    assert.match(none['reason'], /no grant lets server "two" ask agent "bob"'s host for sampling \(default deny\); add a grant to \/agents\/bob\/allow with serverRequests \[sampling\] and server: two/);
    assert.equal(surface('carol', ['--server-request', 'elicitation', '--server', 'two'])['cause'], 'not-granted', 'a scoped grant does not count without an access token');

    const shared = surface('alice', ['--server-request', 'sampling', '--server', 'two']);
    assert.equal(shared['decision'], 'deny');
    assert.equal(shared['cause'], 'unattributable');
    assert.equal(shared['grant'].path, '/agents/alice/allow/5', 'the grant allows it');
    assert.deepEqual(shared['terms'].attribution, { agentsReaching: ['alice', 'bob', 'carol'], sole: false }, 'scoped grants reach a server too');
    assert.match(shared['reason'], /alice, bob, carol reach "two", so each request is refused \(unattributable\)/);

    // A server pinned to the 2026-07-28 era: its request comes in the answer to the call that caused it, so the rule does not apply.
    const modern = everythingManifest('two');
    writeManifest(join(surfaceDir, 'manifests/two-modern.json'), { ...modern, transport: { ...(modern['transport'] as Record<string, unknown>), era: 'modern' } });
    const MODERN = writeConfig(join(surfaceDir, 'modern.yaml'), { ...SURFACE_POLICY, servers: { ...SURFACE_POLICY.servers, two: { manifest: 'two-modern.json' } }, state: { dir: 'modern-state' } });
    const tied = surface('alice', ['--server-request', 'sampling', '--server', 'two'], MODERN);
    assert.equal(tied['decision'], 'allow');
    assert.equal(tied['terms'].attribution, undefined);

    assert.equal(surface('alice', ['--server-request', 'sampling', '--server', 'text'])['cause'], 'not-an-mcp-server');
    const ghost = run(['policy', 'explain', '--config', SURFACE, '--agent', 'alice', '--server-request', 'sampling', '--server', 'gh\u001bost']);
    assert.equal(ghost.code, 0);
    assert.match(ghost.stdout, /^decision: deny$/m);
    assert.match(ghost.stdout, /there is no server "gh\\u\{1b\}ost"/);
    assert.ok(!ghost.stdout.includes('\u001b'));
  });

  it('list: prompts sorted, resource grants with their paths, server requests and what is denied by default; text and JSON', () => {
    const text = run(['policy', 'list', '--config', SURFACE, '--agent', 'alice']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^prompts: 4$/m);
    const prompts = [...text.stdout.matchAll(/^ {2}(one__\S+-prompt) +(\S+)$/gm)].map((match) => [match[1], match[2]]);
    assert.deepEqual(prompts, [
      ['one__args-prompt', '/agents/alice/allow/0'],
      ['one__completable-prompt', '/agents/alice/allow/1'],
      ['one__resource-prompt', '/agents/alice/allow/1'],
      ['one__simple-prompt', '/agents/alice/allow/0'],
    ]);
    assert.match(text.stdout, /^ {2}\/agents\/alice\/allow\/2 +server one: demo:\/\/resource\/static\/document\/\*, demo:\/\/resource\/dynamic\/text\/\*$/m);
    assert.match(text.stdout, /^ {2}\/agents\/alice\/allow\/7 +server text: text:\/\/x\/\* +\[not an MCP server: matches nothing\]$/m);
    assert.match(text.stdout, /^ {2}one +elicitation +\/agents\/alice\/allow\/4$/m);
    assert.match(text.stdout, /^ {2}two +sampling +\/agents\/alice\/allow\/5 +\[refused: other agents reach this stdio server \(unattributable\)\]$/m);
    assert.match(text.stdout, /^ {2}everything else is denied by default: sampling from one, elicitation from two, any request from any other server$/m);

    const listing = JSON.parse(run(['policy', 'list', '--config', SURFACE, '--agent', 'alice', '--json']).stdout);
    assert.deepEqual(listing.prompts[0], { name: 'one__args-prompt', server: 'one', grant: '/agents/alice/allow/0', quarantined: false });
    assert.deepEqual(listing.resources.map((grant: { grant: string; server: string; serverState: string }) => [grant.grant, grant.server, grant.serverState]), [
      ['/agents/alice/allow/2', 'one', 'ok'],
      ['/agents/alice/allow/3', 'two', 'ok'],
      ['/agents/alice/allow/7', 'text', 'not-an-mcp-server'],
    ]);
    assert.deepEqual(listing.resources[1].patterns, ['demo://resource/dynamic/text/*']);
    assert.deepEqual(listing.serverRequests, {
      allowed: [
        { server: 'one', kind: 'elicitation', grant: '/agents/alice/allow/4', serverState: 'ok', unattributable: false },
        { server: 'two', kind: 'sampling', grant: '/agents/alice/allow/5', serverState: 'ok', unattributable: true },
      ],
      otherwise: 'deny',
    });

    const bob = run(['policy', 'list', '--config', SURFACE, '--agent', 'bob']);
    assert.match(bob.stdout, /^prompts: none/m);
    assert.match(bob.stdout, /^resources: none/m);
    assert.match(bob.stdout, /^server requests: none; no server may ask this agent's host for sampling or elicitation \(default deny\)$/m);
    const bobJson = JSON.parse(run(['policy', 'list', '--config', SURFACE, '--agent', 'bob', '--json']).stdout);
    assert.deepEqual([bobJson.prompts, bobJson.resources, bobJson.serverRequests], [[], [], { allowed: [], otherwise: 'deny' }]);
  });

  it('the kill switch refuses all three while on (readonly withholds none of them); a quarantine refuses each', () => {
    const set = (state: string) => assert.equal(run(['killswitch', state, '--config', SURFACE_SWITCHED, '--by', 'ops']).code, 0);
    set('readonly');
    assert.equal(surface('alice', ['--prompt', 'one__simple-prompt'], SURFACE_SWITCHED)['decision'], 'allow');
    assert.equal(surface('alice', ['--resource', 'demo://resource/static/document/a.md'], SURFACE_SWITCHED)['decision'], 'allow');
    set('on');
    const prompt = surface('alice', ['--prompt', 'one__simple-prompt'], SURFACE_SWITCHED);
    assert.equal(prompt['cause'], 'kill-switch');
    assert.equal(prompt['refusal'], 'WARDEN_KILL_SWITCH');
    assert.equal(prompt['otherwise'], 'allow');
    assert.match(prompt['reason'], /^the kill switch is on \(set by ops at .*\): every request is refused until it is turned off; with it off: grant \/agents\/alice\/allow\/0 covers one__simple-prompt$/);
    // The switch comes first on these paths: an ungranted prompt is refused by it too.
    const ungranted = surface('alice', ['--prompt', 'two__simple-prompt'], SURFACE_SWITCHED);
    assert.equal(ungranted['refusal'], 'WARDEN_KILL_SWITCH');
    assert.equal(ungranted['otherwise'], 'deny');
    assert.equal(surface('alice', ['--resource', 'file:///a/../b'], SURFACE_SWITCHED)['refusal'], 'WARDEN_KILL_SWITCH');
    const request = surface('alice', ['--server-request', 'elicitation', '--server', 'one'], SURFACE_SWITCHED);
    assert.equal(request['cause'], 'kill-switch');
    assert.equal(request['refusal'], 'WARDEN_SERVER_REQUEST_DENIED');
    const listing = run(['policy', 'list', '--config', SURFACE_SWITCHED, '--agent', 'alice']);
    assert.match(listing.stdout, /^kill switch: on .*: the agent sees no tools, prompts or resources and every request is refused/m);
    set('off');

    const config = loadConfig(SURFACE_SWITCHED, { state: 'read-only' });
    const manifest = config.servers.get('one')!;
    const store = openStateStore(config.state.dir, 'read-write');
    store.recordQuarantine(manifest.name, manifest.digest, { reason: 'drift', diffDigest: 'd'.repeat(64), since: new Date().toISOString() });
    store.close();
    const quarantinedPrompt = surface('alice', ['--prompt', 'one__simple-prompt'], SURFACE_SWITCHED);
    assert.deepEqual([quarantinedPrompt['decision'], quarantinedPrompt['cause'], quarantinedPrompt['refusal'], quarantinedPrompt['otherwise']], ['deny', 'quarantined', 'WARDEN_PROMPT_NOT_FOUND', 'allow']);
    assert.equal(quarantinedPrompt['quarantine'].reason, 'drift');
    const quarantinedResource = surface('alice', ['--resource', 'demo://resource/static/document/a.md'], SURFACE_SWITCHED);
    assert.deepEqual([quarantinedResource['cause'], quarantinedResource['refusal']], ['quarantined', 'WARDEN_SERVER_QUARANTINED']);
    assert.equal(surface('alice', ['--server-request', 'elicitation', '--server', 'one'], SURFACE_SWITCHED)['cause'], 'quarantined');
    const listing2 = JSON.parse(run(['policy', 'list', '--config', SURFACE_SWITCHED, '--agent', 'alice', '--json']).stdout);
    assert.equal(listing2.prompts[0].quarantined, true);
    assert.equal(listing2.resources[0].serverState, 'quarantined');
  });

  it('the command decides as the broker\'s own request paths do, for the same inputs', async () => {
    const config = loadConfig(SURFACE, { state: 'read-only' });
    const audit = memoryAuditTrail();
    const backend = {
      quarantine: undefined,
      readResource: async (uri: string) => ({ contents: [{ uri, text: 'x' }] }),
      getPrompt: async () => ({ messages: [{ role: 'user', content: { type: 'text', text: 'x' } }] }),
    } as unknown as McpBackend;
    const deps: SurfaceDeps = {
      config: () => config,
      // As the broker's: the MCP servers' backends only.
      backend: (server) => (server === 'one' || server === 'two' ? backend : undefined),
      audit,
      secretForms: () => [],
      killSwitch: () => 'off',
      limits: memoryLimitStore(),
    };
    const outcome = async (request: () => Promise<unknown>) => {
      try {
        await request();
        return { decision: 'allow' };
      } catch (error) {
        return { decision: 'deny', refusal: (error as WardenError).code };
      }
    };
    const cli = (facts: Record<string, any>) => (facts['decision'] === 'allow' ? { decision: 'allow' } : { decision: 'deny', refusal: facts['refusal'] });

    for (const name of ['one__simple-prompt', 'one__resource-prompt', 'two__simple-prompt', 'one__launch', 'ghost__p']) {
      const runtime = await outcome(() => getPrompt(deps, { agentName: 'alice' }, name, name === 'one__resource-prompt' ? { resourceType: 'Text', resourceId: '1' } : {}));
      assert.deepEqual(cli(surface('alice', ['--prompt', name])), runtime, name);
    }
    for (const uri of ['demo://resource/static/document/a.md', 'demo://resource/dynamic/text/1', 'demo://resource/dynamic/blob/1', 'file:///a/../etc/passwd', 'demo://x/%2e%2e/y', 'text://x/1']) {
      const runtime = await outcome(() => readResource(deps, { agentName: 'alice' }, uri));
      assert.deepEqual(cli(surface('alice', ['--resource', uri])), runtime, uri);
    }
    const params = {
      sampling: { messages: [{ role: 'user', content: { type: 'text', text: 'hi' } }], maxTokens: 10 },
      elicitation: { mode: 'form', message: 'ok?', requestedSchema: { type: 'object', properties: {} } },
    };
    const answers = { sampling: { role: 'assistant', content: { type: 'text', text: 'hello' }, model: 'm' }, elicitation: { action: 'decline' } };
    for (const [agent, server, kind] of [['alice', 'one', 'elicitation'], ['alice', 'one', 'sampling'], ['bob', 'two', 'sampling'], ['carol', 'two', 'elicitation']] as const) {
      const call = { correlationId: 'c', agentName: agent, agent: config.agents.get(agent)!, server, host: { can: () => true, ask: async () => answers[kind] } };
      const method = kind === 'sampling' ? 'sampling/createMessage' : 'elicitation/create';
      const runtime = await outcome(() => relayServerRequest({ config, audit, secretForms: () => [] }, call, method, params[kind], AbortSignal.timeout(10_000)));
      assert.deepEqual(cli(surface(agent, ['--server-request', kind, '--server', server])), runtime, `${agent} ${server} ${kind}`);
    }
    // Where the relay's grant check allows and the stdio transport cannot tie the request to
    // one agent's call (mcp.ts), the command says both: the grant, and the refusal.
    const runtime = await outcome(() => relayServerRequest({ config, audit, secretForms: () => [] }, { correlationId: 'c', agentName: 'alice', agent: config.agents.get('alice')!, server: 'two', host: { can: () => true, ask: async () => answers.sampling } }, 'sampling/createMessage', params.sampling, AbortSignal.timeout(10_000)));
    assert.deepEqual(runtime, { decision: 'allow' });
    const shared = surface('alice', ['--server-request', 'sampling', '--server', 'two']);
    assert.deepEqual([shared['grant'].path, shared['cause']], ['/agents/alice/allow/5', 'unattributable']);
  });
});
