import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, describe, it } from 'node:test';
import { create, extract, Header } from 'tar';
import { directoryDigest } from '../../src/manifest/artifacts.ts';
import { pinInstalledPackage } from '../../src/manifest/npm-package.ts';
import { expectArtifactError, tempDir } from '../helpers.ts';

const { dir, cleanup } = tempDir('warden-npm-package-');
after(cleanup);
let counter = 0;

const FILES: Record<string, string> = {
  'index.js': 'module.exports = require("./lib/util.js");\n',
  'lib/util.js': 'module.exports = () => "résumé";\n',
  'README.md': '# demo\n',
};

interface Release {
  /** The release's files as packed (the folder holding package/). */
  readonly staging: string;
  readonly tgz: string;
  readonly integrity: string;
  readonly name: string;
  readonly version: string;
}

const integrityOf = (bytes: Buffer): string => `sha512-${createHash('sha512').update(bytes).digest('base64')}`;

function writeFiles(root: string, files: Record<string, string>): void {
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), content);
  }
}

/**
 * Packs a release the way npm does: a gzipped tar whose entries all start with package/.
 * packageJson: the package.json written (a string as it is); links: symbolic links to add.
 */
function pack(packageJson: Record<string, unknown> | string, options: { files?: Record<string, string>; links?: Record<string, string> } = {}): Release {
  const staging = join(dir, `release-${counter++}`);
  const root = join(staging, 'package');
  const json = typeof packageJson === 'string' ? packageJson : JSON.stringify(packageJson, null, 2);
  writeFiles(root, { 'package.json': json, ...(options.files ?? FILES) });
  for (const [path, target] of Object.entries(options.links ?? {})) symlinkSync(target, join(root, path));
  const tgz = join(dir, `release-${counter++}.tgz`);
  create({ gzip: true, file: tgz, cwd: staging, sync: true, portable: true }, ['package']);
  const parsed = typeof packageJson === 'string' ? {} : packageJson;
  return { staging, tgz, integrity: integrityOf(readFileSync(tgz)), name: String(parsed['name'] ?? ''), version: String(parsed['version'] ?? '') };
}

/**
 * "Installs" a release into a fresh project: extracted into node_modules/<name> (package/
 * stripped, as npm does), with the hidden lockfile recording its integrity unless told not to.
 */
function install(release: Release, options: { lockfile?: 'hidden' | 'package-lock' | 'npm-shrinkwrap' | 'none'; lockIntegrity?: string; lockVersion?: string } = {}): { project: string; installed: string } {
  const project = join(dir, `project-${counter++}`);
  const installed = join(project, 'node_modules', ...release.name.split('/'));
  mkdirSync(installed, { recursive: true });
  extract({ file: release.tgz, cwd: installed, strip: 1, sync: true });
  const lock = { packages: { [`node_modules/${release.name}`]: { version: options.lockVersion ?? release.version, integrity: options.lockIntegrity ?? release.integrity } } };
  const kind = options.lockfile ?? 'hidden';
  const file = { hidden: join(project, 'node_modules', '.package-lock.json'), 'package-lock': join(project, 'package-lock.json'), 'npm-shrinkwrap': join(project, 'npm-shrinkwrap.json'), none: undefined }[kind];
  if (file) writeFileSync(file, JSON.stringify({ name: 'project', lockfileVersion: 3, ...lock }, null, 2));
  return { project, installed };
}

/** An npm cache folder holding the tarball where cacache keeps it, by its SHA-512. */
function npmCacheWith(release: Release): string {
  const cache = join(dir, `cache-${counter++}`);
  const hex = createHash('sha512').update(readFileSync(release.tgz)).digest('hex');
  const file = join(cache, '_cacache', 'content-v2', 'sha512', hex.slice(0, 2), hex.slice(2, 4), hex.slice(4));
  mkdirSync(dirname(file), { recursive: true });
  copyFileSync(release.tgz, file);
  return cache;
}

