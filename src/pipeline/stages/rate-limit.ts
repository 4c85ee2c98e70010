import { admitCall, type Admission, type LimitStore, type RateLimit } from '../../guard/rate-limits.ts';
import { refuse, type CallContext, type CallOutcome, type Next, type StageFactory } from '../types.ts';

/**
 * Rate and concurrency limits, in two places. The agent's own limits come before
 * approval: a call held for a person counts against its agent. The tool's limits and the
 * broker's come after it, just before the tool is called, so calls waiting for a person
 * never take the tool's capacity from other agents. A call over any limit is refused,
 * saying which limit and when to retry; a call within them holds its concurrency slots
 * until it ends.
 */
export const limitAgent: StageFactory = ({ limits }) => async (ctx, next) => {
  if (!ctx.agent || !ctx.tool) return refuse('WARDEN_INTERNAL', 'The call was refused because a broker check was skipped.');
  return admitted(limits, ctx, next, { agent: ctx.agent.name, tool: ctx.tool.exposedName, agentLimit: ctx.agent.rateLimit, toolLimit: {} });
};

export const limitTool: StageFactory = ({ config, limits }) => {
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
    const call = { agent: ctx.agent.name, tool: ctx.tool.exposedName, agentLimit: {}, toolLimit: toolLimit(ctx.tool.exposedName), globalConcurrent: config.rateLimits.concurrent };
    return admitted(limits, ctx, next, call);
  };
};

/** One admission: refused with what the agent needs to know, or next() with the slots held until it ends. */
async function admitted(limits: LimitStore, ctx: CallContext, next: Next, call: Parameters<typeof admitCall>[1]): Promise<CallOutcome> {
  // Monotonic: a wall clock set back would otherwise stall every bucket for as long.
  const admission: Admission = admitCall(limits, call, performance.now());
  if (!admission.ok) {
    const seconds = Math.max(1, Math.ceil(admission.retryAfterMs / 1000));
    ctx.facts['limit'] = { scope: admission.scope, kind: admission.kind, limit: admission.limit, retryAfterMs: admission.retryAfterMs };
    const what = admission.kind === 'rate' ? `${admission.limit} calls per minute` : `${admission.limit} calls at once`;
    const whose = admission.scope === 'agent' ? 'this agent' : admission.scope === 'tool' ? 'this tool' : 'the broker';
    const when = admission.kind === 'rate' ? `Retry in ${seconds} s.` : 'Retry when a call in flight has finished.';
    return refuse('WARDEN_RATE_LIMITED', `The ${admission.kind} limit for ${whose} (${what}) refused this call. ${when}`, { retryAfterMs: admission.retryAfterMs });
  }
  let outcome: CallOutcome | undefined;
  try {
    outcome = await next();
    return outcome;
  } finally {
    admission.release();
    // Refused by the tool's or the broker's limit, the call did not happen: the agent keeps its token.
    const limit = ctx.facts['limit'] as { scope?: string } | undefined;
    if (outcome?.kind === 'refused' && outcome.code === 'WARDEN_RATE_LIMITED' && limit?.scope !== undefined && limit.scope !== 'agent') admission.refund();
  }
}
