import type { CompleteRequestParams, CompleteResult } from '@modelcontextprotocol/server';
import { WardenError } from '../errors.ts';
import { resourceUriProblem, templateExample } from '../guard/resource-uri.ts';
import { serversAllowing } from '../policy/surface-grants.ts';
import { cleanText } from '../guard/sanitize-output.ts';
import { maskSecrets } from '../guard/detect-secrets.ts';
import { judged, scopesOf, surfaceTimeout, type SurfaceDeps, type SurfaceRequest } from './judge.ts';
import { visiblePrompts } from './prompts.ts';

/** The spec's most values in one completion. */
const MAX_VALUES = 100;
/** Longest completion value passed on, in characters. */
const MAX_VALUE_LENGTH = 1024;
const MAX_ARGUMENT_VALUE = 4096;

/**
 * completion/complete, for a prompt the agent may get or a resource template it may list:
 * forwarded to that one server under its own names, the values cleaned and capped.
 */
export function complete(deps: SurfaceDeps, request: SurfaceRequest, params: CompleteRequestParams): Promise<CompleteResult> {
  const ref = params.ref as { type?: unknown; name?: unknown; uri?: unknown };
  return judged(deps, request, 'completion/complete', { ref: { type: String(ref.type).slice(0, 32), name: typeof ref.name === 'string' ? ref.name.slice(0, 64) : undefined } }, async (judgement) => {
    const argument = params.argument as { name?: unknown; value?: unknown } | undefined;
    if (typeof argument?.name !== 'string' || typeof argument.value !== 'string' || argument.value.length > MAX_ARGUMENT_VALUE) {
      throw new WardenError('WARDEN_ARGUMENTS_INVALID', `The completion was refused: argument needs a name and a string value of at most ${MAX_ARGUMENT_VALUE} characters.`);
    }
    const context = contextArguments(params.context);
    let server: string;
    let forwarded: CompleteRequestParams;
    if (ref.type === 'ref/prompt') {
      const prompt = visiblePrompts(deps, request).find((candidate) => candidate.exposedName === ref.name);
      if (!prompt) throw new WardenError('WARDEN_PROMPT_NOT_FOUND', 'No such prompt is available to this agent. Use prompts/list to see what is.');
      server = prompt.server;
      forwarded = { ref: { type: 'ref/prompt', name: prompt.prompt.name }, argument: { name: argument.name, value: argument.value }, ...(context ? { context: { arguments: context } } : {}) };
    } else if (ref.type === 'ref/resource' && typeof ref.uri === 'string') {
      server = templateServer(deps, request, ref.uri);
      forwarded = { ref: { type: 'ref/resource', uri: ref.uri }, argument: { name: argument.name, value: argument.value }, ...(context ? { context: { arguments: context } } : {}) };
    } else {
      throw new WardenError('WARDEN_ARGUMENTS_INVALID', 'The completion was refused: ref must be a ref/prompt with a name or a ref/resource with a uri.');
    }
    judgement.facts['server'] = server;
    const backend = deps.backend(server);
    if (!backend) throw new WardenError('WARDEN_SERVER_UNAVAILABLE', `Server "${server}" is not running.`);
    const result = await backend.complete(forwarded, surfaceTimeout(deps.config()), request.signal);
    const values: string[] = [];
    const source = Array.isArray(result.completion?.values) ? result.completion.values : [];
    for (const value of source.slice(0, MAX_VALUES)) {
      if (typeof value !== 'string') continue;
      values.push((await maskSecrets(cleanText(value, deps.secretForms(), judgement.redactions), judgement.redactions)).slice(0, MAX_VALUE_LENGTH));
    }
    const total = result.completion?.total;
    return {
      completion: {
        values,
        ...(typeof total === 'number' && Number.isInteger(total) && total >= 0 ? { total } : {}),
        ...(result.completion?.hasMore === true || source.length > MAX_VALUES ? { hasMore: true } : {}),
      },
    };
  });
}

/** The one server whose resource grants cover the template's filled-in form, as they would a read of it. */
function templateServer(deps: SurfaceDeps, request: SurfaceRequest, uriTemplate: string): string {
  const example = templateExample(uriTemplate);
  const grants = deps.config().agents.get(request.agentName)?.resourceGrants ?? [];
  const servers = example === undefined || resourceUriProblem(example) !== undefined ? [] : serversAllowing(grants, example, scopesOf(request));
  if (servers.length === 0) throw new WardenError('WARDEN_RESOURCE_NOT_FOUND', 'No resource template with this URI is available to this agent. Use resources/templates/list to see what is.');
  if (servers.length > 1) throw new WardenError('WARDEN_RESOURCE_AMBIGUOUS', `The template is granted on more than one server (${servers.join(', ')}); the broker does not guess. Tell the security team.`);
  return servers[0]!;
}

/** Already-resolved arguments of the same prompt or template: strings only, bounded. */
function contextArguments(context: CompleteRequestParams['context']): Record<string, string> | undefined {
  const raw = (context as { arguments?: unknown } | undefined)?.arguments;
  if (raw === undefined) return undefined;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new WardenError('WARDEN_ARGUMENTS_INVALID', 'The completion was refused: context.arguments must be an object of strings.');
  const entries = Object.entries(raw);
  if (entries.length > 64) throw new WardenError('WARDEN_ARGUMENTS_INVALID', 'The completion was refused: context.arguments has more than 64 entries.');
  const out: Record<string, string> = {};
  for (const [key, value] of entries) {
    if (typeof value !== 'string' || value.length > MAX_ARGUMENT_VALUE || key.length > 64 || key === '__proto__') {
      throw new WardenError('WARDEN_ARGUMENTS_INVALID', `The completion was refused: context.arguments entries must be strings of at most ${MAX_ARGUMENT_VALUE} characters.`);
    }
    Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
  }
  return out;
}
