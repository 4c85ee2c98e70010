import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { historyRejection, loadConfig } from '../config/load.ts';
import { readDocument } from '../config/read-document.ts';
import { WardenError } from '../errors.ts';
import { formatEnvelope, type Envelope } from '../manifest/envelope.ts';
import { readSigningKey } from '../manifest/keys.ts';
import { loadSignedManifest, resolveCommand } from '../manifest/load.ts';
import { ArtifactError, checkLaunch, checkNestedPackages, fileDigest, pathDigest, realPath } from '../manifest/artifacts.ts';
import { classifyAddress } from '../guard/address-class.ts';
import { pinInstalledPackage } from '../manifest/npm-package.ts';
import { ManifestRejection, REJECTIONS } from '../manifest/rejections.ts';
import { addSignature, signManifestSource } from '../manifest/sign.ts';
import { parseStrictJson } from '../manifest/strict-json.ts';
import { validateEnvelope } from '../manifest/verify.ts';
import type { Manifest } from '../manifest/types.ts';
import { openStateStore } from '../state/store.ts';

const HELP = `Usage: mcp-warden manifest sign --key KEY FILE [--out OUT] [--valid-days N]
       mcp-warden manifest verify --config CONFIG FILE
       mcp-warden manifest pin [--command CMD] [PATH ...] [--package DIR [--tarball TGZ] [--integrity SRI] [--npm-cache DIR]]

sign     Signs a manifest (YAML or JSON) with a key from "mcp-warden keygen" and writes the
         signed manifest, a JSON envelope, to OUT (default: FILE with its extension
         replaced by .signed.json). issuedAt defaults to now and expiresAt to now plus
         --valid-days (default 365). Refuses a manifest that breaks the schema, has an
         expiry in the past, or has invisible or control characters in any text.
         A code tool's module (transport.module, relative to OUT's folder) is read
         and its SHA-256 pinned in transport.sha256: filled in when absent, and the
         manifest refused when the file does not match the one written there.
         A stdio server's pins (transport.pins) are filled in from this machine's files
         where missing: the command's executable, each pinned file, folder or package
         written without its digest, and every argument that names a file or folder.
         Digests already written are kept. Relative paths are taken from the server's
         cwd, itself relative to OUT's folder.
         Given an already signed manifest, adds this key's signature (for publishers
         whose threshold is above 1) and writes it back to FILE (or OUT).
pin      Prints the digests a tool owner writes under a stdio server's transport.pins,
         as YAML to paste: --command CMD for the executable (a bare name is looked up
         on PATH, as the broker does at load); each PATH, a file (its SHA-256) or a
         folder (a tree digest over every file and link in it); --package DIR for an
         installed npm package, pinned to its registry release: the tarball whose
         SHA-512 is the registry's integrity value (the one the lockfile records, or
         --integrity) is taken from npm's cache (or --tarball, e.g. from
         "npm pack NAME@VERSION"), and the installed files must be exactly its files;
         a package in its own node_modules must be given with --package too.
         Paths print as given: give them relative to the server's cwd. Links are
         followed (never through /proc or /dev/fd) and what they lead to is digested.
verify   Says whether the broker configured by CONFIG would accept FILE, and if not,
         why. Reads the broker's manifest history (rollback, equivocation) without
         changing it. For a stdio server, also checks its pins against the files on
         this machine. A plain http URL is refused unless its host is a loopback
         address, which a config may allow (servers.<key>.allowPlainHttp).
         Exit 0 when accepted; otherwise the code of the reason:
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
      command: { type: 'string' },
      package: { type: 'string', multiple: true },
      tarball: { type: 'string' },
      integrity: { type: 'string' },
      'npm-cache': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const pinOptions = ['command', 'package', 'tarball', 'integrity', 'npm-cache'] as const;
  if (positionals[0] === 'pin') {
    if (values.key !== undefined || values.out !== undefined || values['valid-days'] !== undefined || values.config !== undefined) throw new WardenError('WARDEN_USAGE', '--key, --out, --valid-days and --config do not apply to manifest pin');
    return pin(positionals.slice(1), values);
  }
  const misplaced = pinOptions.find((option) => values[option] !== undefined);
  if (misplaced) throw new WardenError('WARDEN_USAGE', `--${misplaced} applies to manifest pin`);
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
  throw new WardenError('WARDEN_USAGE', 'expected: mcp-warden manifest sign|verify|pin ...; see mcp-warden manifest --help');
}

/** What a stdio server's pins cover, each checked against this machine's files above. */
function pinLines(manifest: Manifest): string {
  if (manifest.transport.type !== 'stdio') return '';
  const { command, pins } = manifest.transport;
  const short = (digest: string) => `sha256 ${digest.slice(0, 16)}…`;
  const lines = [
    `command   ${command} (${short(pins.command)})`,
    ...pins.files.map((pin) => `file      ${pin.path} (${short(pin.sha256)})`),
    ...pins.directories.map((pin) => `folder    ${pin.path} (tree ${short(pin.sha256)})`),
    ...pins.packages.map((pin) => `package   ${pin.package} at ${pin.path} (tree ${short(pin.sha256)})`),
  ];
  return `  pins (all match the files on this machine):\n${lines.map((line) => `    ${line}`).join('\n')}\n`;
}

/** manifest pin: digests as YAML a tool owner pastes under transport.pins. */
function pin(paths: string[], values: { command?: string | undefined; package?: string[] | undefined; tarball?: string | undefined; integrity?: string | undefined; 'npm-cache'?: string | undefined }): number {
  const packages = values.package ?? [];
  if (values.command === undefined && paths.length === 0 && packages.length === 0) throw new WardenError('WARDEN_USAGE', 'expected: mcp-warden manifest pin [--command CMD] [PATH ...] [--package DIR]; see mcp-warden manifest --help');
  if ((values.tarball !== undefined || values.integrity !== undefined) && packages.length !== 1) throw new WardenError('WARDEN_USAGE', '--tarball and --integrity describe one package: give exactly one --package DIR with them');
  const fail = (error: unknown): never => {
    if (error instanceof ArtifactError || error instanceof ManifestRejection) throw new WardenError('WARDEN_ARTIFACT_UNREADABLE', error.message);
    throw error;
  };
  const out: string[] = [];
  try {
    if (values.command !== undefined) {
      const command = resolveCommand(values.command, process.cwd(), process.env['PATH']);
      out.push(`command: "${fileDigest(realPath(command))}"  # ${command}`);
    }
    const files: string[] = [];
    const folders: string[] = [];
    const folderPaths: string[] = [];
    for (const path of paths) {
      const { folder, sha256 } = pathDigest(path);
      (folder ? folders : files).push(`  - path: ${JSON.stringify(path)}\n    sha256: "${sha256}"`);
      if (folder) folderPaths.push(path);
    }
    if (files.length > 0) out.push(`files:\n${files.join('\n')}`);
    if (folders.length > 0) out.push(`directories:\n${folders.join('\n')}`);
    const pinned = packages.map((dir) =>
      pinInstalledPackage(dir, {
        ...(values.tarball === undefined ? {} : { tarball: values.tarball }),
        ...(values.integrity === undefined ? {} : { integrity: values.integrity }),
        ...(values['npm-cache'] === undefined ? {} : { npmCache: values['npm-cache'] }),
      }),
    );
    // A package in a pinned package's own node_modules must be pinned too (given here).
    checkNestedPackages(packages, { directories: folderPaths });
    if (pinned.length > 0) out.push(`packages:\n${pinned.map((p) => `  - path: ${JSON.stringify(p.path)}\n    package: ${JSON.stringify(p.package)}\n    integrity: "${p.integrity}"\n    sha256: "${p.sha256}"`).join('\n')}`);
  } catch (error) {
    fail(error);
  }
  process.stdout.write(`${out.join('\n')}\n`);
  return 0;
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
    checkPlainHttp(manifest);
    const store = openStateStore(config.state.dir, 'read-only');
    try {
      const admission = store.admit(manifest.name, manifest.serial, manifest.digest);
      if (admission !== 'accepted') throw historyRejection(admission, manifest, store);
    } finally {
      store.close();
    }
    if (manifest.transport.type === 'stdio') {
      const { mismatches } = checkLaunch(manifest.transport);
      if (mismatches.length > 0) {
        const lines = mismatches.map((m) => `\n  ${m.kind} ${m.path}\n    pinned: ${m.expected}\n    found:  ${m.found}`).join('');
        throw new ManifestRejection('artifact-modified', `what the server runs differs from its pins; the broker would not start it:${lines}`);
      }
    }
  } catch (error) {
    if (!(error instanceof ManifestRejection)) throw error;
    process.stdout.write(`refused [${error.reason}]: ${file}: ${error.message}\n`);
    return REJECTIONS[error.reason].exit;
  }
  const signers = manifest.signers.map((signer) => `${signer.keyId} (publisher ${signer.publisher})`).join('\n             ');
  const plainHttp = manifest.transport.type === 'http' && manifest.transport.url.startsWith('http:');
  process.stdout.write(
    `accepted: ${manifest.name} serial ${manifest.serial} (version ${manifest.version}), ${manifest.tools.length} tool(s)\n` +
      `  digest:    ${manifest.digest}\n  signed by: ${signers}\n  issued:    ${manifest.issuedAt}\n  expires:   ${manifest.expiresAt}\n` +
      (plainHttp ? `  note:      plain http to a loopback address: the broker refuses it (insecure-transport) unless the config allows it for the server (servers.<key>.allowPlainHttp: true)\n` : '') +
      pinLines(manifest),
  );
  return 0;
}

/**
 * The broker's transport security rule, as far as it can be told without the server's slot
 * in the config: a Streamable HTTP server is reached over https, plain http only to a
 * loopback address written as an address, and only where the config allows it (which is
 * said when it is accepted).
 */
function checkPlainHttp(manifest: Manifest): void {
  if (manifest.transport.type !== 'http') return;
  const url = new URL(manifest.transport.url);
  if (url.protocol === 'https:') return;
  if (classifyAddress(url.hostname)?.range === 'loopback') return;
  throw new ManifestRejection('insecure-transport', `the server's URL ${url.origin} is plain http; remote servers are reached over https only. A config may allow plain http for a server on the broker's own machine, at a loopback address written as an address (servers.<key>.allowPlainHttp: true)`);
}
