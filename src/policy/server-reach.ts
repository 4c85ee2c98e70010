import type { WardenConfig } from '../config/types.ts';
import { grantable } from './grants.ts';

/**
 * The agents whose grants reach a server: its tools, prompts, resources or requests, with
 * any scopes. Over a connection that cannot tie a server's request to a call (2025-era
 * stdio), the broker relays it only when this is one agent: never a guess between agents.
 */
export function agentsReaching(config: WardenConfig, server: string): readonly string[] {
  return [...config.agents.values()]
    .filter(
      (agent) =>
        agent.resourceGrants.some((grant) => grant.server === server) ||
        agent.serverRequestGrants.some((grant) => grant.server === server) ||
        [...config.catalog.values()].some((tool) => tool.server === server && grantable(agent.grants, tool.exposedName, tool.tool.access)) ||
        [...config.prompts.values()].some((prompt) => prompt.server === server && agent.promptGrants.some((grant) => grant.matchers.some((matches) => matches(prompt.exposedName)))),
    )
    .map((agent) => agent.name);
}
