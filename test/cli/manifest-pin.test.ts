import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { create, extract } from 'tar';
import { parse } from 'yaml';
import { directoryDigest, fileDigest } from '../../src/manifest/artifacts.ts';
import { resolveCommand } from '../../src/manifest/load.ts';
import { REJECTIONS } from '../../src/manifest/rejections.ts';
import { acmeWorkspace, tempDir, writeYaml, runCli as run } from '../helpers.ts';

const { dir, cleanup } = tempDir('warden-cli-pin-');
after(cleanup);
let counter = 0;

const { key: KEY, config: CONFIG } = acmeWorkspace(dir);

const sha256Of = (bytes: string | Buffer): string => createHash('sha256').update(bytes).digest('hex');
const NODE_DIGEST = fileDigest(process.execPath);
const SCRIPT = 'process.stdin.resume();\n// the server\n';

/** A fresh case folder with a script, a helper, and a folder of data. */
function caseDir(): string {
  const root = join(dir, `case-${counter++}`);
  mkdirSync(join(root, 'data', 'nested'), { recursive: true });
  writeFileSync(join(root, 'server.js'), SCRIPT);
  writeFileSync(join(root, 'helper.js'), 'module.exports = 1;\n');
  writeFileSync(join(root, 'data', 'a.json'), '{"a":1}');
  writeFileSync(join(root, 'data', 'nested', 'b.txt'), 'b');
  return root;
}

function source(transport: Record<string, unknown>): Record<string, unknown> {
  return {
    manifestVersion: 1,
    name: 'acme.stdio',
    version: '1.0.0',
    serial: 1,
    transport: { type: 'stdio', ...transport },
    tools: [{ name: 'echo', description: 'Echo a text.', access: 'read', inputSchema: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] } }],
  };
}

function payloadOf(file: string): { transport: { pins: Record<string, unknown> } & Record<string, unknown> } {
  const envelope = JSON.parse(readFileSync(file, 'utf8')) as { payload: string };
  return JSON.parse(Buffer.from(envelope.payload, 'base64').toString('utf8'));
}

/** Writes source as YAML in root and signs it into root/stdio.signed.json. */
function signIn(root: string, transport: Record<string, unknown>): { result: ReturnType<typeof run>; signed: string } {
  const file = writeYaml(join(root, 'stdio.yaml'), source(transport));
  return { result: run(['manifest', 'sign', '--key', KEY, file]), signed: join(root, 'stdio.signed.json') };
}

/** A release packed like npm's, installed into a project with a hidden lockfile. */
function installedPackage(): { tgz: string; integrity: string; installed: string; released: string } {
  const staging = join(dir, `release-${counter++}`);
  const released = join(staging, 'package');
  mkdirSync(join(released, 'lib'), { recursive: true });
  writeFileSync(join(released, 'package.json'), JSON.stringify({ name: 'demo-server', version: '3.1.4' }));
  writeFileSync(join(released, 'index.js'), 'require("./lib/x.js");\n');
  writeFileSync(join(released, 'lib', 'x.js'), 'x');
  const tgz = join(dir, `release-${counter++}.tgz`);
  create({ gzip: true, file: tgz, cwd: staging, sync: true, portable: true }, ['package']);
  const integrity = `sha512-${createHash('sha512').update(readFileSync(tgz)).digest('base64')}`;
  const project = join(dir, `project-${counter++}`);
  const installed = join(project, 'node_modules', 'demo-server');
  mkdirSync(installed, { recursive: true });
  extract({ file: tgz, cwd: installed, strip: 1, sync: true });
  writeFileSync(join(project, 'node_modules', '.package-lock.json'), JSON.stringify({ lockfileVersion: 3, packages: { 'node_modules/demo-server': { version: '3.1.4', integrity } } }));
  return { tgz, integrity, installed, released };
}

