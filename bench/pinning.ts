// node bench/pinning.ts: what the check before every start of a stdio server costs.
// The demo's two servers: notes (the Node binary and one script) and server-everything (the
// Node binary and its installed package, as a folder pin). The first check reads every byte;
// later ones find each file's digest in the cache by its identity (device, inode, size,
// mtime, ctime) and only list and stat. Reported side by side from one process: the first
// check of each, then the median of 200 cached checks, and their ratio.
import { join } from 'node:path';
import { checkLaunchPins, directoryDigest, fileDigest, type LaunchPins } from '../src/manifest/artifacts.ts';
import { packageRoot } from '../src/paths.ts';

const root = packageRoot();
const script = join(root, 'examples/notes-server/server.ts');
const everything = join(root, 'node_modules/@modelcontextprotocol/server-everything');

const time = (fn: () => unknown): number => {
  const start = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - start) / 1e6;
};
const median = (values: number[]): number => values.sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

// Expected digests computed through a separate path so the checks below compare real values.
let notesPins: LaunchPins | undefined;
let everythingPins: LaunchPins | undefined;
const firstNotes = time(() => {
  notesPins = { command: fileDigest(process.execPath), files: [{ path: script, sha256: fileDigest(script) }], directories: [], packages: [], data: [] };
});
const firstEverything = time(() => {
  everythingPins = { command: fileDigest(process.execPath), files: [], directories: [{ path: everything, sha256: directoryDigest(everything) }], packages: [], data: [] };
});
const cached = (pins: LaunchPins) =>
  median(Array.from({ length: 200 }, () => time(() => {
    if (checkLaunchPins(process.execPath, pins).length > 0) throw new Error('pins do not match');
  })));
const notesCached = cached(notesPins!);
const everythingCached = cached(everythingPins!);
console.log('pin check before a spawn (ms)   first   cached (p50 of 200)   first/cached');
console.log(`notes (node + 1 script)       ${firstNotes.toFixed(1).padStart(7)} ${notesCached.toFixed(3).padStart(10)} ${(firstNotes / notesCached).toFixed(0).padStart(18)}x`);
console.log(`everything (node + package)   ${firstEverything.toFixed(1).padStart(7)} ${everythingCached.toFixed(3).padStart(10)} ${(firstEverything / everythingCached).toFixed(0).padStart(18)}x`);
console.log('(everything\'s first check finds the Node binary already cached by the notes row)');
