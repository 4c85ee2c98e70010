import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, renameSync, rmSync, statSync, symlinkSync, truncateSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, describe, it } from 'node:test';
import {
  checkLaunchPins,
  directoryDigest,
  fileDigest,
  isInside,
  MAX_TREE_DEPTH,
  MAX_TREE_ENTRIES,
  MAX_PINNED_FILE_BYTES,
  treeDigestOf,
  treeEntries,
  unpinnedArguments,
  type LaunchPins,
  type TreeEntry,
} from '../../src/manifest/artifacts.ts';
import { expectArtifactError, ROOT, tempDir, waitFor } from '../helpers.ts';

const { dir, cleanup } = tempDir('warden-artifacts-');
after(cleanup);
let counter = 0;

const hasMkfifo = spawnSync('mkfifo', ['--version'], { stdio: 'ignore' }).error === undefined;
const sha256Of = (bytes: string | Buffer): string => createHash('sha256').update(bytes).digest('hex');

/** A fresh folder of its own for one test. */
function caseDir(label: string): string {
  const path = join(dir, `${label}-${counter++}`);
  mkdirSync(path, { recursive: true });
  return path;
}

/** Writes files (relative path → content) under root, creating folders. */
function writeTree(root: string, files: Record<string, string | Buffer>): string {
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), content);
  }
  return root;
}

