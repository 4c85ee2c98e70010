import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { parseDocument } from 'yaml';
import { sha256Hex } from '../config/token-hash.ts';
import { WardenError } from '../errors.ts';
import { formatEnvelope } from '../manifest/envelope.ts';
import { readSigningKey, writeKeyPair } from '../manifest/keys.ts';
import { signManifestSource } from '../manifest/sign.ts';
import { cliScript, notesServerScript, packageRoot, textToolsModule, ticketsApiScript } from '../paths.ts';
import { newToken } from './token.ts';

const HELP = `Usage: mcp-warden init DIR [--force]

Writes a complete, working example workspace into DIR:
  DIR/warden.yaml                       config: four servers, one agent named "demo"
                                        (granted code mode: warden__run_code),
                                        metrics and health on 127.0.0.1:9464
  DIR/keys/demo-publisher.key, .pub     a publisher key pair (the secret key mode 0600),
                                        trusted in warden.yaml for example.* and
                                        modelcontextprotocol.*
  DIR/manifests/notes.manifest.yaml     the bundled example notes server, and
  DIR/manifests/notes.manifest.signed.json  the same, signed with the publisher key
  DIR/manifests/everything.manifest.yaml  @modelcontextprotocol/server-everything, and
  DIR/manifests/everything.manifest.signed.json  signed
  DIR/manifests/tickets.manifest.yaml   the example tickets HTTP API (native HTTP tools,
                                        expected on http://127.0.0.1:7071/api), and
  DIR/manifests/tickets.manifest.signed.json  signed
  DIR/manifests/text.manifest.yaml      example code tools (sandboxes/text-tools.js, run in
                                        isolated-vm sandboxes), and
  DIR/manifests/text.manifest.signed.json  signed, pinning the module's SHA-256
  DIR/demo-agent.token                  the demo agent's HTTP bearer token (mode 0600)
  DIR/secrets/notes-api-token           a random API token for the notes server (mode 0600),
                                        injected by the broker; agents never see it
  DIR/secrets/tickets-api-key           the same for the tickets API (start it with
                                        node examples/tickets-api/server.ts --key-file it)
and prints how to register the broker in an MCP client.
Existing files are never overwritten unless --force is given.
`;

export interface Workspace {
  readonly dir: string;
  readonly config: string;
  readonly tokenFile: string;
  readonly token: string;
  /** False when @modelcontextprotocol/server-everything is not installed; its server is then disabled. */
  readonly hasEverything: boolean;
  /** The key the example tickets API must be started with. */
  readonly ticketsKeyFile: string;
}

export interface WorkspaceOptions {
  /** Where the example tickets API listens. Default: http://127.0.0.1:7071/api */
  readonly ticketsApiUrl?: string;
  /** metrics.listen in the config. Default: 127.0.0.1:9464 */
  readonly metricsListen?: string;
}

/** Where `npm start` runs the example tickets API. */
export const DEFAULT_TICKETS_API_URL = 'http://127.0.0.1:7071/api';

