import { isWardenError } from '../errors.ts';
import { requireApproval } from './stages/approve.ts';
import { authorize } from './stages/authorize.ts';
import { constrainOutput } from './stages/constrain-output.ts';
import { deduplicateWrites } from './stages/deduplicate.ts';
import { dispatch } from './stages/dispatch.ts';
import { identify } from './stages/identify.ts';
import { enforceKillSwitch } from './stages/kill-switch.ts';
import { limitAgent, limitTool } from './stages/rate-limit.ts';
import { record } from './stages/record.ts';
import { resolveTool } from './stages/resolve.ts';
import { sanitizeOutput } from './stages/sanitize-output.ts';
import { validateArguments } from './stages/validate-arguments.ts';
import { refuse, type CallContext, type CallOutcome, type PipelineDeps, type Stage, type StageFactory } from './types.ts';

/**
 * Every check a tools/call passes, in order. Adding a check is adding a file to stages/
 * and a line here.
 */
export const CALL_STAGES: readonly StageFactory[] = [
  record, // outermost: sees every outcome, refuses when the audit trail is down
  identify, // the authenticated agent is in the config
  resolveTool, // the exposed name is in the manifest catalog
  authorize, // a grant covers the tool and its access class (default deny)
  enforceKillSwitch, // the kill switch is off, or readonly and this is a read tool
  limitAgent, // within the agent's rate and concurrency limits
  validateArguments, // arguments meet the global limits and the manifest's input schema
  deduplicateWrites, // a repeated write waits for, or gets, the first one's outcome; the tool runs once
  requireApproval, // a grant that asks for approval holds the call until a person decides
  limitTool, // within the tool's and the broker's limits (calls waiting for a person take none)
  sanitizeOutput, // what comes back is cleaned: escapes, invisible characters, credentials, size
  constrainOutput, // a declared outputSchema is enforced; a declared scope keeps only its fields
  dispatch, // the downstream server answers within the tool's timeout; cancelled with the agent's request
];

export type CallPipeline = (ctx: CallContext) => Promise<CallOutcome>;

/**
 * Builds the stages once and composes them. A stage that throws is turned into a refusal
 * here: a WardenError keeps its code, anything else is WARDEN_INTERNAL (fail closed), and
 * the agent never sees the thrown message.
 */
export function buildCallPipeline(deps: PipelineDeps, factories: readonly StageFactory[] = CALL_STAGES): CallPipeline {
  const stages: readonly Stage[] = factories.map((factory) => factory(deps));
  const run = async (index: number, ctx: CallContext): Promise<CallOutcome> => {
    const stage = stages[index];
    if (!stage) return refuse('WARDEN_INTERNAL', 'The call was refused because no stage dispatched it.');
    try {
      return await stage(ctx, () => run(index + 1, ctx));
    } catch (error) {
      if (isWardenError(error)) {
        ctx.facts['error'] = { code: error.code, ...error.detail };
        // The state store's errors name its file: for the operator (audit, log), not the agent.
        if (error.code === 'WARDEN_STATE_UNAVAILABLE') {
          ctx.facts['error'] = { code: error.code, message: error.message };
          deps.logger.error({ err: error.message, correlationId: ctx.correlationId }, 'the state store failed during a call');
          return refuse(error.code, 'The call was refused because the broker cannot use its state store. The operator can find it in the audit trail by its correlation id.');
        }
        return refuse(error.code, error.message);
      }
      deps.logger.error({ err: error, correlationId: ctx.correlationId }, 'a pipeline stage threw');
      ctx.facts['error'] = { code: 'WARDEN_INTERNAL', stage: index };
      return refuse('WARDEN_INTERNAL', 'The call was refused because a broker check failed. The operator can find it in the audit trail by its correlation id.');
    }
  };
  return (ctx) => run(0, ctx);
}