/** The tree digest computed independently from the format the spec describes. */
function expectedTreeDigest(entries: [type: 'file' | 'link', path: string, sha256: string][]): string {
  const sorted = [...entries].sort((a, b) => (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  let text = 'mcp-warden tree v1\n';
  for (const entry of sorted) text += `${JSON.stringify(entry)}\n`;
  return sha256Of(text);
}


const byPath = (entries: readonly TreeEntry[]) => [...entries].sort((a, b) => (a.path < b.path ? -1 : 1));

describe('fileDigest', () => {
  it('is the SHA-256 of the file\'s bytes: empty, small, binary and larger than the 1 MiB read buffer', () => {
    const root = caseDir('digest');
    const big = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
    const cases: [string, string | Buffer][] = [
      ['empty', ''],
      ['text.js', 'console.log("résumé ✓");\n'],
      ['binary.bin', Buffer.from([0, 1, 2, 0xff, 0xfe, 0x0a, 0x0d])],
      ['big.bin', big],
    ];
    for (const [name, content] of cases) {
      const path = join(root, name);
      writeFileSync(path, content);
      assert.equal(fileDigest(path), createHash('sha256').update(content).digest('hex'), name);
    }
    assert.equal(fileDigest(join(root, 'empty')), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });

  it('follows a symbolic link to the file it names', () => {
    const root = caseDir('digest-link');
    writeFileSync(join(root, 'target.js'), 'target');
    symlinkSync('target.js', join(root, 'link.js'));
    assert.equal(fileDigest(join(root, 'link.js')), sha256Of('target'));
  });

  it('refuses a folder, a character device and a missing file with an ArtifactError', () => {
    const root = caseDir('digest-bad');
    expectArtifactError(() => fileDigest(root), /is not a regular file/);
    assert.ok(statSync('/dev/zero').isCharacterDevice(), 'this machine\'s /dev/zero is a character device');
    expectArtifactError(() => fileDigest('/dev/zero'), /\/dev\/zero is not a regular file/);
    expectArtifactError(() => fileDigest(join(root, 'absent.js')), /cannot read .*absent\.js \(ENOENT\)/);
  });

  it('refuses a FIFO without hanging (no writer: a blocking open would never return)', { skip: hasMkfifo ? false : 'mkfifo is not available on this machine' }, () => {
    const root = caseDir('fifo');
    const fifo = join(root, 'server.js');
    const made = spawnSync('mkfifo', [fifo]);
    assert.equal(made.status, 0, String(made.stderr));
    // In a child process with a kill bound: a synchronous open that blocked would hang this
    // process beyond the reach of any test timeout.
    const script = [
      `import { fileDigest } from ${JSON.stringify(pathToFileURL(join(ROOT, 'src/manifest/artifacts.ts')).href)};`,
      `try { console.log('digest ' + fileDigest(${JSON.stringify(fifo)})); }`,
      `catch (error) { console.log(error.name + ': ' + error.message); }`,
    ].join('\n');
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(child.signal, null, 'the child was killed: opening the FIFO hung');
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout.trim(), `ArtifactError: ${fifo} is not a regular file`);
    // And in this process too (it returned above, so it returns here).
    expectArtifactError(() => fileDigest(fifo), /is not a regular file/);
  });

  it('sees an edit that keeps the size and restores the mtime (the cache is keyed by ctime too)', async () => {
    const root = caseDir('cache');
    const path = join(root, 'server.js');
    writeFileSync(path, 'console.log("good")\n');
    // A whole-second mtime, so restoring it is exact to the nanosecond.
    utimesSync(path, 1_700_000_000, 1_700_000_000);
    const before = statSync(path, { bigint: true });
    assert.equal(before.mtimeNs, 1_700_000_000_000_000_000n);
    assert.equal(fileDigest(path), sha256Of('console.log("good")\n'));
    assert.equal(fileDigest(path), sha256Of('console.log("good")\n'), 'served from the cache, the same');

    // Let the clock move past the file's ctime, so the edit below gets a different one.
    const probe = join(root, 'probe');
    const moved = await waitFor(() => {
      writeFileSync(probe, 'x');
      return statSync(probe, { bigint: true }).ctimeNs > before.ctimeNs;
    }, 200, 5);
    assert.ok(moved, 'the clock did not move');

    writeFileSync(path, 'console.log("evil")\n'); // same length, same inode
    utimesSync(path, 1_700_000_000, 1_700_000_000);
    const after = statSync(path, { bigint: true });
    // Everything but ctime is as before: only ctime can tell the edit apart.
    assert.equal(after.dev, before.dev);
    assert.equal(after.ino, before.ino);
    assert.equal(after.size, before.size);
    assert.equal(after.mtimeNs, before.mtimeNs);
    assert.notEqual(after.ctimeNs, before.ctimeNs);
    assert.equal(fileDigest(path), sha256Of('console.log("evil")\n'));
  });
});

describe('treeEntries, directoryDigest', () => {
  /** A folder with two files, one in a subfolder. */
  function baseTree(): string {
    return writeTree(caseDir('tree'), { 'index.js': 'main', 'lib/util.js': 'util' });
  }

  it('lists every file with its path and digest, and hashes them in the documented format', () => {
    const root = baseTree();
    assert.deepEqual(byPath(treeEntries(root)), [
      { path: 'index.js', type: 'file', sha256: sha256Of('main') },
      { path: 'lib/util.js', type: 'file', sha256: sha256Of('util') },
    ]);
    const expected = expectedTreeDigest([
      ['file', 'index.js', sha256Of('main')],
      ['file', 'lib/util.js', sha256Of('util')],
    ]);
    assert.equal(directoryDigest(root), expected);
    assert.equal(directoryDigest(root), treeDigestOf(treeEntries(root)));
    // An empty folder is the tree of nothing.
    assert.equal(directoryDigest(caseDir('empty')), sha256Of('mcp-warden tree v1\n'));
  });

  it('changes when a file is added, removed, renamed or changed, and comes back when undone', () => {
    const root = baseTree();
    const original = directoryDigest(root);
    const changes: [string, () => void, () => void][] = [
      ['added', () => writeFileSync(join(root, 'lib/extra.js'), ''), () => unlinkSync(join(root, 'lib/extra.js'))],
      ['removed', () => unlinkSync(join(root, 'lib/util.js')), () => writeFileSync(join(root, 'lib/util.js'), 'util')],
      ['renamed', () => renameSync(join(root, 'lib/util.js'), join(root, 'lib/utils.js')), () => renameSync(join(root, 'lib/utils.js'), join(root, 'lib/util.js'))],
      ['moved to another folder', () => renameSync(join(root, 'lib/util.js'), join(root, 'util.js')), () => renameSync(join(root, 'util.js'), join(root, 'lib/util.js'))],
      ['changed, same size', () => writeFileSync(join(root, 'index.js'), 'MAIN'), () => writeFileSync(join(root, 'index.js'), 'main')],
      ['changed, appended', () => writeFileSync(join(root, 'index.js'), 'main\n'), () => writeFileSync(join(root, 'index.js'), 'main')],
    ];
    for (const [label, change, undo] of changes) {
      change();
      assert.notEqual(directoryDigest(root), original, label);
      undo();
      assert.equal(directoryDigest(root), original, `${label}, undone`);
    }
  });

  it('ignores empty folders and file modes', () => {
    const root = baseTree();
    const original = directoryDigest(root);
    mkdirSync(join(root, 'empty/deeper/still'), { recursive: true });
    mkdirSync(join(root, 'lib/empty'));
    assert.equal(directoryDigest(root), original);
    chmodSync(join(root, 'index.js'), 0o755);
    chmodSync(join(root, 'lib/util.js'), 0o600);
    assert.equal(directoryDigest(root), original);
  });

  it('pins a link inside the folder by its target text; re-pointing it changes the digest', () => {
    const root = baseTree();
    symlinkSync('lib/util.js', join(root, 'alias.js'));
    symlinkSync('lib', join(root, 'lib-link')); // a link to a folder is listed, not walked
    assert.deepEqual(byPath(treeEntries(root)), [
      { path: 'alias.js', type: 'link', sha256: sha256Of('lib/util.js') },
      { path: 'index.js', type: 'file', sha256: sha256Of('main') },
      { path: 'lib-link', type: 'link', sha256: sha256Of('lib') },
      { path: 'lib/util.js', type: 'file', sha256: sha256Of('util') },
    ]);
    const linked = directoryDigest(root);
    assert.equal(linked, expectedTreeDigest([
      ['link', 'alias.js', sha256Of('lib/util.js')],
      ['file', 'index.js', sha256Of('main')],
      ['link', 'lib-link', sha256Of('lib')],
      ['file', 'lib/util.js', sha256Of('util')],
    ]));

    unlinkSync(join(root, 'alias.js'));
    symlinkSync('index.js', join(root, 'alias.js'));
    assert.notEqual(directoryDigest(root), linked, 're-pointed');
    // The same target written another way is another pin (target text, not resolved path).
    unlinkSync(join(root, 'alias.js'));
    symlinkSync('./lib/util.js', join(root, 'alias.js'));
    assert.notEqual(directoryDigest(root), linked, 'same target, other text');
    unlinkSync(join(root, 'alias.js'));
    symlinkSync('lib/util.js', join(root, 'alias.js'));
    assert.equal(directoryDigest(root), linked, 'pointed back');
    // A file where the link was is not the same tree either.
    unlinkSync(join(root, 'alias.js'));
    writeFileSync(join(root, 'alias.js'), 'lib/util.js');
    assert.notEqual(directoryDigest(root), linked, 'a file with the target text as content');
  });

  it('refuses a link that leaves the folder (relative, absolute, to a sibling with the same prefix) or leads nowhere', () => {
    const base = caseDir('escape');
    writeTree(base, { 'outside.js': 'outside', 'tree-evil/x.js': 'x' });
    const cases: [string, string, RegExp][] = [
      ['up', '../outside.js', /points outside the pinned folder/],
      ['absolute', join(base, 'outside.js'), /points outside the pinned folder/],
      ['prefix', join(base, 'tree-evil/x.js'), /points outside the pinned folder/],
      ['through a subfolder', 'lib/../../outside.js', /points outside the pinned folder/],
      ['to the system', '/etc/hostname', /points outside the pinned folder|cannot be followed/],
      ['dangling', 'lib/absent.js', /cannot be followed/],
    ];
    for (const [label, target, pattern] of cases) {
      const root = writeTree(join(base, `tree-${label.replace(/ /g, '-')}`), { 'index.js': 'main', 'lib/util.js': 'util' });
      symlinkSync(target, join(root, 'link.js'));
      expectArtifactError(() => directoryDigest(root), pattern);
    }
  });

  it('refuses a root that is a link, a file or missing', () => {
    const root = baseTree();
    const link = join(dirname(root), `link-to-${counter++}`);
    symlinkSync(root, link);
    expectArtifactError(() => directoryDigest(link), /is a link; pin the folder it points to/);
    expectArtifactError(() => directoryDigest(join(root, 'index.js')), /is not a folder/);
    expectArtifactError(() => directoryDigest(join(root, 'absent')), /cannot read .*absent \(ENOENT\)/);
  });

  it('refuses a FIFO inside the folder without opening it', { skip: hasMkfifo ? false : 'mkfifo is not available on this machine' }, () => {
    const root = baseTree();
    const made = spawnSync('mkfifo', [join(root, 'lib', 'pipe')]);
    assert.equal(made.status, 0, String(made.stderr));
    expectArtifactError(() => directoryDigest(root), /pipe is not a regular file, folder or link/);
  });

  it('refuses a file name that is not UTF-8', () => {
    const root = baseTree();
    const name = Buffer.concat([Buffer.from(`${join(root, 'lib')}/`), Buffer.from([0x62, 0xff, 0x2e, 0x6a, 0x73])]);
    writeFileSync(name, 'x');
    expectArtifactError(() => directoryDigest(root), /holds a file name that is not UTF-8/);
    // A folder's name is checked too.
    const clean = baseTree();
    const named = Buffer.concat([Buffer.from(`${clean}/`), Buffer.from([0xc3, 0x28])]);
    mkdirSync(named);
    expectArtifactError(() => directoryDigest(clean), /not UTF-8/);
  });

  it('takes a folder nested MAX_TREE_DEPTH levels deep, and refuses one level more', () => {
    assert.equal(MAX_TREE_DEPTH, 64);
    const nest = (levels: number): string => {
      const root = caseDir('deep');
      const parts = Array.from({ length: levels }, (_, i) => `d${i}`);
      writeTree(root, { [`${parts.join('/')}/leaf.js`]: 'leaf' });
      return root;
    };
    const ok = nest(MAX_TREE_DEPTH);
    const leafPath = `${Array.from({ length: MAX_TREE_DEPTH }, (_, i) => `d${i}`).join('/')}/leaf.js`;
    assert.deepEqual(treeEntries(ok), [{ path: leafPath, type: 'file', sha256: sha256Of('leaf') }]);
    expectArtifactError(() => directoryDigest(nest(MAX_TREE_DEPTH + 1)), new RegExp(`nested deeper than ${MAX_TREE_DEPTH} folders`));
    expectArtifactError(() => directoryDigest(nest(MAX_TREE_DEPTH + 2)), new RegExp(`nested deeper than ${MAX_TREE_DEPTH} folders`));
  });

  it('counts folders against the entry limit: a tree of empty folders is refused, not walked without end', () => {
    assert.equal(MAX_TREE_ENTRIES, 100_000);
    const root = join(dir, `empty-folders-${counter++}`);
    mkdirSync(root);
    for (let i = 0; i <= MAX_TREE_ENTRIES; i++) mkdirSync(join(root, `e${i}`));
    expectArtifactError(() => treeEntries(root), new RegExp(`holds more than ${MAX_TREE_ENTRIES} files and folders`));
    rmSync(root, { recursive: true, force: true });
  });

  it('refuses a file over MAX_PINNED_FILE_BYTES before reading it (a sparse file costs nothing to make)', () => {
    const file = join(dir, `sparse-${counter++}.bin`);
    writeFileSync(file, '');
    truncateSync(file, MAX_PINNED_FILE_BYTES + 1);
    expectArtifactError(() => fileDigest(file), new RegExp(`files over ${MAX_PINNED_FILE_BYTES} bytes are not digested`));
    rmSync(file);
  });

  it('leaves out every node_modules folder only when asked (skipNodeModules)', () => {
    const root = baseTree();
    const own = directoryDigest(root, { skipNodeModules: true });
    writeTree(root, { 'node_modules/dep/index.js': 'dep', 'lib/node_modules/inner/x.js': 'inner' });
    assert.equal(directoryDigest(root, { skipNodeModules: true }), own);
    assert.notEqual(directoryDigest(root), own);
    assert.deepEqual(
      byPath(treeEntries(root)).map((entry) => entry.path),
      ['index.js', 'lib/node_modules/inner/x.js', 'lib/util.js', 'node_modules/dep/index.js'],
    );
    // A file named node_modules is a file, not a folder to skip.
    writeTree(root, { 'etc/node_modules': 'f' });
    assert.notEqual(directoryDigest(root, { skipNodeModules: true }), own);
  });
});

describe('treeDigestOf', () => {
  const a: TreeEntry = { path: 'a.js', type: 'file', sha256: sha256Of('a') };
  const b: TreeEntry = { path: 'b/c.js', type: 'file', sha256: sha256Of('c') };
  const c: TreeEntry = { path: 'b-c.js', type: 'link', sha256: sha256Of('a.js') };
  const d: TreeEntry = { path: 'B.js', type: 'file', sha256: sha256Of('B') };

  it('does not depend on the order of the entries (sorted by UTF-16 code units)', () => {
    const orders = [[a, b, c, d], [d, c, b, a], [b, d, a, c], [c, a, d, b]];
    const digests = new Set(orders.map((order) => treeDigestOf(order)));
    assert.equal(digests.size, 1);
    // "B.js" < "a.js" < "b-c.js" < "b/c.js": upper case first, '-' (2d) before '/' (2f).
    assert.equal(treeDigestOf([a, b, c, d]), sha256Of([
      'mcp-warden tree v1\n',
      `["file","B.js","${d.sha256}"]\n`,
      `["file","a.js","${a.sha256}"]\n`,
      `["link","b-c.js","${c.sha256}"]\n`,
      `["file","b/c.js","${b.sha256}"]\n`,
    ].join('')));
  });

  it('tells a file from a link with the same digest, and a path from a close one', () => {
    assert.notEqual(treeDigestOf([a]), treeDigestOf([{ ...a, type: 'link' }]));
    assert.notEqual(treeDigestOf([a]), treeDigestOf([{ ...a, path: 'a.js ' }]));
    assert.notEqual(treeDigestOf([a, b]), treeDigestOf([a]));
    assert.equal(treeDigestOf([]), sha256Of('mcp-warden tree v1\n'));
    // A path holding a newline and quotes cannot pass for two entries.
    const forged: TreeEntry = { path: `a.js","${a.sha256}"]\n["file","b/c.js`, type: 'file', sha256: b.sha256 };
    assert.notEqual(treeDigestOf([forged]), treeDigestOf([a, b]));
  });

  it('refuses a path listed twice, whatever the types or digests', () => {
    expectArtifactError(() => treeDigestOf([a, b, { ...a }]), /the tree lists a\.js twice/);
    expectArtifactError(() => treeDigestOf([a, { ...a, type: 'link', sha256: sha256Of('x') }]), /lists a\.js twice/);
    expectArtifactError(() => treeDigestOf([b, c, d, { ...b, sha256: sha256Of('other') }]), /lists b\/c\.js twice/);
  });
});

describe('checkLaunchPins', () => {
  /**
   * A launch with a script, a folder and a package, all pinned as they are now; the
   * package's own node_modules holds a dependency, pinned as a package of its own.
   */
  function launch(): { root: string; command: string; pins: LaunchPins } {
    const root = writeTree(caseDir('launch'), {
      'bin/run': '#!/bin/sh\n',
      'server.js': 'server',
      'lib/a.js': 'a',
      'pkg/package.json': '{"name":"pkg","version":"1.0.0"}',
      'pkg/index.js': 'pkg',
      'pkg/node_modules/dep/index.js': 'dep',
    });
    const command = join(root, 'bin/run');
    return {
      root,
      command,
      pins: {
        command: fileDigest(command),
        files: [{ path: join(root, 'server.js'), sha256: fileDigest(join(root, 'server.js')) }],
        directories: [{ path: join(root, 'lib'), sha256: directoryDigest(join(root, 'lib')) }],
        packages: [
          { path: join(root, 'pkg'), package: 'pkg@1.0.0', integrity: `sha512-${'A'.repeat(86)}==`, sha256: directoryDigest(join(root, 'pkg'), { skipNodeModules: true }) },
          { path: join(root, 'pkg/node_modules/dep'), package: 'dep@1.0.0', integrity: `sha512-${'B'.repeat(86)}==`, sha256: directoryDigest(join(root, 'pkg/node_modules/dep'), { skipNodeModules: true }) },
        ],
        data: [join(root, 'store')],
      },
    };
  }

  it('finds nothing when every pin holds, also after a change in a data folder; a changed dependency breaks its own pin, not its dependent\'s', () => {
    const { root, command, pins } = launch();
    assert.deepEqual(checkLaunchPins(command, pins), []);
    writeTree(root, { 'store/notes.db': 'written by the server' });
    assert.deepEqual(checkLaunchPins(command, pins), []);
    // The package's digest leaves its node_modules out; the dependency there is pinned on its own.
    writeFileSync(join(root, 'pkg/node_modules/dep/index.js'), 'changed dependency');
    assert.deepEqual(checkLaunchPins(command, pins).map((m) => [m.kind, m.path]), [['package', join(root, 'pkg/node_modules/dep')]]);
  });

  it('reports kind, path, expected and found for each pin that does not hold, in order', () => {
    const { root, command, pins } = launch();
    writeFileSync(command, '#!/bin/sh\nevil\n');
    writeFileSync(join(root, 'server.js'), 'evil server');
    writeFileSync(join(root, 'lib/b.js'), 'added');
    writeFileSync(join(root, 'pkg/index.js'), 'evil pkg');
    assert.deepEqual(checkLaunchPins(command, pins), [
      { kind: 'command', path: command, expected: pins.command, found: sha256Of('#!/bin/sh\nevil\n') },
      { kind: 'file', path: join(root, 'server.js'), expected: pins.files[0]!.sha256, found: sha256Of('evil server') },
      { kind: 'directory', path: join(root, 'lib'), expected: pins.directories[0]!.sha256, found: directoryDigest(join(root, 'lib')) },
      { kind: 'package', path: join(root, 'pkg'), expected: pins.packages[0]!.sha256, found: directoryDigest(join(root, 'pkg'), { skipNodeModules: true }) },
    ]);
  });

  it('reports one kind at a time: only the pin that changed', () => {
    for (const kind of ['command', 'file', 'directory', 'package'] as const) {
      const { root, command, pins } = launch();
      const target = { command, file: join(root, 'server.js'), directory: join(root, 'lib/a.js'), package: join(root, 'pkg/package.json') }[kind];
      writeFileSync(target, `changed ${kind}`);
      const found = checkLaunchPins(command, pins);
      assert.deepEqual(found.map((m) => m.kind), [kind], kind);
      assert.notEqual(found[0]!.found, found[0]!.expected);
      assert.match(found[0]!.found, /^[0-9a-f]{64}$/);
    }
  });

  it('reports "unreadable: ..." for a missing file, folder or executable', () => {
    const { root, command, pins } = launch();
    rmSync(join(root, 'server.js'));
    rmSync(join(root, 'lib'), { recursive: true });
    rmSync(command);
    const found = checkLaunchPins(command, pins);
    assert.deepEqual(found.map((m) => [m.kind, m.path, m.expected]), [
      ['command', command, pins.command],
      ['file', join(root, 'server.js'), pins.files[0]!.sha256],
      ['directory', join(root, 'lib'), pins.directories[0]!.sha256],
    ]);
    assert.equal(found[0]!.found, `unreadable: cannot read ${command} (ENOENT)`);
    assert.equal(found[1]!.found, `unreadable: cannot read ${join(root, 'server.js')} (ENOENT)`);
    assert.equal(found[2]!.found, `unreadable: cannot read ${join(root, 'lib')} (ENOENT)`);
  });

  it('reports a pinned file replaced by a folder, and a pinned folder holding an escaping link', () => {
    const { root, command, pins } = launch();
    rmSync(join(root, 'server.js'));
    mkdirSync(join(root, 'server.js'));
    symlinkSync('/etc', join(root, 'lib', 'etc'));
    const found = checkLaunchPins(command, pins);
    assert.deepEqual(found.map((m) => m.kind), ['file', 'directory']);
    assert.match(found[0]!.found, /^unreadable: .*server\.js is not a regular file$/);
    assert.match(found[1]!.found, /^unreadable: the link .*etc points outside the pinned folder/);
  });
});

describe('unpinnedArguments', () => {
  const NONE: LaunchPins = { command: '', files: [], directories: [], packages: [], data: [] };

  function project(): string {
    return writeTree(caseDir('args'), {
      'server.js': 's',
      'other.js': 'o',
      'conf.json': '{}',
      'lib/a.js': 'a',
      'lib2/b.js': 'b',
      'pkg/index.js': 'p',
      'pkg/node_modules/dep/index.js': 'd',
    });
  }

  it('reports plain arguments naming an existing file or folder, as written', () => {
    const cwd = project();
    assert.deepEqual(unpinnedArguments(['server.js', './other.js', 'lib', join(cwd, 'conf.json'), '.'], cwd, NONE), ['server.js', './other.js', 'lib', join(cwd, 'conf.json'), '.']);
    // Outside cwd too: what exists is judged wherever it is.
    assert.deepEqual(unpinnedArguments([process.execPath], cwd, NONE), [process.execPath]);
  });

  it('does not report what does not exist (yet), or is no path at all', () => {
    const cwd = project();
    assert.deepEqual(unpinnedArguments(['absent.js', 'lib/absent.js', '--port', '8080', '--verbose', '--level=debug', '', '--empty=', 'a\0b', '--nul=server.js\0'], cwd, NONE), []);
  });

  it('checks the value of --flag=value and reports the whole argument', () => {
    const cwd = project();
    assert.deepEqual(unpinnedArguments(['--config=conf.json', '-c=lib/a.js', '--x=absent.json'], cwd, NONE), ['--config=conf.json', '-c=lib/a.js']);
    const pins: LaunchPins = { ...NONE, files: [{ path: join(cwd, 'conf.json'), sha256: '' }] };
    assert.deepEqual(unpinnedArguments(['--config=conf.json', '--config=./conf.json'], cwd, pins), []);
    // "--config conf.json" as two arguments: the value is a plain argument.
    assert.deepEqual(unpinnedArguments(['--config', 'other.js'], cwd, pins), ['other.js']);
  });

  it('takes a file pin for that file only', () => {
    const cwd = project();
    const pins: LaunchPins = { ...NONE, files: [{ path: join(cwd, 'server.js'), sha256: '' }] };
    assert.deepEqual(unpinnedArguments(['server.js', './server.js', join(cwd, 'server.js'), 'lib/../server.js'], cwd, pins), []);
    assert.deepEqual(unpinnedArguments(['server.js', 'other.js'], cwd, pins), ['other.js']);
  });

  it('takes a folder pin for the folder and everything in it, not for a folder with the same prefix', () => {
    const cwd = project();
    const pins: LaunchPins = { ...NONE, directories: [{ path: join(cwd, 'lib'), sha256: '' }] };
    assert.deepEqual(unpinnedArguments(['lib', 'lib/', 'lib/a.js', '--m=lib/a.js'], cwd, pins), []);
    assert.deepEqual(unpinnedArguments(['lib2/b.js', 'lib2', 'server.js'], cwd, pins), ['lib2/b.js', 'lib2', 'server.js']);
  });

  it('takes a package pin for its own files, not for its node_modules', () => {
    const cwd = project();
    const pins: LaunchPins = { ...NONE, packages: [{ path: join(cwd, 'pkg'), package: 'pkg@1.0.0', integrity: '', sha256: '' }] };
    assert.deepEqual(unpinnedArguments(['pkg', 'pkg/index.js', '--entry=pkg/index.js'], cwd, pins), []);
    assert.deepEqual(unpinnedArguments(['pkg/node_modules/dep/index.js', 'pkg/node_modules', '--d=pkg/node_modules/dep'], cwd, pins), [
      'pkg/node_modules/dep/index.js',
      'pkg/node_modules',
      '--d=pkg/node_modules/dep',
    ]);
    // A folder pin covering the same dependency does cover it.
    const both: LaunchPins = { ...pins, directories: [{ path: join(cwd, 'pkg/node_modules/dep'), sha256: '' }] };
    assert.deepEqual(unpinnedArguments(['pkg/node_modules/dep/index.js'], cwd, both), []);
  });

  it('takes a declared data path for itself and everything under it, and nothing else', () => {
    const cwd = project();
    const pins: LaunchPins = { ...NONE, data: [join(cwd, 'lib'), join(cwd, 'conf.json')] };
    assert.deepEqual(unpinnedArguments(['lib', 'lib/a.js', '--root=lib', 'conf.json', '--c=./conf.json'], cwd, pins), []);
    assert.deepEqual(unpinnedArguments(['lib2/b.js', 'server.js'], cwd, pins), ['lib2/b.js', 'server.js']);
  });

  it('covers a file whose name starts with two dots inside a pinned folder', () => {
    const cwd = project();
    writeFileSync(join(cwd, 'lib', '..hidden.js'), 'h');
    const pins: LaunchPins = { ...NONE, directories: [{ path: join(cwd, 'lib'), sha256: '' }] };
    assert.deepEqual(unpinnedArguments(['lib/..hidden.js'], cwd, pins), []);
  });
});

describe('isInside', () => {
  it('is true for the folder itself and anything under it', () => {
    assert.equal(isInside('/srv/app', '/srv/app'), true);
    assert.equal(isInside('/srv/app/', '/srv/app'), true);
    assert.equal(isInside('/srv/app/x.js', '/srv/app'), true);
    assert.equal(isInside('/srv/app/a/b/c', '/srv/app/'), true);
    assert.equal(isInside('/srv/app/a/../b', '/srv/app'), true);
  });

  it('is false for a parent, a sibling with the same prefix, and a path that climbs out', () => {
    assert.equal(isInside('/srv', '/srv/app'), false);
    assert.equal(isInside('/', '/srv/app'), false);
    assert.equal(isInside('/srv/app2', '/srv/app'), false);
    assert.equal(isInside('/srv/app-evil/x.js', '/srv/app'), false);
    assert.equal(isInside('/srv/app/../other', '/srv/app'), false);
    assert.equal(isInside('/srv/app/../../etc/passwd', '/srv/app'), false);
  });

  it('is true for a name that merely starts with two dots ("..x" is not "..")', () => {
    assert.equal(isInside('/srv/app/..x', '/srv/app'), true);
    assert.equal(isInside('/srv/app/...', '/srv/app'), true);
    assert.equal(isInside('/srv/app/..config/x.js', '/srv/app'), true);
  });

  it('lets a pinned folder hold a link to a "..name" file inside it', () => {
    const root = writeTree(caseDir('dotdot'), { '..data.js': 'data', 'index.js': 'main' });
    symlinkSync('..data.js', join(root, 'alias.js'));
    assert.deepEqual(byPath(treeEntries(root)), [
      { path: '..data.js', type: 'file', sha256: sha256Of('data') },
      { path: 'alias.js', type: 'link', sha256: sha256Of('..data.js') },
      { path: 'index.js', type: 'file', sha256: sha256Of('main') },
    ]);
  });
});
