import { isSpecType, type CreateMessageRequestParams, type CreateMessageResult, type ElicitRequestFormParams, type ElicitResult } from '@modelcontextprotocol/server';
import { maskSecrets } from './detect-secrets.ts';
import { cleanText, noRedactions, sanitizeResult, type Redactions, type SanitizeOptions } from './sanitize-output.ts';
import type { CallToolResult } from '@modelcontextprotocol/server';

/**
 * What a downstream server asks the agent's host in the middle of a call, rebuilt from the
 * fields the host needs and cleaned like a tool result before the host (and, for sampling,
 * the user's model) sees it; and the host's answer, checked and rebuilt before the server
 * gets it. Anything the broker cannot vouch for is refused, never passed on as it came.
 */

export type Checked<T> = { readonly ok: true; readonly value: T; readonly redactions: Redactions } | { readonly ok: false; readonly problem: string };

type Block = CallToolResult['content'][number];

/**
 * Sampling: text, image and audio messages only (tool use in sampling is not brokered).
 * includeContext and metadata are dropped: the server may not ask the host to add other
 * servers' context to the prompt, nor hand opaque data to the model provider.
 */
export async function cleanSamplingRequest(params: unknown, options: SanitizeOptions): Promise<Checked<CreateMessageRequestParams>> {
  if (!isSpecType.CreateMessageRequestParams(params)) return { ok: false, problem: 'the sampling request does not match the MCP schema' };
  const request = params as CreateMessageRequestParams & { tools?: unknown; toolChoice?: unknown };
  if (request.tools !== undefined || request.toolChoice !== undefined) return { ok: false, problem: 'sampling with tools is not brokered' };
  const blocks: Block[] = [];
  const sizes: number[] = [];
  for (const message of request.messages) {
    const content = Array.isArray(message.content) ? message.content : [message.content];
    for (const block of content) {
      if (block.type !== 'text' && block.type !== 'image' && block.type !== 'audio') return { ok: false, problem: `a sampling message holds ${block.type} content; only text, image and audio are brokered` };
      blocks.push(block as Block);
    }
    sizes.push(content.length);
  }
  const cleaned = await sanitizeResult({ content: blocks }, options);
  const counts = cleaned.redactions;
  let next = 0;
  const messages = request.messages.map((message, index) => {
    const content = cleaned.result.content.slice(next, next + (sizes[index] ?? 0));
    next += sizes[index] ?? 0;
    return { role: message.role === 'assistant' ? 'assistant' : 'user', content: Array.isArray(message.content) ? content : content[0] };
  }) as CreateMessageRequestParams['messages'];
  const value: CreateMessageRequestParams = { messages, maxTokens: request.maxTokens };
  if (typeof request.systemPrompt === 'string') value.systemPrompt = await cleanString(request.systemPrompt, options, counts);
  if (typeof request.temperature === 'number') value.temperature = request.temperature;
  if (Array.isArray(request.stopSequences)) value.stopSequences = await Promise.all(request.stopSequences.map((stop) => cleanString(stop, options, counts)));
  if (request.modelPreferences) value.modelPreferences = (await cleanStrings(request.modelPreferences, options, counts)) as CreateMessageRequestParams['modelPreferences'];
  return { ok: true, value, redactions: counts };
}

/** Elicitation: form mode only (a URL would send the user somewhere the broker cannot see). */
export async function cleanElicitationRequest(params: unknown, options: SanitizeOptions): Promise<Checked<ElicitRequestFormParams>> {
  if (!isSpecType.ElicitRequestFormParams(params)) return { ok: false, problem: 'the elicitation request is not a form request matching the MCP schema (URL mode is not brokered)' };
  const request = params as ElicitRequestFormParams;
  const counts = noRedactions();
  const value: ElicitRequestFormParams = {
    mode: 'form',
    message: await cleanString(request.message, options, counts),
    requestedSchema: (await cleanStrings(request.requestedSchema, options, counts)) as ElicitRequestFormParams['requestedSchema'],
  };
  return { ok: true, value, redactions: counts };
}

/** The host's answer to a sampling request, rebuilt from the fields the spec defines. */
export function checkSamplingAnswer(answer: unknown): Checked<CreateMessageResult> {
  if (!isSpecType.CreateMessageResult(answer)) return { ok: false, problem: 'the answer is not a sampling result' };
  const result = answer as CreateMessageResult;
  const content = Array.isArray(result.content) ? result.content : [result.content];
  if (content.some((block) => block.type !== 'text' && block.type !== 'image' && block.type !== 'audio')) return { ok: false, problem: 'the sampling answer holds content other than text, image or audio' };
  const value = { role: result.role, content: result.content, model: result.model, ...(result.stopReason === undefined ? {} : { stopReason: result.stopReason }) } as CreateMessageResult;
  return { ok: true, value, redactions: noRedactions() };
}

/** The host's answer to an elicitation: an action, and for accept the form's flat content. */
export function checkElicitationAnswer(answer: unknown): Checked<ElicitResult> {
  if (!isSpecType.ElicitResult(answer)) return { ok: false, problem: 'the answer is not an elicitation result' };
  const result = answer as ElicitResult;
  if (result.action !== 'accept') return { ok: true, value: { action: result.action }, redactions: noRedactions() };
  return { ok: true, value: { action: 'accept', ...(result.content === undefined ? {} : { content: result.content }) }, redactions: noRedactions() };
}

async function cleanString(value: string, options: SanitizeOptions, counts: Redactions): Promise<string> {
  return maskSecrets(cleanText(value, options.secretForms, counts), counts);
}

/** Every string value in a JSON value cleaned; keys are kept (a schema's property names are the answer's keys). */
export async function cleanStrings(value: unknown, options: SanitizeOptions, counts: Redactions, depth = 0): Promise<unknown> {
  // Schema-valid requests are shallow; the bound is for the walk, not the spec.
  if (depth > 32) return null;
  if (typeof value === 'string') return cleanString(value, options, counts);
  if (Array.isArray(value)) return Promise.all(value.map((item) => cleanStrings(item, options, counts, depth + 1)));
  if (value === null || typeof value !== 'object') return value;
  // Object.fromEntries defines each key as an own property: assigning a "__proto__" key
  // would set the copy's prototype to the sender's object instead, and drop the key.
  const entries: [string, unknown][] = [];
  for (const [key, item] of Object.entries(value)) entries.push([key, await cleanStrings(item, options, counts, depth + 1)]);
  return Object.fromEntries(entries);
}
