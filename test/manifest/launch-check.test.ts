// The check made before a stdio server starts, against someone who can write inside the
// server's folders: every path is followed the way the server will follow it (links, then
// '..'), nothing leads through /proc or /dev/fd, a package's own node_modules holds only
// pinned packages, and what Node would load from the arguments is pinned.
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, realpathSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, describe, it } from 'node:test';
import { argumentProblems, checkLaunch, checkLaunchPins, checkNestedPackages, directoryDigest, fileDigest, unpinnedArguments, type LaunchPins } from '../../src/manifest/artifacts.ts';
import { expectArtifactError, tempDir } from '../helpers.ts';

const { dir, cleanup } = tempDir('warden-launch-check-');
after(cleanup);
const base = realpathSync(dir);
let counter = 0;

const NONE: LaunchPins = { command: '', files: [], directories: [], packages: [], data: [] };
const INTEGRITY = `sha512-${'A'.repeat(86)}==`;
/** A command that is not Node: its arguments are checked as paths only. */
const SHELL = '/bin/sh';

/** A fresh folder with these files (relative path → content). */
function tree(files: Record<string, string>): string {
  const root = join(base, `case-${counter++}`);
  mkdirSync(root, { recursive: true });
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), content);
  }
  return root;
}

/** Pins for exactly these files, folders and packages as they are now (absolute paths). */
function pinsFor(command: string, pins: { files?: string[]; directories?: string[]; packages?: string[]; data?: string[] }): LaunchPins {
  return {
    command: fileDigest(command),
    files: (pins.files ?? []).map((path) => ({ path, sha256: fileDigest(path) })),
    directories: (pins.directories ?? []).map((path) => ({ path, sha256: directoryDigest(path) })),
    packages: (pins.packages ?? []).map((path) => ({ path, package: 'x@1.0.0', integrity: INTEGRITY, sha256: directoryDigest(path, { skipNodeModules: true }) })),
    data: pins.data ?? [],
  };
}

/**
 * Moves `path` aside and puts in its place a link through /proc/self/cwd that, for a process
 * whose working directory is /, leads to it; for the server, whose working directory is
 * another, somewhere else. Returns where it was moved.
 */
function linkThroughProcSelfCwd(path: string): string {
  const copies = join(base, `copies-${counter++}`);
  mkdirSync(copies);
  const copy = join(copies, 'copy');
  renameSync(path, copy);
  symlinkSync(`/proc/self/cwd${copy}`, path);
  return copy;
}

