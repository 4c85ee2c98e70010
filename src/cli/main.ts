import { ERRORS, isWardenError, WardenError } from '../errors.ts';
import { VERSION } from '../version.ts';

export type Verb = (argv: string[]) => Promise<number>;

// Each verb's module is loaded only when that verb runs: help and small verbs start fast.
const VERBS: ReadonlyMap<string, { run: Verb; summary: string }> = new Map<string, { run: Verb; summary: string }>([
  ['serve', { run: async (argv) => (await import('./serve.ts')).runServe(argv), summary: 'run the broker for agents, over stdio or Streamable HTTP' }],
  ['init', { run: async (argv) => (await import('./init.ts')).runInit(argv), summary: 'write a complete, working example workspace into a folder' }],
  ['config', { run: async (argv) => (await import('./config.ts')).runConfig(argv), summary: 'check a config file and every manifest it names, without serving' }],
  ['keygen', { run: async (argv) => (await import('./keygen.ts')).runKeygen(argv), summary: 'make an Ed25519 key pair for signing manifests' }],
  ['manifest', { run: async (argv) => (await import('./manifest.ts')).runManifest(argv), summary: 'sign a manifest, or check whether the broker would accept one' }],
  ['token', { run: async (argv) => (await import('./token.ts')).runToken(argv), summary: 'make an agent bearer token and the hash the config stores' }],
  ['jwks', { run: async (argv) => (await import('./jwks.ts')).runJwks(argv), summary: 'print the public keys tool servers verify identity tokens with' }],
  ['policy', { run: async (argv) => (await import('./policy.ts')).runPolicy(argv), summary: 'explain what the broker would do with one agent\'s call, prompt, resource read or server request, or list what an agent may use' }],
  ['approvals', { run: async (argv) => (await import('./approvals.ts')).runApprovals(argv), summary: 'list, show, approve or deny calls waiting for a person\'s approval' }],
  ['killswitch', { run: async (argv) => (await import('./killswitch.ts')).runKillswitch(argv), summary: 'refuse every call (on), allow only reads (readonly), or resume (off)' }],
  ['audit', { run: async (argv) => (await import('./audit.ts')).runAudit(argv), summary: 'verify the audit trail\'s chain and signatures, or read it: tail, query' }],
  ['egress', { run: async (argv) => (await import('./egress.ts')).runEgress(argv), summary: 'check whether the broker would send a request to a URL, and which rule decides' }],
]);

export const USAGE = `mcp-warden ${VERSION}: an MCP tool-server security broker.
Agents register mcp-warden as their only MCP server; it shows each agent only the tools
its policy allows and refuses everything else.

Usage: mcp-warden <command> [options]

Commands:
${[...VERBS].map(([name, verb]) => `  ${name.padEnd(11)} ${verb.summary}`).join('\n')}

Run "mcp-warden <command> --help" for a command's options.

Quick start:
  mcp-warden init ./warden-demo
  mcp-warden serve --config ./warden-demo/warden.yaml --stdio --agent demo

In an incident (takes effect on running brokers within a second):
  mcp-warden killswitch on --config ./warden-demo/warden.yaml

Exit codes:
  0  success
  1  any other failure; egress check: the broker would refuse the request;
     audit verify: the trail is not intact
  2  usage error: unknown command or option, unknown agent
  3  config file unreadable or invalid
  4  a manifest unreadable, invalid or refused
  5  init refused to overwrite existing files
  6  the HTTP listener could not bind its address
  7  the broker identity key cannot be read, written or used
  8  the audit trail cannot be opened, written or read
  9  the state store (manifest history, approvals, kill switch) cannot be opened or written
  10 a signing key cannot be read, is malformed, or already exists
  11 approvals approve/deny: no such approval, or it is no longer pending
  20-41  manifest verify: the manifest is refused; the code names the reason
         (see mcp-warden manifest --help)
`;

export async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
    process.stdout.write(USAGE);
    return first === undefined ? 2 : 0;
  }
  if (first === '--version' || first === '-v') {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const verb = VERBS.get(first);
  try {
    if (!verb) throw new WardenError('WARDEN_USAGE', `unknown command "${first}". Commands: ${[...VERBS.keys()].join(', ')}. See mcp-warden --help.`);
    return await verb.run(rest);
  } catch (error) {
    return reportError(error);
  }
}

/** Prints an error for a person: the code, the message, and no stack for expected errors. */
export function reportError(error: unknown): number {
  if (isWardenError(error)) {
    process.stderr.write(`mcp-warden: ${error.code}: ${error.message}\n`);
    return error.exitCode;
  }
  // Node's parseArgs raises these for unknown or malformed options.
  const code = (error as { code?: string } | null)?.code;
  if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) {
    process.stderr.write(`mcp-warden: WARDEN_USAGE: ${(error as Error).message}. See --help.\n`);
    return ERRORS.WARDEN_USAGE.exit;
  }
  process.stderr.write(`mcp-warden: unexpected failure: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  return 1;
}
