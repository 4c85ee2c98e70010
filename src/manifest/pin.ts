import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import type { Manifest } from './types.ts';

/** The fields of a tool definition that reach a model, all of them pinned. */
export const PINNED_FIELDS = ['title', 'description', 'inputSchema', 'outputSchema', 'annotations'] as const;
/** The fields of a prompt definition that reach a model, all of them pinned. */
export const PINNED_PROMPT_FIELDS = ['title', 'description', 'arguments'] as const;

/** A tool or prompt as a live server lists it; anything may be missing or of the wrong type. */
export interface LiveTool {
  readonly name: string;
  readonly [field: string]: unknown;
}

export interface LiveServer {
  readonly tools: readonly LiveTool[];
  /** Empty when the server does not offer prompts. */
  readonly prompts: readonly LiveTool[];
  readonly instructions: string | undefined;
}

/** How one kind of definition (tools or prompts) differs. */
interface DefinitionDiff {
  readonly added: readonly string[];
  readonly removed: readonly string[];
  readonly changed: readonly { readonly tool: string; readonly fields: readonly string[] }[];
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
  /** How the live prompts differ from the signed ones (each entry's `tool` names a prompt). */
  readonly prompts: DefinitionDiff;
  /** Hex SHA-256 over the live definitions and instructions as compared; identifies what was seen. */
  readonly liveDigest: string;
}

/**
 * Compares every tool and prompt a live server offers, and its instructions, with the
 * signed manifest. Each field an agent's model would read is compared as canonical JSON (RFC
 * 8785), so a schema-only edit, a flipped annotation or one zero-width character in a
 * description is a difference, and key order or whitespace is not. Absent and present
 * differ; nothing is normalised away.
 */
export function comparePins(manifest: Pick<Manifest, 'tools' | 'prompts' | 'instructions'>, live: LiveServer): PinReport {
  const tools = compareDefinitions(manifest.tools, live.tools, PINNED_FIELDS);
  const prompts = compareDefinitions(manifest.prompts, live.prompts, PINNED_PROMPT_FIELDS);
  const instructionsChanged = canonical(manifest.instructions) !== canonical(live.instructions);
  const liveDigest = sha256(
    canonical({
      tools: live.tools.map((tool) => pinnedView(tool, PINNED_FIELDS)),
      instructions: live.instructions ?? null,
      // Only when there are any: a server without prompts keeps the digest it always had.
      ...(live.prompts.length === 0 ? {} : { prompts: live.prompts.map((prompt) => pinnedView(prompt, PINNED_PROMPT_FIELDS)) }),
    }),
  );
  const same = (diff: DefinitionDiff) => diff.added.length === 0 && diff.removed.length === 0 && diff.changed.length === 0;
  return { matches: same(tools) && same(prompts) && !instructionsChanged, ...tools, instructionsChanged, prompts, liveDigest };
}

function compareDefinitions(signedList: readonly object[], liveList: readonly LiveTool[], fields: readonly string[]): DefinitionDiff {
  const signed = new Map(signedList.map((definition) => [(definition as LiveTool).name, definition as unknown as Readonly<Record<string, unknown>>]));
  const liveNames = new Set<string>();
  const added: string[] = [];
  const changed: { tool: string; fields: string[] }[] = [];
  for (const definition of liveList) {
    const name = String(definition.name);
    if (liveNames.has(name)) {
      // The same name twice: the server is not giving one definition per name.
      changed.push({ tool: name, fields: ['name'] });
      continue;
    }
    liveNames.add(name);
    const mine = signed.get(name);
    if (!mine) {
      added.push(name);
      continue;
    }
    const different = fields.filter((field) => canonical(mine[field]) !== canonical(definition[field]));
    if (different.length > 0) changed.push({ tool: name, fields: different });
  }
  const removed = [...signed.keys()].filter((name) => !liveNames.has(name));
  return { added, removed, changed };
}

/** A digest of one report: the same drift always has the same digest, for the audit trail. */
export function diffDigest(report: PinReport): string {
  const { prompts } = report;
  const promptDrift = prompts.added.length + prompts.removed.length + prompts.changed.length > 0 ? { prompts } : {};
  return sha256(canonical({ added: report.added, removed: report.removed, changed: report.changed, instructionsChanged: report.instructionsChanged, ...promptDrift, liveDigest: report.liveDigest }));
}

function pinnedView(definition: LiveTool, fields: readonly string[]): Record<string, unknown> {
  const view: Record<string, unknown> = { name: definition.name };
  for (const field of fields) if (definition[field] !== undefined) view[field] = definition[field];
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
