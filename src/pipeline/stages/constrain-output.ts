import type { CallToolResult } from '@modelcontextprotocol/server';
import { describeArgumentError } from '../../guard/argument-schema.ts';
import { refuse, type StageFactory } from '../types.ts';

/**
 * Wraps dispatch, inside sanitizeOutput. A declared outputSchema is enforced: a result
 * that does not match is an error, not passed on. A declared scope (outputFields) keeps
 * only those fields, of structuredContent and of text blocks that hold JSON.
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
    const content = Array.isArray(result.content) ? result.content.map((block) => (block.type === 'text' ? { ...block, text: scopeJsonText(block.text, outputScope) } : block)) : [];
    result = { ...result, content } as CallToolResult;
    if (result.structuredContent !== undefined) result.structuredContent = outputScope(result.structuredContent) as CallToolResult['structuredContent'];
    ctx.facts['scoped'] = true;
  }
  return { kind: 'result', result };
};

/** Applies the scope to a text block that holds a JSON object or array; other text is prose and stays. */
function scopeJsonText(text: string, scope: (value: unknown) => unknown): string {
  const start = text.trimStart()[0];
  if (start !== '{' && start !== '[') return text;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return text;
  }
  return JSON.stringify(scope(parsed) ?? null);
}