/** A gzipped tar built header by header, for entries the tar library would not write. */
function rawTarball(entries: { path: string; type?: 'File' | 'Link' | 'SymbolicLink' | 'Directory'; body?: string; linkpath?: string }[]): string {
  const blocks: Buffer[] = [];
  for (const entry of entries) {
    const body = Buffer.from(entry.body ?? '');
    const type = entry.type ?? 'File';
    const header = new Header({ path: entry.path, type, mode: 0o644, size: type === 'File' ? body.length : 0, mtime: new Date(0), uid: 0, gid: 0, ...(entry.linkpath ? { linkpath: entry.linkpath } : {}) });
    header.encode();
    blocks.push(header.block!);
    if (type === 'File' && body.length > 0) blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  const tgz = join(dir, `raw-${counter++}.tgz`);
  writeFileSync(tgz, gzipSync(Buffer.concat(blocks)));
  return tgz;
}


const DEMO = { name: 'demo-pkg', version: '1.2.3', main: 'index.js' };

describe('pinInstalledPackage: an installed copy that is the release', () => {
  it('pins it with an explicit tarball: name@version, the lockfile\'s integrity, the tree digest of its own files', () => {
    const release = pack(DEMO);
    const { installed } = install(release);
    const pin = pinInstalledPackage(installed, { tarball: release.tgz });
    assert.deepEqual(pin, {
      path: installed,
      package: 'demo-pkg@1.2.3',
      integrity: release.integrity,
      sha256: directoryDigest(installed, { skipNodeModules: true }),
    });
    // The digest is the release's, computed from the files that were packed.
    assert.equal(pin.sha256, directoryDigest(join(release.staging, 'package')));
    assert.match(pin.integrity, /^sha512-[A-Za-z0-9+/]{86}==$/);
  });

  it('keeps the path as given (a relative one too)', () => {
    const release = pack(DEMO);
    const { project } = install(release);
    const cwd = process.cwd();
    process.chdir(project);
    try {
      const pin = pinInstalledPackage('node_modules/demo-pkg', { tarball: release.tgz });
      assert.equal(pin.path, 'node_modules/demo-pkg');
      assert.equal(pin.sha256, directoryDigest(join(project, 'node_modules/demo-pkg'), { skipNodeModules: true }));
    } finally {
      process.chdir(cwd);
    }
  });

  it('finds the tarball in an npm cache folder by its integrity', () => {
    const release = pack(DEMO);
    const { installed } = install(release);
    const pin = pinInstalledPackage(installed, { npmCache: npmCacheWith(release) });
    assert.equal(pin.package, 'demo-pkg@1.2.3');
    assert.equal(pin.integrity, release.integrity);
    assert.equal(pin.sha256, directoryDigest(installed, { skipNodeModules: true }));
  });

  it('says to pass --tarball when the npm cache does not hold the release', () => {
    const release = pack(DEMO);
    const { installed } = install(release);
    const empty = join(dir, `cache-${counter++}`);
    mkdirSync(empty);
    expectArtifactError(() => pinInstalledPackage(installed, { npmCache: empty }), /not in the npm cache .*pass --tarball FILE/);
    // A cache holding another release is no help either.
    expectArtifactError(() => pinInstalledPackage(installed, { npmCache: npmCacheWith(pack({ ...DEMO, version: '9.9.9' })) }), /not in the npm cache/);
  });

  it('reads the integrity from package-lock.json or npm-shrinkwrap.json of the project too', () => {
    for (const lockfile of ['package-lock', 'npm-shrinkwrap'] as const) {
      const release = pack(DEMO);
      const { installed } = install(release, { lockfile });
      assert.equal(pinInstalledPackage(installed, { tarball: release.tgz }).integrity, release.integrity, lockfile);
    }
  });

  it('finds the integrity of a nested dependency (node_modules/a/node_modules/b) in the project\'s lockfile', () => {
    // npm installs a dependency that cannot be hoisted under its dependent, and records it in
    // the project's lockfile under the full key; the dependent holds no lockfile of its own.
    const parent = pack({ name: 'parent-pkg', version: '1.0.0' });
    const nested = pack({ name: 'nested-pkg', version: '2.0.0' });
    const { project, installed: parentDir } = install(parent);
    const installed = join(parentDir, 'node_modules', 'nested-pkg');
    mkdirSync(installed, { recursive: true });
    extract({ file: nested.tgz, cwd: installed, strip: 1, sync: true });
    writeFileSync(join(project, 'node_modules', '.package-lock.json'), JSON.stringify({
      name: 'project',
      lockfileVersion: 3,
      packages: {
        'node_modules/parent-pkg': { version: '1.0.0', integrity: parent.integrity },
        'node_modules/parent-pkg/node_modules/nested-pkg': { version: '2.0.0', integrity: nested.integrity },
      },
    }));
    const pin = pinInstalledPackage(installed, { tarball: nested.tgz });
    assert.equal(pin.package, 'nested-pkg@2.0.0');
    assert.equal(pin.integrity, nested.integrity);
  });

  it('takes --integrity instead of a lockfile', () => {
    const release = pack(DEMO);
    const { installed } = install(release, { lockfile: 'none' });
    assert.equal(pinInstalledPackage(installed, { tarball: release.tgz, integrity: release.integrity }).sha256, directoryDigest(installed, { skipNodeModules: true }));
  });

  it('pins a scoped package (@scope/name)', () => {
    const release = pack({ name: '@acme/tool-server', version: '0.4.0' });
    const { project, installed } = install(release);
    assert.equal(installed, join(project, 'node_modules', '@acme', 'tool-server'));
    const pin = pinInstalledPackage(installed, { npmCache: npmCacheWith(release) });
    assert.equal(pin.package, '@acme/tool-server@0.4.0');
    assert.equal(pin.integrity, release.integrity);
    assert.equal(pin.sha256, directoryDigest(join(release.staging, 'package')));
  });

  it('ignores the installed package\'s own node_modules, and bundled node_modules in the tarball', () => {
    const release = pack(DEMO, { files: { ...FILES, 'node_modules/bundled/index.js': 'bundled' } });
    const { installed } = install(release);
    writeFiles(installed, { 'node_modules/dep/index.js': 'a dependency', 'lib/node_modules/deeper/x.js': 'x' });
    const pin = pinInstalledPackage(installed, { tarball: release.tgz });
    assert.equal(pin.sha256, directoryDigest(installed, { skipNodeModules: true }));
    assert.notEqual(pin.sha256, directoryDigest(installed), 'node_modules is really there');
    // The release's own files only: the same digest as a release without the bundled folder.
    rmSync(join(release.staging, 'package', 'node_modules'), { recursive: true });
    assert.equal(pin.sha256, directoryDigest(join(release.staging, 'package')));
  });

  it('ignores empty folders in the installed copy', () => {
    const release = pack(DEMO);
    const { installed } = install(release);
    mkdirSync(join(installed, 'empty', 'deeper'), { recursive: true });
    assert.equal(pinInstalledPackage(installed, { tarball: release.tgz }).sha256, directoryDigest(join(release.staging, 'package')));
  });
});

describe('pinInstalledPackage: an installed copy that differs from the release', () => {
  const cases: [string, (installed: string) => void, RegExp][] = [
    ['an edited file', (installed) => writeFileSync(join(installed, 'lib/util.js'), 'module.exports = () => "evil";\n'), /lib\/util\.js was changed/],
    ['an added file', (installed) => writeFileSync(join(installed, 'lib/extra.js'), 'extra'), /lib\/extra\.js is not in the release/],
    ['a removed file', (installed) => unlinkSync(join(installed, 'README.md')), /README\.md is missing/],
    ['an edited package.json', (installed) => writeFileSync(join(installed, 'package.json'), JSON.stringify({ ...DEMO, scripts: { postinstall: 'evil' } })), /package\.json was changed/],
    ['a file replaced by a link to the same content', (installed) => {
      unlinkSync(join(installed, 'README.md'));
      writeFileSync(join(installed, 'README.real'), '# demo\n');
      symlinkSync('README.real', join(installed, 'README.md'));
    }, /README\.md was changed/],
  ];
  for (const [label, change, pattern] of cases) {
    it(`refuses ${label}, naming the file and saying to reinstall`, () => {
      const release = pack(DEMO);
      const { installed } = install(release);
      change(installed);
      const error = expectArtifactError(() => pinInstalledPackage(installed, { tarball: release.tgz }), pattern);
      assert.match(error.message, /differs from the release demo-pkg@1\.2\.3/);
      assert.match(error.message, /Reinstall it \(npm ci\)/);
    });
  }

  it('lists at most five differences, then how many more', () => {
    const release = pack(DEMO);
    const { installed } = install(release);
    for (let i = 0; i < 8; i++) writeFileSync(join(installed, `extra-${i}.js`), String(i));
    expectArtifactError(() => pinInstalledPackage(installed, { tarball: release.tgz }), /extra-\d\.js is not in the release.* and 3 more/);
  });
});

describe('pinInstalledPackage: a tarball or integrity that is not the release', () => {
  it('refuses an integrity value that is not sha512-<base64 of 64 bytes>', () => {
    const release = pack(DEMO);
    const { installed } = install(release);
    const sha256 = `sha256-${createHash('sha256').update(readFileSync(release.tgz)).digest('base64')}`;
    for (const integrity of [sha256, 'sha512-abc', `${release.integrity} sha1-deadbeef`, release.integrity.replace('sha512-', 'SHA512-'), '']) {
      expectArtifactError(() => pinInstalledPackage(installed, { tarball: release.tgz, integrity }), /is not a sha512 integrity value/);
    }
    // From the lockfile as well.
    const locked = install(release, { lockIntegrity: 'sha1-2jmj7l5rSw0yVb/vlWAYkK/YBwk=' });
    expectArtifactError(() => pinInstalledPackage(locked.installed, { tarball: release.tgz }), /"sha1-2jmj7l5rSw0yVb\/vlWAYkK\/YBwk=" is not a sha512 integrity value/);
  });

  it('refuses a well-formed integrity that is not the tarball\'s', () => {
    const release = pack(DEMO);
    const { installed } = install(release);
    const other = integrityOf(Buffer.from('another release'));
    const error = expectArtifactError(() => pinInstalledPackage(installed, { tarball: release.tgz, integrity: other }), /is not the release demo-pkg@1\.2\.3/);
    assert.ok(error.message.includes(`its integrity is ${release.integrity}, the registry's is ${other}`), error.message);
    // The lockfile recording another integrity: the same refusal.
    const locked = install(release, { lockIntegrity: other });
    expectArtifactError(() => pinInstalledPackage(locked.installed, { tarball: release.tgz }), /is not the release/);
  });

  it('refuses a tarball whose bytes do not match the integrity (a different build of the same name@version)', () => {
    const release = pack(DEMO);
    const { installed } = install(release);
    const tampered = pack(DEMO, { files: { ...FILES, 'lib/util.js': 'module.exports = () => "evil";\n' } });
    // The installed copy is the tampered build; the lockfile has the real release's integrity.
    extract({ file: tampered.tgz, cwd: installed, strip: 1, sync: true });
    expectArtifactError(() => pinInstalledPackage(installed, { tarball: tampered.tgz }), new RegExp(`its integrity is ${tampered.integrity.replace(/[+/]/g, '\\$&')}, the registry's is ${release.integrity.replace(/[+/]/g, '\\$&')}`));
    // Same with the npm cache holding other bytes under the real integrity's path.
    const cache = npmCacheWith(release);
    const hex = createHash('sha512').update(readFileSync(release.tgz)).digest('hex');
    copyFileSync(tampered.tgz, join(cache, '_cacache', 'content-v2', 'sha512', hex.slice(0, 2), hex.slice(2, 4), hex.slice(4)));
    expectArtifactError(() => pinInstalledPackage(installed, { npmCache: cache }), /is not the release demo-pkg@1\.2\.3/);
  });

  it('refuses a tarball holding a symbolic link, even when the installed copy matches it', () => {
    const release = pack(DEMO, { links: { 'alias.js': 'index.js' } });
    const { installed } = install(release);
    assert.equal(readFileSync(join(installed, 'alias.js'), 'utf8'), FILES['index.js'], 'npm would install the link');
    expectArtifactError(() => pinInstalledPackage(installed, { tarball: release.tgz }), /cannot be pinned: it holds package\/alias\.js, a SymbolicLink entry; only regular files can be pinned/);
  });

  it('refuses a hard link entry and a path that climbs out of the package', () => {
    const release = pack(DEMO);
    const { installed } = install(release, { lockfile: 'none' });
    const json = JSON.stringify(DEMO);
    const hardLink = rawTarball([{ path: 'package/package.json', body: json }, { path: 'package/copy.json', type: 'Link', linkpath: 'package/package.json' }]);
    expectArtifactError(() => pinInstalledPackage(installed, { tarball: hardLink, integrity: integrityOf(readFileSync(hardLink)) }), /it holds package\/copy\.json, a Link entry/);
    const climbing = rawTarball([{ path: 'package/package.json', body: json }, { path: 'package/../evil.js', body: 'evil' }]);
    expectArtifactError(() => pinInstalledPackage(installed, { tarball: climbing, integrity: integrityOf(readFileSync(climbing)) }), /unsafe path: package\/\.\.\/evil\.js/);
  });

  it('refuses a tarball with no files, and bytes that are not a tarball', () => {
    const release = pack(DEMO);
    const { installed } = install(release, { lockfile: 'none' });
    const empty = rawTarball([{ path: 'package/', type: 'Directory' }]);
    expectArtifactError(() => pinInstalledPackage(installed, { tarball: empty, integrity: integrityOf(readFileSync(empty)) }), /holds no files; is it an npm package tarball\?/);
    const garbage = join(dir, `garbage-${counter++}.tgz`);
    writeFileSync(garbage, 'this is not a tarball at all, not even gzip');
    expectArtifactError(() => pinInstalledPackage(installed, { tarball: garbage, integrity: integrityOf(readFileSync(garbage)) }), /garbage-\d+\.tgz cannot be pinned: .*Unrecognized archive format/);
  });

  it('refuses a tarball that is missing or a folder', () => {
    const release = pack(DEMO);
    const { installed } = install(release);
    expectArtifactError(() => pinInstalledPackage(installed, { tarball: join(dir, 'absent.tgz') }), /cannot read .*absent\.tgz \(ENOENT\)/);
    expectArtifactError(() => pinInstalledPackage(installed, { tarball: dir }), /is not a regular file/);
  });
});

describe('pinInstalledPackage: what it needs to know', () => {
  it('without a lockfile and without an integrity, says to pass --integrity', () => {
    const release = pack(DEMO);
    const { installed } = install(release, { lockfile: 'none' });
    expectArtifactError(() => pinInstalledPackage(installed, { tarball: release.tgz }), new RegExp(`no lockfile records the integrity of demo-pkg@1\\.2\\.3 installed at ${installed.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}; pass --integrity \\(npm view demo-pkg@1\\.2\\.3 dist\\.integrity\\)`));
  });

  it('ignores a lockfile entry for another version, and says to pass --integrity', () => {
    const release = pack(DEMO);
    const { installed } = install(release, { lockVersion: '1.2.2' });
    expectArtifactError(() => pinInstalledPackage(installed, { tarball: release.tgz }), /no lockfile records the integrity of demo-pkg@1\.2\.3 installed at .*node_modules\/demo-pkg; pass --integrity/);
  });

  it('for a folder outside node_modules, says to pass --integrity, and pins it with one', () => {
    const release = pack(DEMO);
    const folder = join(dir, `vendored-${counter++}`);
    mkdirSync(folder);
    extract({ file: release.tgz, cwd: folder, strip: 1, sync: true });
    expectArtifactError(() => pinInstalledPackage(folder, { tarball: release.tgz }), /is not inside a node_modules folder, so no lockfile records it; pass --integrity/);
    assert.equal(pinInstalledPackage(folder, { tarball: release.tgz, integrity: release.integrity }).sha256, directoryDigest(join(release.staging, 'package')));
  });

  it('refuses a package.json without a name or a version, or none at all', () => {
    const cases: Record<string, unknown>[] = [{ version: '1.0.0' }, { name: 'nameless' }, { name: '', version: '1.0.0' }, { name: 'n', version: 1 }];
    for (const json of cases) {
      const release = pack(json);
      const folder = join(dir, `bad-${counter++}`, 'node_modules', 'x');
      mkdirSync(folder, { recursive: true });
      extract({ file: release.tgz, cwd: folder, strip: 1, sync: true });
      expectArtifactError(() => pinInstalledPackage(folder, { tarball: release.tgz, integrity: release.integrity }), /package\.json has no name and version; is .* an installed npm package\?/);
    }
    const notJson = join(dir, `bad-${counter++}`);
    writeFiles(notJson, { 'package.json': '{ name: nope' });
    expectArtifactError(() => pinInstalledPackage(notJson), /package\.json is not valid JSON/);
    const array = join(dir, `bad-${counter++}`);
    writeFiles(array, { 'package.json': '[]' });
    expectArtifactError(() => pinInstalledPackage(array), /package\.json is not a JSON object/);
    const none = join(dir, `bad-${counter++}`);
    mkdirSync(none);
    expectArtifactError(() => pinInstalledPackage(none), /cannot read .*package\.json \(ENOENT\)/);
  });
});
