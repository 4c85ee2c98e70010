import { resolve } from 'node:path';
import { argumentPath, ArtifactError, directoryDigest, fileDigest, pathDigest, unpinnedArguments, type LaunchPins } from './artifacts.ts';
import { resolveCommand } from './load.ts';
import { pinInstalledPackage } from './npm-package.ts';

type Pin = Record<string, unknown>;

/**
 * A stdio manifest source with every missing pin filled in from the files on this machine:
 * the command's digest (resolved on searchPath as the broker would), each listed file,
 * folder or package without its digest, and a file or folder pin for every argument that
 * names one and is not yet covered. Digests already written are kept as they are: the
 * owner may sign on another machine than the one that runs the server. Throws ArtifactError.
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
  if (pins['command'] === undefined) {
    let command: string;
    try {
      command = resolveCommand(spec['command'], cwd, searchPath);
    } catch (error) {
      throw new ArtifactError(`${(error as Error).message}; on a machine without it, write /transport/pins/command yourself (mcp-warden manifest pin PATH, on the machine that runs the server)`);
    }
    pins['command'] = fileDigest(command);
  }
  const list = (key: string, fill: (pin: Pin, path: string) => Pin): void => {
    const entries = given[key];
    if (!Array.isArray(entries)) return;
    pins[key] = entries.map((entry: unknown) => {
      if (typeof entry !== 'object' || entry === null || typeof (entry as Pin)['path'] !== 'string') return entry;
      const pin = entry as Pin;
      return pin['sha256'] === undefined ? fill(pin, resolve(cwd, pin['path'] as string)) : pin;
    });
  };
  list('files', (pin, path) => ({ ...pin, sha256: fileDigest(path) }));
  list('directories', (pin, path) => ({ ...pin, sha256: directoryDigest(path) }));
  list('packages', (pin, path) => {
    const pinned = pinInstalledPackage(path);
    return { ...pin, package: pinned.package, integrity: pinned.integrity, sha256: pinned.sha256 };
  });

  const args = Array.isArray(spec['args']) ? spec['args'].filter((arg): arg is string => typeof arg === 'string') : [];
  const absolute = (key: string) => (Array.isArray(pins[key]) ? (pins[key] as Pin[]) : []).filter((pin) => typeof pin['path'] === 'string').map((pin) => ({ ...pin, path: resolve(cwd, pin['path'] as string) }));
  const data = Array.isArray(pins['data']) ? (pins['data'] as unknown[]).filter((path): path is string => typeof path === 'string').map((path) => resolve(cwd, path)) : [];
  const current = { command: '', files: absolute('files'), directories: absolute('directories'), packages: absolute('packages'), data } as unknown as LaunchPins;
  for (const arg of unpinnedArguments(args, cwd, current)) {
    const written = argumentPath(arg);
    const { folder, sha256 } = pathDigest(resolve(cwd, written));
    const key = folder ? 'directories' : 'files';
    pins[key] = [...(Array.isArray(pins[key]) ? (pins[key] as Pin[]) : []), { path: written, sha256 }];
  }
  return { ...source, transport: { ...spec, pins } };
}
