import canonicalize from 'canonicalize';
import type { ApprovalRecord } from '../../state/approvals.ts';
import { printableName } from '../names.ts';
import { APPROVAL_INPUT_KEY, refuse, type CallContext, type CallOutcome, type Next, type PipelineDeps, type StageFactory } from '../types.ts';

/** An agent with this many approvals pending gets no more until some are decided. */
export const MAX_PENDING_PER_AGENT = 64;
/** How much of the arguments the user is shown in an in-band question. */
const QUESTION_ARGUMENTS_CHARS = 2000;

/**
 * A grant may make each call wait for a person. approval required: the call is held until
 * someone decides with mcp-warden approvals (out of band: nothing the agent sends can
 * answer it), or the hold time ends and the agent is told to call again. approval user:
 * the host asks its user; a host that cannot ask falls back to out-of-band approval or is
 * refused, as the grant says. An approval binds the agent, the tool and the canonical
 * arguments, and is used once.
 */
export const requireApproval: StageFactory = (deps) => async (ctx, next) => {
  if (!ctx.grant || !ctx.tool || !ctx.agent) return refuse('WARDEN_INTERNAL', 'The call was refused because a broker check was skipped.');
  if (ctx.grant.approval === 'none') return next();
  const argsDigest = ctx.argsSha256;
  const args = safeCanonical(ctx.args);
  if (argsDigest === undefined || args === undefined) return refuse('WARDEN_INTERNAL', 'The call was refused because its arguments cannot be identified.');
  const call = { agent: ctx.agent.name, tool: ctx.tool.exposedName, argsDigest, arguments: args };
  if (ctx.grant.approval === 'user') {
    // A question the user cannot read in full is not asked: that is not an informed yes.
    if (ctx.userInput?.canAsk && args.length <= QUESTION_ARGUMENTS_CHARS) return askTheUser(deps, ctx, next, call);
    if (ctx.grant.fallback === 'refuse') {
      ctx.facts['approval'] = { kind: 'user', outcome: 'host-cannot-ask' };
      const why = ctx.userInput?.canAsk ? `its arguments are too long to show the user in full (over ${QUESTION_ARGUMENTS_CHARS} characters)` : 'your MCP host cannot ask for it (no elicitation support)';
      return refuse('WARDEN_APPROVAL_UNAVAILABLE', `This call needs the user's approval, and ${why}. Ask the user to run it from a host that can, or to ask the security team for another way.`);
    }
  }
  return outOfBand(deps, ctx, next, call);
};

interface BoundCall {
  readonly agent: string;
  readonly tool: string;
  readonly argsDigest: string;
  readonly arguments: string;
}

async function outOfBand(deps: PipelineDeps, ctx: CallContext, next: Next, call: BoundCall): Promise<CallOutcome> {
  const { state, config, approvals, audit, logger } = deps;
  const now = Date.now();
  const opened = state.approvals.open({ ...call, kind: 'out-of-band', correlationId: ctx.correlationId, now, expireMs: config.approvals.expireMs, maxPendingPerAgent: MAX_PENDING_PER_AGENT });
  if (opened === 'backlog') {
    ctx.facts['approval'] = { kind: 'out-of-band', outcome: 'backlog' };
    return refuse('WARDEN_RATE_LIMITED', `This agent already has ${MAX_PENDING_PER_AGENT} calls waiting for approval. Wait until a person has decided some of them.`);
  }
  let record = opened.record;
  ctx.facts['approval'] = { id: record.id, kind: 'out-of-band' };
  if (opened.created) {
    audit.write({ event: 'approval.requested', id: record.id, kind: 'out-of-band', agent: call.agent, tool: call.tool, argsSha256: call.argsDigest, correlationId: ctx.correlationId, expiresAt: new Date(record.expiresAt).toISOString() });
    logger.info({ approval: record.id, agent: call.agent, tool: call.tool }, 'a call waits for approval: mcp-warden approvals show ' + record.id);
  }
  if (record.status === 'pending') {
    ctx.onProgress?.({ progress: 0, message: `Waiting for a person to approve (approval ${record.id}).` });
    const waited = await approvals.wait(record.id, config.approvals.waitMs, ctx.signal);
    if (waited.end === 'cancelled') {
      return refuse('WARDEN_CALL_CANCELLED', `The call was cancelled while it waited for approval ${record.id}. The approval stays open until it expires; calling again with the same arguments waits for it.`);
    }
    if (waited.end === 'still-pending') {
      ctx.facts['approval'] = { id: record.id, kind: 'out-of-band', outcome: 'pending' };
      return refuse(
        'WARDEN_APPROVAL_PENDING',
        `This call needs a person's approval (approval ${record.id}) and nobody has decided yet. Tell the user; once it is approved, call the tool again with exactly the same arguments. Unanswered, it is refused at ${new Date(record.expiresAt).toISOString()}.`,
        { approvalId: record.id, retryAfterMs: config.approvals.waitMs },
      );
    }
    // The broker audits the decision itself when it sees it (Broker: approval.decided).
    record = waited.record;
  }
  return settle(deps, ctx, next, record);
}

/**
 * A decided approval either lets the call through, once, or refuses it with what the
 * person said. The approval is used at the moment the call is sent, not before: a call
 * refused on the way (a rate limit) leaves it for the identical retry.
 */
