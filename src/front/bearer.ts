import { createHash, timingSafeEqual } from 'node:crypto';
import type { AgentPolicy } from '../config/types.ts';

/** Longest Authorization header value considered; longer ones are refused unread. */
const MAX_TOKEN_LENGTH = 4096;

/**
 * Finds the agent whose token hash matches the presented bearer token. Every agent's
 * hash is compared, in constant time, so timing tells nothing about which agents exist.
 */
export function agentForBearer(header: string | undefined, agents: ReadonlyMap<string, AgentPolicy>): string | undefined {
  if (header === undefined || header.length > MAX_TOKEN_LENGTH) return undefined;
  const match = /^Bearer +([\x21-\x7e]+) *$/i.exec(header);
  if (!match?.[1]) return undefined;
  const presented = createHash('sha256').update(match[1], 'utf8').digest();
  let found: string | undefined;
  for (const agent of agents.values()) {
    if (agent.tokenSha256 && timingSafeEqual(presented, agent.tokenSha256) && found === undefined) found = agent.name;
  }
  return found;
}
