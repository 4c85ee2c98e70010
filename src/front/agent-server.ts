import { Server } from '@modelcontextprotocol/server';
import type { Broker } from '../broker.ts';
import type { Progress } from '../pipeline/types.ts';
import { BROKER_INFO } from '../version.ts';

const INSTRUCTIONS =
  'mcp-warden is a security broker. It lists only the tools your policy allows; a call to anything else is refused with a code in brackets, such as [WARDEN_TOOL_NOT_FOUND].';

/**
 * The MCP server one agent talks to. Low-level Server, because tool definitions are raw
 * JSON Schema from manifests. With notifyToolsChanged (a long-lived connection, stdio) it
 * sends tools/list_changed itself; the HTTP front publishes changes for all its streams. The agent's name is fixed here by the front that
 * authenticated it; nothing the agent sends can change it.
 */
export function createAgentServer(broker: Broker, agentName: string, options: { notifyToolsChanged: boolean }): Server {
  const server = new Server({ ...BROKER_INFO }, { capabilities: { tools: { listChanged: true } }, instructions: INSTRUCTIONS });
  if (options.notifyToolsChanged) {
    // A quarantined server changes this agent's list: tell the agent to list again.
    const unsubscribe = broker.onToolsChanged(() => void server.sendToolListChanged().catch(() => undefined));
    server.onclose = unsubscribe;
  }
  server.setRequestHandler('tools/list', async () => broker.listTools(agentName));
  server.setRequestHandler('tools/call', async (request, ctx) => {
    const args = request.params.arguments ?? {};
    // Progress goes back only to an agent that asked for it, under the agent's own token.
    const progressToken = ctx.mcpReq._meta?.progressToken;
    const onProgress =
      progressToken === undefined
        ? undefined
        : (progress: Progress) => void ctx.mcpReq.notify({ method: 'notifications/progress', params: { progressToken, ...progress } }).catch(() => undefined);
    // The signal aborts when the agent cancels or goes away; the downstream call follows.
    return broker.callTool(agentName, request.params.name, args as Record<string, unknown>, ctx.mcpReq.signal, onProgress);
  });
  return server;
}
