// What a stdio server runs is pinned in its signed manifest (transport.pins) and checked
// before every spawn. These tests run a real broker in process with a small MCP server
// script copied into a temporary folder, change what would run (the script, the
// executable, a link, a pinned folder, an installed package, PATH, the script rewriting
// itself), and show the broker refuses to start it: no child process, tools withdrawn,
// calls refused, the mismatch audited and persisted.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { appendFileSync, chmodSync, copyFileSync, cpSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, test } from 'node:test';
import type { Broker } from '../../src/broker.ts';
import type { McpBackend } from '../../src/backends/mcp.ts';
import type { AuditRecord } from '../../src/audit/trail.ts';
import { loadConfig } from '../../src/config/load.ts';
import { directoryDigest } from '../../src/manifest/artifacts.ts';
import { refusalCode, startBroker, tempDir, textOf, waitFor, writeConfig, writeManifest } from '../helpers.ts';

/** The MCP server SDK, by absolute URL: the scripts run from temporary folders without node_modules. */
const SDK_SERVER = import.meta.resolve('@modelcontextprotocol/server');
const SDK_STDIO = import.meta.resolve('@modelcontextprotocol/server/stdio');

const EMPTY = { type: 'object', properties: {} };
/** The tools the script offers live; the manifest signs exactly these. */
const LIVE_TOOLS = [
  { name: 'ping', description: 'answers pong and the tag of the script that runs', inputSchema: EMPTY },
  { name: 'rewrite', description: 'appends to its own script file, answers, then exits', inputSchema: EMPTY },
];
const MANIFEST_TOOLS = LIVE_TOOLS.map((tool) => ({ ...structuredClone(tool), access: tool.name === 'ping' ? 'read' : 'write' }));

/**
 * A tiny MCP server. On start it appends one JSON line to the file named by ARTIFACT_MARKER
 * (its pid, its tag, its executable, the path it was started as and its working directory),
 * so a test can tell whether, how often and with which binary it was started, and find its
 * pid to kill it. `onStart`: more code run at start.
 */
function serverScript(tag: string, onStart = ''): string {
  return `${[
    `import { appendFileSync, existsSync, writeFileSync } from 'node:fs';`,
    `import { fileURLToPath } from 'node:url';`,
    `import { Server } from ${JSON.stringify(SDK_SERVER)};`,
    `import { serveStdio } from ${JSON.stringify(SDK_STDIO)};`,
    `const TAG = ${JSON.stringify(tag)};`,
    `const TOOLS = ${JSON.stringify(LIVE_TOOLS)};`,
    `appendFileSync(process.env.ARTIFACT_MARKER, JSON.stringify({ pid: process.pid, tag: TAG, execPath: process.execPath, argv0: process.argv0, cwd: process.cwd() }) + '\\n');`,
    onStart,
    `serveStdio(() => {`,
    `  const server = new Server({ name: 'artifact', version: '1.0.0' }, { capabilities: { tools: {} } });`,
    `  server.setRequestHandler('tools/list', async () => ({ tools: TOOLS }));`,
    `  server.setRequestHandler('tools/call', async (request) => {`,
    `    if (request.params.name === 'rewrite') {`,
    `      appendFileSync(fileURLToPath(import.meta.url), '\\n// rewritten by the running server\\n');`,
    `      setTimeout(() => process.exit(0), 50);`,
    `      return { content: [{ type: 'text', text: 'rewritten' }] };`,
    `    }`,
    `    return { content: [{ type: 'text', text: 'pong ' + TAG }] };`,
    `  });`,
    `  return server;`,
    `});`,
  ].join('\n')}\n`;
}

/** An executable that is not node: records that it ran (tag "shadow") and exits. */
const SHADOW_EXECUTABLE = `#!/bin/sh\nprintf '{"pid":%s,"tag":"shadow"}\\n' "$$" >> "$ARTIFACT_MARKER"\nexit 0\n`;