describe('checkLaunch, checkLaunchPins: paths through /proc or /dev/fd', () => {
  // The broker's working directory is / here, so /proc/self/cwd/<absolute path> leads, for
  // the broker, to the genuine copy: without the refusal every digest would match.
  const inRoot = <T>(fn: () => T): T => {
    const cwd = process.cwd();
    process.chdir('/');
    try {
      return fn();
    } finally {
      process.chdir(cwd);
    }
  };

  it('refuses a pinned file replaced by a link through /proc/self/cwd, though it leads to identical bytes for the broker', () => {
    inRoot(() => {
      const root = tree({ 'server.js': 'the server' });
      const pins = pinsFor(process.execPath, { files: [join(root, 'server.js')] });
      linkThroughProcSelfCwd(join(root, 'server.js'));
      const found = checkLaunchPins(process.execPath, pins);
      assert.deepEqual(found.map((m) => [m.kind, m.path]), [['file', join(root, 'server.js')]]);
      assert.match(found[0]!.found, /^unreadable: .*server\.js leads into \/proc through the link .*server\.js -> \/proc\/self\/cwd\//);
    });
  });

  it('refuses the executable, a folder above a pinned folder, and the working directory replaced by such links', () => {
    inRoot(() => {
      const root = tree({ 'bin/run': '#!/bin/sh\n', 'pkgs/srv/index.js': 'srv', 'work/keep': '' });
      const command = join(root, 'bin/run');
      const pins = pinsFor(command, { directories: [join(root, 'pkgs/srv')] });
      linkThroughProcSelfCwd(command);
      linkThroughProcSelfCwd(join(root, 'pkgs'));
      linkThroughProcSelfCwd(join(root, 'work'));
      const checked = checkLaunch({ command, args: [], cwd: join(root, 'work'), pins });
      assert.deepEqual(checked.mismatches.map((m) => [m.kind, m.path]), [
        ['command', command],
        ['directory', join(root, 'pkgs/srv')],
        ['cwd', join(root, 'work')],
      ]);
      for (const mismatch of checked.mismatches) assert.match(mismatch.found, /^unreadable: .* leads into \/proc through the link/);
    });
  });

  it('refuses a link inside a pinned folder that leads through /proc/self/cwd back into the folder, or into /dev', () => {
    inRoot(() => {
      const root = tree({ 'lib/a.js': 'a', 'lib/b.js': 'b' });
      symlinkSync(`/proc/self/cwd${join(root, 'lib/a.js')}`, join(root, 'lib/alias.js'));
      expectArtifactError(() => directoryDigest(join(root, 'lib')), /alias\.js leads into \/proc through the link/);
      const other = tree({ 'lib/a.js': 'a' });
      symlinkSync('/dev/stdin', join(other, 'lib/in'));
      expectArtifactError(() => directoryDigest(join(other, 'lib')), /in leads into \/proc through the link/);
      const third = tree({ 'lib/a.js': 'a' });
      symlinkSync('/dev/null', join(third, 'lib/null'));
      expectArtifactError(() => directoryDigest(join(third, 'lib')), /points outside the pinned folder, to \/dev\/null/);
    });
  });

  it('returns the executable and working directory with their links followed: what is started', () => {
    const root = tree({ 'real/bin/run': '#!/bin/sh\n', 'real/work/server.js': 's' });
    symlinkSync(join(root, 'real/bin/run'), join(root, 'run-link'));
    symlinkSync('real/work', join(root, 'work-link'));
    const command = join(root, 'run-link');
    const checked = checkLaunch({ command, args: ['server.js'], cwd: join(root, 'work-link'), pins: pinsFor(command, { files: [join(root, 'work-link/server.js')] }) });
    assert.deepEqual(checked, { command: join(root, 'real/bin/run'), cwd: join(root, 'real/work'), mismatches: [], unpinned: [] });
  });

  it('reports a working directory that is missing or a file', () => {
    const root = tree({ 'file.txt': '' });
    const pins = pinsFor(process.execPath, {});
    const missing = checkLaunch({ command: process.execPath, args: [], cwd: join(root, 'absent'), pins });
    assert.deepEqual(missing.mismatches, [{ kind: 'cwd', path: join(root, 'absent'), expected: 'a folder', found: `unreadable: cannot read ${join(root, 'absent')} (ENOENT)` }]);
    const file = checkLaunch({ command: process.execPath, args: [], cwd: join(root, 'file.txt'), pins });
    assert.deepEqual(file.mismatches, [{ kind: 'cwd', path: join(root, 'file.txt'), expected: 'a folder', found: `unreadable: ${join(root, 'file.txt')} is not a folder` }]);
  });
});

describe('unpinnedArguments: an argument is followed as the server follows it', () => {
  it('follows a link and then "..", as the kernel does, and also takes the text first, as Node does: both must be pinned', () => {
    const root = tree({ 'server.js': 'here', 'elsewhere/server.js': 'there', 'elsewhere/x/keep': '' });
    symlinkSync('elsewhere/x', join(root, 'link'));
    const pinHere = pinsFor(SHELL, { files: [join(root, 'server.js')] });
    // The kernel opens elsewhere/server.js; Node (path.resolve first) server.js.
    assert.deepEqual(argumentProblems(['link/../server.js'], root, pinHere, SHELL).map((p) => p.path), [join(root, 'elsewhere/server.js')]);
    const pinThere = pinsFor(SHELL, { files: [join(root, 'elsewhere/server.js')] });
    assert.deepEqual(argumentProblems(['link/../server.js'], root, pinThere, SHELL).map((p) => p.path), [join(root, 'server.js')]);
    const both = pinsFor(SHELL, { files: [join(root, 'server.js'), join(root, 'elsewhere/server.js')] });
    assert.deepEqual(unpinnedArguments(['link/../server.js'], root, both, SHELL), []);
  });

  it('compares with where the pins lead: a working directory replaced by a link moves "../lib/server.js" off its pin', () => {
    const root = tree({ 'lib/server.js': 'signed', 'run/keep': '', 'evil/lib/server.js': 'evil', 'evil/x/keep': '' });
    // Pinned as the manifest writes it: "../lib/server.js" from cwd run (the '..' kept).
    const pins = pinsFor(SHELL, { files: [`${root}/run/../lib/server.js`] });
    assert.deepEqual(unpinnedArguments(['../lib/server.js'], join(root, 'run'), pins, SHELL), []);
    renameSync(join(root, 'run'), join(root, 'run.old'));
    symlinkSync(join(root, 'evil/x'), join(root, 'run'));
    // Pin and argument now both lead to evil/lib/server.js: covered, and its digest differs.
    const checked = checkLaunch({ command: SHELL, args: ['../lib/server.js'], cwd: join(root, 'run'), pins });
    assert.equal(checked.cwd, join(root, 'evil/x'));
    assert.deepEqual(checked.unpinned, []);
    assert.deepEqual(checked.mismatches.map((m) => [m.kind, m.path, m.found]), [['file', `${root}/run/../lib/server.js`, fileDigest(join(root, 'evil/lib/server.js'))]]);
  });

  it('takes an argument naming a link to a folder as that folder, covered by a pin on the folder', () => {
    const root = tree({ 'real/index.js': 'x' });
    symlinkSync('real', join(root, 'app'));
    assert.deepEqual(unpinnedArguments(['app'], root, pinsFor(SHELL, { directories: [join(root, 'real')] }), SHELL), []);
    assert.deepEqual(unpinnedArguments(['app'], root, { ...NONE, directories: [{ path: join(root, 'app'), sha256: directoryDigest(join(root, 'real')) }] }, SHELL), [], 'a pin written on the link covers where it leads');
    assert.deepEqual(unpinnedArguments(['app'], root, NONE, SHELL), ['app']);
  });

  it('refuses an argument leading through /proc or /dev/fd, unless it is declared data', () => {
    const root = tree({ 'server.js': 's' });
    symlinkSync(`/proc/self/cwd${root}/server.js`, join(root, 'via-proc.js'));
    const problems = argumentProblems(['via-proc.js', '--log=/dev/fd/2', '/proc/self/cwd/server.js'], root, pinsFor(SHELL, { files: [join(root, 'server.js')] }), SHELL);
    assert.deepEqual(problems.map((p) => p.arg), ['via-proc.js', '--log=/dev/fd/2', '/proc/self/cwd/server.js']);
    for (const problem of problems) assert.match(problem.why, /leads into \/(proc|dev\/fd)/);
    assert.deepEqual(unpinnedArguments(['--log=/dev/stderr'], root, { ...NONE, data: ['/dev/stderr'] }, SHELL), []);
  });

  it('takes a file: URL as the file it names, for any command', () => {
    const root = tree({ 'conf.json': '{}' });
    const url = pathToFileURL(join(root, 'conf.json')).href;
    assert.deepEqual(unpinnedArguments([`--config=${url}`, url], root, NONE, SHELL), [`--config=${url}`, url]);
    assert.deepEqual(unpinnedArguments([`--config=${url}`], root, pinsFor(SHELL, { files: [join(root, 'conf.json')] }), SHELL), []);
  });
});

describe('unpinnedArguments: what Node loads from its arguments', () => {
  it('takes a script named without its ending as every file Node would try', () => {
    const root = tree({ 'server.js': 'js', 'server.mjs': 'mjs' });
    assert.deepEqual(unpinnedArguments(['server'], root, NONE, process.execPath), ['server']);
    const onlyJs = argumentProblems(['server'], root, pinsFor(process.execPath, { files: [join(root, 'server.js')] }), process.execPath);
    assert.deepEqual(onlyJs.map((p) => [p.arg, p.path]), [['server', join(root, 'server.mjs')]]);
    assert.match(onlyJs[0]!.why, /leads to .*server\.mjs, which no pin covers/);
    assert.deepEqual(unpinnedArguments(['server'], root, pinsFor(process.execPath, { files: [join(root, 'server.js'), join(root, 'server.mjs')] }), process.execPath), []);
    // Not for another command: "server" names nothing.
    assert.deepEqual(unpinnedArguments(['server'], root, NONE, SHELL), []);
    // Nor when nothing is there.
    assert.deepEqual(unpinnedArguments(['stdio', '--port', '8080'], root, NONE, process.execPath), []);
  });

  it('takes a folder as its package.json main (even outside it) and its index files', () => {
    const root = tree({ 'app/package.json': JSON.stringify({ main: 'lib/main' }), 'app/lib/main.js': 'main', 'app/index.js': 'index' });
    assert.deepEqual(unpinnedArguments(['app', '.'], root, pinsFor(process.execPath, { directories: [join(root, 'app')] }), process.execPath), ['.']);
    const folderOnly = tree({ 'app/index.js': 'index', 'app/package.json': '{}' });
    assert.deepEqual(unpinnedArguments(['app'], folderOnly, pinsFor(process.execPath, { directories: [join(folderOnly, 'app')] }), process.execPath), []);
    // A main that leaves the folder must be pinned too.
    const escaping = tree({ 'app/package.json': JSON.stringify({ main: '../outside.js' }), 'outside.js': 'outside' });
    const problems = argumentProblems(['app'], escaping, pinsFor(process.execPath, { directories: [join(escaping, 'app')] }), process.execPath);
    assert.deepEqual(problems.map((p) => p.path), [join(escaping, 'outside.js')]);
    // A package.json Node reads but this cannot: refused, not guessed.
    const broken = tree({ 'app/package.json': '{ "main": ', 'app/index.js': 'index' });
    const refused = argumentProblems(['app'], broken, pinsFor(process.execPath, { directories: [join(broken, 'app')] }), process.execPath);
    assert.equal(refused.length, 1);
    assert.match(refused[0]!.why, /package\.json is not valid JSON, so what Node loads from .*app cannot be told; write the argument as the exact path of a pinned file/);
  });

  it('takes the values of -r, --require, --import, --loader and --experimental-loader, separate or after "=", with endings', () => {
    const root = tree({ 'setup.js': 'setup', 'hooks/hook.mjs': 'hook', 'server.js': 'server' });
    const hook = pathToFileURL(join(root, 'hooks/hook.mjs')).href;
    const args = ['-r', './setup', '--require=./setup', '--import', hook, `--import=${hook}`, '--loader=./hooks/hook', '--experimental-loader', './hooks/hook.mjs', 'server.js'];
    const pins = pinsFor(process.execPath, { files: [join(root, 'server.js')] });
    assert.deepEqual(unpinnedArguments(args, root, pins, process.execPath).sort(), ['./setup', '--require=./setup', hook, `--import=${hook}`, '--loader=./hooks/hook', './hooks/hook.mjs'].sort());
    const all = pinsFor(process.execPath, { files: [join(root, 'server.js'), join(root, 'setup.js')], directories: [join(root, 'hooks')] });
    assert.deepEqual(unpinnedArguments(args, root, all, process.execPath), []);
  });

  it('a preload value is code even inside declared data: the server may write its data', () => {
    const root = tree({ 'data/hook.js': 'hook', 'server.js': 'server' });
    const hook = pathToFileURL(join(root, 'data/hook.js')).href;
    const pins = pinsFor(process.execPath, { files: [join(root, 'server.js')], data: [join(root, 'data')] });
    const args = ['--require=./data/hook.js', '-r', './data/hook', `--import=${hook}`, '--db=./data/hook.js', 'server.js'];
    assert.deepEqual(unpinnedArguments(args, root, pins, process.execPath).sort(), ['--require=./data/hook.js', './data/hook', `--import=${hook}`].sort());
  });

  it('takes a bare package name as the package Node finds from the working directory, which a packages pin must cover', () => {
    const root = tree({ 'node_modules/dotenv/package.json': '{"name":"dotenv","version":"1.0.0"}', 'node_modules/dotenv/config.js': 'c', 'node_modules/@acme/hooks/package.json': '{"name":"@acme/hooks"}', 'srv/server.js': 's' });
    const cwd = join(root, 'srv');
    const args = ['-r', 'dotenv/config', '--import=@acme/hooks/register', 'server.js'];
    const base = { files: [join(cwd, 'server.js')] };
    const problems = argumentProblems(args, cwd, pinsFor(process.execPath, base), process.execPath);
    assert.deepEqual(problems.map((p) => [p.arg, p.package]), [
      ['dotenv/config', join(root, 'node_modules/dotenv')],
      ['--import=@acme/hooks/register', join(root, 'node_modules/@acme/hooks')],
    ]);
    assert.match(problems[0]!.why, /loads the package dotenv installed at .*node_modules\/dotenv, which no package pin covers; pin it under \/transport\/pins\/packages, or write the argument as the exact path of a pinned file/);
    const pinned = pinsFor(process.execPath, { ...base, packages: [join(root, 'node_modules/dotenv'), join(root, 'node_modules/@acme/hooks')] });
    assert.deepEqual(unpinnedArguments(args, cwd, pinned, process.execPath), []);
    // A folder pin around node_modules covers them too.
    assert.deepEqual(unpinnedArguments(args, cwd, pinsFor(process.execPath, { ...base, directories: [join(root, 'node_modules')] }), process.execPath), []);

    // A nearer node_modules shadows the pinned copy: Node loads the nearer one.
    mkdirSync(join(cwd, 'node_modules/dotenv'), { recursive: true });
    writeFileSync(join(cwd, 'node_modules/dotenv/config.js'), 'shadow');
    assert.deepEqual(argumentProblems(args, cwd, pinned, process.execPath).map((p) => [p.arg, p.package]), [['dotenv/config', join(cwd, 'node_modules/dotenv')]]);
    rmSync(join(cwd, 'node_modules'), { recursive: true });

    // So does a package.json of the working directory that takes the name (a package may import itself).
    writeFileSync(join(cwd, 'package.json'), JSON.stringify({ name: 'dotenv', exports: { './config': './evil.js' } }));
    assert.deepEqual(argumentProblems(args, cwd, pinned, process.execPath).map((p) => [p.arg, p.package]), [['dotenv/config', cwd]]);
  });

  it('refuses a package name installed nowhere above the working directory, another URL, and a "#" import; passes node: and data:', () => {
    const root = tree({ 'server.js': 's' });
    const pins = pinsFor(process.execPath, { files: [join(root, 'server.js')] });
    const problems = argumentProblems(['-r', 'not-installed-anywhere-here', '--import=https://example.test/x.mjs', '--import', '#internal', '--import=node:fs', '--import=data:text/javascript,1', 'server.js'], root, pins, process.execPath);
    assert.deepEqual(problems.map((p) => p.arg), ['not-installed-anywhere-here', '--import=https://example.test/x.mjs', '#internal']);
    assert.match(problems[0]!.why, /names the package not-installed-anywhere-here, which no node_modules folder above .* holds/);
    for (const problem of problems) assert.match(problem.why, /write the argument as the exact path of a pinned file/);
  });

  it('recognises Node by its name, whatever folder it is in', () => {
    const root = tree({ 'bin/node': '#!/bin/sh\n', 'server.js': 's' });
    assert.deepEqual(unpinnedArguments(['server'], root, NONE, join(root, 'bin/node')), ['server']);
    copyFileSync(join(root, 'bin/node'), join(root, 'bin/runner'));
    assert.deepEqual(unpinnedArguments(['server'], root, NONE, join(root, 'bin/runner')), []);
  });
});

describe('a package\'s own node_modules may hold only pinned packages', () => {
  /** A package srv with a dependency dep installed next to it (pinned), as npm hoists it. */
  function installed(): string {
    return tree({
      'node_modules/srv/package.json': '{"name":"srv","version":"1.0.0"}',
      'node_modules/srv/index.js': 'require("dep")',
      'node_modules/dep/package.json': '{"name":"dep","version":"1.0.0"}',
      'node_modules/dep/index.js': 'pinned dep',
    });
  }
  const packagePins = (root: string, ...names: string[]) => pinsFor(process.execPath, { packages: names.map((name) => join(root, 'node_modules', name)) });

  it('quarantines (artifact-modified) a package that shadows a pinned dependency from the package\'s own node_modules', () => {
    const root = installed();
    const pins = packagePins(root, 'srv', 'dep');
    assert.deepEqual(checkLaunchPins(process.execPath, pins), []);
    mkdirSync(join(root, 'node_modules/srv/node_modules/dep'), { recursive: true });
    writeFileSync(join(root, 'node_modules/srv/node_modules/dep/index.js'), 'shadow');
    const found = checkLaunchPins(process.execPath, pins);
    assert.deepEqual(found.map((m) => [m.kind, m.path, m.expected]), [['package', join(root, 'node_modules/srv'), pins.packages[0]!.sha256]]);
    assert.equal(found[0]!.found, 'unpinned: node_modules/dep in its node_modules, which Node loads before any pinned copy');
  });

  it('refuses a scoped package, a file, a .bin link out of the pins, and a node_modules deeper in the package; takes pinned ones and .bin links into them', () => {
    const root = installed();
    const nested = join(root, 'node_modules/srv/node_modules');
    mkdirSync(join(nested, 'inner'), { recursive: true });
    writeFileSync(join(nested, 'inner/index.js'), 'inner');
    mkdirSync(join(nested, '.bin'));
    symlinkSync('../inner/index.js', join(nested, '.bin/inner'));
    const pins = packagePins(root, 'srv', 'dep', 'srv/node_modules/inner');
    assert.deepEqual(checkLaunchPins(process.execPath, pins), [], 'a pinned nested package and a .bin link into it');
    const strays: [string, () => void][] = [
      ['node_modules/@evil/x', () => mkdirSync(join(nested, '@evil/x'), { recursive: true })],
      ['node_modules/.package-lock.json', () => writeFileSync(join(nested, '.package-lock.json'), '{}')],
      ['node_modules/.bin/out', () => {
        writeFileSync(join(root, 'outside.js'), 'not pinned');
        symlinkSync(join(root, 'outside.js'), join(nested, '.bin/out'));
      }],
      ['lib/node_modules/dep', () => mkdirSync(join(root, 'node_modules/srv/lib/node_modules/dep'), { recursive: true })],
    ];
    for (const [stray, make] of strays) {
      make();
      const found = checkLaunchPins(process.execPath, pins);
      assert.deepEqual(found.map((m) => m.kind), ['package'], stray);
      assert.ok(found[0]!.found.includes(stray), `${stray}: ${found[0]!.found}`);
    }
  });

  it('is refused when pinning (manifest pin, manifest sign): each package there must be pinned too', () => {
    const root = installed();
    mkdirSync(join(root, 'node_modules/srv/node_modules/dep'), { recursive: true });
    writeFileSync(join(root, 'node_modules/srv/node_modules/dep/index.js'), 'nested');
    const srv = join(root, 'node_modules/srv');
    expectArtifactError(() => checkNestedPackages([srv]), /the package at .*node_modules\/srv holds node_modules\/dep in its own node_modules, which no package pin covers: Node loads a dependency from there before any pinned copy\. Pin each of them as a package too \(.*srv\/node_modules\/dep\), or reinstall without them \(npm ci\)/);
    checkNestedPackages([srv, join(srv, 'node_modules/dep')]);
    checkNestedPackages([srv], { packages: [join(srv, 'node_modules/dep')] });
    checkNestedPackages([srv], { directories: [join(srv, 'node_modules')] });
  });
});
