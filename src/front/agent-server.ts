import { randomBytes } from 'node:crypto';
import { CLIENT_CAPABILITIES_META_KEY, createRequestStateCodec, inputRequired, Server, type ClientCapabilities, type RequestStateCodec, type ServerContext } from '@modelcontextprotocol/server';
import type { Broker } from '../broker.ts';
import { IDEMPOTENCY_META_KEY } from '../pipeline/stages/deduplicate.ts';
import { APPROVAL_INPUT_KEY, type OAuthSession, type Progress } from '../pipeline/types.ts';
import { BROKER_INFO } from '../version.ts';

const INSTRUCTIONS =
  'mcp-warden is a security broker. It lists only the tools your policy allows; a call to anything else is refused with a code in brackets, such as [WARDEN_TOOL_NOT_FOUND].';

/** The form the host shows its user for an in-band approval: one yes/no question. */
const APPROVAL_FORM: { type: 'object'; properties: { approve: { type: 'boolean'; title: string; description: string } }; required: string[] } = {
  type: 'object',
  properties: { approve: { type: 'boolean', title: 'Allow this call', description: 'Yes runs the tool once with exactly these arguments.' } },
  required: ['approve'],
};

export type ApprovalStateCodec = RequestStateCodec<{ approvalId: string }>;

/**
 * Seals the state an in-band approval carries through the client (HMAC, key held by this
 * process), so a retry can only name an approval the broker itself asked about.
 */
export function approvalStateCodec(ttlSeconds: number): ApprovalStateCodec {
  return createRequestStateCodec<{ approvalId: string }>({ key: randomBytes(32), ttlSeconds });
}

/**
 * The MCP server one agent talks to. Low-level Server, because tool definitions are raw
 * JSON Schema from manifests. With notifyToolsChanged (a long-lived connection, stdio) it
 * sends tools/list_changed itself when this agent's list changes; the HTTP front publishes
 * changes for all its streams. The agent's name, and for an OAuth access token its scopes,
 * are fixed here by the front that authenticated it; nothing the agent sends can change them.
 */
export function createAgentServer(broker: Broker, agentName: string, options: { notifyToolsChanged: boolean; approvalState: ApprovalStateCodec; oauth?: OAuthSession }): Server {
  const session = options.oauth ? { oauth: options.oauth } : {};
  const server = new Server({ ...BROKER_INFO }, { capabilities: { tools: { listChanged: true } }, instructions: INSTRUCTIONS, requestState: { verify: options.approvalState.verify } });
  if (options.notifyToolsChanged) {
    const unsubscribe = broker.onToolsChanged((agents) => {
      if (agents.has(agentName)) void server.sendToolListChanged().catch(() => undefined);
    });
    server.onclose = unsubscribe;
  }
  server.setRequestHandler('tools/list', async () => broker.listTools(agentName, session));
  server.setRequestHandler('tools/call', async (request, ctx) => {
    const args = request.params.arguments ?? {};
    // Progress goes back only to an agent that asked for it, under the agent's own token.
    const progressToken = ctx.mcpReq._meta?.progressToken;
    const onProgress =
      progressToken === undefined
        ? undefined
        : (progress: Progress) => void ctx.mcpReq.notify({ method: 'notifications/progress', params: { progressToken, ...progress } }).catch(() => undefined);
    // The signal aborts when the agent cancels or goes away; the downstream call follows.
    const answer = await broker.call(agentName, request.params.name, args as Record<string, unknown>, {
      signal: ctx.mcpReq.signal,
      ...session,
      ...(onProgress ? { onProgress } : {}),
      idempotencyKey: request.params._meta?.[IDEMPOTENCY_META_KEY],
      userInput: {
        canAsk: canAskUser(server, ctx),
        ...(ctx.mcpReq.inputResponses ? { responses: ctx.mcpReq.inputResponses } : {}),
        ...(ctx.mcpReq.requestState() === undefined ? {} : { state: ctx.mcpReq.requestState() }),
      },
    });
    if (answer.kind === 'result') return answer.result;
    return inputRequired({
      inputRequests: { [APPROVAL_INPUT_KEY]: inputRequired.elicit({ message: answer.message, requestedSchema: APPROVAL_FORM }) },
      requestState: await options.approvalState.mint(answer.state),
    });
  });
  return server;
}

/**
 * Whether the host can show its user a form: the client declared elicitation (form mode)
 * on this request (2026-07-28) or at initialize (2025 era).
 */
function canAskUser(server: Server, ctx: ServerContext): boolean {
  const envelope = ctx.mcpReq.envelope as Record<string, unknown> | undefined;
  const capabilities = (envelope?.[CLIENT_CAPABILITIES_META_KEY] as ClientCapabilities | undefined) ?? server.getClientCapabilities();
  const elicitation = capabilities?.elicitation as { form?: unknown; url?: unknown } | undefined;
  if (!elicitation) return false;
  // An empty elicitation capability means form mode (the 2025-06-18 shape).
  return elicitation.form !== undefined || elicitation.url === undefined;
}
