import { argumentPreview, digestArguments } from '../../audit/digest.ts';
import { printableName } from '../names.ts';
import { refuse, type StageFactory } from '../types.ts';

/**
 * Outermost stage: refuses every call while the audit trail cannot be written (fail
 * closed), and writes one record per call with its decision and outcome, sharing the
 * call's correlation id with the record the dispatch stage writes just before sending.
 * Argument values are never written; their canonical SHA-256 is (null when they cannot
 * be serialised).
 */
export const record: StageFactory = ({ audit, config, secretForms }) => async (ctx, next) => {
  if (!audit.healthy) {
    return refuse('WARDEN_INTERNAL', 'The broker cannot write its audit trail, so it refuses all calls. Tell the operator.');
  }
  // Computed before the call: a stage that throws later must not also lose the record.
  const argsSha256 = digestArguments(ctx.args) ?? null;
  // The stages that bind to the arguments (deduplication, approval) use this one digest.
  if (argsSha256 !== null) ctx.argsSha256 = argsSha256;
  // A preview only where the config asks for one; masked, never a credential.
  if (config.audit.argumentPreviewBytes > 0) {
    ctx.facts['argsPreview'] = await argumentPreview(ctx.args, secretForms(), config.audit.argumentPreviewBytes).catch(() => null);
  }
  const outcome = await next();
  const refused = outcome.kind === 'refused';
  // The result goes back only once its record is written (a failure throws: fail closed).
  audit.write({
    ...ctx.facts, // first, so no fact can overwrite the fields below
    event: 'tools/call',
    correlationId: ctx.correlationId,
    agent: ctx.agentName,
    tool: printableName(ctx.toolName),
    ...(ctx.tool ? { server: ctx.tool.server } : {}),
    decision: (refused || outcome.kind === 'ask-user') && !ctx.facts['dispatched'] ? 'deny' : 'allow',
    reason: refused ? outcome.code : null,
    outcome: refused ? 'refused' : outcome.kind === 'ask-user' ? 'input_required' : outcome.result.isError === true ? 'tool_error' : 'ok',
    durationMs: Math.round((performance.now() - ctx.startedAt) * 1000) / 1000,
    argsSha256,
  });
  return outcome;
};
