import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join, relative, resolve, sep } from 'node:path';
import { Parser, type ReadEntry } from 'tar';
import { ArtifactError, directoryDigest, realPath, treeDigestOf, treeEntries, type TreeEntry } from './artifacts.ts';

/** A release tarball is read whole into memory: larger ones are refused. */
export const MAX_TARBALL_BYTES = 256 * 1024 * 1024;
const MAX_JSON_BYTES = 64 * 1024 * 1024;
const INTEGRITY = /^sha512-[A-Za-z0-9+/]{86}==$/;

export interface PackagePin {
  /** The installed copy's folder, as given. */
  readonly path: string;
  /** name@version, from the installed package.json. */
  readonly package: string;
  /** The registry's integrity value for that release (SHA-512 of its tarball). */
  readonly integrity: string;
  /** The tree digest of the release's own files, which the installed copy matches. */
  readonly sha256: string;
}

export interface PackagePinOptions {
  /** The release tarball; default: the npm cache's copy, found by its integrity. */
  readonly tarball?: string;
  /** The registry's integrity value; default: the one the lockfile records for this folder. */
  readonly integrity?: string;
  /** npm's cache folder; default: $npm_config_cache, else ~/.npm. */
  readonly npmCache?: string;
}

/**
 * Pins an installed npm package to its registry release: the tarball whose SHA-512 is the
 * registry's integrity value is opened, its files are digested, and the installed copy
 * must hold exactly those files (its own node_modules left out: dependencies are pinned
 * on their own, and a package there must be pinned too: checkNestedPackages). The pin's
 * sha256 is what the broker checks before every spawn; anyone can recompute it from the
 * registry's tarball. The files read are where the path leads (realPath), as for the
 * broker; the lockfile is looked up by the path as given. Throws ArtifactError saying what to do.
 */
export function pinInstalledPackage(dir: string, options: PackagePinOptions = {}): PackagePin {
  const folder = resolve(dir);
  const real = realPath(dir);
  const manifest = readJson(join(real, 'package.json'));
  const name = manifest['name'];
  const version = manifest['version'];
  if (typeof name !== 'string' || typeof version !== 'string' || name === '' || version === '') {
    throw new ArtifactError(`${join(real, 'package.json')} has no name and version; is ${dir} an installed npm package?`);
  }
  const release = `${name}@${version}`;
  const integrity = options.integrity ?? lockedIntegrity(folder, name, version);
  if (!INTEGRITY.test(integrity)) throw new ArtifactError(`"${integrity}" is not a sha512 integrity value (sha512-<base64>), as \`npm view ${release} dist.integrity\` prints`);
  const tarball = options.tarball ?? cachedTarball(integrity, options.npmCache);
  const bytes = readCapped(tarball, MAX_TARBALL_BYTES);
  const actual = `sha512-${createHash('sha512').update(bytes).digest('base64')}`;
  if (actual !== integrity) throw new ArtifactError(`${tarball} is not the release ${release}: its integrity is ${actual}, the registry's is ${integrity}`);
  const released = tarballEntries(bytes, tarball);
  const expected = treeDigestOf(released);
  if (directoryDigest(real, { skipNodeModules: true }) !== expected) {
    throw new ArtifactError(`the installed copy at ${dir} differs from the release ${release}: ${describeDifference(released, treeEntries(real, { skipNodeModules: true }))}. Reinstall it (npm ci) before pinning`);
  }
  return { path: dir, package: release, integrity, sha256: expected };
}

/**
 * The integrity npm recorded for this folder when it installed it: from the hidden lockfile
 * (node_modules/.package-lock.json) or the project's package-lock.json / npm-shrinkwrap.json
 * of the folder that holds node_modules.
 */
function lockedIntegrity(folder: string, name: string, version: string): string {
  const parts = folder.split(sep);
  // A nested dependency (proj/node_modules/a/node_modules/b) is recorded in the project's
  // lockfile under node_modules/a/node_modules/b: the outermost node_modules is tried first.
  const roots = parts.flatMap((part, index) => (part === 'node_modules' && index > 0 ? [index] : []));
  if (roots.length === 0) throw new ArtifactError(`${folder} is not inside a node_modules folder, so no lockfile records it; pass --integrity (npm view ${name}@${version} dist.integrity)`);
  for (const at of roots) {
    const project = parts.slice(0, at).join(sep) || sep;
    const key = relative(project, folder).split(sep).join('/');
    for (const lockfile of [join(project, 'node_modules', '.package-lock.json'), join(project, 'npm-shrinkwrap.json'), join(project, 'package-lock.json')]) {
      if (!existsSync(lockfile)) continue;
      const entry = ((readJson(lockfile)['packages'] ?? {}) as Record<string, { version?: unknown; integrity?: unknown }>)[key];
      if (entry?.version === version && typeof entry.integrity === 'string') return entry.integrity;
    }
  }
  throw new ArtifactError(`no lockfile records the integrity of ${name}@${version} installed at ${folder}; pass --integrity (npm view ${name}@${version} dist.integrity)`);
}

