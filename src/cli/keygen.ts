import { parseArgs } from 'node:util';
import { WardenError } from '../errors.ts';
import { writeKeyPair } from '../manifest/keys.ts';

const HELP = `Usage: mcp-warden keygen --out PREFIX

Writes a new Ed25519 key pair for signing manifests:
  PREFIX.key   the secret key (mode 0600). Keep it offline; it is never printed.
  PREFIX.pub   the public key, the base64 of its 32 bytes. The security team adds it to
               trust.publishers.<you>.keys in warden.yaml.
Prints the key id (hex SHA-256 of the public key), which signatures carry as a hint and
trust.revoked.keys lists. Existing files are never overwritten.

Then sign a manifest:
  mcp-warden manifest sign --key PREFIX.key my-server.manifest.yaml
`;

export async function runKeygen(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { out: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (positionals.length > 0) throw new WardenError('WARDEN_USAGE', `unexpected argument "${positionals[0]}"; expected: mcp-warden keygen --out PREFIX`);
  if (values.out === undefined || values.out === '') throw new WardenError('WARDEN_USAGE', 'keygen needs --out PREFIX (writes PREFIX.key and PREFIX.pub)');
  const pair = writeKeyPair(values.out);
  process.stdout.write(`key id: ${pair.keyId}
secret key: ${pair.keyFile} (mode 0600; keep it secret)
public key: ${pair.pubFile}

Trust it in warden.yaml:
  trust:
    publishers:
      <publisher>:
        keys: ["${pair.publicKey}"]
        namespaces: ["<publisher>.*"]
`);
  return 0;
}
