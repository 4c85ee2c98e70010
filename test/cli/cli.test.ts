import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { parse, stringify } from 'yaml';
import { sha256Hex } from '../../src/config/load.ts';
import { CLI, NOTES_SERVER, NOTES_TOOLS, stdioManifest, tempDir, waitFor, writeConfig, writeYaml } from '../helpers.ts';

const { dir, cleanup } = tempDir();
after(cleanup);

function run(args: string[], input?: string) {
  const result = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', input, timeout: 60_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('mcp-warden CLI', () => {
  it('--help explains the commands and exit codes; no arguments is a usage error', () => {
    const help = run(['--help']);
    assert.equal(help.code, 0);
    for (const word of ['serve', 'init', 'config', 'token', 'Exit codes']) assert.match(help.stdout, new RegExp(word));
    assert.equal(run([]).code, 2);
  });

  it('every command has --help', () => {
    for (const verb of ['serve', 'init', 'config', 'token', 'jwks']) {
      const result = run([verb, '--help']);
      assert.equal(result.code, 0, verb);
      assert.match(result.stdout, /^Usage: mcp-warden/);
    }
  });

  it('unknown commands and options are usage errors (exit 2) with a code', () => {
    const verb = run(['frobnicate']);
    assert.equal(verb.code, 2);
    assert.match(verb.stderr, /WARDEN_USAGE/);
    const option = run(['serve', '--no-such-option']);
    assert.equal(option.code, 2);
    assert.match(option.stderr, /WARDEN_USAGE/);
    assert.equal(run(['serve', '--config', 'x.yaml']).code, 2, 'neither --stdio nor --http');
    assert.equal(run(['serve', '--config', 'x.yaml', '--stdio']).code, 2, '--stdio without --agent');
    assert.equal(run(['serve', '--config', 'x.yaml', '--stdio', '--http', '--agent', 'a']).code, 2);
  });

  it('init writes a workspace that config check accepts, and refuses to overwrite it', () => {
    const target = join(dir, 'ws');
    const init = run(['init', target]);
    assert.equal(init.code, 0, init.stderr);
    assert.match(init.stdout, /"mcpServers"/);
    const token = readFileSync(join(target, 'demo-agent.token'), 'utf8').trim();
    assert.equal(statSync(join(target, 'demo-agent.token')).mode & 0o777, 0o600);
    assert.ok(readFileSync(join(target, 'warden.yaml'), 'utf8').includes(sha256Hex(token)));
    const check = run(['config', 'check', join(target, 'warden.yaml')]);
    assert.equal(check.code, 0, check.stderr);
    // Every tool each live server offers is signed: 8 of the notes server, 16 of server-everything,
    // the 4 native HTTP tools of the tickets API and the 3 code tools; and code mode (warden__run_code).
    assert.match(check.stdout, /^accepted: server notes: example\.notes serial 1, signed by demo$/m);
    assert.match(check.stdout, /^accepted: server everything: modelcontextprotocol\.everything serial 1, signed by demo$/m);
    assert.match(check.stdout, /^accepted: server tickets: example\.tickets serial 1, signed by demo$/m);
    assert.match(check.stdout, /^accepted: server text: example\.text serial 1, signed by demo$/m);
    assert.match(check.stdout, /ok: .* 4 server\(s\), 32 tool\(s\), 1 agent\(s\)/);
    assert.doesNotMatch(check.stdout, /refused/);
    // The egress rule init writes covers every tickets tool: no warning.
    assert.doesNotMatch(`${check.stdout}${check.stderr}`, /warning/);
    assert.equal(statSync(join(target, 'secrets/tickets-api-key')).mode & 0o777, 0o600);
    assert.match(init.stdout, /examples\/tickets-api\/server\.ts --key-file /);
    const again = run(['init', target]);
    assert.equal(again.code, 5);
    assert.match(again.stderr, /WARDEN_INIT_TARGET_EXISTS/);
    assert.equal(readFileSync(join(target, 'demo-agent.token'), 'utf8').trim(), token, 'nothing was overwritten');
  });

  it('config check: exit 3 for config problems, 4 for manifest problems, with file and path', () => {
    const badConfig = writeYaml(join(dir, 'bad.yaml'), { version: 1, servers: {}, agents: { a: { allow: 'everything' } } });
    const config = run(['config', 'check', badConfig]);
    assert.equal(config.code, 3);
    assert.match(config.stderr, /WARDEN_CONFIG_INVALID/);
    assert.match(config.stderr, /bad\.yaml/);
    assert.match(config.stderr, /at \/agents\/a\/allow: must be array/);
    const badManifest = writeYaml(join(dir, 'm.yaml'), { version: 1, servers: { s: { manifest: 'nope.yaml', name: 'test.s' } }, agents: {} });
    const missing = run(['config', 'check', badManifest]);
    assert.equal(missing.code, 4, missing.stderr);
    assert.match(missing.stdout, new RegExp(`^refused \\[unreadable\\]: server s: ${join(dir, 'manifests/nope.yaml')}: `, 'm'));
    assert.match(missing.stdout, /1 manifest\(s\) refused, their tools would not exist/);
    assert.equal(run(['config', 'check', join(dir, 'missing.yaml')]).code, 3);
  });

  it('config check: an unsigned manifest (the old YAML form) is refused with reason unsigned, exit 4', () => {
    writeYaml(join(dir, 'manifests/unsigned.yaml'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
    const file = writeConfig(join(dir, 'unsigned.yaml'), { version: 1, servers: { plain: { manifest: 'unsigned.yaml' } }, agents: { a: { allow: [{ tools: ['plain__*'] }] } } });
    const check = run(['config', 'check', file]);
    assert.equal(check.code, 4, check.stderr);
    assert.match(check.stdout, /^refused \[unsigned\]: server plain: .*unsigned\.yaml: this is an unsigned manifest/m);
    assert.match(check.stdout, /0 server\(s\), 0 tool\(s\)/);
    assert.doesNotMatch(check.stdout, /^accepted/m);
  });

  it('serve refuses an agent that is not in the config, before starting anything', () => {
    const result = run(['serve', '--config', join(dir, 'ws/warden.yaml'), '--stdio', '--agent', 'mallory']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /WARDEN_AGENT_UNKNOWN/);
  });

  it('serve reports a refused manifest on stderr and serves without that server', async () => {
    // The init workspace keeps each unsigned source next to its signed file: point a server at one.
    const data = parse(readFileSync(join(dir, 'ws/warden.yaml'), 'utf8')) as { servers: Record<string, unknown>; agents: { demo: { allow: { tools: string[] }[] } } };
    data.servers['raw'] = { manifest: 'notes.manifest.yaml', name: 'example.notes' };
    data.agents.demo.allow.push({ tools: ['raw__*'] });
    const file = writeYaml(join(dir, 'ws/with-unsigned.yaml'), stringify(data));
    const check = run(['config', 'check', file]);
    assert.equal(check.code, 4);
    assert.match(check.stdout, /^refused \[unsigned\]: server raw: /m);
    assert.match(check.stdout, /^accepted: server notes: /m);

    const transport = new StdioClientTransport({ command: process.execPath, args: [CLI, 'serve', '--config', file, '--stdio', '--agent', 'demo'], env: { PATH: process.env['PATH'] ?? '' }, stderr: 'pipe' });
    let stderr = '';
    transport.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const client = new Client({ name: 'cli-test', version: '1.0.0' }, { versionNegotiation: { mode: 'legacy' } });
    await client.connect(transport);
    try {
      const { tools } = await client.listTools();
      const names = tools.map((tool) => tool.name);
      assert.ok(names.includes('notes__list_notes'), names.join(', '));
      assert.ok(!names.some((name) => name.startsWith('raw__')), 'the refused server has no tools');
      assert.ok(await waitFor(() => /manifest refused \[unsigned\]: server raw \(.*notes\.manifest\.yaml\)/.test(stderr), 100, 50), stderr);
    } finally {
      await client.close();
    }
  });

  it('serve --http refuses a port it cannot bind (exit 6)', async () => {
    const { createServer } = await import('node:net');
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      const result = spawnSync(process.execPath, [CLI, 'serve', '--config', join(dir, 'ws/warden.yaml'), '--http', '--listen', `127.0.0.1:${port}`], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(result.status, 6, result.stderr);
      assert.match(result.stderr, /WARDEN_LISTEN_FAILED/);
    } finally {
      blocker.close();
    }
  });

  it('serve --listen on a non-loopback address without allowedHosts is refused', () => {
    const result = run(['serve', '--config', join(dir, 'ws/warden.yaml'), '--http', '--listen', '0.0.0.0:0']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /allowedHosts/);
  });

  it('serve refuses to run without a writable audit trail (exit 8)', () => {
    const config = readFileSync(join(dir, 'ws/warden.yaml'), 'utf8').replace('file: audit/audit.jsonl', 'file: /etc/passwd/audit.jsonl');
    const file = writeYaml(join(dir, 'ws/no-audit.yaml'), config);
    const result = run(['serve', '--config', file, '--stdio', '--agent', 'demo']);
    assert.equal(result.code, 8, result.stderr);
    assert.match(result.stderr, /WARDEN_AUDIT_UNWRITABLE/);
  });

  it('token new prints a token and its hash; token hash agrees', () => {
    const made = run(['token', 'new']);
    assert.equal(made.code, 0);
    const [token, hash] = made.stdout.trim().split('\n');
    assert.match(token ?? '', /^mwt_[A-Za-z0-9_-]{43}$/);
    assert.equal(hash, sha256Hex(token ?? ''));
    assert.equal(run(['token', 'hash'], `${token}\n`).stdout.trim(), hash);
    assert.equal(run(['token', 'hash'], '').code, 2);
    assert.equal(run(['token', 'hash'], 'x'.repeat(10_000)).code, 2);
  });
});
