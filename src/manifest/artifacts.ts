import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, type BigIntStats } from 'node:fs';
import { basename, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArtifactError } from './artifact-error.ts';
import { classifyPreload, isNodeExecutable, NODE_EXTENSIONS, nodeModuleArguments } from './node-arguments.ts';
import { realPath } from './real-path.ts';

export { ArtifactError } from './artifact-error.ts';
export { realPath } from './real-path.ts';

/**
 * Digests of what a stdio server runs: one file (the executable, a script), or a whole
 * directory as a tree digest (an installed package, a folder of scripts). The broker
 * computes them before every spawn; manifest pin and manifest sign compute them for the
 * tool owner. Both use these functions, so what is signed and what is checked agree.
 * Every path is first resolved with realPath (links followed the way the kernel follows
 * them, nothing through /proc or /dev/fd), and the file digested is the one it leads to.
 */

/** The first line hashed into every tree digest: the format's name and version. */
const TREE_FORMAT = 'mcp-warden tree v1\n';

/** Bounds on a directory walk: a hostile or runaway tree is refused, not walked forever. */
export const MAX_TREE_ENTRIES = 100_000;
export const MAX_TREE_DEPTH = 64;
/** Largest file digested: a huge (or sparse) file must not hold the broker's event loop. */
export const MAX_PINNED_FILE_BYTES = 2 * 1024 * 1024 * 1024; // 2 GiB

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
  /** With skipNodeModules: the node_modules folders left out are added here. */
  readonly nodeModules?: string[];
}

/**
 * Every regular file and symbolic link under a directory, with digests. Refused: a special
 * file (FIFO, socket, device), a name that is not UTF-8, a link whose target leaves the
 * directory (what it points at would not be covered) or leads through /proc or /dev/fd,
 * more than MAX_TREE_ENTRIES files, links and folders together, or MAX_TREE_DEPTH levels.
 * Empty folders are not listed: they hold nothing that runs.
 */
