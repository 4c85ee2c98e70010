import { admitCall, type RateLimit } from '../../guard/rate-limits.ts';
import { refuse, type StageFactory } from '../types.ts';

/**
 * Rate and concurrency limits: per agent, per tool (all agents together) and global. A
 * call over any of them is refused, saying which limit and when to retry; a call within
 * them holds its concurrency slots until it ends (a call held for approval included).
 */
export const limitRate: StageFactory = ({ config, limits }) => {
  // The per-tool limit, resolved once per tool for this config (the first override that matches).
  const toolLimits = new Map<string, RateLimit>();
  const toolLimit = (name: string): RateLimit => {
    let limit = toolLimits.get(name);
    if (!limit) {
      limit = config.rateLimits.tools.find((entry) => entry.matchers.some((matches) => matches(name)))?.limit ?? config.rateLimits.perTool;
      toolLimits.set(name, limit);
    }
    return limit;
  };
  return async (ctx, next) => {
    if (!ctx.agent || !ctx.tool) return refuse('WARDEN_INTERNAL', 'The call was refused because a broker check was skipped.');
    const admission = admitCall(
      limits,
      { agent: ctx.agent.name, tool: ctx.tool.exposedName, agentLimit: ctx.agent.rateLimit, toolLimit: toolLimit(ctx.tool.exposedName), globalConcurrent: config.rateLimits.concurrent },
      // Monotonic: a wall clock set back would otherwise stall every bucket for as long.
      performance.now(),
    );
    if (!admission.ok) {
      const seconds = Math.max(1, Math.ceil(admission.retryAfterMs / 1000));
      ctx.facts['limit'] = { scope: admission.scope, kind: admission.kind, limit: admission.limit, retryAfterMs: admission.retryAfterMs };
      const what = admission.kind === 'rate' ? `${admission.limit} calls per minute` : `${admission.limit} calls at once`;
      const whose = admission.scope === 'agent' ? 'this agent' : admission.scope === 'tool' ? 'this tool' : 'the broker';
      const when = admission.kind === 'rate' ? `Retry in ${seconds} s.` : 'Retry when one of your calls in flight has finished.';
      return refuse('WARDEN_RATE_LIMITED', `The ${admission.kind} limit for ${whose} (${what}) refused this call. ${when}`, { retryAfterMs: admission.retryAfterMs });
    }
    try {
      return await next();
    } finally {
      admission.release();
    }
  };
};
