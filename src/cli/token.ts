import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { sha256Hex } from '../config/token-hash.ts';
import { WardenError } from '../errors.ts';

const HELP = `Usage: mcp-warden token new
       mcp-warden token hash < token-file

new   prints a fresh random bearer token (256 bits) on the first line and its SHA-256 on
      the second. Give the token to the agent's host; put only the hash in the config as
      agents.<name>.tokenSha256.
hash  reads a token on standard input and prints its SHA-256.
`;

/** Longest token accepted on stdin, in bytes. */
const MAX_TOKEN_BYTES = 4096;

export async function runToken(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (positionals.length === 1 && positionals[0] === 'new') {
    const token = newToken();
    process.stdout.write(`${token}\n${sha256Hex(token)}\n`);
    return 0;
  }
  if (positionals.length === 1 && positionals[0] === 'hash') {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of process.stdin) {
      size += (chunk as Buffer).length;
      if (size > MAX_TOKEN_BYTES) throw new WardenError('WARDEN_USAGE', `a token is at most ${MAX_TOKEN_BYTES} bytes`);
      chunks.push(chunk as Buffer);
    }
    const token = Buffer.concat(chunks).toString('utf8').trim();
    if (!/^[\x21-\x7e]+$/.test(token)) throw new WardenError('WARDEN_USAGE', 'the token on standard input is empty or has characters a bearer token cannot have');
    process.stdout.write(`${sha256Hex(token)}\n`);
    return 0;
  }
  throw new WardenError('WARDEN_USAGE', 'expected: mcp-warden token new | mcp-warden token hash');
}

export function newToken(): string {
  return `mwt_${randomBytes(32).toString('base64url')}`;
}
