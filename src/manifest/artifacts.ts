import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, realpathSync, type BigIntStats } from 'node:fs';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';

/**
 * Digests of what a stdio server runs: one file (the executable, a script), or a whole
 * directory as a tree digest (an installed package, a folder of scripts). The broker
 * computes them before every spawn; manifest pin and manifest sign compute them for the
 * tool owner. Both use these functions, so what is signed and what is checked agree.
 */

/** The first line hashed into every tree digest: the format's name and version. */
const TREE_FORMAT = 'mcp-warden tree v1\n';

/** Bounds on a directory walk: a hostile or runaway tree is refused, not walked forever. */
export const MAX_TREE_ENTRIES = 100_000;
export const MAX_TREE_DEPTH = 64;
/** Largest file digested: a huge (or sparse) file must not hold the broker's event loop. */
export const MAX_PINNED_FILE_BYTES = 2 * 1024 * 1024 * 1024; // 2 GiB

/** Why an artifact could not be digested; the broker treats it like a mismatch. */
export class ArtifactError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ArtifactError';
  }
}

/** One entry of a tree: a regular file (digest of its bytes) or a symbolic link (digest of its target text). */
export interface TreeEntry {
  /** Relative to the tree's root, '/'-separated. */
  readonly path: string;
  readonly type: 'file' | 'link';
  readonly sha256: string;
}

/**
 * The tree digest of a list of entries: SHA-256 over the format line, then one JSON line
 * per entry, sorted by path (UTF-16 code unit order, the same everywhere). JSON quoting
 * keeps a path with a newline or quote in it from colliding with another listing.
 */
export function treeDigestOf(entries: readonly TreeEntry[]): string {
  const hash = createHash('sha256').update(TREE_FORMAT);
  const sorted = [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.path === sorted[i - 1]!.path) throw new ArtifactError(`the tree lists ${sorted[i]!.path} twice`);
  }
  for (const entry of sorted) hash.update(`${JSON.stringify([entry.type, entry.path, entry.sha256])}\n`);
  return hash.digest('hex');
}

/**
 * File digests by file identity. A hit needs the same device, inode, size, modification
 * time and change time (nanoseconds): a process can set a file's mtime back after editing
 * it, but not its ctime, which the kernel sets on every change. Bounded: when full, it
 * starts over.
 */
const MAX_CACHED = 200_000;
const digestCache = new Map<string, string>();

function identity(stat: BigIntStats): string {
  return `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeNs}:${stat.ctimeNs}`;
}

/**
 * SHA-256 of a regular file's bytes (symbolic links followed). Opened non-blocking and
 * checked to be a regular file before reading, so a FIFO or device cannot hang the broker.
 * A file that changes while it is read is refused, not half-digested.
 */
