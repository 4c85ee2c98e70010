import { printableName } from '../names.ts';
import type { KillSwitchState } from '../../state/switches.ts';
import { refuse, type CallContext, type Refusal, type StageFactory } from '../types.ts';

/**
 * The kill switch, set with mcp-warden killswitch and read from the state store: on
 * refuses every call, readonly every call to a tool that is not a read tool. Comes after
 * authorize, so it tells an agent nothing about tools it was not granted.
 */
export const enforceKillSwitch: StageFactory = ({ killSwitch }) => async (ctx, next) => {
  if (!ctx.tool) return refuse('WARDEN_INTERNAL', 'The call was refused because a broker check was skipped.');
  return killSwitchRefusal(killSwitch(), ctx) ?? next();
};

/**
 * The refusal the kill switch in `state` gives this call, if any. Checked again just
 * before dispatch: a call held for approval must not run if the switch went on meanwhile.
 */
export function killSwitchRefusal(state: KillSwitchState, ctx: CallContext): Refusal | undefined {
  if (state === 'on') {
    ctx.facts['killSwitch'] = state;
    return refuse('WARDEN_KILL_SWITCH', 'The broker\'s kill switch is on: no tool may be called until an operator turns it off. Tell the user; do not retry.');
  }
  if (state === 'readonly' && ctx.tool?.tool.access !== 'read') {
    ctx.facts['killSwitch'] = state;
    return refuse('WARDEN_READ_ONLY_MODE', `The broker is in read-only mode: "${printableName(ctx.toolName)}" changes something and is refused. Read tools still work.`);
  }
  return undefined;
}
