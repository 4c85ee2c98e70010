import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.ts';
import { WardenError } from '../errors.ts';

const HELP = `Usage: mcp-warden config check FILE
       mcp-warden config check --config FILE

Loads the config and every manifest it names, exactly as "serve" would, and reports the
first problem with its file, the path inside it and what was expected. Exit 0 when the
broker would start; 3 for a config problem; 4 for a manifest problem.
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
  const config = loadConfig(target);
  for (const warning of config.warnings) process.stdout.write(`warning: ${warning}\n`);
  process.stdout.write(
    `ok: ${config.file}: ${config.servers.size} server(s), ${config.catalog.size} tool(s), ${config.agents.size} agent(s)\n`,
  );
  return 0;
}
