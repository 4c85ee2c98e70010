import { serveStdio, StdioServerTransport, type StdioServerHandle } from '@modelcontextprotocol/server/stdio';
import type { Broker } from '../broker.ts';
import { approvalStateCodec, createAgentServer } from './agent-server.ts';
import { ListeningTransport } from './listen.ts';

/**
 * Serves one agent on this process's stdin/stdout. The agent is the one named on the
 * command line by whoever configured the host; over stdio the process boundary is the
 * authentication. The wire judges the resources a 2026-07-28 listen stream names before
 * the SDK's entry acknowledges it (see listen.ts).
 */
export function serveAgentOverStdio(broker: Broker, agentName: string): StdioServerHandle {
  const approvalState = approvalStateCodec(broker.config.approvals.expireMs / 1000);
  return serveStdio(({ era }) => createAgentServer(broker, agentName, { notifyToolsChanged: true, approvalState, era }), {
    transport: new ListeningTransport(new StdioServerTransport(), broker.subscriptions, { agentName }),
    onerror: (error) => broker.logger.warn({ err: error.message, agent: agentName }, 'stdio transport error'),
  });
}
