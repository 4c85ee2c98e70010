import { randomBytes } from 'node:crypto';
import { CLIENT_CAPABILITIES_META_KEY, createRequestStateCodec, inputRequired, ProtocolError, Server, type ClientCapabilities, type RequestStateCodec, type ServerContext } from '@modelcontextprotocol/server';
import { SurfaceRefusal, type SurfaceRequest } from '../surface/judge.ts';
import type { WardenErrorCode } from '../errors.ts';
import type { Broker } from '../broker.ts';
import { IDEMPOTENCY_META_KEY } from '../pipeline/stages/deduplicate.ts';
import { APPROVAL_INPUT_KEY, type OAuthSession, type Progress } from '../pipeline/types.ts';
import { BROKER_INFO } from '../version.ts';

const INSTRUCTIONS =
  'mcp-warden is a security broker. It lists only the tools, prompts and resources your policy allows; a request for anything else is refused with a code in brackets, such as [WARDEN_TOOL_NOT_FOUND].';

/**
 * JSON-RPC error codes for refused surface requests: invalid params, else internal. (The
 * SDK sends the 2025 resource-not-found code, -32002, only with data { uri }; the broker's
 * data carries its code and correlation id instead.)
 */
const RPC_CODES: Partial<Record<WardenErrorCode, number>> = {
  WARDEN_RESOURCE_NOT_FOUND: -32602,
  WARDEN_RESOURCE_URI_INVALID: -32602,
  WARDEN_PROMPT_NOT_FOUND: -32602,
  WARDEN_ARGUMENTS_INVALID: -32602,
};

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
  const server = new Server(
    { ...BROKER_INFO },
    {
      // logging: setLevel is accepted per session (the SDK keeps the level).
      capabilities: { tools: { listChanged: true }, prompts: { listChanged: true }, resources: {}, completions: {}, logging: {} },
      instructions: INSTRUCTIONS,
      requestState: { verify: options.approvalState.verify },
    },
  );
  if (options.notifyToolsChanged) {
    const unsubscribe = broker.onToolsChanged((agents) => {
      if (!agents.has(agentName)) return;
      void server.sendToolListChanged().catch(() => undefined);
      // A quarantine or a new config can change the prompts too.
      void server.sendPromptListChanged().catch(() => undefined);
    });
    server.onclose = unsubscribe;
  }
  const surface = (ctx: ServerContext): SurfaceRequest => ({ agentName, ...session, signal: ctx.mcpReq.signal });
  server.setRequestHandler('tools/list', async () => broker.listTools(agentName, session));
  server.setRequestHandler('resources/list', (_request, ctx) => answered(broker.listResources(surface(ctx))));
  server.setRequestHandler('resources/templates/list', (_request, ctx) => answered(broker.listResourceTemplates(surface(ctx))));
  server.setRequestHandler('resources/read', (request, ctx) => answered(broker.readResource(surface(ctx), request.params.uri)));
  server.setRequestHandler('prompts/list', (_request, ctx) => answered(broker.listPrompts(surface(ctx))));
  server.setRequestHandler('prompts/get', (request, ctx) => answered(broker.getPrompt(surface(ctx), request.params.name, request.params.arguments)));
  server.setRequestHandler('completion/complete', (request, ctx) => answered(broker.complete(surface(ctx), request.params)));
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

/** A refused surface request becomes a protocol error carrying its code and correlation id. */
async function answered<T>(pending: Promise<T>): Promise<T> {
  try {
    return await pending;
  } catch (error) {
    if (!(error instanceof SurfaceRefusal)) throw new ProtocolError(-32603, 'mcp-warden refused the request [WARDEN_INTERNAL]: the broker could not record it.');
    throw new ProtocolError(RPC_CODES[error.code] ?? -32603, `mcp-warden refused the request [${error.code}]: ${error.message}`, { code: error.code, correlationId: error.correlationId });
  }
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
