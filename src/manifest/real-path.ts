import { lstatSync, readlinkSync, statfsSync } from 'node:fs';
import { dirname, isAbsolute } from 'node:path';
import { ArtifactError } from './artifact-error.ts';

/**
 * Folders whose paths name another file in every process that follows them: /proc/self/cwd
 * is the broker's working directory when the broker reads it and the server's when the
 * server does; the same for /proc/<pid>/..., /proc/thread-self and /dev/fd/N. A pinned path
 * that leads through one could be checked in one place and run from another.
 */
const PER_PROCESS_FOLDERS = ['/proc', '/dev/fd'] as const;
/** statfs(2) type of procfs: its links are per process wherever it is mounted. */
const PROC_SUPER_MAGIC = 0x9fa0;
/** The kernel follows at most 40 links while resolving one path (MAXSYMLINKS). */
const MAX_LINKS = 40;

/**
 * The path with every link followed, the way the kernel follows it when a process opens it:
 * one name at a time, a link's target put in the link's place, and each '..' applied to the
 * folder reached so far (after the links before it), never to the text. Like realpath(3),
 * except that it refuses a path that enters /proc or /dev/fd or follows a link kept in a
 * procfs folder, and that a missing path (or folder on the way) is an ArtifactError whose
 * `missing` is true. A relative path is taken from the broker's working directory.
 */
export function realPath(path: string): string {
  const absolute = isAbsolute(path) ? path : `${process.cwd()}/${path}`;
  const fail = (error: unknown): ArtifactError => {
    const code = (error as NodeJS.ErrnoException).code ?? 'read error';
    return new ArtifactError(`cannot read ${path} (${code})`, code);
  };
  // The names still to walk, the next one last.
  const pending = absolute.split('/').reverse();
  let real = '/';
  let links = 0;
  let via = ''; // the last link followed, for the message
  while (pending.length > 0) {
    const name = pending.pop()!;
    if (name === '' || name === '.') continue;
    if (name === '..') {
      // real holds no link, so its parent as text is its parent on disk.
      real = dirname(real);
      continue;
    }
    const next = real === '/' ? `/${name}` : `${real}/${name}`;
    const folder = PER_PROCESS_FOLDERS.find((prefix) => next === prefix || next.startsWith(`${prefix}/`));
    if (folder) throw perProcess(path, folder, via);
    let stat;
    try {
      stat = lstatSync(next);
    } catch (error) {
      throw fail(error);
    }
    if (stat.isSymbolicLink()) {
      if (++links > MAX_LINKS) throw new ArtifactError(`cannot read ${path} (ELOOP)`, 'ELOOP');
      // procfs mounted somewhere else than /proc: its links are just as per-process.
      let procfs: boolean;
      try {
        procfs = statfsSync(real).type === PROC_SUPER_MAGIC;
      } catch (error) {
        throw fail(error);
      }
      if (procfs) throw perProcess(path, real, via);
      let target: string;
      try {
        target = readlinkSync(next);
      } catch (error) {
        throw fail(error);
      }
      via = `${next} -> ${target}`;
      if (target.startsWith('/')) real = '/';
      pending.push(...target.split('/').reverse());
      continue;
    }
    // Only a folder has names under it: "file/x", "file/.." and "file/" fail, as for the kernel.
    if (!stat.isDirectory() && pending.length > 0) throw new ArtifactError(`cannot read ${path} (ENOTDIR)`, 'ENOTDIR');
    real = next;
  }
  return real;
}

function perProcess(path: string, folder: string, via: string): ArtifactError {
  const link = via === '' ? '' : ` through the link ${via}`;
  return new ArtifactError(`${path} leads into ${folder}${link}, where a path names another file in every process (the broker would check one file and the server run another); point it at the file itself`);
}
