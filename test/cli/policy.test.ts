import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfig } from '../../src/config/load.ts';
import { openStateStore } from '../../src/state/store.ts';
import { CLI, NOTES_SERVER, NOTES_TOOLS, stdioManifest, tempDir, writeConfig, writeManifest, writeYaml } from '../helpers.ts';

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