export function treeEntries(root: string, options: TreeOptions = {}): TreeEntry[] {
  let top: string;
  try {
    const stat = lstatSync(root);
    if (stat.isSymbolicLink()) throw new ArtifactError(`${root} is a link; pin the folder it points to`);
    if (!stat.isDirectory()) throw new ArtifactError(`${root} is not a folder`);
    top = realPath(root);
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
        else options.nodeModules?.push(path);
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

/**
 * A link inside a pinned tree is pinned by its target text, and must stay inside the tree:
 * followed as the kernel follows it (realPath), so a target through /proc/self/cwd or
 * /dev/fd, which would lead elsewhere in the server, is refused.
 */
function linkDigest(path: string, top: string): string {
  let target: string;
  let real: string;
  try {
    target = readlinkSync(path);
    real = realPath(path);
  } catch (error) {
    // realPath's refusal of /proc and /dev/fd says so itself.
    if (error instanceof ArtifactError && error.code === undefined) throw error;
    throw new ArtifactError(`the link ${path} cannot be followed (${(error as NodeJS.ErrnoException).code ?? 'read error'})`);
  }
  if (!isInside(real, top)) throw new ArtifactError(`the link ${path} points outside the pinned folder, to ${real}; pin its target separately or replace the link with the file`);
  return createHash('sha256').update(target).digest('hex');
}

/** What a path leads to (realPath): a folder's tree digest, or a file's digest. */
export function pathDigest(path: string): { readonly folder: boolean; readonly sha256: string } {
  const real = realPath(path);
  const folder = isFolder(real);
  return { folder, sha256: folder ? directoryDigest(real) : fileDigest(real) };
}

/** True for a folder (a real path: no link to follow). */
function isFolder(real: string): boolean {
  try {
    return lstatSync(real).isDirectory();
  } catch {
    return false; // the digest that follows says why it cannot be read
  }
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

/**
 * An absolute path for `path` taken from `base`, with '.' names and repeated slashes removed
 * but every '..' kept: what '..' climbs out of depends on the links before it, so only the
 * walk that follows them (realPath) may apply it.
 */
export function absolutePath(base: string, path: string): string {
  const names = `${isAbsolute(path) ? '' : base}/${path}`.split('/').filter((name) => name !== '' && name !== '.');
  return `/${names.join('/')}`;
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
  readonly kind: 'command' | 'cwd' | 'file' | 'directory' | 'package';
  readonly path: string;
  /** The pinned digest ('a folder' for the working directory). */
  readonly expected: string;
  /**
   * The digest found, or why none could be computed ("unreadable: ..."), or, for a package
   * that matches, the packages in its own node_modules that no pin covers ("unpinned: ...").
   */
  readonly found: string;
}

/** An argument the pins do not cover, and why. */
export interface ArgumentProblem {
  /** The argument as written. */
  readonly arg: string;
  /** What it names and what to do, for people. */
  readonly why: string;
  /** The file or folder it leads to (a real path), when a files or directories pin on it would cover it. */
  readonly path?: string;
  /** The installed package's folder (a real path), when a packages pin on it would cover it. */
  readonly package?: string;
}

/** A launch as the broker is about to start it, checked against its pins. */
export interface LaunchCheck {
  /** The executable and the working directory with their links followed: what is started (as given when they cannot be resolved). */
  readonly command: string;
  readonly cwd: string;
  /** Pins that do not hold (the working directory included). */
  readonly mismatches: ArtifactMismatch[];
  /** Arguments naming something no pin covers. */
  readonly unpinned: ArgumentProblem[];
}

/** A path resolved once (or why it cannot be): what is digested and what arguments are compared with must be the same file. */
type Located = string | ArtifactError;

function locate(path: string): Located {
  try {
    return realPath(path);
  } catch (error) {
    if (error instanceof ArtifactError) return error;
    throw error;
  }
}

function located(where: Located): string {
  if (where instanceof ArtifactError) throw where;
  return where;
}

/**
 * The pins with their paths resolved once. Declared data stays as written: it covers an
 * argument by the argument's text, never by where a link leads (a link into a data folder,
 * which the server writes, must not pass for covered code).
 */
interface PlacedPins {
  readonly files: readonly { readonly pin: LaunchPins['files'][number]; readonly real: Located }[];
  readonly directories: readonly { readonly pin: LaunchPins['directories'][number]; readonly real: Located }[];
  readonly packages: readonly { readonly pin: LaunchPins['packages'][number]; readonly real: Located }[];
  readonly data: readonly string[];
}

function place(pins: LaunchPins): PlacedPins {
  return {
    files: pins.files.map((pin) => ({ pin, real: locate(pin.path) })),
    directories: pins.directories.map((pin) => ({ pin, real: locate(pin.path) })),
    packages: pins.packages.map((pin) => ({ pin, real: locate(pin.path) })),
    data: pins.data,
  };
}

/** What the pins cover, as real paths (a pin that cannot be resolved covers nothing; its digest check reports it). */
interface Coverage {
  readonly files: ReadonlySet<string>;
  readonly directories: readonly string[];
  readonly packages: readonly string[];
}

function coverageOf(placed: PlacedPins): Coverage {
  const reals = (list: readonly { readonly real: Located }[]) => list.flatMap(({ real }) => (typeof real === 'string' ? [real] : []));
  return { files: new Set(reals(placed.files)), directories: reals(placed.directories), packages: reals(placed.packages) };
}

/** A real path covered by a pin: a file pin on it, a folder pin around it, or a package pin around it (outside that package's node_modules). */
function covers(coverage: Coverage, real: string): boolean {
  return (
    coverage.files.has(real) ||
    coverage.directories.some((dir) => isInside(real, dir)) ||
    coverage.packages.some((pkg) => isInside(real, pkg) && !relative(pkg, real).split(sep).includes('node_modules'))
  );
}

/** An installed package's folder (real path) covered by a packages pin on it, or a folder pin around it. */
function coversPackage(coverage: Coverage, real: string): boolean {
  return coverage.packages.includes(real) || coverage.directories.some((dir) => isInside(real, dir));
}

/**
 * Checks every pin of a launch against the disk, now. Returns the pins that do not hold
 * (empty: everything matches). An artifact that cannot be read does not hold either.
 */
export function checkLaunchPins(command: string, pins: LaunchPins): ArtifactMismatch[] {
  return pinMismatches(command, locate(command), pins.command, place(pins));
}

/**
 * The check the broker makes just before it starts a stdio server: the executable, the
 * working directory, every pin and every argument, each path resolved once. The server is
 * then started from the resolved executable and working directory, so what starts is what
 * was checked (see LaunchCheck).
 */
export function checkLaunch(launch: { readonly command: string; readonly args: readonly string[]; readonly cwd: string; readonly pins: LaunchPins }): LaunchCheck {
  const command = locate(launch.command);
  const cwd = locate(launch.cwd);
  const placed = place(launch.pins);
  const mismatches = pinMismatches(launch.command, command, launch.pins.command, placed);
  const cwdProblem = cwd instanceof ArtifactError ? cwd : isFolder(cwd) ? undefined : new ArtifactError(`${launch.cwd} is not a folder`);
  if (cwdProblem) mismatches.push({ kind: 'cwd', path: launch.cwd, expected: 'a folder', found: `unreadable: ${cwdProblem.message}` });
  return {
    command: typeof command === 'string' ? command : launch.command,
    cwd: typeof cwd === 'string' ? cwd : launch.cwd,
    mismatches,
    unpinned: argumentProblemsAt(launch.args, launch.cwd, cwd, placed, isNode(launch.command, command)),
  };
}

function pinMismatches(command: string, commandReal: Located, expectedCommand: string, placed: PlacedPins): ArtifactMismatch[] {
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
  check('command', command, expectedCommand, () => fileDigest(located(commandReal)));
  for (const { pin, real } of placed.files) check('file', pin.path, pin.sha256, () => fileDigest(located(real)));
  for (const { pin, real } of placed.directories) check('directory', pin.path, pin.sha256, () => directoryDigest(located(real)));
  const coverage = coverageOf(placed);
  for (const { pin, real } of placed.packages) {
    check('package', pin.path, pin.sha256, () => {
      const nodeModules: string[] = [];
      const digest = treeDigestOf(treeEntries(located(real), { skipNodeModules: true, nodeModules }));
      if (digest !== pin.sha256) return digest;
      const stray = strayInNodeModules(located(real), nodeModules, coverage);
      return stray.length === 0 ? digest : `unpinned: ${describeStray(stray)} in its node_modules, which Node loads before any pinned copy`;
    });
  }
  return mismatches;
}

/**
 * What the node_modules folders inside an npm package (at any depth of its own files) hold
 * that no pin covers, relative to the package. A package pin leaves node_modules out of its
 * digest, and Node resolves a dependency from the nearest node_modules first, so a package
 * there would shadow a pinned one: each must be pinned itself (a packages pin on that
 * folder, or a folder pin around it). Also refused: anything else there, except a .bin
 * folder of links into pinned files.
 */
function strayInNodeModules(root: string, folders: readonly string[], coverage: Coverage): string[] {
  const stray: string[] = [];
  let seen = 0;
  const list = (folder: string): string[] => {
    let names: string[];
    try {
      names = readdirSync(folder);
    } catch (error) {
      throw new ArtifactError(`cannot list ${folder} (${(error as NodeJS.ErrnoException).code ?? 'read error'})`);
    }
    seen += names.length;
    if (seen > MAX_TREE_ENTRIES) throw new ArtifactError(`${root} holds more than ${MAX_TREE_ENTRIES} entries in its node_modules folders`);
    return names.map((name) => join(folder, name));
  };
  const isPackage = (path: string) => {
    const real = locate(path);
    return typeof real === 'string' && coversPackage(coverage, real);
  };
  for (const folder of folders) {
    for (const path of list(folder)) {
      const name = basename(path);
      if (name === '.bin' && isFolder(path)) {
        for (const bin of list(path)) {
          const real = locate(bin);
          if (typeof real !== 'string' || !covers(coverage, real)) stray.push(relative(root, bin));
        }
      } else if (name.startsWith('@') && isFolder(path)) {
        for (const scoped of list(path)) if (!isPackage(scoped)) stray.push(relative(root, scoped));
      } else if (!isPackage(path)) {
        stray.push(relative(root, path));
      }
    }
  }
  return stray;
}

function describeStray(stray: readonly string[]): string {
  return stray.length > 5 ? `${stray.slice(0, 5).join(', ')} and ${stray.length - 5} more` : stray.join(', ');
}

/**
 * Refuses an npm package (paths as given) whose own node_modules folders hold a package that
 * no package pin (these, and `pinned`) or folder pin covers: `manifest pin` and `manifest
 * sign`, before writing a pin the broker would not start. Throws ArtifactError saying what to pin.
 */
export function checkNestedPackages(packages: readonly string[], pinned: { readonly packages?: readonly string[]; readonly directories?: readonly string[] } = {}): void {
  const reals = (paths: readonly string[]) =>
    paths.flatMap((path) => {
      const real = locate(path);
      return typeof real === 'string' ? [real] : [];
    });
  const coverage: Coverage = { files: new Set(), directories: reals(pinned.directories ?? []), packages: reals([...packages, ...(pinned.packages ?? [])]) };
  for (const dir of packages) {
    const root = realPath(dir);
    const nodeModules: string[] = [];
    treeEntries(root, { skipNodeModules: true, nodeModules });
    const stray = strayInNodeModules(root, nodeModules, coverage);
    if (stray.length > 0) {
      throw new ArtifactError(`the package at ${dir} holds ${describeStray(stray)} in its own node_modules, which no package pin covers: Node loads a dependency from there before any pinned copy. Pin each of them as a package too (${join(dir, stray[0]!)}), or reinstall without them (npm ci)`);
    }
  }
}

/** This broker's own Node executable, for recognising a server run by it. */
let ownNode: string | undefined;

/** True when the launch's executable is Node (its Node-specific argument forms then count). */
function isNode(command: string, real: Located): boolean {
  if (ownNode === undefined) {
    const own = locate(process.execPath);
    ownNode = typeof own === 'string' ? own : process.execPath;
  }
  return isNodeExecutable(typeof real === 'string' ? [command, real] : [command], ownNode);
}

/**
 * The arguments that name something on disk that no pin covers (see argumentProblems),
 * as written.
 */
export function unpinnedArguments(args: readonly string[], cwd: string, pins: LaunchPins, command?: string): string[] {
  return [...new Set(argumentProblems(args, cwd, pins, command).map((problem) => problem.arg))];
}

/**
 * The launch arguments that lead to a file or folder no pin covers, or that cannot be
 * judged. Each argument, and the value of an `--option=value` one, is taken as a path from
 * the working directory the way the kernel resolves it (links first, then '..') and the way
 * Node resolves a module path (the text against the working directory first); a `file:` URL
 * as the path it names. When the command is Node (named node or nodejs, or the broker's own
 * Node), also what Node would load: a plain argument with the endings Node tries and a
 * folder's entry points, the value of -r, --require, --import, --loader and
 * --experimental-loader likewise, or, for a bare package name, the package installed in the
 * nearest node_modules above the working directory, which a packages pin must cover.
 * Only what exists can be judged: a path created later is caught at the next spawn, which
 * checks again. Declared data (pins.data) needs no pin.
 */
export function argumentProblems(args: readonly string[], cwd: string, pins: LaunchPins, command?: string): ArgumentProblem[] {
  const node = command !== undefined && isNode(command, locate(command));
  return argumentProblemsAt(args, cwd, locate(cwd), place(pins), node);
}

function argumentProblemsAt(args: readonly string[], cwd: string, cwdReal: Located, placed: PlacedPins, node: boolean): ArgumentProblem[] {
  const coverage = coverageOf(placed);
  const problems: ArgumentProblem[] = [];
  const reported = new Set<string>();
  const report = (problem: ArgumentProblem) => {
    // One report per argument and target; an argument that cannot be judged, once.
    const key = JSON.stringify([problem.arg, problem.path ?? problem.package ?? '']);
    if (reported.has(key)) return;
    reported.add(key);
    problems.push(problem);
  };
  const exact = 'write the argument as the exact path of a pinned file';
  /** Judges one place an argument leads to; returns it when something is there. */
  const judge = (arg: string, where: Located): string | undefined => {
    if (where instanceof ArtifactError) {
      // Nothing there (yet): nothing to run. Anything else that stops the walk is refused.
      if (!where.missing) report({ arg, why: `cannot be checked: ${where.message}` });
      return undefined;
    }
    if (!covers(coverage, where)) report({ arg, why: `leads to ${where}, which no pin covers; pin it under /transport/pins (files, directories or packages) so a changed file cannot run`, path: where });
    return where;
  };
  // Declared data is never run: an argument whose text names it is not followed (so /dev/stderr can be data).
  const isData = (text: string) => placed.data.some((data) => isInside(resolve(cwd, text), data));
  /**
   * Judges where a path (as written, from the working directory) leads, both ways a server
   * may resolve it: the kernel's (links first, then '..') and Node's for a module path (the
   * text against its working directory first, then the links). They differ only after a link
   * followed by '..'; each must be covered.
   */
  const judgePath = (arg: string, text: string): void => {
    if (!isAbsolute(text) && cwdReal instanceof ArtifactError) return void judge(arg, cwdReal);
    const base = isAbsolute(text) ? '/' : (cwdReal as string);
    judge(arg, locate(`${base}/${text}`));
    judge(arg, locate(resolve(base, text)));
  };
  const fileUrlPath = (text: string): string | undefined => {
    try {
      return fileURLToPath(text);
    } catch {
      return undefined;
    }
  };

  for (const arg of args) {
    const text = argumentPath(arg);
    if (text === '' || text.includes('\0') || isData(text)) continue;
    judgePath(arg, text);
    const url = text.startsWith('file:') ? fileUrlPath(text) : undefined;
    if (url !== undefined && !isData(url)) judge(arg, locate(url));
  }
  if (!node) return problems;

  /**
   * A module path as Node resolves it: the text against its working directory, then
   * endings, then a folder's package.json main and index. Declared data is code too when a
   * preload option names it: the server may write its data, so it is never exempt there.
   */
  const modulePath = (arg: string, text: string, dataExempt = true) => {
    if (dataExempt && isData(text)) return;
    if (!isAbsolute(text) && cwdReal instanceof ArtifactError) return void judge(arg, cwdReal);
    const base = isAbsolute(text) ? resolve(text) : resolve(cwdReal as string, text);
    const tryPath = (path: string) => judge(arg, locate(path));
    const found = tryPath(base);
    for (const ending of NODE_EXTENSIONS) tryPath(base + ending);
    if (found === undefined || !isFolder(found)) return;
    const main = packageMain(found);
    if (main instanceof ArtifactError) return void report({ arg, why: `cannot be checked: ${main.message}, so what Node loads from ${found} cannot be told; ${exact}` });
    for (const entry of main === undefined ? [] : [main]) {
      tryPath(entry);
      for (const ending of NODE_EXTENSIONS) tryPath(entry + ending);
      for (const ending of NODE_EXTENSIONS) tryPath(join(entry, `index${ending}`));
    }
    for (const ending of NODE_EXTENSIONS) tryPath(join(found, `index${ending}`));
  };
  /** A bare package name: the installed package Node would load must be pinned as a package. */
  const packageName = (arg: string, name: string) => {
    if (cwdReal instanceof ArtifactError) return void judge(arg, cwdReal);
    const folders = packageFolders(name, cwdReal);
    if (folders.length === 0) {
      return void report({ arg, why: `names the package ${name}, which no node_modules folder above ${cwdReal} holds (Node could find it elsewhere); install it beside the server and pin it under /transport/pins/packages, or ${exact}` });
    }
    for (const folder of folders) {
      if (folder instanceof ArtifactError) report({ arg, why: `cannot be checked: ${folder.message}; ${exact}` });
      else if (!coversPackage(coverage, folder)) report({ arg, why: `loads the package ${name} installed at ${folder}, which no package pin covers; pin it under /transport/pins/packages, or ${exact}`, package: folder });
    }
  };

  for (const { arg, specifier, preload } of nodeModuleArguments(args)) {
    if (specifier === '' || specifier.includes('\0')) continue;
    if (!preload) {
      modulePath(arg, specifier);
      continue;
    }
    const what = classifyPreload(specifier);
    if (what.kind === 'path') modulePath(arg, what.path, false);
    else if (what.kind === 'package') packageName(arg, what.name);
    else if (what.kind === 'unknown') report({ arg, why: `${what.why}; ${exact}` });
    else if (what.kind === 'url') {
      const path = fileUrlPath(specifier);
      if (path === undefined) report({ arg, why: `is not a file: URL of a local file; ${exact}` });
      else modulePath(arg, path, false);
    }
  }
  return problems;
}

/** Largest package.json read to find a folder's main. */
const MAX_PACKAGE_JSON_BYTES = 1024 * 1024;

/**
 * The "main" of a folder's package.json, resolved against the folder (it may point out of
 * it), or undefined without a package.json or a main; an ArtifactError when it cannot be read.
 */
function packageMain(folder: string): string | undefined | ArtifactError {
  const file = locate(join(folder, 'package.json'));
  if (file instanceof ArtifactError) return file.missing ? undefined : file;
  const json = readJson(file);
  if (json instanceof ArtifactError) return json;
  const main = json['main'];
  return typeof main === 'string' && main !== '' ? resolve(folder, main) : undefined;
}

/**
 * The folders a bare package name leads Node to from the working directory: the nearest
 * package.json's own folder when it has that name (a package may import itself), and the
 * first node_modules/<name> from the working directory up.
 */
function packageFolders(name: string, cwd: string): Located[] {
  const folders: Located[] = [];
  for (let dir = cwd; ; dir = resolve(dir, '..')) {
    const file = locate(join(dir, 'package.json'));
    if (file instanceof ArtifactError && !file.missing) {
      folders.push(file);
      break;
    }
    if (typeof file === 'string') {
      const json = readJson(file);
      if (json instanceof ArtifactError) folders.push(json);
      else if (json['name'] === name) folders.push(dir);
      break;
    }
    if (dir === '/') break;
  }
  for (let dir = cwd; ; dir = resolve(dir, '..')) {
    if (basename(dir) !== 'node_modules') {
      const folder = locate(join(dir, 'node_modules', name));
      if (!(folder instanceof ArtifactError && folder.missing)) {
        folders.push(folder);
        break;
      }
    }
    if (dir === '/') break;
  }
  return folders;
}

/** A small JSON object file (a real path), read without blocking on a FIFO or device. */
function readJson(file: string): Record<string, unknown> | ArtifactError {
  let fd: number | undefined;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
    const stat = fstatSync(fd);
    if (!stat.isFile() || stat.size > MAX_PACKAGE_JSON_BYTES) return new ArtifactError(`${file} is not a regular file of at most ${MAX_PACKAGE_JSON_BYTES} bytes`);
    const buffer = Buffer.alloc(stat.size);
    let length = 0;
    while (length < buffer.length) {
      const n = readSync(fd, buffer, length, buffer.length - length, length);
      if (n === 0) break;
      length += n;
    }
    const value: unknown = JSON.parse(buffer.subarray(0, length).toString('utf8'));
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return new ArtifactError(`${file} is not a JSON object`);
    return value as Record<string, unknown>;
  } catch (error) {
    if (error instanceof SyntaxError) return new ArtifactError(`${file} is not valid JSON`);
    return new ArtifactError(`cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? 'read error'})`, (error as NodeJS.ErrnoException).code);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
