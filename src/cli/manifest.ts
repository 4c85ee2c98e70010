import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { historyRejection, loadConfig } from '../config/load.ts';
import { readDocument } from '../config/read-document.ts';
import { WardenError } from '../errors.ts';
import { formatEnvelope, type Envelope } from '../manifest/envelope.ts';
import { readSigningKey } from '../manifest/keys.ts';
import { loadSignedManifest } from '../manifest/load.ts';
import { ManifestRejection, REJECTIONS } from '../manifest/rejections.ts';
import { addSignature, signManifestSource } from '../manifest/sign.ts';
import { parseStrictJson } from '../manifest/strict-json.ts';
import { validateEnvelope } from '../manifest/verify.ts';
import type { Manifest } from '../manifest/types.ts';
import { openStateStore } from '../state/store.ts';

const HELP = `Usage: mcp-warden manifest sign --key KEY FILE [--out OUT] [--valid-days N]
       mcp-warden manifest verify --config CONFIG FILE

sign     Signs a manifest (YAML or JSON) with a key from "mcp-warden keygen" and writes the
         signed manifest, a JSON envelope, to OUT (default: FILE with its extension
         replaced by .signed.json). issuedAt defaults to now and expiresAt to now plus
         --valid-days (default 365). Refuses a manifest that breaks the schema, has an
         expiry in the past, or has invisible or control characters in any text.
         A code tool's module (transport.module, relative to OUT's folder) is read
         and its SHA-256 pinned in transport.sha256: filled in when absent, and the
         manifest refused when the file does not match the one written there.
         Given an already signed manifest, adds this key's signature (for publishers
         whose threshold is above 1) and writes it back to FILE (or OUT).
verify   Says whether the broker configured by CONFIG would accept FILE, and if not,
         why. Reads the broker's manifest history (rollback, equivocation) without
         changing it. Exit 0 when accepted; otherwise the code of the reason:
${Object.entries(REJECTIONS).map(([reason, { exit, summary }]) => `           ${String(exit).padEnd(3)} ${reason.padEnd(22)} ${summary}`).join('\n')}
`;

export async function runManifest(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      key: { type: 'string' },
      out: { type: 'string' },
      'valid-days': { type: 'string' },
      config: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const [sub, file, ...extra] = positionals;
  if (extra.length > 0) throw new WardenError('WARDEN_USAGE', `unexpected argument "${extra[0]}"`);
  if (sub === 'sign') {
    if (values.key === undefined || file === undefined) throw new WardenError('WARDEN_USAGE', 'expected: mcp-warden manifest sign --key KEY FILE [--out OUT]');
    if (values.config !== undefined) throw new WardenError('WARDEN_USAGE', '--config applies to manifest verify');
    return sign(file, values.key, values.out, parseValidDays(values['valid-days']));
  }
  if (sub === 'verify') {
    if (values.config === undefined || file === undefined) throw new WardenError('WARDEN_USAGE', 'expected: mcp-warden manifest verify --config CONFIG FILE');
    if (values.key !== undefined || values.out !== undefined || values['valid-days'] !== undefined) throw new WardenError('WARDEN_USAGE', '--key, --out and --valid-days apply to manifest sign');
    return verify(file, values.config);
  }
  throw new WardenError('WARDEN_USAGE', 'expected: mcp-warden manifest sign|verify ...; see mcp-warden manifest --help');
}

function parseValidDays(text: string | undefined): number {
  if (text === undefined) return 365;
  const days = Number(text);
  if (!Number.isInteger(days) || days < 1 || days > 3650) throw new WardenError('WARDEN_USAGE', `--valid-days expects a whole number of days from 1 to 3650, got "${text}"`);
  return days;
}

function sign(file: string, keyFile: string, out: string | undefined, validDays: number): number {
  const key = readSigningKey(keyFile);
  const now = Date.now();
  const existing = readEnvelopeIfSigned(file);
  const target = out ?? (existing ? file : defaultSignedName(file));
  // A code tool's module path is relative to the signed file's folder, as the broker reads it.
  const { envelope, manifest } = existing
    ? addSignature(existing, file, key, now)
    : signManifestSource(readDocument(file, 'WARDEN_MANIFEST_UNREADABLE'), file, key, { now, validDays, moduleBase: dirname(resolve(target)) });
  writeAtomically(target, formatEnvelope(envelope));
  process.stdout.write(
    `${existing ? 'added a signature to' : 'signed'} ${manifest.name} serial ${manifest.serial} (version ${manifest.version}), expires ${manifest.expiresAt}\n` +
      `  key id: ${key.keyId}\n  signatures: ${envelope.signatures.length}\n` +
      (manifest.transport.type === 'sandbox' ? `  module: ${manifest.transport.module}\n  module sha256: ${manifest.transport.sha256}\n` : '') +
      `  wrote: ${target}\n`,
  );
  return 0;
}

/** The envelope, when FILE is an already signed manifest; undefined for a manifest source. */
function readEnvelopeIfSigned(file: string): Envelope | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined; // readDocument reports it with the right code
  }
  let data: unknown;
  try {
    data = parseStrictJson(text);
  } catch {
    return undefined; // YAML, or not JSON at all: treated as a source
  }
  if (typeof data !== 'object' || data === null || !('payloadType' in data)) return undefined;
  if (!validateEnvelope(data)) throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: looks like a signed manifest but is not a valid envelope: ${validateEnvelope.errors?.[0]?.message ?? 'invalid'}`, { file });
  return data as unknown as Envelope;
}

function defaultSignedName(file: string): string {
  const name = basename(file).replace(/\.(ya?ml|json)$/i, '');
  return join(dirname(file), `${name}.signed.json`);
}

function writeAtomically(target: string, text: string): void {
  const temporary = `${resolve(target)}.${process.pid}.tmp`;
  try {
    writeFileSync(temporary, text, { mode: 0o644 });
    renameSync(temporary, target);
  } catch (error) {
    throw new WardenError('WARDEN_MANIFEST_UNREADABLE', `${target}: cannot write the signed manifest (${(error as NodeJS.ErrnoException).code ?? 'write error'})`, { file: target });
  }
}

function verify(file: string, configFile: string): number {
  const config = loadConfig(configFile, { state: 'read-only' });
  let manifest: Manifest;
  try {
    manifest = loadSignedManifest(file, config.trust);
    const store = openStateStore(config.state.dir, 'read-only');
    try {
      const admission = store.admit(manifest.name, manifest.serial, manifest.digest);
      if (admission !== 'accepted') throw historyRejection(admission, manifest, store);
    } finally {
      store.close();
    }
  } catch (error) {
    if (!(error instanceof ManifestRejection)) throw error;
    process.stdout.write(`refused [${error.reason}]: ${file}: ${error.message}\n`);
    return REJECTIONS[error.reason].exit;
  }
  const signers = manifest.signers.map((signer) => `${signer.keyId} (publisher ${signer.publisher})`).join('\n             ');
  process.stdout.write(
    `accepted: ${manifest.name} serial ${manifest.serial} (version ${manifest.version}), ${manifest.tools.length} tool(s)\n` +
      `  digest:    ${manifest.digest}\n  signed by: ${signers}\n  issued:    ${manifest.issuedAt}\n  expires:   ${manifest.expiresAt}\n`,
  );
  return 0;
}
