import { refuse, type StageFactory } from '../types.ts';

/**
 * Last stage: sends the call to the tool's downstream server, bounded by the tool's
 * timeout and cancelled with the agent's request.
 */
export const dispatch: StageFactory = ({ backends, config }) => async (ctx) => {
  if (!ctx.tool || !ctx.grant) return refuse('WARDEN_INTERNAL', 'The call was refused because a broker check was skipped.');
  const backend = backends.get(ctx.tool.server);
  if (!backend) return refuse('WARDEN_SERVER_UNAVAILABLE', `Server "${ctx.tool.server}" is not running.`);
  ctx.facts['dispatched'] = true;
  // The tool's own timeout, never above the policy maximum.
  const timeoutMs = Math.min(ctx.tool.tool.timeoutMs ?? config.limits.callTimeoutMs, config.limits.maxCallTimeoutMs);
  ctx.facts['timeoutMs'] = timeoutMs;
  // The result goes back through sanitizeOutput, which keeps only what an agent may see.
  const result = await backend.callTool(ctx.tool.tool.name, { ...ctx.args }, timeoutMs, ctx.signal);
  return { kind: 'result', result };
};