/** Where npm's cache (cacache) keeps content by its integrity: content-v2/sha512/xx/yy/rest. */
function cachedTarball(integrity: string, npmCache: string | undefined): string {
  const hex = Buffer.from(integrity.slice('sha512-'.length), 'base64').toString('hex');
  const cache = npmCache ?? process.env['npm_config_cache'] ?? join(homedir(), '.npm');
  const file = join(cache, '_cacache', 'content-v2', 'sha512', hex.slice(0, 2), hex.slice(2, 4), hex.slice(4));
  if (!existsSync(file)) throw new ArtifactError(`the release tarball is not in the npm cache (${cache}); download it with \`npm pack <name>@<version>\` and pass --tarball FILE`);
  return file;
}

/**
 * The regular files of a package tarball with their digests, the first path component
 * (package/) removed as npm does. Folders are skipped, node_modules (bundled dependencies)
 * left out like on the installed side; links, devices and unsafe paths are refused.
 */
function tarballEntries(bytes: Buffer, file: string): TreeEntry[] {
  const entries: TreeEntry[] = [];
  let failure: string | undefined;
  const parser = new Parser({
    strict: true,
    onReadEntry(entry: ReadEntry) {
      const path = entry.path.split('/').slice(1).filter((part) => part !== '' && part !== '.');
      if (entry.type === 'Directory' || path.length === 0) {
        entry.resume();
        return;
      }
      if (entry.type !== 'File' && entry.type !== 'OldFile' && entry.type !== 'ContiguousFile') {
        failure ??= `it holds ${entry.path}, a ${entry.type} entry; only regular files can be pinned`;
      } else if (path.includes('..') || entry.path.startsWith('/')) {
        failure ??= `it holds an unsafe path: ${entry.path}`;
      }
      if (failure || path.includes('node_modules')) {
        entry.resume();
        return;
      }
      const hash = createHash('sha256');
      entry.on('data', (chunk: Buffer) => hash.update(chunk));
      entry.on('end', () => entries.push({ path: path.join('/'), type: 'file', sha256: hash.digest('hex') }));
    },
  });
  parser.on('error', (error: Error) => {
    failure ??= error.message;
  });
  // Given the whole buffer, the parser reads every entry before end() returns.
  parser.end(bytes);
  if (failure) throw new ArtifactError(`${basename(file)} cannot be pinned: ${failure}`);
  if (entries.length === 0) throw new ArtifactError(`${basename(file)} holds no files; is it an npm package tarball?`);
  return entries;
}

function describeDifference(released: readonly TreeEntry[], installed: readonly TreeEntry[]): string {
  const want = new Map(released.map((entry) => [entry.path, entry.sha256]));
  const have = new Map(installed.map((entry) => [entry.path, entry.sha256]));
  const notes: string[] = [];
  for (const [path, digest] of want) {
    if (!have.has(path)) notes.push(`${path} is missing`);
    else if (have.get(path) !== digest) notes.push(`${path} was changed`);
  }
  for (const path of have.keys()) if (!want.has(path)) notes.push(`${path} is not in the release`);
  return notes.length > 5 ? `${notes.slice(0, 5).join(', ')} and ${notes.length - 5} more` : notes.join(', ') || 'a link or file type differs';
}

function readCapped(file: string, limit: number): Buffer {
  try {
    const stat = statSync(file);
    if (!stat.isFile()) throw new ArtifactError(`${file} is not a regular file`);
    const size = stat.size;
    if (size > limit) throw new ArtifactError(`${file} is ${size} bytes; the limit is ${limit}`);
    return readFileSync(file);
  } catch (error) {
    if (error instanceof ArtifactError) throw error;
    throw new ArtifactError(`cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? 'read error'})`);
  }
}

function readJson(file: string): Record<string, unknown> {
  const text = readCapped(file, MAX_JSON_BYTES).toString('utf8');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ArtifactError(`${file} is not valid JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ArtifactError(`${file} is not a JSON object`);
  return value as Record<string, unknown>;
}
