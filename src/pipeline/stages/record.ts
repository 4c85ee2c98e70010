import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { printableName } from '../names.ts';
import { refuse, type StageFactory } from '../types.ts';

/**
 * Outermost stage: refuses every call while the audit trail cannot be written (fail
 * closed), and writes one record per call with its decision and outcome. Argument values
 * are never written; their canonical SHA-256 is.
 */
export const record: StageFactory = ({ audit }) => async (ctx, next) => {
  if (!audit.healthy) {
    return refuse('WARDEN_INTERNAL', 'The broker cannot write its audit trail, so it refuses all calls. Tell the operator.');
  }
  const outcome = await next();
  const refused = outcome.kind === 'refused';
  audit.write({
    event: 'tools/call',
    correlationId: ctx.correlationId,
    agent: ctx.agentName,
    tool: printableName(ctx.toolName),
    ...(ctx.tool ? { server: ctx.tool.server } : {}),
    decision: refused && !ctx.facts['dispatched'] ? 'deny' : 'allow',
    reason: refused ? outcome.code : null,
    outcome: refused ? 'refused' : outcome.result.isError === true ? 'tool_error' : 'ok',
    durationMs: Math.round((performance.now() - ctx.startedAt) * 1000) / 1000,
    argsSha256: createHash('sha256').update(canonicalize(ctx.args) ?? 'null').digest('hex'),
    ...ctx.facts,
  });
  return outcome;
};
