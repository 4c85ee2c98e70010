import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { ManifestRejection } from './rejections.ts';

/** A code tool's module is source text; anything larger is refused unread. */
export const MAX_MODULE_BYTES = 1024 * 1024; // 1 MiB

/** A module file as read once: its text and the SHA-256 of its bytes. */
export interface ModuleFile {
  readonly source: string;
  readonly sha256: string;
}

/**
 * Reads a code tool's module: a regular file (a FIFO or device must not hang the broker),
 * at most MAX_MODULE_BYTES, UTF-8. The digest is of exactly the bytes whose text is
 * returned, so what is checked is what runs.
 */
export function readModuleFile(path: string): ModuleFile {
  let fd: number | undefined;
  let bytes: Buffer;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new ManifestRejection('module-unreadable', `the module ${path} is not a regular file`, { module: path });
    if (stat.size > MAX_MODULE_BYTES) throw new ManifestRejection('module-unreadable', `the module ${path} is ${stat.size} bytes; the limit is ${MAX_MODULE_BYTES}`, { module: path });
    // One byte past the limit at most: a file that grows meanwhile is still caught.
    const buffer = Buffer.alloc(Math.min(stat.size, MAX_MODULE_BYTES) + 1);
    let length = 0;
    while (length < buffer.length) {
      const n = readSync(fd, buffer, length, buffer.length - length, length);
      if (n === 0) break;
      length += n;
    }
    if (length > MAX_MODULE_BYTES) throw new ManifestRejection('module-unreadable', `the module ${path} is over ${MAX_MODULE_BYTES} bytes`, { module: path });
    bytes = buffer.subarray(0, length);
  } catch (error) {
    if (error instanceof ManifestRejection) throw error;
    throw new ManifestRejection('module-unreadable', `cannot read the module ${path} (${(error as NodeJS.ErrnoException).code ?? 'read error'})`, { module: path });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  let source: string;
  try {
    source = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new ManifestRejection('module-unreadable', `the module ${path} is not UTF-8 text`, { module: path });
  }
  return { source, sha256: createHash('sha256').update(bytes).digest('hex') };
}
