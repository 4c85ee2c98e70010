import type { CatalogTool } from '../../catalog/build.ts';
import type { WardenConfig } from '../../config/types.ts';
import { isWardenError } from '../../errors.ts';
import { findGrant } from '../../policy/grants.ts';
import { printableName } from '../names.ts';
import { refuse, type CallContext, type Refusal, type StageFactory } from '../types.ts';
import { toolNotFound } from './resolve.ts';
import { killSwitchRefusal } from './kill-switch.ts';
import { relayServerRequest } from '../../surface/server-requests.ts';

/** Where a server that asks for it finds the broker's identity token, in the call's _meta. */
export const IDENTITY_META_KEY = 'dev.mcp-warden/identity';

/**
 * Last stage: sends the call to the tool's downstream server, bounded by the tool's
 * timeout and cancelled with the agent's request. At the moment of sending, after the
 * last checks, the call's write-ahead record goes to the audit trail.
 */
export const dispatch: StageFactory = ({ audit, backends, config, identity, killSwitch, liveConfig, secretForms }) => async (ctx) => {
  if (!ctx.tool || !ctx.grant) return refuse('WARDEN_INTERNAL', 'The call was refused because a broker check was skipped.');
  const tool = ctx.tool;
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
  // The last gate, at the moment of sending: the call may have waited for a person while
  // the kill switch went on or a new config revoked its grant; then the stages' own guards.
  let vetoed: Refusal | undefined;
  const onSend = () => {
    vetoed = killSwitchRefusal(killSwitch(), ctx) ?? revoked(liveConfig(), config, ctx.agentName, tool, ctx);
    try {
      for (const guard of ctx.sendGuards ?? []) {
        if (vetoed) break;
        vetoed = guard();
      }
    } catch (error) {
      // A guard that cannot decide (the state store failed) stops the call: fail closed.
      ctx.facts['error'] = { code: 'WARDEN_STATE_UNAVAILABLE', message: error instanceof Error ? error.message : String(error) };
      vetoed = refuse('WARDEN_STATE_UNAVAILABLE', 'The call was refused because the broker cannot use its state store. The operator can find it in the audit trail by its correlation id.');
    }
    if (vetoed) throw new Error('vetoed before sending');
    // Write-ahead: the call is in the audit trail before a byte of it reaches the tool.
    try {
      audit.write({
        event: 'tools/call.dispatch',
        correlationId: ctx.correlationId,
        agent: ctx.agentName,
        tool: printableName(ctx.toolName),
        server: tool.server,
        argsSha256: ctx.argsSha256 ?? null,
        timeoutMs,
        ...(ctx.facts['argsPreview'] === undefined ? {} : { argsPreview: ctx.facts['argsPreview'] }),
        ...(ctx.facts['identityToken'] === undefined ? {} : { identityToken: ctx.facts['identityToken'] }),
      });
    } catch {
      vetoed = refuse('WARDEN_INTERNAL', 'The broker cannot write its audit trail, so it refuses all calls. Tell the operator.');
      throw new Error('vetoed: audit trail not writable');
    }
    ctx.facts['dispatched'] = true;
  };
  // The result goes back through sanitizeOutput, which keeps only what an agent may see.
  try {
    const result = await backend.callTool({
      tool: tool.tool.name,
      args: { ...ctx.args },
      timeoutMs,
      onSend,
      // A server's question to the host during the call: judged by this agent's grants.
      ask: (method, params, signal) => {
        // Judged by the policy in force now: a reload or the kill switch during a long call counts.
        const live = liveConfig();
        const agent = live.agents.get(ctx.agentName);
        const call = { correlationId: ctx.correlationId, agentName: ctx.agentName, server: tool.server, killSwitch: killSwitch(), ...(agent ? { agent } : {}), ...(ctx.oauth ? { oauth: ctx.oauth } : {}), ...(ctx.host ? { host: ctx.host } : {}), ...(ctx.callSecrets ? { callSecrets: ctx.callSecrets } : {}) };
        // Withdrawn when the server cancels its request or the agent's call is cancelled (audited as cancelled).
        return relayServerRequest({ config: live, audit, secretForms }, call, method, params, ctx.signal ? AbortSignal.any([signal, ctx.signal]) : signal);
      },
      correlationId: ctx.correlationId,
      agent: ctx.agentName,
      facts: ctx.facts,
      ...(ctx.signal ? { signal: ctx.signal } : {}),
      ...(ctx.oauth ? { oauth: ctx.oauth } : {}),
      ...(meta ? { meta } : {}),
      ...(ctx.onProgress ? { onProgress: ctx.onProgress } : {}),
      ...(ctx.onLog ? { onLog: ctx.onLog } : {}),
    });
    return { kind: 'result', result };
  } catch (error) {
    if (vetoed) return vetoed;
    // The backend knows no byte reached the tool (refused before connecting, connection
    // refused): the call counts as not dispatched, so an identical write may be made again.
    if (isWardenError(error) && error.detail?.['notSent'] === true) ctx.facts['dispatched'] = false;
    throw error;
  }
};

/** A refusal when the config now in force no longer grants this call, else undefined. */
function revoked(live: WardenConfig, judged: WardenConfig, agentName: string, tool: CatalogTool, ctx: CallContext): Refusal | undefined {
  if (live === judged) return undefined;
  const agent = live.agents.get(agentName);
  const now = live.catalog.get(tool.exposedName);
  if (agent && now && now.server === tool.server && now.tool.access === tool.tool.access && findGrant(agent.grants, now.exposedName, now.tool.access, ctx.oauth?.scopes)) return undefined;
  ctx.facts['cause'] = 'revoked-during-call';
  return toolNotFound(tool.exposedName);
}
