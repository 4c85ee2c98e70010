import { refuse, type StageFactory } from '../types.ts';

/** Last stage: sends the call to the tool's downstream server, bounded by the call timeout. */
export const dispatch: StageFactory = ({ backends, config }) => async (ctx) => {
  if (!ctx.tool || !ctx.grant) return refuse('WARDEN_INTERNAL', 'The call was refused because a broker check was skipped.');
  const backend = backends.get(ctx.tool.server);
  if (!backend) return refuse('WARDEN_SERVER_UNAVAILABLE', `Server "${ctx.tool.server}" is not running.`);
  ctx.facts['dispatched'] = true;
  const result = await backend.callTool(ctx.tool.tool.name, { ...ctx.args }, config.limits.callTimeoutMs);
  // Only the result's payload travels on. The downstream's _meta (its identity, its
  // protocol bookkeeping) is the broker's business, not the agent's.
  return {
    kind: 'result',
    result: {
      content: Array.isArray(result.content) ? result.content : [],
      ...(result.structuredContent === undefined ? {} : { structuredContent: result.structuredContent }),
      ...(result.isError === true ? { isError: true } : {}),
    },
  };
};
