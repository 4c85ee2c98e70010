import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import type { Manifest } from './types.ts';

/** The fields of a tool definition that reach a model, all of them pinned. */
export const PINNED_FIELDS = ['title', 'description', 'inputSchema', 'outputSchema', 'annotations'] as const;

/** A tool as a live server lists it; anything may be missing or of the wrong type. */
export interface LiveTool {
  readonly name: string;
  readonly [field: string]: unknown;
}

export interface LiveServer {
  readonly tools: readonly LiveTool[];
  readonly instructions: string | undefined;
}

/** How a live server differs from its signed manifest. Names only, never live texts. */
export interface PinReport {
  readonly matches: boolean;
  /** Offered live, not signed: a new or renamed tool. */
  readonly added: readonly string[];
  /** Signed, not offered live: a removed or renamed tool. */
  readonly removed: readonly string[];
  /** Offered under a signed name, with these fields different. */
  readonly changed: readonly { readonly tool: string; readonly fields: readonly string[] }[];
  readonly instructionsChanged: boolean;
  /** Hex SHA-256 over the live definitions and instructions as compared; identifies what was seen. */
  readonly liveDigest: string;
}

/**
 * Compares every tool a live server offers, and its instructions, with the signed
 * manifest. Each field an agent's model would read is compared as canonical JSON (RFC
 * 8785), so a schema-only edit, a flipped annotation or one zero-width character in a
 * description is a difference, and key order or whitespace is not. Absent and present
 * differ; nothing is normalised away.
 */
export function comparePins(manifest: Pick<Manifest, 'tools' | 'instructions'>, live: LiveServer): PinReport {
  const signed = new Map(manifest.tools.map((tool) => [tool.name, tool as unknown as Readonly<Record<string, unknown>>]));
  const liveNames = new Set<string>();
  const added: string[] = [];
  const changed: { tool: string; fields: string[] }[] = [];
  for (const tool of live.tools) {
    const name = String(tool.name);
    if (liveNames.has(name)) {
      // The same name twice: the server is not giving one definition per tool.
      changed.push({ tool: name, fields: ['name'] });
      continue;
    }
    liveNames.add(name);
    const mine = signed.get(name);
    if (!mine) {
      added.push(name);
      continue;
    }
    const fields = PINNED_FIELDS.filter((field) => canonical(mine[field]) !== canonical(tool[field]));
    if (fields.length > 0) changed.push({ tool: name, fields });
  }
  const removed = [...signed.keys()].filter((name) => !liveNames.has(name));
  const instructionsChanged = canonical(manifest.instructions) !== canonical(live.instructions);
  const liveDigest = sha256(canonical({ tools: live.tools.map((tool) => pinnedView(tool)), instructions: live.instructions ?? null }));
  return {
    matches: added.length === 0 && removed.length === 0 && changed.length === 0 && !instructionsChanged,
    added,
    removed,
    changed,
    instructionsChanged,
    liveDigest,
  };
}

/** A digest of one report: the same drift always has the same digest, for the audit trail. */
export function diffDigest(report: PinReport): string {
  return sha256(canonical({ added: report.added, removed: report.removed, changed: report.changed, instructionsChanged: report.instructionsChanged, liveDigest: report.liveDigest }));
}

function pinnedView(tool: LiveTool): Record<string, unknown> {
  const view: Record<string, unknown> = { name: tool.name };
  for (const field of PINNED_FIELDS) if (tool[field] !== undefined) view[field] = tool[field];
  return view;
}

/** Canonical JSON of a value; undefined (absent) stays distinct from every JSON value. */
function canonical(value: unknown): string {
  if (value === undefined) return '';
  try {
    return canonicalize(value) ?? '';
  } catch {
    // Not representable as JSON (cannot come from a parsed message): never equal.
    return `unrepresentable:${Math.random()}`;
  }
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
