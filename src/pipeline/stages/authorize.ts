import { findGrant } from '../../policy/grants.ts';
import { refuse, type StageFactory } from '../types.ts';
import { toolNotFound } from './resolve.ts';

/** Default deny: the call proceeds only if one of the agent's grants covers the tool and its access class. */
export const authorize: StageFactory = () => async (ctx, next) => {
  if (!ctx.agent || !ctx.tool) return refuse('WARDEN_INTERNAL', 'The call was refused because a broker check was skipped.');
  const grant = findGrant(ctx.agent.grants, ctx.tool.exposedName, ctx.tool.tool.access);
  if (!grant) {
    ctx.facts['cause'] = 'not-granted';
    ctx.facts['access'] = ctx.tool.tool.access;
    return toolNotFound(ctx.toolName);
  }
  ctx.grant = grant;
  ctx.facts['grant'] = grant.index;
  return next();
};
