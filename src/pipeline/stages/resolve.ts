import { printableName } from '../names.ts';
import { refuse, type Refusal, type StageFactory } from '../types.ts';

/**
 * The same refusal for a tool that does not exist and one the agent may not use, so an
 * agent cannot probe for tools it was not given. Only the audit record tells them apart.
 */
export function toolNotFound(name: string): Refusal {
  return refuse(
    'WARDEN_TOOL_NOT_FOUND',
    `Tool "${printableName(name)}" is not available. Call tools/list to see the tools you may use.`,
  );
}

/** Finds the exposed tool in the catalog built from the manifests. */
export const resolveTool: StageFactory = ({ config }) => async (ctx, next) => {
  const tool = config.catalog.get(ctx.toolName);
  if (!tool) {
    ctx.facts['cause'] = 'unknown-tool';
    return toolNotFound(ctx.toolName);
  }
  ctx.tool = tool;
  return next();
};
