import canonicalize from 'canonicalize';
import type { ManifestTool } from '../manifest/types.ts';

export interface Drift {
  /** True when a declared tool is missing or changed. Undeclared extras alone are not drift. */
  readonly differs: boolean;
  /** Declared in the manifest, not offered by the live server: calls to them will fail. */
  readonly missing: readonly string[];
  /** Offered by both, but the live description or input schema differs from the manifest. */
  readonly changed: readonly { readonly tool: string; readonly fields: readonly string[] }[];
  /** Offered by the live server only. Never exposed; reported so the owner can update the manifest. */
  readonly extra: readonly string[];
}

interface LiveTool {
  readonly name: string;
  readonly description?: string | undefined;
  readonly inputSchema?: unknown;
}

/**
 * Compares what a live server offers with what its manifest declares. Agents always see the
 * manifest's definitions; this only reports the difference.
 */
export function compareTools(declared: readonly ManifestTool[], live: readonly LiveTool[]): Drift {
  const liveByName = new Map<string, LiveTool>();
  for (const tool of live) liveByName.set(tool.name, tool);
  const declaredNames = new Set(declared.map((tool) => tool.name));

  const missing: string[] = [];
  const changed: { tool: string; fields: string[] }[] = [];
  for (const tool of declared) {
    const other = liveByName.get(tool.name);
    if (!other) {
      missing.push(tool.name);
      continue;
    }
    const fields: string[] = [];
    if ((other.description ?? '') !== tool.description) fields.push('description');
    if (canonicalize(other.inputSchema ?? null) !== canonicalize(tool.inputSchema)) fields.push('inputSchema');
    if (fields.length > 0) changed.push({ tool: tool.name, fields });
  }
  const extra = [...liveByName.keys()].filter((name) => !declaredNames.has(name));
  return { differs: missing.length > 0 || changed.length > 0, missing, changed, extra };
}