/** SHA-256 of a file's bytes, computed here and not with the code under test. */
function sha256Of(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

let nodeDigestCache: string | undefined;
/** SHA-256 of this Node binary (every copy of it has the same). */
function nodeDigest(): string {
  nodeDigestCache ??= sha256Of(process.execPath);
  return nodeDigestCache;
}

/**
 * The tree digest as the spec defines it, written independently of src/manifest/artifacts.ts:
 * SHA-256 over "mcp-warden tree v1\n" and one JSON line ["file"|"link", relPath, sha256]
 * per entry, sorted by path; empty folders ignored.
 */
function specTreeDigest(root: string, options: { skipNodeModules?: boolean } = {}): string {
  const entries: [string, string, string][] = [];
  const walk = (dir: string, rel: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      const relPath = rel === '' ? name : `${rel}/${name}`;
      const stat = lstatSync(path);
      if (stat.isDirectory()) {
        if (!(options.skipNodeModules && name === 'node_modules')) walk(path, relPath);
      } else if (stat.isSymbolicLink()) {
        entries.push(['link', relPath, createHash('sha256').update(readlinkSync(path)).digest('hex')]);
      } else {
        entries.push(['file', relPath, sha256Of(path)]);
      }
    }
  };
  walk(root, '');
  entries.sort((a, b) => (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  const hash = createHash('sha256').update('mcp-warden tree v1\n');
  for (const entry of entries) hash.update(`${JSON.stringify(entry)}\n`);
  return hash.digest('hex');
}

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Workspace {
  /** The temporary folder (real path): the manifest's folder and the server's cwd. */
  readonly root: string;
  readonly manifest: string;
  readonly config: string;
  /** One JSON line per start of the server (or of a shadow executable). */
  readonly marker: string;
}

/** A temporary folder with a config naming one server, "art" (test.art). */
function workspace(): Workspace {
  const { dir, cleanup } = tempDir('warden-artifact-');
  cleanups.push(cleanup);
  const root = realpathSync(dir);
  // Outside every pinned folder: a start must not change what is pinned.
  mkdirSync(join(root, 'markers'));
  const config = writeConfig(join(root, 'warden.yaml'), {
    version: 1,
    manifestsDir: '.',
    servers: { art: { manifest: 'art.json', name: 'test.art' } },
    agents: { a: { allow: [{ tools: ['art__*'], access: ['read', 'write'] }] } },
  });
  return { root, manifest: join(root, 'art.json'), config, marker: join(root, 'markers/starts.log') };
}

/**
 * Signs the manifest for the server. Pins not given are filled in by signing (as
 * `manifest sign` does): the command's digest and a file pin for every argument naming a file.
 */
function sign(ws: Workspace, transport: { command: string; args: string[]; pins?: Record<string, unknown>; cwd?: string; era?: string }, serial = 1): void {
  writeManifest(ws.manifest, {
    manifestVersion: 1,
    name: 'test.art',
    version: '1.0.0',
    serial,
    transport: { type: 'stdio', command: transport.command, args: transport.args, cwd: transport.cwd ?? '.', env: { ARTIFACT_MARKER: ws.marker }, pins: transport.pins ?? {}, ...(transport.era ? { era: transport.era } : {}) },
    tools: MANIFEST_TOOLS,
  });
}

interface Running {
  readonly broker: Broker;
  readonly backend: McpBackend;
  readonly records: AuditRecord[];
  /** Closes the broker (once; also done after the test). */
  stop(): Promise<void>;
}

/**
 * A broker on the workspace's config (its state folder, an in-memory audit), started. A
 * config loaded earlier may be given: what changes after it was loaded meets the check
 * before the spawn only.
 */
async function boot(ws: Workspace, config = loadConfig(ws.config)): Promise<Running> {
  assert.deepEqual([...config.rejected.values()], [], 'the manifest was refused at load');
  const broker = await startBroker(config, { backoff: { initialMs: 20, maxMs: 200 } });
  let closed: Promise<void> | undefined;
  const stop = () => (closed ??= broker.close());
  cleanups.push(stop);
  return { broker, backend: broker.backends.get('art') as McpBackend, records: (broker.audit as unknown as { records: AuditRecord[] }).records, stop };
}

/** The starts the marker file records. */
function starts(ws: Workspace): { pid: number; tag: string; execPath?: string; argv0?: string; cwd?: string }[] {
  if (!existsSync(ws.marker)) return [];
  return readFileSync(ws.marker, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as { pid: number; tag: string; execPath?: string; argv0?: string; cwd?: string });
}

const quarantineRecords = (run: Running) => run.records.filter((record) => record.event === 'server.quarantined');

/** The server is up, lists its tools and answers a call from the script with this tag. */
async function assertServing(run: Running, tag: string): Promise<void> {
  assert.equal(run.backend.quarantine, undefined, `unexpected quarantine: ${JSON.stringify(run.backend.quarantine)}`);
  assert.equal(run.backend.state, 'ready');
  assert.deepEqual(run.broker.listTools('a').tools.map((tool) => tool.name).sort(), ['art__ping', 'art__rewrite']);
  const result = await run.broker.callTool('a', 'art__ping', {});
  assert.equal(result.isError, undefined, textOf(result));
  assert.equal(textOf(result), `pong ${tag}`);
}

/**
 * The server was refused before it was spawned: down, quarantined for artifact-modified at
 * spawn, no tools listed, calls refused with WARDEN_SERVER_QUARANTINED, one audit record
 * naming exactly these mismatches (and these arguments no pin covers).
 */
async function assertRefusedAtSpawn(run: Running, artifacts: { kind: string; path: string; expected: string; found: string }[], unpinned: string[] = []): Promise<void> {
  assert.equal(run.backend.state, 'down');
  const quarantine = run.backend.quarantine;
  assert.equal(quarantine?.reason, 'artifact-modified', `quarantine: ${JSON.stringify(quarantine)}`);
  assert.equal(quarantine?.trigger, 'spawn');
  assert.deepEqual(quarantine?.artifacts, artifacts);
  assert.deepEqual(run.broker.listTools('a').tools, [], 'a refused server lists no tools');
  const refused = await run.broker.callTool('a', 'art__ping', {});
  assert.equal(refusalCode(refused), 'WARDEN_SERVER_QUARANTINED', textOf(refused));
  const records = quarantineRecords(run);
  assert.equal(records.length, 1, `server.quarantined records: ${JSON.stringify(records)}`);
  const record = records[0]!;
  assert.equal(record['server'], 'art');
  assert.equal(record['manifest'], 'test.art');
  assert.equal(record['reason'], 'artifact-modified');
  assert.equal(record['trigger'], 'spawn');
  assert.deepEqual(record['artifacts'], artifacts);
  assert.deepEqual(record['unpinned'], unpinned);
  assert.match(String(record['diffDigest']), /^[0-9a-f]{64}$/);
}

/** Kills the running child (its pid from the latest start in the marker) and returns that pid. */
function killLatest(ws: Workspace): number {
  const latest = starts(ws).at(-1);
  assert.ok(latest, 'no start recorded');
  process.kill(latest.pid, 'SIGKILL');
  return latest.pid;
}

/** A copy of this Node binary, executable, at path. */
function copyNode(path: string): string {
  mkdirSync(join(path, '..'), { recursive: true });
  copyFileSync(process.execPath, path);
  chmodSync(path, 0o755);
  return path;
}

/** Replaces path with the shadow shell script (a new file, not node). */
function writeShadow(path: string): string {
  rmSync(path, { force: true });
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, SHADOW_EXECUTABLE);
  chmodSync(path, 0o755);
  return path;
}

describe('stdio artifact pinning: what runs must be what was signed', () => {
  test('a modified script: not started, tools withdrawn, calls refused, the digests audited', async () => {
    const ws = workspace();
    const script = join(ws.root, 'server.mjs');
    writeFileSync(script, serverScript('original'));
    const signed = sha256Of(script);
    sign(ws, { command: process.execPath, args: ['server.mjs'] });

    appendFileSync(script, '\n// edited after signing\n');
    const run = await boot(ws);
    await assertRefusedAtSpawn(run, [{ kind: 'file', path: script, expected: signed, found: sha256Of(script) }]);
    assert.notEqual(sha256Of(script), signed);
    assert.deepEqual(starts(ws), [], 'the modified script was started');
  });

  test('a replaced executable: the pinned copy of node swapped for another program is not run', async () => {
    const ws = workspace();
    const command = copyNode(join(ws.root, 'bin/node-copy'));
    writeFileSync(join(ws.root, 'server.mjs'), serverScript('original'));
    sign(ws, { command, args: ['server.mjs'] });

    // As signed, it runs (the copy is a working node).
    const first = await boot(ws);
    await assertServing(first, 'original');
    assert.equal(starts(ws).length, 1);
    await first.stop();

    writeShadow(command);
    const run = await boot(ws);
    await assertRefusedAtSpawn(run, [{ kind: 'command', path: command, expected: nodeDigest(), found: sha256Of(command) }]);
    assert.deepEqual(starts(ws).map((start) => start.tag), ['original'], 'the replaced executable was run');
  });

  test('a re-pointed link: a file pin on the link covers the bytes it points at', async () => {
    const ws = workspace();
    const a = join(ws.root, 'a.mjs');
    const b = join(ws.root, 'b.mjs');
    const link = join(ws.root, 'server.mjs');
    writeFileSync(a, serverScript('A'));
    writeFileSync(b, serverScript('B'));
    symlinkSync('a.mjs', link);
    sign(ws, { command: process.execPath, args: ['server.mjs'], pins: { files: [{ path: 'server.mjs' }] } });

    const first = await boot(ws);
    await assertServing(first, 'A');
    await first.stop();

    unlinkSync(link);
    symlinkSync('b.mjs', link);
    const run = await boot(ws);
    await assertRefusedAtSpawn(run, [{ kind: 'file', path: link, expected: sha256Of(a), found: sha256Of(b) }]);
    assert.deepEqual(starts(ws).map((start) => start.tag), ['A'], 'the script behind the re-pointed link was started');
  });

  test('a file added to a pinned folder: the tree digest no longer holds', async () => {
    const ws = workspace();
    const folder = join(ws.root, 'srv');
    mkdirSync(join(folder, 'lib'), { recursive: true });
    writeFileSync(join(folder, 'server.mjs'), serverScript('original'));
    writeFileSync(join(folder, 'lib/helper.mjs'), 'export const helper = 1;\n');
    mkdirSync(join(folder, 'empty'));
    const signedTree = specTreeDigest(folder);
    sign(ws, { command: process.execPath, args: ['srv/server.mjs'], pins: { directories: [{ path: 'srv' }] } });
    // Signing pinned the folder to the digest the spec defines (empty folders ignored).
    const config = loadConfig(ws.config);
    const transport = config.servers.get('art')?.transport;
    assert.equal(transport?.type, 'stdio');
    assert.deepEqual(transport?.type === 'stdio' ? transport.pins.directories : undefined, [{ path: folder, sha256: signedTree }]);
    assert.deepEqual(transport?.type === 'stdio' ? transport.pins.files : undefined, [], 'the argument is covered by the folder pin');

    const first = await boot(ws);
    await assertServing(first, 'original');
    await first.stop();

    writeFileSync(join(folder, 'lib/extra.mjs'), 'export const extra = 2;\n');
    const run = await boot(ws);
    await assertRefusedAtSpawn(run, [{ kind: 'directory', path: folder, expected: signedTree, found: specTreeDigest(folder) }]);
    assert.equal(starts(ws).length, 1, 'the server was started from the changed folder');
  });

  test('an installed npm package whose file was edited is refused at the next start', async () => {
    const ws = workspace();
    const pkg = join(ws.root, 'node_modules/warden-art-server');
    mkdirSync(join(pkg, 'node_modules/dep'), { recursive: true });
    writeFileSync(join(pkg, 'package.json'), `${JSON.stringify({ name: 'warden-art-server', version: '1.2.3', type: 'module', main: 'server.mjs' }, null, 2)}\n`);
    writeFileSync(join(pkg, 'server.mjs'), serverScript('package'));
    // The package's own node_modules is not part of its release digest.
    writeFileSync(join(pkg, 'node_modules/dep/index.js'), 'module.exports = 1;\n');
    const sha256 = directoryDigest(pkg, { skipNodeModules: true });
    assert.equal(sha256, specTreeDigest(pkg, { skipNodeModules: true }), 'the package digest is the spec\'s tree digest without node_modules');
    const integrity = `sha512-${createHash('sha512').update('warden-art-server@1.2.3').digest('base64')}`;
    // The dependency in the package's own node_modules is pinned as a package of its own.
    const depIntegrity = `sha512-${createHash('sha512').update('dep@1.0.0').digest('base64')}`;
    const depSha256 = specTreeDigest(join(pkg, 'node_modules/dep'), { skipNodeModules: true });
    const packages = [
      { path: 'node_modules/warden-art-server', package: 'warden-art-server@1.2.3', integrity, sha256 },
      { path: 'node_modules/warden-art-server/node_modules/dep', package: 'dep@1.0.0', integrity: depIntegrity, sha256: depSha256 },
    ];
    sign(ws, { command: process.execPath, args: ['node_modules/warden-art-server/server.mjs'], pins: { packages } });

    const first = await boot(ws);
    await assertServing(first, 'package');
    await first.stop();

    appendFileSync(join(pkg, 'server.mjs'), '\n// patched in node_modules\n');
    const run = await boot(ws);
    await assertRefusedAtSpawn(run, [{ kind: 'package', path: pkg, expected: sha256, found: specTreeDigest(pkg, { skipNodeModules: true }) }]);
    assert.equal(starts(ws).length, 1, 'the edited package was started');
  });

  test('PATH changed after load to shadow the command: restarts run the path resolved at load', async () => {
    const ws = workspace();
    const folderA = join(ws.root, 'path-a');
    const folderB = join(ws.root, 'path-b');
    const pinned = copyNode(join(folderA, 'node-for-test'));
    writeShadow(join(folderB, 'node-for-test'));
    writeFileSync(join(ws.root, 'server.mjs'), serverScript('original'));
    const originalPath = process.env['PATH'];
    try {
      process.env['PATH'] = [folderA, originalPath].join(delimiter);
      sign(ws, { command: 'node-for-test', args: ['server.mjs'] });
      const run = await boot(ws);
      const transport = run.broker.config.servers.get('art')?.transport;
      assert.equal(transport?.type === 'stdio' ? transport.command : undefined, pinned, 'the bare command is resolved at load');
      await assertServing(run, 'original');
      assert.deepEqual(starts(ws).map((start) => start.execPath), [pinned]);

      // Now PATH finds another node-for-test first; the server is restarted.
      process.env['PATH'] = [folderB, folderA, originalPath].join(delimiter);
      const killed = killLatest(ws);
      assert.ok(await waitFor(() => starts(ws).length >= 2 && run.backend.state === 'ready', 200), `no restart: ${JSON.stringify(starts(ws))}, state ${run.backend.state}`);
      const second = starts(ws)[1]!;
      assert.notEqual(second.pid, killed);
      assert.equal(second.execPath, pinned, 'the restart ran another executable');
      assert.deepEqual(starts(ws).map((start) => start.tag), ['original', 'original'], 'the shadowing executable ran');
      await assertServing(run, 'original');
      assert.equal(quarantineRecords(run).length, 0);
    } finally {
      process.env['PATH'] = originalPath;
    }
  });

  test('PATH finding another binary than the pinned one when the manifest is loaded: quarantined at spawn', async () => {
    const ws = workspace();
    const folderA = join(ws.root, 'path-a');
    const folderB = join(ws.root, 'path-b');
    copyNode(join(folderA, 'node-for-test'));
    const shadow = writeShadow(join(folderB, 'node-for-test'));
    writeFileSync(join(ws.root, 'server.mjs'), serverScript('original'));
    const originalPath = process.env['PATH'];
    try {
      // Signed where node-for-test is node...
      process.env['PATH'] = [folderA, originalPath].join(delimiter);
      sign(ws, { command: 'node-for-test', args: ['server.mjs'] });
      // ...loaded where PATH finds the other one first.
      process.env['PATH'] = [folderB, folderA, originalPath].join(delimiter);
      const run = await boot(ws);
      const transport = run.broker.config.servers.get('art')?.transport;
      assert.equal(transport?.type === 'stdio' ? transport.command : undefined, shadow);
      await assertRefusedAtSpawn(run, [{ kind: 'command', path: shadow, expected: nodeDigest(), found: sha256Of(shadow) }]);
      assert.deepEqual(starts(ws), [], 'the unpinned binary was run');
    } finally {
      process.env['PATH'] = originalPath;
    }
  });

  test('a server that rewrites its own script while running is not restarted', async () => {
    const ws = workspace();
    const script = join(ws.root, 'server.mjs');
    writeFileSync(script, serverScript('original'));
    const signed = sha256Of(script);
    sign(ws, { command: process.execPath, args: ['server.mjs'] });
    const run = await boot(ws);
    await assertServing(run, 'original');

    const answer = await run.broker.callTool('a', 'art__rewrite', {});
    assert.equal(textOf(answer), 'rewritten', textOf(answer));
    assert.notEqual(sha256Of(script), signed, 'the script did not rewrite itself');
    // The server exits; the restart checks the pins first.
    assert.ok(await waitFor(() => run.backend.quarantine !== undefined, 200), `not quarantined; state ${run.backend.state}`);
    await assertRefusedAtSpawn(run, [{ kind: 'file', path: script, expected: signed, found: sha256Of(script) }]);
    // No restart is attempted while quarantined: still one start, still down, still one record.
    assert.equal(await waitFor(() => starts(ws).length > 1 || run.backend.state !== 'down' || quarantineRecords(run).length > 1, 20), false);
    assert.equal(starts(ws).length, 1, 'the rewritten script was started');
  });

  test('the quarantine survives a broker restart; restoring the file does not lift it; a new release that matches does', async () => {
    const ws = workspace();
    const script = join(ws.root, 'server.mjs');
    writeFileSync(script, serverScript('original'));
    const original = readFileSync(script);
    const signed = sha256Of(script);
    sign(ws, { command: process.execPath, args: ['server.mjs'] });
    const config = loadConfig(ws.config);
    // Not 'memory': the quarantine must outlive the broker in the config's state folder.
    assert.equal(config.state.dir, join(ws.root, 'state'));

    appendFileSync(script, '\n// edited after signing\n');
    const first = await boot(ws);
    await assertRefusedAtSpawn(first, [{ kind: 'file', path: script, expected: signed, found: sha256Of(script) }]);
    await first.stop();

    // The next broker, file still modified: still quarantined, from the store, not started.
    const second = await boot(ws);
    assert.equal(second.backend.quarantine?.reason, 'artifact-modified');
    assert.equal(second.backend.quarantine?.trigger, 'persisted');
    assert.equal(second.backend.state, 'down');
    assert.deepEqual(second.broker.listTools('a').tools, []);
    assert.equal(refusalCode(await second.broker.callTool('a', 'art__ping', {})), 'WARDEN_SERVER_QUARANTINED');
    const persisted = quarantineRecords(second);
    assert.deepEqual(persisted.map((record) => [record['reason'], record['trigger']]), [['artifact-modified', 'persisted']]);
    assert.equal(persisted[0]!['diffDigest'], quarantineRecords(first)[0]!['diffDigest']);
    await second.stop();

    // The file restored, same release: still quarantined, still not started.
    writeFileSync(script, original);
    assert.equal(sha256Of(script), signed);
    const third = await boot(ws);
    assert.equal(third.backend.quarantine?.reason, 'artifact-modified');
    assert.equal(third.backend.quarantine?.trigger, 'persisted');
    assert.equal(third.backend.state, 'down');
    assert.equal(refusalCode(await third.broker.callTool('a', 'art__ping', {})), 'WARDEN_SERVER_QUARANTINED');
    assert.equal(await waitFor(() => starts(ws).length > 0 || third.backend.state !== 'down', 10), false);
    await third.stop();
    assert.deepEqual(starts(ws), [], 'a quarantined release was started');

    // A new release (higher serial) whose pins match the files: it runs.
    sign(ws, { command: process.execPath, args: ['server.mjs'] }, 2);
    const fourth = await boot(ws);
    assert.equal(fourth.broker.config.servers.get('art')?.serial, 2);
    await assertServing(fourth, 'original');
    assert.equal(quarantineRecords(fourth).length, 0);
    assert.equal(starts(ws).length, 1);
  });

  test('a clean start: served, and a restart checks again and starts again', async () => {
    const ws = workspace();
    writeFileSync(join(ws.root, 'server.mjs'), serverScript('original'));
    sign(ws, { command: process.execPath, args: ['server.mjs'] });
    const run = await boot(ws);
    await assertServing(run, 'original');
    assert.equal(starts(ws).length, 1);

    const killed = killLatest(ws);
    assert.ok(await waitFor(() => starts(ws).length >= 2 && run.backend.state === 'ready', 200), `no restart: ${JSON.stringify(starts(ws))}, state ${run.backend.state}`);
    assert.notEqual(starts(ws)[1]!.pid, killed);
    await assertServing(run, 'original');
    assert.equal(starts(ws).length, 2);
    assert.equal(quarantineRecords(run).length, 0);
    const ready = run.records.filter((record) => record.event === 'server.state' && record['server'] === 'art' && record['state'] === 'ready');
    assert.equal(ready.length, 2, 'two connects audited');
  });
});

describe('stdio artifact pinning: the broker checks the files the server will run', () => {
  /**
   * Runs fn with the broker's working directory at / (as under a service manager), so that
   * /proc/self/cwd/<absolute path> leads, for the broker, to that path; for the server,
   * started in the workspace, it leads to <workspace>/<absolute path>.
   */
  async function withBrokerIn<T>(fn: () => Promise<T>): Promise<T> {
    const cwd = process.cwd();
    process.chdir('/');
    try {
      return await fn();
    } finally {
      process.chdir(cwd);
    }
  }

  /**
   * Replaces `path` (in the workspace) with a link through /proc/self/cwd: for the broker it
   * leads to a genuine copy outside the workspace, for the server to `evil`, written at the
   * matching place under the workspace.
   */
  function swapThroughProcSelfCwd(ws: Workspace, path: string, writeEvil: (at: string) => void): void {
    const { dir, cleanup } = tempDir('warden-artifact-copy-');
    cleanups.push(cleanup);
    const copy = join(realpathSync(dir), 'copy');
    cpSync(path, copy, { recursive: true });
    writeEvil(join(ws.root, copy));
    rmSync(path, { recursive: true });
    symlinkSync(`/proc/self/cwd${copy}`, path);
  }

  /** The single artifact-modified mismatch of a refused start, its found text matched. */
  function refusedArtifacts(run: Running, kind: string, path: string, found: RegExp): { kind: string; path: string; expected: string; found: string }[] {
    const artifacts = run.backend.quarantine?.artifacts ?? [];
    assert.deepEqual(artifacts.map((a) => [a.kind, a.path]), [[kind, path]], JSON.stringify(run.backend.quarantine));
    assert.match(artifacts[0]!.found, found);
    return [...artifacts];
  }

  test('a pinned script replaced by a link through /proc/self/cwd: not started', async () => {
    const ws = workspace();
    const script = join(ws.root, 'server.mjs');
    writeFileSync(script, serverScript('original'));
    sign(ws, { command: process.execPath, args: ['server.mjs'] });
    const config = loadConfig(ws.config);
    swapThroughProcSelfCwd(ws, script, (evil) => {
      mkdirSync(dirname(evil), { recursive: true });
      writeFileSync(evil, serverScript('evil'));
    });
    await withBrokerIn(async () => {
      const run = await boot(ws, config);
      // The argument leads through the link too: it cannot be checked either.
      await assertRefusedAtSpawn(run, refusedArtifacts(run, 'file', script, /^unreadable: .*server\.mjs leads into \/proc through the link/), ['server.mjs']);
      await run.stop();
      // Loaded now, the manifest is refused outright: its argument cannot be checked.
      const reloaded = loadConfig(ws.config).rejected.get('art');
      assert.equal(reloaded?.reason, 'artifact-unpinned');
      assert.match(reloaded?.message ?? '', /"server\.mjs" cannot be checked: .*leads into \/proc/);
    });
    assert.deepEqual(starts(ws), [], 'a script was started');
  });

  test('the executable replaced by a link through /proc/self/cwd: not run', async () => {
    const ws = workspace();
    const command = join(ws.root, 'bin/run');
    mkdirSync(dirname(command));
    writeFileSync(command, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} "$@"\n`);
    chmodSync(command, 0o755);
    writeFileSync(join(ws.root, 'server.mjs'), serverScript('original'));
    sign(ws, { command, args: ['server.mjs'] });
    const config = loadConfig(ws.config);
    swapThroughProcSelfCwd(ws, command, (evil) => writeShadow(evil));
    await withBrokerIn(async () => {
      const run = await boot(ws, config);
      await assertRefusedAtSpawn(run, refusedArtifacts(run, 'command', command, /^unreadable: .*bin\/run leads into \/proc through the link/));
    });
    assert.deepEqual(starts(ws), [], 'something was started');
  });

  test('a folder above a pinned folder replaced by a link through /proc/self/cwd: not started', async () => {
    const ws = workspace();
    mkdirSync(join(ws.root, 'pkgs/srv'), { recursive: true });
    writeFileSync(join(ws.root, 'pkgs/srv/index.mjs'), serverScript('original'));
    sign(ws, { command: process.execPath, args: ['pkgs/srv/index.mjs'], pins: { directories: [{ path: 'pkgs/srv' }] } });
    const config = loadConfig(ws.config);
    swapThroughProcSelfCwd(ws, join(ws.root, 'pkgs'), (evil) => {
      mkdirSync(join(evil, 'srv'), { recursive: true });
      writeFileSync(join(evil, 'srv/index.mjs'), serverScript('evil'));
    });
    await withBrokerIn(async () => {
      const run = await boot(ws, config);
      await assertRefusedAtSpawn(run, refusedArtifacts(run, 'directory', join(ws.root, 'pkgs/srv'), /^unreadable: .*pkgs\/srv leads into \/proc through the link .*pkgs -> \/proc\/self\/cwd/), ['pkgs/srv/index.mjs']);
    });
    assert.deepEqual(starts(ws), [], 'a script was started');
  });

  test('the working directory replaced by a link after load: "../lib/server.mjs" is checked where it now leads', async () => {
    const ws = workspace();
    mkdirSync(join(ws.root, 'run'));
    mkdirSync(join(ws.root, 'lib'));
    writeFileSync(join(ws.root, 'lib/server.mjs'), serverScript('original'));
    sign(ws, { command: process.execPath, args: ['../lib/server.mjs'], cwd: 'run' });
    const config = loadConfig(ws.config);
    // The folder the server starts in now leads elsewhere; "..", taken after the link, too.
    mkdirSync(join(ws.root, 'evil/x'), { recursive: true });
    mkdirSync(join(ws.root, 'evil/lib'));
    writeFileSync(join(ws.root, 'evil/lib/server.mjs'), serverScript('evil'));
    renameSync(join(ws.root, 'run'), join(ws.root, 'run.old'));
    symlinkSync(join(ws.root, 'evil/x'), join(ws.root, 'run'));
    const run = await boot(ws, config);
    const pinned = `${ws.root}/run/../lib/server.mjs`;
    await assertRefusedAtSpawn(run, [{ kind: 'file', path: pinned, expected: sha256Of(join(ws.root, 'lib/server.mjs')), found: sha256Of(join(ws.root, 'evil/lib/server.mjs')) }]);
    assert.deepEqual(starts(ws), [], 'a script was started');
  });

  test('a package added inside a pinned package\'s node_modules, shadowing a pinned dependency: not started', async () => {
    const ws = workspace();
    const nm = join(ws.root, 'node_modules');
    const writePackage = (folder: string, name: string, index: string) => {
      mkdirSync(folder, { recursive: true });
      writeFileSync(join(folder, 'package.json'), JSON.stringify({ name, version: '1.0.0', type: 'module', main: 'index.js' }));
      writeFileSync(join(folder, 'index.js'), index);
    };
    writePackage(join(nm, 'dep'), 'dep', `export const TAG = 'pinned-dep';\n`);
    writePackage(join(nm, 'srv'), 'srv', serverScript('srv', `import('dep');`));
    const pin = (path: string, name: string) => ({ path, package: `${name}@1.0.0`, integrity: `sha512-${'A'.repeat(86)}==`, sha256: specTreeDigest(join(ws.root, path), { skipNodeModules: true }) });
    const packages = [pin('node_modules/srv', 'srv'), pin('node_modules/dep', 'dep')];
    sign(ws, { command: process.execPath, args: ['node_modules/srv/index.js'], pins: { packages } });
    writePackage(join(nm, 'srv/node_modules/dep'), 'dep', `export const TAG = 'shadow';\n`);
    const run = await boot(ws);
    await assertRefusedAtSpawn(run, [{ kind: 'package', path: join(nm, 'srv'), expected: packages[0]!.sha256, found: 'unpinned: node_modules/dep in its node_modules, which Node loads before any pinned copy' }]);
    assert.deepEqual(starts(ws), [], 'the package was started');
  });

  test('"node server" (server.js) and "--import file:///.../hook.mjs" are pinned when signed, and checked before the start', async () => {
    const ws = workspace();
    writeFileSync(join(ws.root, 'package.json'), JSON.stringify({ type: 'module' }));
    writeFileSync(join(ws.root, 'server.js'), serverScript('original'));
    mkdirSync(join(ws.root, 'hooks'));
    writeFileSync(join(ws.root, 'hooks/hook.mjs'), '// a hook\n');
    const hook = pathToFileURL(join(ws.root, 'hooks/hook.mjs')).href;
    sign(ws, { command: process.execPath, args: ['--import', hook, 'server'] });
    const first = await boot(ws);
    await assertServing(first, 'original');
    await first.stop();
    const signedServer = sha256Of(join(ws.root, 'server.js'));
    const signedHook = sha256Of(join(ws.root, 'hooks/hook.mjs'));

    writeFileSync(join(ws.root, 'server.js'), serverScript('edited'));
    appendFileSync(join(ws.root, 'hooks/hook.mjs'), '// edited\n');
    const run = await boot(ws);
    await assertRefusedAtSpawn(run, [
      { kind: 'file', path: join(ws.root, 'hooks/hook.mjs'), expected: signedHook, found: sha256Of(join(ws.root, 'hooks/hook.mjs')) },
      { kind: 'file', path: join(ws.root, 'server.js'), expected: signedServer, found: sha256Of(join(ws.root, 'server.js')) },
    ]);
    assert.deepEqual(starts(ws).map((start) => start.tag), ['original'], 'the edited files were run');
  });

  test('era auto: the second start, after the SDK\'s probe, is checked again and refused when the first changed the script', async () => {
    const ws = workspace();
    const script = join(ws.root, 'server.mjs');
    // The first process started (the probe) edits the script; any later one would run the edit.
    const editOnFirstStart = [
      `const first = process.env.ARTIFACT_MARKER + '.first';`,
      `if (!existsSync(first)) { writeFileSync(first, ''); appendFileSync(fileURLToPath(import.meta.url), '\\n// edited by the first start\\n'); }`,
    ].join('\n');
    writeFileSync(script, serverScript('original', editOnFirstStart));
    const signed = sha256Of(script);
    sign(ws, { command: process.execPath, args: ['server.mjs'], era: 'auto' });
    const run = await boot(ws);
    await assertRefusedAtSpawn(run, [{ kind: 'file', path: script, expected: signed, found: sha256Of(script) }]);
    assert.equal(starts(ws).length, 1, `only the probe ran: ${JSON.stringify(starts(ws))}`);
  });

  test('the server is started from the executable and folder the check resolved, not through their links', async () => {
    const ws = workspace();
    mkdirSync(join(ws.root, 'work'));
    writeFileSync(join(ws.root, 'work/server.mjs'), serverScript('original'));
    symlinkSync('work', join(ws.root, 'work-link'));
    const command = join(ws.root, 'node-link');
    symlinkSync(process.execPath, command);
    sign(ws, { command, args: ['server.mjs'], cwd: 'work-link' });
    const run = await boot(ws);
    await assertServing(run, 'original');
    const [start] = starts(ws);
    assert.equal(start?.argv0, realpathSync(process.execPath), 'started as the link');
    assert.equal(start?.cwd, join(ws.root, 'work'));
  });
});
