import type { CallToolResult } from '@modelcontextprotocol/server';
import { describeArgumentError } from '../../guard/argument-schema.ts';
import { cleanText, noRedactions } from '../../guard/sanitize-output.ts';
import { refuse, type StageFactory } from '../types.ts';

/**
 * Wraps dispatch, inside sanitizeOutput. A declared outputSchema is enforced: a result
 * that does not match is an error, not passed on. A declared scope (outputFields) keeps
 * only those fields, of structuredContent and of text that holds JSON; other text of such
 * a tool is withheld.
 */
export const constrainOutput: StageFactory = () => async (ctx, next) => {
  const outcome = await next();
  if (outcome.kind !== 'result' || !ctx.tool) return outcome;
  const { validateOutput, outputScope } = ctx.tool;
  let result = outcome.result;

  if (validateOutput && result.isError !== true) {
    if (result.structuredContent === undefined) {
      ctx.facts['outputError'] = { rule: 'missing' };
      return refuse('WARDEN_DOWNSTREAM_ERROR', `Server "${ctx.tool.server}" returned no structured content, but the tool's manifest declares an outputSchema.`);
    }
    if (!validateOutput(result.structuredContent)) {
      const error = describeArgumentError(validateOutput.errors);
      ctx.facts['outputError'] = { path: error.path, rule: error.rule };
      return refuse('WARDEN_DOWNSTREAM_ERROR', `Server "${ctx.tool.server}" returned a result that does not match the tool's outputSchema (${error.path}: rule ${error.rule}).`);
    }
  }

  if (outputScope) {
    const content = (Array.isArray(result.content) ? result.content : []).map((block) => {
      if (block.type === 'text') return { ...block, text: scopeText(block.text, outputScope) };
      if (block.type === 'resource' && 'text' in block.resource && typeof block.resource.text === 'string') {
        return { ...block, resource: { ...block.resource, text: scopeText(block.resource.text, outputScope) } };
      }
      return block;
    });
    result = { ...result, content } as CallToolResult;
    if (result.structuredContent !== undefined) result.structuredContent = outputScope(result.structuredContent) as CallToolResult['structuredContent'];
    ctx.facts['scoped'] = true;
  }
  return { kind: 'result', result };
};

export const SCOPE_WITHHELD = '[text withheld by mcp-warden: this tool declares an output scope, and only JSON text can be scoped]';

/**
 * Applies the scope to text that holds JSON. Escapes and invisible characters are removed
 * first, so they cannot disguise JSON as prose. Text that is not JSON cannot be scoped,
 * so it is withheld: fail closed.
 */
function scopeText(text: string, scope: (value: unknown) => unknown): string {
  const visible = cleanText(text, [], noRedactions());
  try {
    return JSON.stringify(scope(JSON.parse(visible)) ?? null);
  } catch {
    return SCOPE_WITHHELD;
  }
}
