import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.ts';
import { ERRORS, WardenError } from '../errors.ts';

const HELP = `Usage: mcp-warden config check FILE
       mcp-warden config check --config FILE

Loads the config and verifies every signed manifest it names, exactly as "serve" would,
without changing the broker's state. A config problem is reported with its file, the path
inside it and what was expected; each refused manifest with its server, file and reason.
Exit 0 when every manifest is accepted; 3 for a config problem; 4 when any manifest is
refused (the broker would still start, without that server's tools).
Warnings (legal but probably wrong, like a grant that matches no tool) are printed too.
`;

export async function runConfig(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { config: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const [sub, file, ...extra] = positionals;
  const target = values.config ?? file;
  if (sub !== 'check' || target === undefined || extra.length > 0 || (values.config !== undefined && file !== undefined)) {
    throw new WardenError('WARDEN_USAGE', 'expected: mcp-warden config check FILE');
  }
  const config = loadConfig(target, { state: 'read-only' });
  for (const warning of config.warnings) process.stdout.write(`warning: ${warning}\n`);
  for (const [server, manifest] of config.servers) {
    process.stdout.write(`accepted: server ${server}: ${manifest.name} serial ${manifest.serial}, signed by ${manifest.signers.map((signer) => signer.publisher).join(', ')}\n`);
  }
  for (const [server, rejection] of config.rejected) {
    process.stdout.write(`refused [${rejection.reason}]: server ${server}: ${rejection.file}: ${rejection.message}\n`);
  }
  const summary = `${config.file}: ${config.servers.size} server(s), ${config.catalog.size} tool(s), ${config.agents.size} agent(s)`;
  if (config.rejected.size > 0) {
    process.stdout.write(`refused: ${summary}; ${config.rejected.size} manifest(s) refused, their tools would not exist\n`);
    return ERRORS.WARDEN_MANIFEST_REJECTED.exit;
  }
  process.stdout.write(`ok: ${summary}\n`);
  return 0;
}
