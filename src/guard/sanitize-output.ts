import { hasInvisible, INVISIBLE } from './invisible.ts';
import type { CallToolResult } from '@modelcontextprotocol/server';
import { findSecrets, maskSecrets } from './detect-secrets.ts';

/**
 * Output sanitisation: what a tool returns is untrusted input to the model. Every string
 * of a result (text blocks, embedded resource text, resource links, structuredContent
 * keys and values) loses terminal escapes and invisible or control characters, then every
 * known credential in any common encoding, then whatever the secret-detection rules
 * find; text is capped in size with a visible marker, after detection, so a cut can never
 * leave half a secret that is no longer recognisable. These functions never throw on any
 * JSON input.
 */

export const REDACTED = '[redacted: credential]';

export interface Redactions {
  credential: number;
  detected: number;
  invisible: number;
  truncatedBytes: number;
}

export function noRedactions(): Redactions {
  return { credential: 0, detected: 0, invisible: 0, truncatedBytes: 0 };
}

/** ANSI/VT escape sequences: CSI, OSC (ended by BEL or ST), and two-character escapes. */
// eslint-disable-next-line no-control-regex
const ESCAPES = /\u001b\[[0-?]*[ -/]*[@-~]|\u001b\][^\u0007\u001b]*(?:\u0007|\u001b\\)|\u001b[@-Z\\-_]/g;

/** A credential shorter than this is not redacted: it would shred ordinary text. */
const MIN_SECRET_LENGTH = 6;

/**
 * Every form a credential value is looked for in: as is, base64 (padded and not),
 * base64url, hex in both cases, URL-encoded, and the part of its base64 that does not
 * depend on its neighbours when it sits inside a longer encoded string. Longest first, so a
 * longer form is replaced before a shorter one inside it.
 */
export function secretForms(values: readonly string[]): string[] {
  const forms = new Set<string>();
  for (const value of values) {
    if (value.length < MIN_SECRET_LENGTH) continue;
    const bytes = Buffer.from(value, 'utf8');
    forms.add(value);
    forms.add(encodeURIComponent(value));
    forms.add(bytes.toString('hex'));
    forms.add(bytes.toString('hex').toUpperCase());
    const b64 = bytes.toString('base64');
    forms.add(b64);
    forms.add(b64.replace(/=+$/, ''));
    forms.add(bytes.toString('base64url'));
    for (const offset of [0, 1, 2]) {
      // Inside a longer encoded string, only the 4-character groups made of secret bytes
      // alone are the same whatever surrounds it; there are three alignments.
      const shifted = Buffer.concat([Buffer.alloc(offset), bytes]).toString('base64');
      const first = Math.ceil(offset / 3) * 4;
      const last = Math.floor((offset + bytes.length) / 3) * 4;
      const inner = shifted.slice(first, last);
      if (inner.length >= 8) {
        forms.add(inner);
        forms.add(inner.replaceAll('+', '-').replaceAll('/', '_'));
      }
    }
  }
  return [...forms].filter((form) => form.length >= MIN_SECRET_LENGTH).sort((a, b) => b.length - a.length);
}

/** Cleans one string: escapes and invisible characters first, so they cannot split a secret. */
export function cleanText(text: string, forms: readonly string[], counts: Redactions): string {
  let clean = text;
  // Each pass only where it can match: every escape starts with ESC, and hasInvisible is
  // INVISIBLE found faster; a text with neither is scanned once for each, not rewritten.
  if (clean.includes('\u001b')) {
    clean = clean.replace(ESCAPES, () => {
      counts.invisible++;
      return '';
    });
  }
  if (hasInvisible(clean)) {
    clean = clean.replace(INVISIBLE, () => {
      counts.invisible++;
      return '';
    });
  }
  for (const form of forms) {
    if (!clean.includes(form)) continue;
    const parts = clean.split(form);
    counts.credential += parts.length - 1;
    clean = parts.join(REDACTED);
  }
  return clean;
}

export interface SanitizeOptions {
  readonly secretForms: readonly string[];
  /** Budget for all text of one result, in UTF-8 bytes. */
  readonly maxTextBytes: number;
}