describe('manifest pin', () => {
  test('--command with an absolute path prints its digest as command:', () => {
    const result = run(['manifest', 'pin', '--command', process.execPath]);
    assert.equal(result.code, 0, result.stderr);
    assert.ok(result.stdout.includes(`command: "${NODE_DIGEST}"`), result.stdout);
    assert.ok(result.stdout.includes(`# ${process.execPath}`), 'the resolved executable is named in a comment');
    assert.deepEqual(parse(result.stdout), { command: NODE_DIGEST });
  });

  test('--command with a bare name pins what it resolves to on PATH', () => {
    const resolved = resolveCommand('node', process.cwd(), process.env['PATH']);
    const result = run(['manifest', 'pin', '--command', 'node']);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(parse(result.stdout), { command: fileDigest(resolved) });
    assert.ok(result.stdout.includes(`# ${resolved}`), result.stdout);
  });

  test('a file prints under files:, a folder under directories:, with their digests and paths as given', () => {
    const root = caseDir();
    const script = join(root, 'server.js');
    const data = join(root, 'data');
    const result = run(['manifest', 'pin', '--command', process.execPath, script, data, join(root, 'helper.js')]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(parse(result.stdout), {
      command: NODE_DIGEST,
      files: [
        { path: script, sha256: sha256Of(SCRIPT) },
        { path: join(root, 'helper.js'), sha256: sha256Of('module.exports = 1;\n') },
      ],
      directories: [{ path: data, sha256: directoryDigest(data) }],
    });
    // Without --command: no command line.
    const only = run(['manifest', 'pin', data]);
    assert.equal(only.code, 0, only.stderr);
    assert.deepEqual(parse(only.stdout), { directories: [{ path: data, sha256: directoryDigest(data) }] });
  });

  test('--package DIR --tarball TGZ prints a packages entry', () => {
    const pkg = installedPackage();
    const result = run(['manifest', 'pin', '--package', pkg.installed, '--tarball', pkg.tgz]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(parse(result.stdout), {
      packages: [{ path: pkg.installed, package: 'demo-server@3.1.4', integrity: pkg.integrity, sha256: directoryDigest(pkg.released) }],
    });
    assert.equal(directoryDigest(pkg.released), directoryDigest(pkg.installed, { skipNodeModules: true }));
  });

  test('--package with --npm-cache finds the tarball by the lockfile\'s integrity', () => {
    const pkg = installedPackage();
    const hex = createHash('sha512').update(readFileSync(pkg.tgz)).digest('hex');
    const cache = join(dir, `cache-${counter++}`);
    const file = join(cache, '_cacache', 'content-v2', 'sha512', hex.slice(0, 2), hex.slice(2, 4), hex.slice(4));
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, readFileSync(pkg.tgz));
    const result = run(['manifest', 'pin', '--package', pkg.installed, '--npm-cache', cache]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(parse(result.stdout), {
      packages: [{ path: pkg.installed, package: 'demo-server@3.1.4', integrity: pkg.integrity, sha256: directoryDigest(pkg.released) }],
    });
  });

  test('a missing path, a link leaving a folder, or a package that is not its release: exit 4, WARDEN_ARTIFACT_UNREADABLE', () => {
    const root = caseDir();
    const missing = run(['manifest', 'pin', join(root, 'absent.js')]);
    assert.equal(missing.code, 4, missing.stdout + missing.stderr);
    assert.match(missing.stderr, /WARDEN_ARTIFACT_UNREADABLE/);
    assert.match(missing.stderr, /absent\.js \(ENOENT\)/);
    assert.equal(missing.stdout, '', 'nothing half-printed');

    // One bad path among good ones: nothing printed for the good ones either.
    const mixed = run(['manifest', 'pin', '--command', process.execPath, join(root, 'server.js'), join(root, 'absent.js')]);
    assert.equal(mixed.code, 4);
    assert.equal(mixed.stdout, '');

    symlinkSync('/etc', join(root, 'data', 'escape'));
    const escaping = run(['manifest', 'pin', join(root, 'data')]);
    assert.equal(escaping.code, 4);
    assert.match(escaping.stderr, /WARDEN_ARTIFACT_UNREADABLE.*points outside the pinned folder/);

    const missingCommand = run(['manifest', 'pin', '--command', 'mcp-warden-no-such-command']);
    assert.equal(missingCommand.code, 4);
    assert.match(missingCommand.stderr, /WARDEN_ARTIFACT_UNREADABLE.*mcp-warden-no-such-command/);

    const pkg = installedPackage();
    writeFileSync(join(pkg.installed, 'lib', 'x.js'), 'evil');
    const changed = run(['manifest', 'pin', '--package', pkg.installed, '--tarball', pkg.tgz]);
    assert.equal(changed.code, 4);
    assert.match(changed.stderr, /WARDEN_ARTIFACT_UNREADABLE.*lib\/x\.js was changed/);
  });

  test('usage errors exit 2: no arguments, --tarball or --integrity without exactly one --package, sign/verify options', () => {
    const cases: [string, string[]][] = [
      ['nothing to pin', ['manifest', 'pin']],
      ['--tarball with two packages', ['manifest', 'pin', '--package', join(dir, 'a'), '--package', join(dir, 'b'), '--tarball', join(dir, 'x.tgz')]],
      ['--integrity with two packages', ['manifest', 'pin', '--package', join(dir, 'a'), '--package', join(dir, 'b'), '--integrity', `sha512-${'A'.repeat(86)}==`]],
      ['--tarball without a package', ['manifest', 'pin', '--tarball', join(dir, 'x.tgz'), join(dir, 'acme.pub')]],
      ['--key given to pin', ['manifest', 'pin', '--key', KEY, join(dir, 'acme.pub')]],
      ['--config given to pin', ['manifest', 'pin', '--config', CONFIG, join(dir, 'acme.pub')]],
    ];
    for (const [label, args] of cases) {
      const result = run(args);
      assert.equal(result.code, 2, `${label}: ${result.stdout}${result.stderr}`);
      assert.match(result.stderr, /WARDEN_USAGE/, label);
      assert.equal(result.stdout, '', label);
    }
  });

  test('--command, --package, --tarball given to manifest sign or verify exit 2', () => {
    const root = caseDir();
    const { signed } = signIn(root, { command: process.execPath, args: ['server.js'] });
    const yamlFile = join(root, 'stdio.yaml');
    const cases: [string, string[], RegExp][] = [
      ['sign --command', ['manifest', 'sign', '--key', KEY, '--command', 'node', yamlFile], /--command applies to manifest pin/],
      ['sign --package', ['manifest', 'sign', '--key', KEY, '--package', root, yamlFile], /--package applies to manifest pin/],
      ['verify --tarball', ['manifest', 'verify', '--config', CONFIG, '--tarball', join(dir, 'x.tgz'), signed], /--tarball applies to manifest pin/],
    ];
    for (const [label, args, pattern] of cases) {
      const result = run(args);
      assert.equal(result.code, 2, `${label}: ${result.stdout}${result.stderr}`);
      assert.match(result.stderr, pattern, label);
    }
  });
});

describe('manifest sign: a stdio manifest', () => {
  test('fills in pins.command and a pin for each argument naming a file or folder, relative to cwd', () => {
    const root = caseDir();
    const { result, signed } = signIn(root, { command: process.execPath, args: ['server.js', '--data=data', '--port', '8080', 'absent.js'] });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(payloadOf(signed).transport.pins, {
      command: NODE_DIGEST,
      files: [{ path: 'server.js', sha256: sha256Of(SCRIPT) }],
      directories: [{ path: 'data', sha256: directoryDigest(join(root, 'data')) }],
    });
    const verdict = run(['manifest', 'verify', '--config', CONFIG, signed]);
    assert.equal(verdict.code, 0, verdict.stdout + verdict.stderr);
    assert.match(verdict.stdout, /^accepted: acme\.stdio serial 1/);
  });

  test('takes cwd relative to the signed file\'s folder', () => {
    const root = caseDir();
    const sub = join(root, 'manifests');
    mkdirSync(sub);
    const file = writeYaml(join(sub, 'stdio.yaml'), source({ command: process.execPath, args: ['server.js'], cwd: '..' }));
    const result = run(['manifest', 'sign', '--key', KEY, file]);
    assert.equal(result.code, 0, result.stderr);
    const pins = payloadOf(join(sub, 'stdio.signed.json')).transport.pins;
    assert.deepEqual(pins['files'], [{ path: 'server.js', sha256: sha256Of(SCRIPT) }]);
  });

  test('keeps digests already written, and fills in a listed pin written without one', () => {
    const root = caseDir();
    const written = 'a'.repeat(64);
    const { result, signed } = signIn(root, {
      command: process.execPath,
      args: ['server.js'],
      pins: { command: 'b'.repeat(64), files: [{ path: 'server.js', sha256: written }, { path: 'helper.js' }], directories: [{ path: 'data' }] },
    });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(payloadOf(signed).transport.pins, {
      command: 'b'.repeat(64),
      files: [
        { path: 'server.js', sha256: written },
        { path: 'helper.js', sha256: sha256Of('module.exports = 1;\n') },
      ],
      directories: [{ path: 'data', sha256: directoryDigest(join(root, 'data')) }],
    });
    // Signed as written; the broker would not start it: verify says so.
    const verdict = run(['manifest', 'verify', '--config', CONFIG, signed]);
    assert.equal(verdict.code, REJECTIONS['artifact-modified'].exit, verdict.stdout + verdict.stderr);
    assert.ok(verdict.stdout.includes(`command ${process.execPath}\n    pinned: ${'b'.repeat(64)}\n    found:  ${NODE_DIGEST}`), verdict.stdout);
    assert.ok(verdict.stdout.includes(`file ${join(root, 'server.js')}\n    pinned: ${written}\n    found:  ${sha256Of(SCRIPT)}`), verdict.stdout);
    assert.ok(!verdict.stdout.includes(join(root, 'helper.js')), 'the filled-in pin holds');
  });

  test('does not pin an argument declared as data; verify ignores changes there', () => {
    const root = caseDir();
    const { result, signed } = signIn(root, { command: process.execPath, args: ['server.js', '--store=data'], pins: { data: ['data'] } });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(payloadOf(signed).transport.pins, { command: NODE_DIGEST, files: [{ path: 'server.js', sha256: sha256Of(SCRIPT) }], data: ['data'] });
    writeFileSync(join(root, 'data', 'written.json'), '{}');
    const verdict = run(['manifest', 'verify', '--config', CONFIG, signed]);
    assert.equal(verdict.code, 0, verdict.stdout + verdict.stderr);
  });

  test('a command not on PATH without pins.command: exit 4, saying to use manifest pin; with it written, signs', () => {
    const root = caseDir();
    const { result, signed } = signIn(root, { command: 'mcp-warden-no-such-command', args: ['server.js'] });
    assert.equal(result.code, 4, result.stdout + result.stderr);
    assert.match(result.stderr, /WARDEN_MANIFEST_INVALID/);
    assert.match(result.stderr, /mcp-warden-no-such-command/);
    assert.match(result.stderr, /manifest pin/);
    assert.equal(existsSync(signed), false, 'nothing written');

    const withPin = signIn(root, { command: 'mcp-warden-no-such-command', args: ['server.js'], pins: { command: NODE_DIGEST } });
    assert.equal(withPin.result.code, 0, withPin.result.stderr);
    assert.deepEqual(payloadOf(withPin.signed).transport.pins, { command: NODE_DIGEST, files: [{ path: 'server.js', sha256: sha256Of(SCRIPT) }] });
  });

  test('a listed pin that cannot be read: exit 4, nothing written', () => {
    const root = caseDir();
    const { result, signed } = signIn(root, { command: process.execPath, args: [], pins: { files: [{ path: 'absent.js' }] } });
    assert.equal(result.code, 4, result.stdout + result.stderr);
    assert.match(result.stderr, /WARDEN_MANIFEST_INVALID.*\/transport\/pins.*absent\.js/);
    assert.equal(existsSync(signed), false);
  });
});

describe('manifest verify: a stdio manifest\'s pins', () => {
  test('exit 0 while the pinned script is as signed, 45 (artifact-modified) after it is edited, 0 once restored', () => {
    const root = caseDir();
    const { result, signed } = signIn(root, { command: process.execPath, args: ['server.js'] });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(run(['manifest', 'verify', '--config', CONFIG, signed]).code, 0);

    writeFileSync(join(root, 'server.js'), `${SCRIPT}require("child_process").exec("curl evil");\n`);
    const refused = run(['manifest', 'verify', '--config', CONFIG, signed]);
    assert.equal(refused.code, 45, refused.stdout + refused.stderr);
    assert.equal(refused.code, REJECTIONS['artifact-modified'].exit);
    assert.match(refused.stdout, /^refused \[artifact-modified\]/);
    assert.ok(refused.stdout.includes(`file ${join(root, 'server.js')}\n    pinned: ${sha256Of(SCRIPT)}\n    found:  ${sha256Of(`${SCRIPT}require("child_process").exec("curl evil");\n`)}`), refused.stdout);

    writeFileSync(join(root, 'server.js'), SCRIPT);
    assert.equal(run(['manifest', 'verify', '--config', CONFIG, signed]).code, 0);
  });

  test('a changed executable, a file added to a pinned folder, a deleted script: 45', () => {
    const root = caseDir();
    const launcher = join(root, 'run.sh');
    writeFileSync(launcher, '#!/bin/sh\nexec node "$@"\n');
    chmodSync(launcher, 0o755);
    const { result, signed } = signIn(root, { command: './run.sh', args: ['server.js', 'data'] });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(payloadOf(signed).transport.pins['command'], sha256Of('#!/bin/sh\nexec node "$@"\n'));
    assert.equal(run(['manifest', 'verify', '--config', CONFIG, signed]).code, 0);

    writeFileSync(launcher, '#!/bin/sh\nexec evil "$@"\n');
    const command = run(['manifest', 'verify', '--config', CONFIG, signed]);
    assert.equal(command.code, 45, command.stdout);
    assert.ok(command.stdout.includes(`command ${launcher}\n`), command.stdout);
    writeFileSync(launcher, '#!/bin/sh\nexec node "$@"\n');

    writeFileSync(join(root, 'data', 'nested', 'new.js'), 'new');
    const folder = run(['manifest', 'verify', '--config', CONFIG, signed]);
    assert.equal(folder.code, 45, folder.stdout);
    assert.ok(folder.stdout.includes(`directory ${join(root, 'data')}\n`), folder.stdout);
    assert.ok(!folder.stdout.includes('command '), 'the restored executable holds');

    const deleted = caseDir();
    const second = signIn(deleted, { command: process.execPath, args: ['server.js'] });
    assert.equal(second.result.code, 0);
    unlinkSync(join(deleted, 'server.js'));
    const gone = run(['manifest', 'verify', '--config', CONFIG, second.signed]);
    assert.equal(gone.code, 45, gone.stdout);
    assert.ok(gone.stdout.includes(`found:  unreadable: cannot read ${join(deleted, 'server.js')} (ENOENT)`), gone.stdout);
  });

  test('an argument naming a file created after signing: 44 (artifact-unpinned)', () => {
    const root = caseDir();
    const { result, signed } = signIn(root, { command: process.execPath, args: ['server.js', '--config=later.json'] });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(run(['manifest', 'verify', '--config', CONFIG, signed]).code, 0);
    writeFileSync(join(root, 'later.json'), '{}');
    const refused = run(['manifest', 'verify', '--config', CONFIG, signed]);
    assert.equal(refused.code, REJECTIONS['artifact-unpinned'].exit, refused.stdout + refused.stderr);
    assert.equal(refused.code, 44);
    assert.match(refused.stdout, /^refused \[artifact-unpinned\].*"--config=later\.json"/);
  });
});

describe('manifest pin, sign, verify: paths followed as the server follows them', () => {
  test('pin: a link to a folder is pinned as the folder it leads to; a path through /proc is refused (exit 4)', () => {
    const root = caseDir();
    symlinkSync('data', join(root, 'data-link'));
    const linked = run(['manifest', 'pin', join(root, 'data-link')]);
    assert.equal(linked.code, 0, linked.stderr);
    assert.deepEqual(parse(linked.stdout), { directories: [{ path: join(root, 'data-link'), sha256: directoryDigest(join(root, 'data')) }] });

    symlinkSync(`/proc/self/cwd${join(root, 'server.js')}`, join(root, 'via-proc.js'));
    const refused = run(['manifest', 'pin', join(root, 'via-proc.js')]);
    assert.equal(refused.code, 4, refused.stdout + refused.stderr);
    assert.match(refused.stderr, /WARDEN_ARTIFACT_UNREADABLE.*via-proc\.js leads into \/proc through the link/);
  });

  test('pin --package: a package in the package\'s own node_modules must be pinned too (exit 4 naming it)', () => {
    const pkg = installedPackage();
    mkdirSync(join(pkg.installed, 'node_modules', 'shadow'), { recursive: true });
    writeFileSync(join(pkg.installed, 'node_modules', 'shadow', 'index.js'), 'shadow');
    const result = run(['manifest', 'pin', '--package', pkg.installed, '--tarball', pkg.tgz]);
    assert.equal(result.code, 4, result.stdout + result.stderr);
    assert.match(result.stderr, /WARDEN_ARTIFACT_UNREADABLE.*holds node_modules\/shadow in its own node_modules, which no package pin covers/);
    assert.equal(result.stdout, '');
  });

  test('sign: a Node script named without its ending, and a -r module, are pinned as the files Node loads', () => {
    const root = caseDir();
    writeFileSync(join(root, 'setup.js'), 'module.exports = 0;\n');
    const { result, signed } = signIn(root, { command: process.execPath, args: ['-r', './setup', 'server'] });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(payloadOf(signed).transport.pins, {
      command: NODE_DIGEST,
      files: [
        { path: 'setup.js', sha256: sha256Of('module.exports = 0;\n') },
        { path: 'server.js', sha256: sha256Of(SCRIPT) },
      ],
    });
    assert.equal(run(['manifest', 'verify', '--config', CONFIG, signed]).code, 0);
  });

  test('sign: a -r package name that no node_modules holds stops signing, saying how to write it', () => {
    const root = caseDir();
    const { result, signed } = signIn(root, { command: process.execPath, args: ['-r', 'mcp-warden-no-such-package/register', 'server.js'] });
    assert.equal(result.code, 4, result.stdout + result.stderr);
    assert.match(result.stderr, /WARDEN_MANIFEST_INVALID.*the argument "mcp-warden-no-such-package\/register" names the package mcp-warden-no-such-package, which no node_modules folder above .* holds .*write the argument as the exact path of a pinned file/);
    assert.equal(existsSync(signed), false);
  });
});

describe('manifest verify: a Streamable HTTP server over plain http', () => {
  const httpSource = (url: string) => ({ ...source({}), transport: { type: 'http', url } });

  test('refused (46, insecure-transport) unless the host is a loopback address; a loopback one is accepted with a note on the config', () => {
    const root = caseDir();
    const cases: [string, number][] = [
      ['http://tools.example.test/mcp', 46],
      ['http://192.0.2.10:8080/mcp', 46],
      ['http://localhost:8080/mcp', 46],
      ['http://127.0.0.1:8080/mcp', 0],
      ['http://[::1]:8080/mcp', 0],
      ['https://tools.example.test/mcp', 0],
    ];
    cases.forEach(([url, exit], index) => {
      const file = writeYaml(join(root, `http-${index}.yaml`), { ...httpSource(url), name: `acme.http${index}` });
      const signedResult = run(['manifest', 'sign', '--key', KEY, file]);
      assert.equal(signedResult.code, 0, signedResult.stderr);
      const verdict = run(['manifest', 'verify', '--config', CONFIG, join(root, `http-${index}.signed.json`)]);
      assert.equal(verdict.code, exit, `${url}: ${verdict.stdout}${verdict.stderr}`);
      if (exit === 46) {
        assert.equal(REJECTIONS['insecure-transport'].exit, 46);
        assert.match(verdict.stdout, /^refused \[insecure-transport\]: .*is plain http; remote servers are reached over https only\. A config may allow plain http for a server on the broker's own machine, at a loopback address written as an address \(servers\.<key>\.allowPlainHttp: true\)/);
      } else if (url.startsWith('http:')) {
        assert.match(verdict.stdout, /^accepted: /);
        assert.match(verdict.stdout, /note: +plain http to a loopback address: the broker refuses it \(insecure-transport\) unless the config allows it for the server \(servers\.<key>\.allowPlainHttp: true\)/);
      } else {
        assert.doesNotMatch(verdict.stdout, /plain http/);
      }
    });
  });
});
