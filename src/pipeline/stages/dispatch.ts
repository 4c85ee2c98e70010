import { refuse, type StageFactory } from '../types.ts';

/** Where a server that asks for it finds the broker's identity token, in the call's _meta. */
export const IDENTITY_META_KEY = 'dev.mcp-warden/identity';

/**
 * Last stage: sends the call to the tool's downstream server, bounded by the tool's
 * timeout and cancelled with the agent's request.
 */
export const dispatch: StageFactory = ({ backends, config, identity }) => async (ctx) => {
  if (!ctx.tool || !ctx.grant) return refuse('WARDEN_INTERNAL', 'The call was refused because a broker check was skipped.');
  const backend = backends.get(ctx.tool.server);
  if (!backend) return refuse('WARDEN_SERVER_UNAVAILABLE', `Server "${ctx.tool.server}" is not running.`);
  // The tool's own timeout, never above the policy maximum.
  const timeoutMs = Math.min(ctx.tool.tool.timeoutMs ?? config.limits.callTimeoutMs, config.limits.maxCallTimeoutMs);
  ctx.facts['timeoutMs'] = timeoutMs;
  // A server that asks for it learns which agent calls, from a token the broker signs;
  // the agent's own credentials never travel on.
  const wanted = config.identityTokens.get(ctx.tool.server);
  let meta: Record<string, unknown> | undefined;
  if (wanted) {
    const signer = identity();
    if (!signer) return refuse('WARDEN_INTERNAL', 'The call was refused because the broker cannot sign its identity token.');
    const token = await signer.sign({ audience: wanted.audience, agent: ctx.agentName, tool: ctx.tool.tool.name, callId: ctx.correlationId, lifetimeSeconds: wanted.lifetimeSeconds });
    ctx.callSecrets?.push(token);
    ctx.facts['identityToken'] = { kid: signer.kid, jti: ctx.correlationId };
    meta = { [IDENTITY_META_KEY]: token };
  }
  // The result goes back through sanitizeOutput, which keeps only what an agent may see.
  ctx.facts['dispatched'] = true;
  const result = await backend.callTool(ctx.tool.tool.name, { ...ctx.args }, timeoutMs, ctx.signal, meta, ctx.onProgress);
  return { kind: 'result', result };
};