/**
 * Rebuilds a result from the fields an agent may see (content, structuredContent,
 * isError), cleaned. Unknown fields and the downstream's _meta are dropped.
 */
export async function sanitizeResult(result: CallToolResult, options: SanitizeOptions): Promise<{ result: CallToolResult; redactions: Redactions }> {
  const counts = noRedactions();
  let budget = options.maxTextBytes;
  const clean = async (value: string): Promise<string> => maskSecrets(cleanText(value, options.secretForms, counts), counts);
  const text = async (value: string): Promise<string> => {
    const cleaned = cleanText(value, options.secretForms, counts);
    // Detection costs time per byte: only what can still be shown is scanned, plus a
    // margin so a secret that straddles the cut is still recognised and masked whole.
    const scanned = cleaned.length > budget + DETECTION_MARGIN ? truncateUtf8(cleaned, budget + DETECTION_MARGIN) : cleaned;
    const masked = await maskSecrets(scanned, counts);
    // Counted once when nothing was cut before detection (a long text's bytes take a pass each).
    const bytes = (scanned === cleaned ? 0 : Buffer.byteLength(cleaned, 'utf8') - Buffer.byteLength(scanned, 'utf8')) + Buffer.byteLength(masked, 'utf8');
    if (bytes <= budget) {
      budget -= bytes;
      return masked;
    }
    const kept = truncateUtf8(masked, Math.max(0, budget));
    budget = 0;
    const omitted = bytes - Buffer.byteLength(kept, 'utf8');
    counts.truncatedBytes += omitted;
    return `${kept}\n[truncated by mcp-warden: ${omitted} bytes omitted]`;
  };

  const content: Block[] = [];
  // Binary data cannot be masked in place: data holding a credential form is withheld whole.
  const binary = (data: string): string | undefined => {
    if (!options.secretForms.some((form) => data.includes(form))) return data;
    counts.credential++;
    return undefined;
  };
  for (const block of Array.isArray(result.content) ? result.content : []) content.push(await cleanBlock(block, text, clean, binary));
  const sanitized: CallToolResult = { content };
  if (result.structuredContent !== undefined) {
    const cleaned = await mapStrings(result.structuredContent, async (value) => cleanText(value, options.secretForms, counts));
    // Too large to show: dropped before any detection is spent on it.
    const structured = Buffer.byteLength(JSON.stringify(cleaned) ?? '', 'utf8') <= budget ? await cleanStructured(cleaned, counts) : cleaned;
    const bytes = Buffer.byteLength(JSON.stringify(structured) ?? '', 'utf8');
    if (structured === WITHHELD) {
      content.push({ type: 'text', text: '[structured content withheld by mcp-warden: it holds secrets that cannot be masked string by string]' });
    } else if (bytes <= budget) {
      budget -= bytes;
      sanitized.structuredContent = structured as CallToolResult['structuredContent'];
    } else {
      counts.truncatedBytes += bytes;
      content.push({ type: 'text', text: `[structured content omitted by mcp-warden: ${bytes} bytes over the size limit]` });
    }
  }
  if (result.isError === true) sanitized.isError = true;
  return { result: sanitized, redactions: counts };
}

type Block = CallToolResult['content'][number];

/** Marks binary content the broker withheld because it carries a credential. */
const BINARY_WITHHELD = '[binary content withheld by mcp-warden: it holds a credential]';

