import { randomBytes, randomUUID } from 'node:crypto';
import { CLIENT_CAPABILITIES_META_KEY, createRequestStateCodec, inputRequired, LOG_LEVEL_META_KEY, ProtocolError, Server, type CallToolResult, type LoggingLevel, type ClientCapabilities, type InputRequests, type RequestStateCodec, type ServerContext, type StandardSchemaV1 } from '@modelcontextprotocol/server';
import { writeOrLog } from '../audit/trail.ts';
import { printableName } from '../pipeline/names.ts';
import { WardenError } from '../errors.ts';
import type { ServerRequestKind } from '../policy/surface-grants.ts';
import type { HostChannel } from '../surface/server-requests.ts';
import type { Subscriber } from '../surface/subscriptions.ts';
import type { FlowState, FlowStep, HostQuestion, RoundChannel } from './call-flows.ts';
import { SurfaceRefusal, type SurfaceRequest } from '../surface/judge.ts';
import type { WardenErrorCode } from '../errors.ts';
import type { Broker } from '../broker.ts';
import { IDEMPOTENCY_META_KEY } from '../pipeline/stages/deduplicate.ts';
import { APPROVAL_INPUT_KEY, LOG_SEVERITY, REFUSAL_META_KEY, type LogMessage, type OAuthSession, type Progress } from '../pipeline/types.ts';
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

/** What a retried tools/call carries, sealed: the approval it answers, or the server's question. */
export interface FrontState {
  readonly approvalId?: string;
  readonly flowId?: string;
  readonly round?: number;
}

export type ApprovalStateCodec = RequestStateCodec<FrontState>;

/**
 * Seals the state an in-band approval carries through the client (HMAC, key held by this
 * process), so a retry can only name an approval the broker itself asked about.
 */
export function approvalStateCodec(ttlSeconds: number): ApprovalStateCodec {
  return createRequestStateCodec<FrontState>({ key: randomBytes(32), ttlSeconds });
}

export interface AgentServerOptions {
  /** Whether this server sends list_changed itself (a connection that stays open). */
  readonly notifyToolsChanged: boolean;
  readonly approvalState: ApprovalStateCodec;
  readonly oauth?: OAuthSession;
  /** The protocol era the instance serves: 2025 (initialize) or 2026-07-28 (per-request envelope). */
  readonly era: 'legacy' | 'modern';
}

/** Accepts any result: the broker checks a host's answer itself (checkSamplingAnswer, checkElicitationAnswer). */
const ANY_ANSWER: StandardSchemaV1<unknown> = { '~standard': { version: 1, vendor: 'mcp-warden', validate: (value) => ({ value }) } };

/**
 * The MCP server one agent talks to. Low-level Server, because tool definitions are raw
 * JSON Schema from manifests. With notifyToolsChanged (a long-lived connection, stdio) it
 * sends tools/list_changed itself when this agent's list changes; the HTTP front publishes
 * changes for all its streams. The agent's name, and for an OAuth access token its scopes,
 * are fixed here by the front that authenticated it; nothing the agent sends can change them.
 */
