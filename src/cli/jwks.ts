import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.ts';
import { WardenError } from '../errors.ts';
import { loadBrokerIdentity } from '../identity/broker-identity.ts';

const HELP = `Usage: mcp-warden jwks --config FILE

Prints the broker's public JSON Web Key Set: what a tool server needs to verify the
identity tokens the broker sends with each call (servers.<key>.identity in the config).
Publish it to your tool servers; it holds no secret. The signing key is the config's
identity.keyFile (default state/broker-identity.key), created if it does not exist yet.
`;

export async function runJwks(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { config: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (values.config === undefined || positionals.length > 0) throw new WardenError('WARDEN_USAGE', 'expected: mcp-warden jwks --config FILE');
  const config = loadConfig(values.config);
  const identity = await loadBrokerIdentity(config.identity.keyFile, config.identity.issuer);
  process.stdout.write(`${JSON.stringify(identity.jwks, null, 2)}\n`);
  return 0;
}
