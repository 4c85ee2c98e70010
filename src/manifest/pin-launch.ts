import { relative, resolve } from 'node:path';
import { absolutePath, argumentPath, ArtifactError, argumentProblems, checkNestedPackages, directoryDigest, fileDigest, pathDigest, realPath, type LaunchPins } from './artifacts.ts';
import { resolveCommand } from './load.ts';
import { pinInstalledPackage } from './npm-package.ts';

type Pin = Record<string, unknown>;

/**
 * A stdio manifest source with every missing pin filled in from the files on this machine:
 * the command's digest (resolved on searchPath as the broker would), each listed file,
 * folder or package without its digest, and a file, folder or package pin for everything
 * an argument leads to that no pin covers (the broker's own argument check says what).
 * Digests already written are kept as they are: the owner may sign on another machine than
 * the one that runs the server. Paths are followed as the broker follows them (realPath).
 * Throws ArtifactError.
 */
export function fillLaunchPins(source: Record<string, unknown>, base: string, searchPath: string | undefined): Record<string, unknown> {
  const transport = source['transport'];
  if (typeof transport !== 'object' || transport === null || (transport as Pin)['type'] !== 'stdio') return source;
  const spec = transport as Pin;
  const raw = spec['pins'] ?? {};
  // Malformed input is left for the schema check to report with its path.
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw) || typeof spec['command'] !== 'string') return source;
  const given = raw as Pin;
  const cwd = resolve(base, typeof spec['cwd'] === 'string' ? spec['cwd'] : '.');
  const pins: Pin = { ...given };
  let command: string | undefined;
  try {
    command = resolveCommand(spec['command'], cwd, searchPath);
  } catch (error) {
    if (pins['command'] === undefined) throw new ArtifactError(`${(error as Error).message}; on a machine without it, write /transport/pins/command yourself (mcp-warden manifest pin PATH, on the machine that runs the server)`);
  }
  if (pins['command'] === undefined && command !== undefined) pins['command'] = fileDigest(realPath(command));
  // Packages pinned here, from this machine's files: their own node_modules are checked at the end.
  const pinnedHere: string[] = [];
  const pinPackage = (pin: Pin, path: string): Pin => {
    const pinned = pinInstalledPackage(path);
    pinnedHere.push(path);
    return { ...pin, package: pinned.package, integrity: pinned.integrity, sha256: pinned.sha256 };
  };
  const list = (key: string, fill: (pin: Pin, path: string) => Pin): void => {
    const entries = given[key];
    if (!Array.isArray(entries)) return;
    pins[key] = entries.map((entry: unknown) => {
      if (typeof entry !== 'object' || entry === null || typeof (entry as Pin)['path'] !== 'string') return entry;
      const pin = entry as Pin;
      return pin['sha256'] === undefined ? fill(pin, absolutePath(cwd, pin['path'] as string)) : pin;
    });
  };
  list('files', (pin, path) => ({ ...pin, sha256: fileDigest(realPath(path)) }));
  list('directories', (pin, path) => ({ ...pin, sha256: directoryDigest(realPath(path)) }));
  list('packages', pinPackage);

  const args = Array.isArray(spec['args']) ? spec['args'].filter((arg): arg is string => typeof arg === 'string') : [];
  const paths = (key: string) => (Array.isArray(pins[key]) ? (pins[key] as Pin[]) : []).filter((pin) => typeof pin['path'] === 'string').map((pin) => absolutePath(cwd, pin['path'] as string));
  const absolute = (key: string) => paths(key).map((path) => ({ path, sha256: '' }));
  const data = Array.isArray(pins['data']) ? (pins['data'] as unknown[]).filter((path): path is string => typeof path === 'string').map((path) => resolve(cwd, path)) : [];
  const current = { command: '', files: absolute('files'), directories: absolute('directories'), packages: absolute('packages'), data } as unknown as LaunchPins;
  const added = new Set<string>();
  const append = (key: string, pin: Pin) => {
    pins[key] = [...(Array.isArray(pins[key]) ? (pins[key] as Pin[]) : []), pin];
  };
  for (const problem of argumentProblems(args, cwd, current, command ?? spec['command'])) {
    const target = problem.path ?? problem.package;
    if (target === undefined) throw new ArtifactError(`the argument "${problem.arg}" ${problem.why}`);
    if (added.has(target)) continue;
    added.add(target);
    // Written as the argument writes it when it names the target exactly, else relative to cwd.
    const text = argumentPath(problem.arg);
    let named: string | undefined;
    try {
      named = realPath(absolutePath(cwd, text));
    } catch {
      named = undefined;
    }
    const written = named === target ? text : relative(realPath(cwd), target) || '.';
    if (problem.package !== undefined) {
      append('packages', pinPackage({ path: written }, problem.package));
    } else {
      const { folder, sha256 } = pathDigest(target);
      append(folder ? 'directories' : 'files', { path: written, sha256 });
    }
  }
  // A package's own node_modules may hold only packages that are pinned too.
  if (pinnedHere.length > 0) checkNestedPackages(pinnedHere, { packages: paths('packages'), directories: paths('directories') });
  return { ...source, transport: { ...spec, pins } };
}
