import { checkArgumentLimits } from '../../guard/argument-limits.ts';
import { describeArgumentError } from '../../guard/argument-schema.ts';
import { printableName } from '../names.ts';
import { refuse, type Refusal, type StageFactory } from '../types.ts';

/**
 * The agent's arguments are untrusted input to the tool: they must meet the global limits
 * and the manifest's input schema (compiled at load; no coercion, no defaults, unknown
 * properties refused). A refused call never reaches the downstream server; the agent is
 * told the path and the rule, so it can correct the call.
 */
export const validateArguments: StageFactory = ({ config }) => async (ctx, next) => {
  if (!ctx.tool) return refuse('WARDEN_INTERNAL', 'The call was refused because a broker check was skipped.');
  const violation = checkArgumentLimits(ctx.args, config.limits.arguments);
  if (violation) return invalid(ctx.facts, violation.path, violation.rule, violation.message);
  if (!ctx.tool.validateArguments(ctx.args)) {
    const error = describeArgumentError(ctx.tool.validateArguments.errors);
    return invalid(ctx.facts, error.path, error.rule, error.message);
  }
  return next();
};

function invalid(facts: Record<string, unknown>, rawPath: string, rule: string, rawMessage: string): Refusal {
  // Paths and property names come from the agent: keep them printable and short.
  const path = printableName(rawPath);
  const message = printableName(rawMessage);
  facts['argumentError'] = { path, rule };
  return refuse('WARDEN_ARGUMENTS_INVALID', `Argument ${path} ${message} (rule: ${rule}). Correct the arguments to match the tool's inputSchema and call again.`);
}
