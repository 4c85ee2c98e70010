import { refuse, type StageFactory } from '../types.ts';

/** The agent the front authenticated must still be in the config. */
export const identify: StageFactory = ({ config }) => async (ctx, next) => {
  const agent = config.agents.get(ctx.agentName);
  if (!agent) {
    ctx.facts['cause'] = 'unknown-agent';
    return refuse('WARDEN_UNAUTHENTICATED', 'This agent is not known to the broker. Check the credentials the host uses.');
  }
  ctx.agent = agent;
  return next();
};
