import type { CallToolResult, GetPromptResult, ReadResourceResult, Resource, ResourceTemplateType } from '@modelcontextprotocol/server';
import { maskSecrets } from './detect-secrets.ts';
import { cleanText, sanitizeResult, type Redactions, type SanitizeOptions } from './sanitize-output.ts';

/**
 * Output sanitisation for what is not a tool result: resource contents, prompt messages
 * and the resource listings. Each is rebuilt from the fields an agent may see and passes
 * through the same cleaning as a tool result (escapes, invisible characters, injected
 * credentials in every encoding, detected secrets, the size cap); the downstream's _meta,
 * icons and unknown fields are dropped.
 */

type Block = CallToolResult['content'][number];

/** Text contents are cleaned and share one size budget; a blob over the budget is withheld whole (binary cannot be cut). */
export async function sanitizeResourceContents(result: ReadResourceResult, options: SanitizeOptions): Promise<{ result: ReadResourceResult; redactions: Redactions }> {
  const entries = Array.isArray(result.contents) ? result.contents : [];
  let withheld = 0;
  let blobBudget = options.maxTextBytes;
  const blocks: Block[] = [];
  for (const entry of entries) {
    if (typeof entry.uri !== 'string') continue;
    const mimeType = typeof entry.mimeType === 'string' ? { mimeType: entry.mimeType } : {};
    if ('blob' in entry && typeof entry.blob === 'string') {
      const bytes = Math.floor((entry.blob.length * 3) / 4);
      if (bytes <= blobBudget) {
        blobBudget -= bytes;
        blocks.push({ type: 'resource', resource: { uri: entry.uri, ...mimeType, blob: entry.blob } });
      } else {
        withheld += bytes;
        blocks.push({ type: 'resource', resource: { uri: entry.uri, mimeType: 'text/plain', text: `[binary content withheld by mcp-warden: ${bytes} bytes over the size limit]` } });
      }
      continue;
    }
    blocks.push({ type: 'resource', resource: { uri: entry.uri, ...mimeType, text: 'text' in entry && typeof entry.text === 'string' ? entry.text : '' } });
  }
  const cleaned = await sanitizeResult({ content: blocks }, options);
  cleaned.redactions.truncatedBytes += withheld;
  const contents: ReadResourceResult['contents'] = [];
  for (const block of cleaned.result.content) if (block.type === 'resource') contents.push(block.resource);
  return { result: { contents }, redactions: cleaned.redactions };
}

/** A prompt's messages: roles checked, each content block cleaned like a tool result's. */
export async function sanitizePromptResult(result: GetPromptResult, options: SanitizeOptions): Promise<{ result: GetPromptResult; redactions: Redactions }> {
  const messages = Array.isArray(result.messages) ? result.messages : [];
  const roles = messages.map((message) => (message.role === 'assistant' ? 'assistant' : 'user'));
  const cleaned = await sanitizeResult({ content: messages.map((message) => message.content as Block) }, options);
  const counts = cleaned.redactions;
  const sanitized: GetPromptResult = {
    messages: cleaned.result.content.map((content, index) => ({ role: roles[index] ?? 'user', content }) as GetPromptResult['messages'][number]),
  };
  if (typeof result.description === 'string') sanitized.description = await cleanString(result.description, options, counts);
  return { result: sanitized, redactions: counts };
}

/** A resource as listed: only the fields the spec defines for it, every string cleaned. */
export async function sanitizeResource(resource: Resource, options: SanitizeOptions, counts: Redactions): Promise<Resource> {
  return {
    // Cleaned like a read's content URIs: a listing must not carry a credential either.
    uri: await cleanString(resource.uri, options, counts),
    name: await cleanString(String(resource.name ?? ''), options, counts),
    ...(await optionalStrings(resource, ['title', 'description', 'mimeType'], options, counts)),
    ...(typeof resource.size === 'number' && Number.isFinite(resource.size) ? { size: resource.size } : {}),
  };
}

export async function sanitizeTemplate(template: ResourceTemplateType, options: SanitizeOptions, counts: Redactions): Promise<ResourceTemplateType> {
  return {
    uriTemplate: await cleanString(template.uriTemplate, options, counts),
    name: await cleanString(String(template.name ?? ''), options, counts),
    ...(await optionalStrings(template, ['title', 'description', 'mimeType'], options, counts)),
  };
}

async function optionalStrings(source: object, fields: readonly string[], options: SanitizeOptions, counts: Redactions): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const field of fields) {
    const value = (source as Record<string, unknown>)[field];
    if (typeof value === 'string') out[field] = await cleanString(value, options, counts);
  }
  return out;
}

/** One short string (a name, a description): cleaned and capped at the text budget. */
async function cleanString(value: string, options: SanitizeOptions, counts: Redactions): Promise<string> {
  const masked = await maskSecrets(cleanText(value, options.secretForms, counts), counts);
  return masked.length > MAX_LISTED_STRING ? `${masked.slice(0, MAX_LISTED_STRING)} [truncated by mcp-warden]` : masked;
}

/** Longest name, title or description of a listed resource passed on, in characters. */
const MAX_LISTED_STRING = 4096;
