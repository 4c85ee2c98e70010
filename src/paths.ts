import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The folder of mcp-warden's own package.json: a checkout, or an installed package. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 8; depth++) {
    const file = join(dir, 'package.json');
    if (existsSync(file) && (JSON.parse(readFileSync(file, 'utf8')) as { name?: string }).name === 'mcp-warden') return dir;
    dir = dirname(dir);
  }
  throw new Error('cannot find the mcp-warden package folder');
}

/** The example notes server: the TypeScript source in a checkout, compiled JavaScript in a package. */
export function notesServerScript(root: string): string {
  const source = join(root, 'examples/notes-server/server.ts');
  return existsSync(source) ? source : join(root, 'dist/examples/notes-server/server.js');
}

/** The example tickets HTTP API: the TypeScript source in a checkout, compiled JavaScript in a package. */
export function ticketsApiScript(root: string): string {
  const source = join(root, 'examples/tickets-api/server.ts');
  return existsSync(source) ? source : join(root, 'dist/examples/tickets-api/server.js');
}

/** The CLI entry point, for the command lines init prints. */
export function cliScript(root: string): string {
  return join(root, 'bin/mcp-warden');
}

/** The example code tools' module (the same file in a checkout and in a package). */
export function textToolsModule(root: string): string {
  return join(root, 'sandboxes/text-tools.js');
}