async function settle(deps: PipelineDeps, ctx: CallContext, next: Next, record: ApprovalRecord): Promise<CallOutcome> {
  const decided = { id: record.id, kind: record.kind, status: record.status, decidedBy: record.decidedBy ?? null };
  if (record.status === 'approved') {
    ctx.facts['approval'] = { ...decided, outcome: 'approved' };
    if (!ctx.sendGuards) return refuse('WARDEN_INTERNAL', 'The call was refused because a broker check was skipped.');
    // First among the guards: it may veto, so it runs before any guard that commits to sending.
    ctx.sendGuards.unshift(() => {
      if (deps.state.approvals.consume(record.id)) {
        ctx.facts['approval'] = { ...decided, outcome: 'used' };
        return undefined;
      }
      ctx.facts['approval'] = { ...decided, outcome: 'already-used' };
      return refuse('WARDEN_APPROVAL_PENDING', `Approval ${record.id} was used by another identical call. Call again to ask for a new approval.`, { approvalId: record.id });
    });
    return next();
  }
  ctx.facts['approval'] = { ...decided, outcome: 'refused' };
  if (record.status === 'denied') {
    const reason = record.reason ? ` Reason given: "${printableName(record.reason)}".` : '';
    return refuse('WARDEN_APPROVAL_DENIED', `The call was refused by the person who decided approval ${record.id}.${reason} Do not repeat it unchanged.`, { approvalId: record.id });
  }
  if (record.status === 'expired') {
    return refuse('WARDEN_APPROVAL_EXPIRED', `Nobody decided approval ${record.id} in time, so the call was refused. Call again to ask for a new approval.`, { approvalId: record.id });
  }
  return refuse('WARDEN_APPROVAL_PENDING', `Approval ${record.id} was already used. Call again to ask for a new approval.`, { approvalId: record.id });
}

/**
 * In band: the first round opens an approval and asks the user; the retry carries the
 * answer and the sealed state naming the approval. The approval must be for this very
 * call (agent, tool, arguments), so an answer cannot be replayed onto another call.
 */
async function askTheUser(deps: PipelineDeps, ctx: CallContext, next: Next, call: BoundCall): Promise<CallOutcome> {
  const { state, config, audit } = deps;
  const sealed = ctx.userInput?.state as { approvalId?: unknown } | undefined;
  if (sealed !== undefined && typeof sealed === 'object' && sealed !== null && typeof sealed.approvalId === 'string') {
    const record = state.approvals.get(sealed.approvalId);
    if (!record || record.kind !== 'user' || record.agent !== call.agent || record.tool !== call.tool || record.argsDigest !== call.argsDigest) {
      ctx.facts['approval'] = { id: sealed.approvalId, kind: 'user', outcome: 'mismatch' };
      return refuse('WARDEN_APPROVAL_DENIED', 'The answer does not belong to this call (other tool or arguments). Call the tool again to ask the user.');
    }
    if (record.status !== 'pending') return settle(deps, ctx, next, record);
    const answer = readAnswer(ctx.userInput?.responses?.[APPROVAL_INPUT_KEY]);
    if (answer !== 'missing') {
      const now = Date.now();
      const decided = state.approvals.decide(record.id, answer === 'approve' ? 'approved' : 'denied', 'user (in band)', answer === 'approve' ? '' : 'declined in the conversation', now);
      audit.write({ event: 'approval.decided', id: record.id, kind: 'user', verdict: decided.status, agent: call.agent, tool: call.tool, correlationId: ctx.correlationId });
      return settle(deps, ctx, next, decided);
    }
    return question(record, call, ctx);
  }
  const opened = state.approvals.open({ ...call, kind: 'user', correlationId: ctx.correlationId, now: Date.now(), expireMs: config.approvals.expireMs, maxPendingPerAgent: MAX_PENDING_PER_AGENT });
  if (opened === 'backlog') return refuse('WARDEN_RATE_LIMITED', `This agent already has ${MAX_PENDING_PER_AGENT} calls waiting for approval.`);
  if (opened.created) {
    audit.write({ event: 'approval.requested', id: opened.record.id, kind: 'user', agent: call.agent, tool: call.tool, argsSha256: call.argsDigest, correlationId: ctx.correlationId, expiresAt: new Date(opened.record.expiresAt).toISOString() });
  }
  if (opened.record.status === 'approved') return settle(deps, ctx, next, opened.record);
  return question(opened.record, call, ctx);
}

function question(record: ApprovalRecord, call: BoundCall, ctx: CallContext): CallOutcome {
  ctx.facts['approval'] = { id: record.id, kind: 'user', outcome: 'asked' };
  const shown = call.arguments.length > QUESTION_ARGUMENTS_CHARS ? `${call.arguments.slice(0, QUESTION_ARGUMENTS_CHARS)}… (${call.arguments.length} characters in all)` : call.arguments;
  const message = `mcp-warden: agent "${call.agent}" wants to call the tool "${call.tool}" (${ctx.tool?.tool.access ?? 'write'}) with these arguments, exactly:\n${printableJson(shown)}\nAllow this one call?`;
  return { kind: 'ask-user', message, state: { approvalId: record.id } };
}

/** The user's answer: approve only on an accepted form whose approve field is true. */
function readAnswer(response: unknown): 'approve' | 'deny' | 'missing' {
  if (typeof response !== 'object' || response === null) return 'missing';
  const { action, content } = response as { action?: unknown; content?: unknown };
  if (action === 'decline' || action === 'cancel') return 'deny';
  if (action !== 'accept') return 'missing';
  const approve = typeof content === 'object' && content !== null ? (content as { approve?: unknown }).approve : undefined;
  return approve === true ? 'approve' : 'deny';
}

function safeCanonical(args: unknown): string | undefined {
  try {
    return canonicalize(args) ?? 'null';
  } catch {
    return undefined;
  }
}

/** Arguments come from the agent: control and invisible characters are shown escaped, never rendered. */
function printableJson(text: string): string {
  return text.replace(/[^\x20-\x7e\n]/gu, (char) => `\\u{${char.codePointAt(0)?.toString(16)}}`);
}