export async function runInit(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { force: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (positionals.length !== 1 || positionals[0] === undefined) throw new WardenError('WARDEN_USAGE', 'expected: mcp-warden init DIR');
  const workspace = writeWorkspace(positionals[0], values.force === true);
  process.stdout.write(registrationHelp(workspace));
  return 0;
}

/**
 * Writes the example workspace. The manifests are the repository's own, with the command
 * pinned to this Node binary and cwd to this package, so the workspace works wherever it is.
 */
export function writeWorkspace(target: string, force: boolean, options: WorkspaceOptions = {}): Workspace {
  const root = packageRoot();
  const dir = resolve(target);
  const files = {
    config: join(dir, 'warden.yaml'),
    notes: join(dir, 'manifests', 'notes.manifest.yaml'),
    everything: join(dir, 'manifests', 'everything.manifest.yaml'),
    notesSigned: join(dir, 'manifests', 'notes.manifest.signed.json'),
    everythingSigned: join(dir, 'manifests', 'everything.manifest.signed.json'),
    publisherKey: join(dir, 'keys', 'demo-publisher.key'),
    publisherPub: join(dir, 'keys', 'demo-publisher.pub'),
    token: join(dir, 'demo-agent.token'),
    notesToken: join(dir, 'secrets', 'notes-api-token'),
    tickets: join(dir, 'manifests', 'tickets.manifest.yaml'),
    ticketsSigned: join(dir, 'manifests', 'tickets.manifest.signed.json'),
    ticketsKey: join(dir, 'secrets', 'tickets-api-key'),
    text: join(dir, 'manifests', 'text.manifest.yaml'),
    textSigned: join(dir, 'manifests', 'text.manifest.signed.json'),
  };
  if (!force) {
    const existing = Object.values(files).filter((file) => existsSync(file));
    if (existing.length > 0) {
      throw new WardenError('WARDEN_INIT_TARGET_EXISTS', `${existing.join(', ')} already exist(s); choose an empty folder or pass --force`);
    }
  }

  const everythingScript = join(root, 'node_modules/@modelcontextprotocol/server-everything/dist/index.js');
  const hasEverything = existsSync(everythingScript);

  const notes = parseDocument(readFileSync(join(root, 'manifests/notes.manifest.yaml'), 'utf8'));
  notes.setIn(['transport', 'command'], process.execPath);
  notes.setIn(['transport', 'args'], [notesServerScript(root)]);
  notes.setIn(['transport', 'cwd'], root);

  const everything = parseDocument(readFileSync(join(root, 'manifests/everything.manifest.yaml'), 'utf8'));
  everything.setIn(['transport', 'command'], process.execPath);
  everything.setIn(['transport', 'args'], [everythingScript, 'stdio']);
  everything.setIn(['transport', 'cwd'], root);
  // Without the package there is nothing to pin; the server is disabled below.
  if (!hasEverything) everything.deleteIn(['transport', 'pins']);

  const ticketsApiUrl = new URL(options.ticketsApiUrl ?? DEFAULT_TICKETS_API_URL);
  const tickets = parseDocument(readFileSync(join(root, 'manifests/tickets.manifest.yaml'), 'utf8'));
  tickets.setIn(['transport', 'baseUrl'], ticketsApiUrl.href.replace(/\/$/, ''));

  // The code tools' module stays in this package; signing pins its SHA-256.
  const text = parseDocument(readFileSync(join(root, 'manifests/text.manifest.yaml'), 'utf8'));
  text.setIn(['transport', 'module'], textToolsModule(root));

  mkdirSync(join(dir, 'keys'), { recursive: true, mode: 0o700 });
  // With --force a new key replaces the old pair: everything below is signed with it.
  if (force) for (const file of [files.publisherKey, files.publisherPub]) rmSync(file, { force: true });
  const publisher = writeKeyPair(join(dir, 'keys', 'demo-publisher'));
  const key = readSigningKey(publisher.keyFile);
  const now = Date.now();
  const signedNotes = signManifestSource(notes.toJS(), files.notes, key, { now, validDays: 365 });
  const signedEverything = signManifestSource(everything.toJS(), files.everything, key, { now, validDays: 365 });
  const signedTickets = signManifestSource(tickets.toJS(), files.tickets, key, { now, validDays: 365 });
  const signedText = signManifestSource(text.toJS(), files.text, key, { now, validDays: 365 });

  const token = newToken();
  const config = parseDocument(readFileSync(join(root, 'examples/workspace/warden.yaml'), 'utf8'));
  config.setIn(['agents', 'demo', 'tokenSha256'], sha256Hex(token));
  config.setIn(['trust', 'publishers', 'demo', 'keys'], config.createNode([publisher.publicKey], { flow: true }));
  if (!hasEverything) config.setIn(['servers', 'everything', 'enabled'], false);
  if (options.metricsListen !== undefined) config.setIn(['metrics', 'listen'], options.metricsListen);
  // The egress rule for the tickets API names its origin and, since it is on loopback, its address.
  config.setIn(['egress', 'allow', 0, 'destination'], ticketsApiUrl.origin);
  config.setIn(['egress', 'allow', 0, 'addresses'], config.createNode([ticketsApiUrl.hostname.replace(/^\[|\]$/g, '')], { flow: true }));
  config.setIn(['egress', 'allow', 0, 'paths'], config.createNode([`${ticketsApiUrl.pathname.replace(/\/$/, '')}/`], { flow: true }));

  mkdirSync(join(dir, 'manifests'), { recursive: true });
  writeFileSync(files.notes, notes.toString());
  writeFileSync(files.everything, everything.toString());
  writeFileSync(files.notesSigned, formatEnvelope(signedNotes.envelope));
  writeFileSync(files.everythingSigned, formatEnvelope(signedEverything.envelope));
  writeFileSync(files.tickets, tickets.toString());
  writeFileSync(files.ticketsSigned, formatEnvelope(signedTickets.envelope));
  writeFileSync(files.text, text.toString());
  writeFileSync(files.textSigned, formatEnvelope(signedText.envelope));
  writeFileSync(files.config, config.toString());
  writeFileSync(files.token, `${token}\n`, { mode: 0o600 });
  chmodSync(files.token, 0o600);
  mkdirSync(join(dir, 'secrets'), { recursive: true, mode: 0o700 });
  writeFileSync(files.notesToken, `${randomBytes(24).toString('base64url')}\n`, { mode: 0o600 });
  chmodSync(files.notesToken, 0o600);
  writeFileSync(files.ticketsKey, `${randomBytes(24).toString('base64url')}\n`, { mode: 0o600 });
  chmodSync(files.ticketsKey, 0o600);
  return { dir, config: files.config, tokenFile: files.token, token, hasEverything, ticketsKeyFile: files.ticketsKey };
}

function registrationHelp(workspace: Workspace): string {
  const cli = cliScript(packageRoot());
  const entry = {
    mcpServers: {
      'mcp-warden': { command: process.execPath, args: [cli, 'serve', '--config', workspace.config, '--stdio', '--agent', 'demo'] },
    },
  };
  const everythingNote = workspace.hasEverything
    ? ''
    : '\nNote: @modelcontextprotocol/server-everything is not installed next to mcp-warden, so the\n"everything" server is disabled in warden.yaml (enabled: false). Install it to try it.\n';
  return `Wrote a workspace to ${workspace.dir}
${everythingNote}
Check it:
  ${cli} config check ${workspace.config}

The tickets tools call an example HTTP API; start it in another terminal:
  ${process.execPath} ${ticketsApiScript(packageRoot())} --key-file ${workspace.ticketsKeyFile}

Register the broker as the only MCP server of your host (Claude Desktop, Claude Code,
Cursor, VS Code) with this entry in its MCP configuration:
${JSON.stringify(entry, null, 2)}

Or serve Streamable HTTP and connect to http://127.0.0.1:7070/mcp with the header
"Authorization: Bearer <the token in ${workspace.tokenFile}>":
  ${cli} serve --config ${workspace.config} --http

Either way, Prometheus metrics and health are served on loopback (metrics.listen in
warden.yaml): http://127.0.0.1:9464/metrics, /healthz and /readyz.
`;
}
