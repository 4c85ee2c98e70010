import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, dirname, isAbsolute, join, resolve } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { WardenError } from '../errors.ts';
import { readDocument } from '../config/read-document.ts';
import { describeSchemaErrors } from '../config/schema-errors.ts';
import { deepFreeze } from '../config/freeze.ts';
import manifestSchema from './manifest.schema.json' with { type: 'json' };
import type { Era, Manifest, ManifestTool } from './types.ts';
import { compileArgumentSchema, type ArgumentValidator } from '../guard/argument-schema.ts';

const validateManifest = new Ajv2020({ allErrors: true, strict: true }).compile(manifestSchema);

interface RawManifest {
  name: string;
  version: string;
  description?: string;
  transport:
    | { type: 'stdio'; command: string; args?: string[]; cwd?: string; env?: Record<string, string>; era?: Era }
    | { type: 'http'; url: string; era?: Era };
  tools: ManifestTool[];
}

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
  raw.tools.forEach((tool, index) => {
    if (validators.has(tool.name)) {
      throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: at /tools/${index}/name: tool "${tool.name}" is declared twice`, { file });
    }
    validators.set(tool.name, compileOrExplain(tool.inputSchema, `/tools/${index}/inputSchema`, file));
    if (tool.outputSchema) compileOrExplain(tool.outputSchema, `/tools/${index}/outputSchema`, file);
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
      era: raw.transport.era ?? 'auto',
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

  const manifest: Manifest = {
    file: resolve(file),
    name: raw.name,
    version: raw.version,
    ...(raw.description === undefined ? {} : { description: raw.description }),
    transport,
    tools: raw.tools,
    validators,
  };
  return deepFreeze(manifest);
}

function compileOrExplain(schema: Readonly<Record<string, unknown>>, path: string, file: string): ArgumentValidator {
  try {
    return compileArgumentSchema(schema);
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