async function cleanBlock(block: Block, text: (value: string) => Promise<string>, clean: (value: string) => Promise<string>, binary: (data: string) => string | undefined): Promise<Block> {
  switch (block.type) {
    case 'text':
      return { type: 'text', text: await text(block.text) };
    case 'resource': {
      const resource = block.resource;
      if ('text' in resource && typeof resource.text === 'string') {
        return { type: 'resource', resource: { uri: await clean(resource.uri), ...(resource.mimeType ? { mimeType: await clean(resource.mimeType) } : {}), text: await text(resource.text) } };
      }
      // A blob: binary, passed as it is unless it holds a credential form; only the fields
      // the spec defines, _meta dropped.
      const blob = binary('blob' in resource && typeof resource.blob === 'string' ? resource.blob : '');
      if (blob === undefined) return { type: 'resource', resource: { uri: await clean(resource.uri), mimeType: 'text/plain', text: BINARY_WITHHELD } };
      return { type: 'resource', resource: { uri: await clean(resource.uri), ...(resource.mimeType ? { mimeType: await clean(resource.mimeType) } : {}), blob } };
    }
    case 'resource_link':
      return (await mapStrings(block, clean)) as Block;
    case 'image':
    case 'audio':
    {
      // Binary data, passed as it is unless it holds a credential form; rebuilt from the
      // fields the spec defines, so no _meta (whose strings would reach the model
      // unchecked) comes along; the mimeType is cleaned.
      const data = binary(typeof block.data === 'string' ? block.data : '');
      if (data === undefined) return { type: 'text', text: BINARY_WITHHELD };
      return { type: block.type, data, mimeType: await clean(typeof block.mimeType === 'string' ? block.mimeType : '') } as Block;
    }
    default:
      // A block type this broker does not know: every string cleaned.
      return (await mapStrings(block, clean)) as Block;
  }
}

/** Bytes scanned beyond the text budget, so a secret cut by the budget is still found. */
const DETECTION_MARGIN = 16 * 1024;
/** Strings checked one by one when structured content holds a secret; beyond this it is withheld. */
const MAX_STRINGS_CHECKED = 1000;
const WITHHELD = Symbol('withheld');

/**
 * Detection over structured content: one pass over its JSON text; only when that finds
 * something are its strings checked one by one (a detector per string is slow), and if
 * there are too many of them the structured content is withheld: fail closed.
 */
async function cleanStructured(value: unknown, counts: Redactions): Promise<unknown> {
  const json = JSON.stringify(value) ?? '';
  if ((await findSecrets(json)).length === 0) return value;
  let strings = 0;
  await mapStrings(value, async (text) => {
    strings++;
    return text;
  });
  if (strings > MAX_STRINGS_CHECKED) {
    counts.detected++;
    return WITHHELD;
  }
  const masked = await mapStrings(value, (text) => maskSecrets(text, counts));
  // A rule can match across a key and its value ("aws_secret_access_key": "..."), which
  // no single string shows: whatever the JSON still reveals is withheld whole.
  if ((await findSecrets(JSON.stringify(masked) ?? '')).length > 0) {
    counts.detected++;
    return WITHHELD;
  }
  return masked;
}

/** Applies an async function to every key and string of a JSON value, iteratively (no recursion on hostile depth). */
async function mapStrings(value: unknown, fn: (text: string) => Promise<string>): Promise<unknown> {
  const root: { value: unknown } = { value: undefined };
  const stack: { source: unknown; assign: (v: unknown) => void }[] = [{ source: value, assign: (v) => (root.value = v) }];
  while (stack.length > 0) {
    const { source, assign } = stack.pop()!;
    if (typeof source === 'string') assign(await fn(source));
    else if (Array.isArray(source)) {
      const copy: unknown[] = new Array(source.length);
      assign(copy);
      source.forEach((item, i) => stack.push({ source: item, assign: (v) => (copy[i] = v) }));
    } else if (source !== null && typeof source === 'object') {
      const copy: Record<string, unknown> = {};
      assign(copy);
      for (const [key, item] of Object.entries(source)) {
        const cleanKey = await fn(key);
        stack.push({ source: item, assign: (v) => Object.defineProperty(copy, cleanKey, { value: v, enumerable: true, writable: true, configurable: true }) });
      }
    } else assign(source);
  }
  return root.value;
}

/** The longest prefix of text that fits in maxBytes of UTF-8, never splitting a character. */
export function truncateUtf8(text: string, maxBytes: number): string {
  // encodeInto stops before the first character that does not fit whole and reports how
  // much of the string it consumed: one pass, not a byte count per character.
  const room = Math.max(0, Math.floor(maxBytes));
  if (text.length * 3 <= room) return text;
  const { read } = new TextEncoder().encodeInto(text, new Uint8Array(room));
  return text.slice(0, read);
}
