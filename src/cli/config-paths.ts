import { dirname, resolve } from 'node:path';
import { WardenError } from '../errors.ts';

/** The defaults of config/load.ts for these paths; that module is not imported: it compiles the whole config schema. */
const DEFAULTS = { stateDir: 'state', auditFile: 'audit/audit.jsonl', auditKeyFile: 'state/audit-signing.key' } as const;

export interface ConfigPaths {
  readonly stateDir: string;
  readonly auditFile: string;
  readonly auditKeyFile: string;
}

/**
 * The state folder and the audit trail's files, from the config, the way loadConfig
 * resolves them, but without validating the rest or verifying any manifest: stopping
 * calls and reading the audit trail must not depend on the config being loadable. The
 * document must still look like an mcp-warden config, so a wrong file is caught.
 */
export async function configPaths(configFile: string): Promise<ConfigPaths> {
  const { readDocument } = await import('../config/read-document.ts');
  const path = resolve(configFile);
  const data = readDocument(path, 'WARDEN_CONFIG_UNREADABLE');
  if (!isObject(data) || data['version'] !== 1 || !isObject(data['servers']) || !isObject(data['agents'])) {
    throw new WardenError('WARDEN_CONFIG_INVALID', `${path}: not an mcp-warden config (it needs version: 1, servers and agents); give --config the running broker's config`, { file: path });
  }
  const base = dirname(path);
  const pathAt = (section: string, key: string, fallback: string, what: string): string => {
    const value = data[section];
    if (value === undefined) return resolve(base, fallback);
    const entry = isObject(value) ? value[key] : undefined;
    if (!isObject(value) || (entry !== undefined && (typeof entry !== 'string' || entry === ''))) {
      throw new WardenError('WARDEN_CONFIG_INVALID', `${path}: at /${section}/${key}: expected ${what}, a non-empty string`, { file: path });
    }
    return resolve(base, typeof entry === 'string' ? entry : fallback);
  };
  return {
    stateDir: pathAt('state', 'dir', DEFAULTS.stateDir, 'the state folder'),
    auditFile: pathAt('audit', 'file', DEFAULTS.auditFile, 'the audit file'),
    auditKeyFile: pathAt('audit', 'keyFile', DEFAULTS.auditKeyFile, 'the audit signing key file'),
  };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
