import { findGrant, missingScopes } from '../../policy/grants.ts';
import { refuse, type StageFactory } from '../types.ts';
import { toolNotFound } from './resolve.ts';

/**
 * Default deny: the call proceeds only if one of the agent's grants covers the tool and its
 * access class, with every scope it names held by the session's access token.
 */
export const authorize: StageFactory = () => async (ctx, next) => {
  if (!ctx.agent || !ctx.tool) return refuse('WARDEN_INTERNAL', 'The call was refused because a broker check was skipped.');
  const scopes = ctx.oauth?.scopes;
  const grant = findGrant(ctx.agent.grants, ctx.tool.exposedName, ctx.tool.tool.access, scopes);
  if (!grant) {
    ctx.facts['access'] = ctx.tool.tool.access;
    // Only a session with an access token can be told which scopes would do: for the others a scoped grant does not exist.
    const missing = scopes === undefined ? undefined : missingScopes(ctx.agent.grants, ctx.tool.exposedName, ctx.tool.tool.access, scopes);
    if (missing) {
      ctx.facts['cause'] = 'insufficient-scope';
      ctx.facts['missingScopes'] = missing;
      const names = missing.map((scope) => `"${scope}"`).join(', ');
      return refuse(
        'WARDEN_INSUFFICIENT_SCOPE',
        `${ctx.tool.exposedName} needs the OAuth scope${missing.length === 1 ? '' : 's'} ${names}, which this session's access token does not carry. Ask for a token with ${missing.length === 1 ? 'that scope' : 'those scopes'}, or use a tool from tools/list.`,
        { missingScopes: missing },
      );
    }
    ctx.facts['cause'] = 'not-granted';
    return toolNotFound(ctx.toolName);
  }
  ctx.grant = grant;
  ctx.facts['grant'] = grant.index;
  return next();
};
