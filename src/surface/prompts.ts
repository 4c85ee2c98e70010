import type { GetPromptResult, ListPromptsResult } from '@modelcontextprotocol/server';
import { digestArguments } from '../audit/digest.ts';
import type { CatalogPrompt } from '../catalog/prompts.ts';
import { WardenError } from '../errors.ts';
import { checkArgumentLimits } from '../guard/argument-limits.ts';
import { sanitizePromptResult } from '../guard/sanitize-surface.ts';
import { promptAllowed } from '../policy/surface-grants.ts';
import { judged, scopesOf, surfaceTimeout, type SurfaceDeps, type SurfaceRequest } from './judge.ts';

/**
 * prompts/list: the prompts of the signed manifests that the agent's prompt grants cover,
 * as the manifests define them (never as the live server lists them), less those of
 * quarantined servers.
 */
export function listPrompts(deps: SurfaceDeps, request: SurfaceRequest): Promise<ListPromptsResult> {
  return judged(deps, request, 'prompts/list', {}, async (judgement) => {
    const prompts = visiblePrompts(deps, request).map((prompt) => prompt.definition);
    judgement.facts['count'] = prompts.length;
    return { prompts: prompts as ListPromptsResult['prompts'] };
  });
}

/** The prompts this session may see now, in catalog order. */
export function visiblePrompts(deps: SurfaceDeps, request: SurfaceRequest): readonly CatalogPrompt[] {
  const config = deps.config();
  const agent = config.agents.get(request.agentName);
  if (!agent) return [];
  // Only a running MCP backend that is not quarantined offers its prompts.
  return [...config.prompts.values()].filter((prompt) => {
    const backend = deps.backend(prompt.server);
    return backend !== undefined && backend.quarantine === undefined && promptAllowed(agent.promptGrants, prompt.exposedName, scopesOf(request));
  });
}

/**
 * prompts/get: a granted prompt of a server in good standing, with arguments that are
 * strings, declared by the manifest, all required ones present and within the argument
 * limits; the messages come back cleaned like a tool result.
 */
export function getPrompt(deps: SurfaceDeps, request: SurfaceRequest, name: unknown, args: unknown): Promise<GetPromptResult> {
  return judged(deps, request, 'prompts/get', { prompt: typeof name === 'string' ? name.slice(0, 64) : null, argsSha256: digestArguments(args ?? {}) ?? null }, async (judgement) => {
    const prompt = visiblePrompts(deps, request).find((candidate) => candidate.exposedName === name);
    if (!prompt) throw new WardenError('WARDEN_PROMPT_NOT_FOUND', `No prompt named "${printable(name)}" is available to this agent. Use prompts/list to see what is.`);
    judgement.facts['server'] = prompt.server;
    const config = deps.config();
    const values = checkPromptArguments(prompt, args ?? {}, config.limits.arguments);
    const backend = deps.backend(prompt.server);
    if (!backend) throw new WardenError('WARDEN_SERVER_UNAVAILABLE', `Server "${prompt.server}" is not running.`);
    const result = await backend.getPrompt(prompt.prompt.name, values, surfaceTimeout(config), request.signal);
    const { result: clean, redactions } = await sanitizePromptResult(result, { secretForms: deps.secretForms(), maxTextBytes: config.limits.maxResultBytes });
    judgement.redactions = redactions;
    return clean;
  });
}

/** The arguments as the prompt's signed definition allows them, or a refusal naming the first problem. */
function checkPromptArguments(prompt: CatalogPrompt, args: unknown, limits: Parameters<typeof checkArgumentLimits>[1]): Record<string, string> {
  const invalid = (why: string) => new WardenError('WARDEN_ARGUMENTS_INVALID', `The prompt's arguments were refused: ${why}.`);
  if (args === null || typeof args !== 'object' || Array.isArray(args)) throw invalid('arguments must be an object of strings');
  const violation = checkArgumentLimits(args, limits);
  if (violation) throw invalid(`${violation.path || '/'} ${violation.message} (rule: ${violation.rule})`);
  const declared = new Map((prompt.prompt.arguments ?? []).map((argument) => [argument.name, argument]));
  const values: Record<string, string> = {};
  for (const [key, value] of Object.entries(args)) {
    if (!declared.has(key)) throw invalid(`"${printable(key)}" is not an argument of this prompt`);
    if (typeof value !== 'string') throw invalid(`"${key}" must be a string`);
    Object.defineProperty(values, key, { value, enumerable: true, writable: true, configurable: true });
  }
  for (const argument of declared.values()) {
    if (argument.required === true && !Object.hasOwn(values, argument.name)) throw invalid(`"${argument.name}" is required`);
  }
  return values;
}

function printable(value: unknown): string {
  // eslint-disable-next-line no-control-regex
  return String(value).replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ').slice(0, 64);
}