export function fileDigest(path: string): string {
  let fd: number | undefined;
  try {
    // O_NOCTTY: a path linked to a terminal must not become the broker's controlling terminal.
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
    const before = fstatSync(fd, { bigint: true });
    if (!before.isFile()) throw new ArtifactError(`${path} is not a regular file`);
    if (before.size > BigInt(MAX_PINNED_FILE_BYTES)) throw new ArtifactError(`${path} is ${before.size} bytes; files over ${MAX_PINNED_FILE_BYTES} bytes are not digested`);
    const key = identity(before);
    const cached = digestCache.get(key);
    if (cached !== undefined) return cached;
    const hash = createHash('sha256');
    const buffer = Buffer.allocUnsafe(1024 * 1024);
    for (;;) {
      const n = readSync(fd, buffer, 0, buffer.length, null);
      if (n === 0) break;
      hash.update(buffer.subarray(0, n));
    }
    if (identity(fstatSync(fd, { bigint: true })) !== key) throw new ArtifactError(`${path} changed while it was being read`);
    const digest = hash.digest('hex');
    if (digestCache.size >= MAX_CACHED) digestCache.clear();
    digestCache.set(key, digest);
    return digest;
  } catch (error) {
    if (error instanceof ArtifactError) throw error;
    throw new ArtifactError(`cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'read error'})`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

export interface TreeOptions {
  /** Leave out every folder named node_modules (an npm package's own files only). */
  readonly skipNodeModules?: boolean;
}

/**
 * Every regular file and symbolic link under a directory, with digests. Refused: a special
 * file (FIFO, socket, device), a name that is not UTF-8, a link whose target leaves the
 * directory (what it points at would not be covered), more than MAX_TREE_ENTRIES files,
 * links and folders together, or MAX_TREE_DEPTH levels. Empty folders are not listed: they hold nothing that runs.
 */
export function treeEntries(root: string, options: TreeOptions = {}): TreeEntry[] {
  let top: string;
  try {
    const stat = lstatSync(root);
    if (stat.isSymbolicLink()) throw new ArtifactError(`${root} is a link; pin the folder it points to`);
    if (!stat.isDirectory()) throw new ArtifactError(`${root} is not a folder`);
    top = realpathSync(root);
  } catch (error) {
    if (error instanceof ArtifactError) throw error;
    throw new ArtifactError(`cannot read ${root} (${(error as NodeJS.ErrnoException).code ?? 'read error'})`);
  }
  const entries: TreeEntry[] = [];
  let seen = 0;
  const stack: { dir: string; rel: string; depth: number }[] = [{ dir: root, rel: '', depth: 0 }];
  while (stack.length > 0) {
    const { dir, rel, depth } = stack.pop()!;
    if (depth > MAX_TREE_DEPTH) throw new ArtifactError(`${root} is nested deeper than ${MAX_TREE_DEPTH} folders`);
    let names: Buffer[];
    try {
      names = readdirSync(dir, { encoding: 'buffer' });
    } catch (error) {
      throw new ArtifactError(`cannot list ${dir} (${(error as NodeJS.ErrnoException).code ?? 'read error'})`);
    }
    for (const raw of names) {
      const name = raw.toString('utf8');
      if (!Buffer.from(name, 'utf8').equals(raw)) throw new ArtifactError(`${dir} holds a file name that is not UTF-8`);
      const path = join(dir, name);
      const relPath = rel === '' ? name : `${rel}/${name}`;
      let stat;
      try {
        stat = lstatSync(path);
      } catch (error) {
        throw new ArtifactError(`cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'read error'})`);
      }
      // Folders count too: a tree of empty folders must not make the walk unbounded.
      if (++seen > MAX_TREE_ENTRIES) throw new ArtifactError(`${root} holds more than ${MAX_TREE_ENTRIES} files and folders`);
      if (stat.isDirectory()) {
        if (!(options.skipNodeModules && name === 'node_modules')) stack.push({ dir: path, rel: relPath, depth: depth + 1 });
        continue;
      }
      if (stat.isFile()) {
        entries.push({ path: relPath, type: 'file', sha256: fileDigest(path) });
      } else if (stat.isSymbolicLink()) {
        entries.push({ path: relPath, type: 'link', sha256: linkDigest(path, top) });
      } else {
        throw new ArtifactError(`${path} is not a regular file, folder or link`);
      }
    }
  }
  return entries;
}

/** A link inside a pinned tree is pinned by its target text, and must stay inside the tree. */
function linkDigest(path: string, top: string): string {
  let target: string;
  let real: string;
  try {
    target = readlinkSync(path);
    real = realpathSync(path);
  } catch (error) {
    throw new ArtifactError(`the link ${path} cannot be followed (${(error as NodeJS.ErrnoException).code ?? 'read error'})`);
  }
  if (!isInside(real, top)) throw new ArtifactError(`the link ${path} points outside the pinned folder, to ${real}; pin its target separately or replace the link with the file`);
  return createHash('sha256').update(target).digest('hex');
}

/** A folder's tree digest, or any other path's file digest (a link is followed only to a file). */
export function pathDigest(path: string): { readonly folder: boolean; readonly sha256: string } {
  let folder = false;
  try {
    folder = lstatSync(path).isDirectory();
  } catch {
    // fileDigest says why the path cannot be read
  }
  return { folder, sha256: folder ? directoryDigest(path) : fileDigest(path) };
}

/** The path a launch argument may name: the value of `--flag=value`, else the argument itself. */
export function argumentPath(arg: string): string {
  return arg.startsWith('-') && arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : arg;
}

/** The tree digest of a directory as it is now. */
export function directoryDigest(root: string, options: TreeOptions = {}): string {
  return treeDigestOf(treeEntries(root, options));
}

/** True when path is dir itself or lies under it (both absolute, compared as written). */
export function isInside(path: string, dir: string): boolean {
  const rel = relative(dir, path);
  // "..x" is a name inside dir; only ".." itself, as the first segment, leaves it.
  return rel === '' || (!isAbsolute(rel) && rel.split(sep)[0] !== '..');
}

/** The pins of a stdio server's launch, paths absolute. */
export interface LaunchPins {
  /** SHA-256 of the resolved executable. */
  readonly command: string;
  readonly files: readonly { readonly path: string; readonly sha256: string }[];
  readonly directories: readonly { readonly path: string; readonly sha256: string }[];
  /** npm packages: the tree digest of the release's own files (node_modules left out). */
  readonly packages: readonly { readonly path: string; readonly package: string; readonly integrity: string; readonly sha256: string }[];
  /** Paths the owner declares as data the server never runs: arguments naming them need no pin. */
  readonly data: readonly string[];
}

/** One pin that does not hold: what the manifest expects and what is on disk now. */
export interface ArtifactMismatch {
  readonly kind: 'command' | 'file' | 'directory' | 'package';
  readonly path: string;
  readonly expected: string;
  /** The digest found, or why none could be computed. */
  readonly found: string;
}

/**
 * Checks every pin of a launch against the disk, now. Returns the pins that do not hold
 * (empty: everything matches). An artifact that cannot be read does not hold either.
 */
export function checkLaunchPins(command: string, pins: LaunchPins): ArtifactMismatch[] {
  const mismatches: ArtifactMismatch[] = [];
  const check = (kind: ArtifactMismatch['kind'], path: string, expected: string, digest: () => string) => {
    let found: string;
    try {
      found = digest();
    } catch (error) {
      found = error instanceof ArtifactError ? `unreadable: ${error.message}` : 'unreadable';
    }
    if (found !== expected) mismatches.push({ kind, path, expected, found });
  };
  check('command', command, pins.command, () => fileDigest(command));
  for (const file of pins.files) check('file', file.path, file.sha256, () => fileDigest(file.path));
  for (const dir of pins.directories) check('directory', dir.path, dir.sha256, () => directoryDigest(dir.path));
  for (const pkg of pins.packages) check('package', pkg.path, pkg.sha256, () => directoryDigest(pkg.path, { skipNodeModules: true }));
  return mismatches;
}

/**
 * The launch arguments that name a file or folder on disk but no pin covers. An argument
 * `--flag=value` is checked for its value too. Only what exists can be judged: a path
 * created later is caught at the next spawn, which checks again.
 */
export function unpinnedArguments(args: readonly string[], cwd: string, pins: LaunchPins): string[] {
  const covered = (path: string) =>
    pins.data.some((data) => isInside(path, data)) ||
    pins.files.some((file) => file.path === path) ||
    pins.directories.some((dir) => isInside(path, dir.path)) ||
    pins.packages.some((pkg) => isInside(path, pkg.path) && !relative(pkg.path, path).split(sep).includes('node_modules'));
  const unpinned: string[] = [];
  for (const arg of args) {
    const candidate = argumentPath(arg);
    if (candidate === '' || candidate.includes('\0')) continue;
    const path = resolve(cwd, candidate);
    let exists: boolean;
    try {
      lstatSync(path);
      exists = true;
    } catch {
      exists = false;
    }
    if (exists && !covered(path)) unpinned.push(arg);
  }
  return unpinned;
}