export function createAgentServer(broker: Broker, agentName: string, options: AgentServerOptions): Server {
  const session = options.oauth ? { oauth: options.oauth } : {};
  const legacy = options.era === 'legacy';
  const server = new Server(
    { ...BROKER_INFO },
    {
      // logging: setLevel is kept per session (below). resources: a 2025-era session
      // subscribes here; a 2026-07-28 agent names its URIs in subscriptions/listen, which the
      // SDK's entry answers after the front has judged them (listen.ts).
      capabilities: { tools: { listChanged: true }, prompts: { listChanged: true }, resources: { subscribe: true, listChanged: true }, completions: {}, logging: {} },
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
    const unsubscribeResources = broker.onResourcesChanged((agents) => {
      if (agents.has(agentName)) void server.sendResourceListChanged().catch(() => undefined);
    });
    server.onclose = () => {
      unsubscribe();
      unsubscribeResources();
    };
  }
  // The level this session asked for (2025 era, logging/setLevel); a 2026-07-28 request names its own.
  let sessionLogLevel: LoggingLevel | undefined;
  server.setRequestHandler('logging/setLevel', (request) => {
    sessionLogLevel = request.params.level;
    return {};
  });
  const surface = (ctx: ServerContext): SurfaceRequest => ({ agentName, ...session, signal: ctx.mcpReq.signal });
  server.setRequestHandler('tools/list', async () => broker.listTools(agentName, session));
  server.setRequestHandler('resources/list', (_request, ctx) => answered(broker.listResources(surface(ctx))));
  server.setRequestHandler('resources/templates/list', (_request, ctx) => answered(broker.listResourceTemplates(surface(ctx))));
  server.setRequestHandler('resources/read', (request, ctx) => answered(broker.readResource(surface(ctx), request.params.uri)));
  // 2025 era: subscriptions live as long as this session. (A 2026-07-28 agent's listen
  // stream is a subscriber of the front's: resources/subscribe is not a method of its era.)
  if (legacy) {
    const subscriber: Subscriber = { request: { agentName, ...session }, notify: (uri) => void server.sendResourceUpdated({ uri }).catch(() => undefined) };
    server.setRequestHandler('resources/subscribe', (request) => answered(broker.subscriptions.subscribe(subscriber, request.params.uri)));
    server.setRequestHandler('resources/unsubscribe', (request) => answered(broker.subscriptions.unsubscribe(subscriber, request.params.uri)));
    const closed = server.onclose;
    server.onclose = () => {
      closed?.();
      void broker.subscriptions.dropSession(subscriber).catch(() => undefined);
    };
  }
  server.setRequestHandler('prompts/list', (_request, ctx) => answered(broker.listPrompts(surface(ctx))));
  server.setRequestHandler('prompts/get', (request, ctx) => answered(broker.getPrompt(surface(ctx), request.params.name, request.params.arguments)));
  server.setRequestHandler('completion/complete', (request, ctx) => answered(broker.complete(surface(ctx), request.params)));
  server.setRequestHandler('tools/call', async (request, ctx) => {
    const args = request.params.arguments ?? {};
    const name = request.params.name;
    const channel = roundChannel(ctx, sessionLogLevel);
    const state = ctx.mcpReq.requestState() as FrontState | undefined;
    // The retry that carries the host's answer to a server's question: the call goes on.
    const resume = async (flow: FlowState, answers: Readonly<Record<string, unknown>> | undefined): Promise<Step> => {
      try {
        return await broker.flows.resume(agentName, name, flow, answers, ctx.mcpReq.signal, channel, legacy);
      } catch (error) {
        if (error instanceof WardenError) return { kind: 'refused', result: refusal(error, broker, agentName, name) };
        throw error;
      }
    };
    let step: Step;
    if (state?.flowId !== undefined && state.round !== undefined) {
      step = await resume({ flowId: state.flowId, round: state.round }, ctx.mcpReq.inputResponses);
    } else {
      const canAsk = canAskUser(server, ctx);
      const can = (kind: ServerRequestKind) => hostCan(server, ctx, kind);
      step = await broker.flows.begin(
        agentName,
        name,
        (ask, signal, report) =>
          // The signal aborts when the agent cancels or goes away; the downstream call follows.
          broker.call(agentName, name, args as Record<string, unknown>, {
            signal,
            ...session,
            // Asked for by this first request (a progress token, a log level): reported to
            // whichever request of the agent's is current when it happens.
            ...(channel.progress ? { onProgress: report.progress } : {}),
            ...(channel.log ? { onLog: report.log } : {}),
            idempotencyKey: request.params._meta?.[IDEMPOTENCY_META_KEY],
            host: { can, ask } satisfies HostChannel,
            userInput: {
              canAsk,
              ...(ctx.mcpReq.inputResponses ? { responses: ctx.mcpReq.inputResponses } : {}),
              ...(state?.approvalId === undefined ? {} : { state: { approvalId: state.approvalId } }),
            },
          }),
        ctx.mcpReq.signal,
        channel,
        legacy,
      );
    }
    // A 2025-era host is asked here, by requests of this server's own within the agent's
    // request, and whatever comes back (an answer, an error, nothing in time) goes to the
    // waiting call: the call never outlives the agent's request waiting for an answer.
    while (legacy && step.kind === 'ask') {
      const answers = await askHost(ctx, step.questions, broker.config.limits.answerTimeoutMs, step.unneeded);
      step = await resume({ flowId: step.flowId, round: step.round }, answers);
    }
    if (step.kind === 'refused') return step.result;
    if (step.kind === 'ask') {
      return inputRequired({ inputRequests: step.questions as InputRequests, requestState: await options.approvalState.mint({ flowId: step.flowId, round: step.round }) });
    }
    const answer = step.value;
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

/** A retry whose continuation is gone: a tool error with the code, like any refusal. */
function refusal(error: WardenError, broker: Broker, agentName: string, tool: string): CallToolResult {
  const correlationId = randomUUID();
  writeOrLog(broker.audit, { event: 'tools/call', correlationId, agent: agentName, tool: printableName(tool), outcome: 'refused', decision: 'deny', reason: error.code }, broker.logger);
  return { content: [{ type: 'text', text: `mcp-warden refused the call [${error.code}]: ${error.message}` }], isError: true, _meta: { [REFUSAL_META_KEY]: { code: error.code, correlationId } } };
}

/** Where a round of a tool call ends: the call's answer, a question for the host, or a refused retry. */
type Step = FlowStep<Awaited<ReturnType<Broker['call']>>> | { readonly kind: 'refused'; readonly result: CallToolResult };

/**
 * Where this agent request takes the call's progress (only with a progress token) and the
 * server's log messages (at or above the level the agent asked for: the request's _meta
 * level on 2026-07-28, logging/setLevel on a 2025-era session).
 */
function roundChannel(ctx: ServerContext, sessionLogLevel: LoggingLevel | undefined): RoundChannel {
  const progressToken = ctx.mcpReq._meta?.progressToken;
  const logLevel = ((ctx.mcpReq.envelope as Record<string, unknown> | undefined)?.[LOG_LEVEL_META_KEY] as LoggingLevel | undefined) ?? sessionLogLevel;
  const threshold = logLevel === undefined ? undefined : LOG_SEVERITY.get(logLevel);
  return {
    ...(progressToken === undefined ? {} : { progress: (progress: Progress) => void ctx.mcpReq.notify({ method: 'notifications/progress', params: { progressToken, ...progress } }).catch(() => undefined) }),
    ...(threshold === undefined
      ? {}
      : {
          log: ({ level, data, logger }: LogMessage) => {
            if ((LOG_SEVERITY.get(level) ?? 0) >= threshold) void ctx.mcpReq.log(level, data, logger).catch(() => undefined);
          },
        }),
  };
}

/**
 * Asks a 2025-era host the server's questions, all at once, each bounded by the answer
 * time. An answer is passed on as it came (the broker checks it itself); a failure becomes
 * the Error its question fails with.
 */
async function askHost(ctx: ServerContext, questions: Readonly<Record<string, HostQuestion>>, timeoutMs: number, unneeded: AbortSignal): Promise<Record<string, unknown>> {
  // Withdrawn from the host (the SDK cancels its request) when the agent goes or the server no longer waits.
  const signal = AbortSignal.any([ctx.mcpReq.signal, unneeded]);
  const answered = await Promise.all(
    Object.entries(questions).map(async ([key, question]): Promise<[string, unknown]> => {
      try {
        return [key, await ctx.mcpReq.send({ method: question.method, params: question.params }, ANY_ANSWER, { timeout: timeoutMs, signal })];
      } catch (error) {
        return [key, error instanceof Error ? error : new Error(String(error))];
      }
    }),
  );
  return Object.fromEntries(answered);
}

/** The client capabilities of this request (2026-07-28) or of the session (2025 era). */
function capabilitiesOf(server: Server, ctx: ServerContext): ClientCapabilities | undefined {
  const envelope = ctx.mcpReq.envelope as Record<string, unknown> | undefined;
  return (envelope?.[CLIENT_CAPABILITIES_META_KEY] as ClientCapabilities | undefined) ?? server.getClientCapabilities();
}

/** Whether the host can answer a server's sampling or (form) elicitation request. */
function hostCan(server: Server, ctx: ServerContext, kind: ServerRequestKind): boolean {
  return kind === 'sampling' ? capabilitiesOf(server, ctx)?.sampling !== undefined : canAskUser(server, ctx);
}

/**
 * Whether the host can show its user a form: the client declared elicitation (form mode)
 * on this request (2026-07-28) or at initialize (2025 era).
 */
function canAskUser(server: Server, ctx: ServerContext): boolean {
  const elicitation = capabilitiesOf(server, ctx)?.elicitation as { form?: unknown; url?: unknown } | undefined;
  if (!elicitation) return false;
  // An empty elicitation capability means form mode (the 2025-06-18 shape).
  return elicitation.form !== undefined || elicitation.url === undefined;
}
