import assert from 'node:assert/strict';
import { mkdirSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, describe, it } from 'node:test';
import { ArtifactError } from '../../src/manifest/artifact-error.ts';
import { realPath } from '../../src/manifest/real-path.ts';
import { expectArtifactError, tempDir } from '../helpers.ts';

const { dir, cleanup } = tempDir('warden-real-path-');
after(cleanup);
const base = realpathSync(dir);
let counter = 0;

/** A fresh folder: a/b/file.js, a/c/, and other.js at its top. */
function layout(): string {
  const root = join(base, `case-${counter++}`);
  mkdirSync(join(root, 'a', 'b'), { recursive: true });
  mkdirSync(join(root, 'a', 'c'));
  writeFileSync(join(root, 'a', 'b', 'file.js'), 'file');
  writeFileSync(join(root, 'other.js'), 'other');
  return root;
}

describe('realPath', () => {
  it('agrees with realpath(3) on paths without per-process folders: links, relative targets, chains, "..", "." and slashes', () => {
    const root = layout();
    symlinkSync('a/b', join(root, 'to-b'));
    symlinkSync(join(root, 'a', 'b', 'file.js'), join(root, 'abs-file'));
    symlinkSync('../other.js', join(root, 'a', 'up'));
    symlinkSync('to-b', join(root, 'chain'));
    symlinkSync('.', join(root, 'a', 'self'));
    const cases = ['to-b', 'to-b/file.js', 'abs-file', 'a/up', 'chain/file.js', 'a/self/self/b/./file.js', 'a//b///file.js', 'a/b/../c', 'to-b/../c', 'chain/../../other.js', '.', 'a/b/'];
    // realpathSync.native is libc's realpath(3); Node's own realpathSync applies ".." as text first.
    for (const path of cases) assert.equal(realPath(`${root}/${path}`), realpathSync.native(`${root}/${path}`), path);
    // Not joined (which would apply ".." as text): the link is followed first.
    assert.equal(realPath(`${root}/to-b/../c`), join(root, 'a', 'c'));
    assert.equal(realPath(`${root}/to-b/..`), join(root, 'a'));
    // A relative path is taken from the working directory.
    assert.equal(realPath(relative(process.cwd(), join(root, 'to-b'))), join(root, 'a', 'b'));
  });

  it('applies ".." after the link before it, where a lexical normalisation would not', () => {
    const root = layout();
    mkdirSync(join(root, 'elsewhere', 'x'), { recursive: true });
    mkdirSync(join(root, 'elsewhere', 'lib'));
    writeFileSync(join(root, 'elsewhere', 'lib', 'server.js'), 'elsewhere');
    mkdirSync(join(root, 'lib'));
    writeFileSync(join(root, 'lib', 'server.js'), 'here');
    symlinkSync(join(root, 'elsewhere', 'x'), join(root, 'run'));
    assert.equal(realPath(`${root}/run/../lib/server.js`), join(root, 'elsewhere', 'lib', 'server.js'));
  });

  it('reports a missing path, or a name under a file, as missing (ENOENT, ENOTDIR)', () => {
    const root = layout();
    symlinkSync('absent.js', join(root, 'dangling'));
    for (const [path, code] of [['absent.js', 'ENOENT'], ['a/absent/x.js', 'ENOENT'], ['dangling', 'ENOENT'], ['other.js/x', 'ENOTDIR'], ['other.js/..', 'ENOTDIR'], ['other.js/', 'ENOTDIR']] as const) {
      const error = expectArtifactError(() => realPath(`${root}/${path}`), new RegExp(`cannot read .* \\(${code}\\)`));
      assert.equal(error.code, code, path);
      assert.equal(error.missing, true, path);
    }
  });

  it('refuses a loop of links (ELOOP) without following it forever', () => {
    const root = layout();
    symlinkSync('loop-b', join(root, 'loop-a'));
    symlinkSync('loop-a', join(root, 'loop-b'));
    const error = expectArtifactError(() => realPath(join(root, 'loop-a')), /\(ELOOP\)/);
    assert.equal(error.missing, false);
  });

  it('refuses paths in /proc and /dev/fd, written or reached through a link, naming the link', () => {
    const root = layout();
    const direct = ['/proc/self/cwd', '/proc/self/root/etc', `/proc/${process.pid}/cwd`, '/proc/thread-self', '/proc', '/dev/fd/0', '/dev/fd'];
    for (const path of direct) {
      const error = expectArtifactError(() => realPath(path), /leads into \/(proc|dev\/fd), where a path names another file in every process/);
      assert.equal(error.missing, false, path);
    }
    const links: [string, string][] = [
      ['to-proc-cwd', `/proc/self/cwd${root}/other.js`],
      ['to-dev-fd', '/dev/fd/0'],
      ['to-stdin', '/dev/stdin'], // itself a link into /proc/self/fd
      ['climbing', `${'../'.repeat(40)}proc/self/cwd`],
    ];
    for (const [name, target] of links) {
      symlinkSync(target, join(root, name));
      const error = expectArtifactError(() => realPath(join(root, name)), /leads into \/(proc|dev\/fd) through the link/);
      assert.ok(error.message.includes(`${join(root, name)} -> ${target}`) || name === 'to-stdin', error.message);
    }
    // A folder above the path, not the path itself.
    symlinkSync(`/proc/self/cwd${root}/a`, join(root, 'a-link'));
    expectArtifactError(() => realPath(join(root, 'a-link', 'b', 'file.js')), /through the link .*a-link -> \/proc\/self\/cwd/);
  });

  it('is an ArtifactError for every refusal', () => {
    assert.throws(() => realPath('/proc/self/exe'), ArtifactError);
  });
});
