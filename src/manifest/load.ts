import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, dirname, isAbsolute, join, resolve } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { WardenError } from '../errors.ts';
import { readDocument } from '../config/read-document.ts';
import { describeSchemaErrors } from '../config/schema-errors.ts';
import { deepFreeze } from '../config/freeze.ts';
import manifestSchema from './manifest.schema.json' with { type: 'json' };
import type { Era, Manifest, ManifestCredential, ManifestTool } from './types.ts';
import { compileArgumentSchema, type ArgumentValidator } from '../guard/argument-schema.ts';
import { compileOutputScope, type OutputScope } from '../guard/output-scope.ts';

const validateManifest = new Ajv2020({ allErrors: true, strict: true }).compile(manifestSchema);

interface RawManifest {
  name: string;
  version: string;
  description?: string;
  transport:
    | { type: 'stdio'; command: string; args?: string[]; cwd?: string; env?: Record<string, string>; era?: Era }
    | { type: 'http'; url: string; era?: Era };
  tools: ManifestTool[];
  credentials?: { name: string; env?: string; header?: string; prefix?: string }[];
}

/** Headers the transport itself owns; a credential may not set them. */
const RESERVED_HEADERS = new Set(['host', 'content-length', 'content-type', 'transfer-encoding', 'connection', 'accept', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id']);

/**
 * Loads one manifest: parse, validate against the published schema, resolve the stdio
 * command to an absolute path once, and freeze. Every failure is WARDEN_MANIFEST_* with
 * the file and the path inside it.
 */
export function loadManifest(file: string, searchPath: string | undefined = process.env['PATH']): Manifest {
  const data = readDocument(file, 'WARDEN_MANIFEST_UNREADABLE');
  if (!validateManifest(data)) {
    const problems = describeSchemaErrors(validateManifest.errors);
    throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: invalid manifest:\n  ${problems.join('\n  ')}`, { file, problems });
  }
  const raw = data as unknown as RawManifest;

  const validators = new Map<string, ArgumentValidator>();
  const outputValidators = new Map<string, ArgumentValidator>();
  const outputScopes = new Map<string, OutputScope>();
  raw.tools.forEach((tool, index) => {
    if (validators.has(tool.name)) {
      throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: at /tools/${index}/name: tool "${tool.name}" is declared twice`, { file });
    }
    validators.set(tool.name, compileOrExplain(tool.inputSchema, `/tools/${index}/inputSchema`, file));
    if (tool.outputSchema) outputValidators.set(tool.name, compileOrExplain(tool.outputSchema, `/tools/${index}/outputSchema`, file, false));
    if (tool.outputFields) {
      try {
        outputScopes.set(tool.name, compileOutputScope(tool.outputFields));
      } catch (error) {
        throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: at /tools/${index}/outputFields: ${(error as Error).message}`, { file });
      }
    }
  });

  const base = dirname(resolve(file));
  let transport: Manifest['transport'];
  if (raw.transport.type === 'stdio') {
    const cwd = resolve(base, raw.transport.cwd ?? '.');
    transport = {
      type: 'stdio',
      command: resolveCommand(raw.transport.command, cwd, searchPath, file),
      args: raw.transport.args ?? [],
      cwd,
      env: toPlainRecord(raw.transport.env ?? {}),
      // Over stdio, auto and modern make the SDK start the server a second time, briefly,
      // to probe its era (with the same environment, credentials included): legacy unless
      // the manifest asks.
      era: raw.transport.era ?? 'legacy',
    };
  } else {
    let url: URL;
    try {
      url = new URL(raw.transport.url);
    } catch {
      throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: at /transport/url: not a valid URL`, { file });
    }
    if (url.username !== '' || url.password !== '') {
      throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: at /transport/url: credentials must not be written into the URL`, { file });
    }
    transport = { type: 'http', url: url.href, era: raw.transport.era ?? 'auto' };
  }

  const credentials = checkCredentials(raw, transport, file);

  const manifest: Manifest = {
    file: resolve(file),
    name: raw.name,
    version: raw.version,
    ...(raw.description === undefined ? {} : { description: raw.description }),
    transport,
    tools: raw.tools,
    credentials,
    validators,
    outputValidators,
    outputScopes,
  };
  return deepFreeze(manifest);
}

function checkCredentials(raw: RawManifest, transport: Manifest['transport'], file: string): ManifestCredential[] {
  const names = new Set<string>();
  const targets = new Set<string>();
  return (raw.credentials ?? []).map((credential, index) => {
    const where = `${file}: at /credentials/${index}`;
    const fail = (why: string) => new WardenError('WARDEN_MANIFEST_INVALID', `${where}: ${why}`, { file });
    if (names.has(credential.name)) throw fail(`credential "${credential.name}" is declared twice`);
    names.add(credential.name);
    if (transport.type === 'stdio') {
      if (credential.header !== undefined || credential.prefix !== undefined) throw fail('header and prefix apply to http servers; a stdio server gets its credentials as environment variables (env)');
      const env = credential.env ?? credential.name;
      if (env in transport.env) throw fail(`environment variable "${env}" is also set in /transport/env; a credential cannot share it`);
      if (targets.has(env)) throw fail(`environment variable "${env}" is used by two credentials`);
      targets.add(env);
      return { name: credential.name, env, prefix: '' };
    }
    if (credential.env !== undefined) throw fail('env applies to stdio servers; an http server gets its credentials as request headers (header)');
    if (credential.header === undefined) throw fail('an http server\'s credential needs a header, e.g. header: Authorization, prefix: "Bearer "');
    const header = credential.header.toLowerCase();
    if (RESERVED_HEADERS.has(header)) throw fail(`header "${credential.header}" belongs to the transport and cannot carry a credential`);
    if (targets.has(header)) throw fail(`header "${credential.header}" is used by two credentials`);
    targets.add(header);
    return { name: credential.name, header: credential.header, prefix: credential.prefix ?? '' };
  });
}

function compileOrExplain(schema: Readonly<Record<string, unknown>>, path: string, file: string, closed = true): ArgumentValidator {
  try {
    return compileArgumentSchema(schema, { closeObjects: closed });
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: at ${path}: the schema does not compile: ${reason}`, { file, path });
  }
}

/**
 * Resolves the executable once, at load, so a PATH change later cannot redirect a spawn.
 * A bare name is looked up on the broker's PATH; a relative path is taken from cwd.
 */
export function resolveCommand(command: string, cwd: string, searchPath: string | undefined, file: string): string {
  const candidates = isAbsolute(command)
    ? [command]
    : command.includes('/')
      ? [resolve(cwd, command)]
      : (searchPath ?? '').split(delimiter).filter((dir) => isAbsolute(dir)).map((dir) => join(dir, command));
  for (const candidate of candidates) {
    try {
      if (!statSync(candidate).isFile()) continue;
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not this one; try the next directory
    }
  }
  throw new WardenError(
    'WARDEN_MANIFEST_INVALID',
    `${file}: at /transport/command: "${command}" is not an executable file${isAbsolute(command) || command.includes('/') ? '' : ' on PATH'}`,
    { file, command },
  );
}

function toPlainRecord(source: Record<string, string>): Record<string, string> {
  const target: Record<string, string> = Object.create(null);
  for (const [key, value] of Object.entries(source)) target[key] = value;
  return target;
}
