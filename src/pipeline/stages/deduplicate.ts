import { refuse, type CallOutcome, type Refusal, type StageFactory } from '../types.ts';

/** Where a client may put its own idempotency key, in the tools/call request's _meta. */
export const IDEMPOTENCY_META_KEY = 'dev.mcp-warden/idempotency-key';
/** Where a replayed result says which call it is the result of. */
export const REPLAY_META_KEY = 'mcp-warden/replay';

const CLIENT_KEY = /^[\x21-\x7e]{1,128}$/;

interface Recorded {
  readonly outcome: CallOutcome;
  readonly correlationId: string;
  readonly at: string;
}

/**
 * Agents retry; a write must not happen twice. Each call to a write or destructive tool
 * (unless its manifest signs it idempotent) gets a key: the client's, from _meta, or the
 * digest of agent, tool and canonical arguments. Within the window, a repeat of a call in
 * flight waits for its outcome, and a repeat of a finished call gets the recorded outcome;
 * the tool runs once. A call that never reached the tool is forgotten, so it can be made
 * again. Records are in the state store and outlive a restart.
 */
export const deduplicateWrites: StageFactory = ({ config, state, writesInFlight, instanceId, logger }) => async (ctx, next) => {
  if (!ctx.tool || !ctx.agent) return refuse('WARDEN_INTERNAL', 'The call was refused because a broker check was skipped.');
  if (ctx.tool.tool.access === 'read' || ctx.tool.tool.idempotent === true) return next();

  const argsDigest = ctx.argsSha256;
  if (argsDigest === undefined) return refuse('WARDEN_INTERNAL', 'The call was refused because its arguments cannot be identified.');
  let key = `args:${argsDigest}`;
  if (ctx.idempotencyKey !== undefined) {
    if (typeof ctx.idempotencyKey !== 'string' || !CLIENT_KEY.test(ctx.idempotencyKey)) {
      ctx.facts['cause'] = 'bad-idempotency-key';
      return refuse('WARDEN_ARGUMENTS_INVALID', `_meta["${IDEMPOTENCY_META_KEY}"] must be 1 to 128 printable ASCII characters without spaces. Fix it or leave it out.`);
    }
    key = `client:${ctx.idempotencyKey}`;
  }
  const agent = ctx.agent.name;
  const tool = ctx.tool.exposedName;
  const flightKey = `${agent}\u0000${tool}\u0000${key}`;
  ctx.facts['idempotency'] = { key: key.startsWith('client:') ? 'client' : 'arguments' };

  const running = writesInFlight.get(flightKey);
  if (running) {
    // Same key in flight in this process: wait for its outcome. A client key with other arguments is a conflict.
    if (running.argsDigest !== argsDigest) return conflict(ctx.facts);
    ctx.facts['idempotency'] = { ...(ctx.facts['idempotency'] as object), joined: true };
    return untilCancelled(running.outcome, ctx.signal);
  }

  const now = Date.now();
  const entry = state.idempotency.begin({ agent, tool, key, argsDigest, owner: instanceId, now, windowMs: config.idempotency.windowMs });
  if (entry.kind !== 'first' && entry.argsDigest !== argsDigest) return conflict(ctx.facts);
  if (entry.kind === 'done') {
    ctx.facts['idempotency'] = { ...(ctx.facts['idempotency'] as object), replayed: true };
    return replay(entry.outcome, entry.expiresAt);
  }
  if (entry.kind === 'in-flight') {
    ctx.facts['idempotency'] = { ...(ctx.facts['idempotency'] as object), unknownOutcome: true };
    return refuse(
      'WARDEN_OUTCOME_UNKNOWN',
      `An identical call is still running elsewhere or its outcome was lost when the broker stopped, so it is not made again. Check whether it took effect; after ${new Date(entry.expiresAt).toISOString()} the same call can be made again.`,
      { retryAfterMs: Math.max(0, entry.expiresAt - now) },
    );
  }

  if (!ctx.sendGuards) return refuse('WARDEN_INTERNAL', 'The call was refused because a broker check was skipped.');
  // The record says "held" until the request is sent; from then on its outcome matters.
  ctx.sendGuards.push(() => {
    const now = Date.now();
    const claim = state.idempotency.sending({ agent, tool, key, argsDigest, owner: instanceId, now, until: now + config.idempotency.windowMs + config.limits.maxCallTimeoutMs });
    if (claim === 'mine') return undefined;
    // Another broker sharing the state store is sending the identical call right now.
    ctx.facts['idempotency'] = { ...(ctx.facts['idempotency'] as object), unknownOutcome: true };
    return refuse('WARDEN_OUTCOME_UNKNOWN', 'An identical call is being made by another broker at this moment, so it is not made again. Call again shortly to get its result.');
  });
  const started = (async (): Promise<CallOutcome> => {
    const outcome = await next();
    try {
      // Not sent to the tool: nothing happened, so nothing to protect.
      if (outcome.kind !== 'result' && !ctx.facts['dispatched']) state.idempotency.abandon(agent, tool, key, instanceId);
      else state.idempotency.finish(agent, tool, key, instanceId, JSON.stringify({ outcome, correlationId: ctx.correlationId, at: new Date().toISOString() } satisfies Recorded), Date.now(), config.idempotency.windowMs);
    } catch (error) {
      // The record stays in flight: a repeat is refused (outcome unknown), never run twice.
      logger.error({ err: (error as Error).message, correlationId: ctx.correlationId }, 'cannot record a write call\'s outcome');
    }
    return outcome;
  })();
  writesInFlight.set(flightKey, { argsDigest, outcome: started });
  try {
    return await started;
  } finally {
    writesInFlight.delete(flightKey);
  }
};

/** A repeat that waits for the first call stops waiting when its own agent cancels it. */
function untilCancelled(outcome: Promise<CallOutcome>, signal: AbortSignal | undefined): Promise<CallOutcome> {
  if (!signal) return outcome;
  const cancelled = refuse('WARDEN_CALL_CANCELLED', 'The call was cancelled while it waited for an identical call in flight; that call goes on.');
  if (signal.aborted) return Promise.resolve(cancelled);
  return new Promise((resolve, reject) => {
    const onAbort = () => resolve(cancelled);
    signal.addEventListener('abort', onAbort, { once: true });
    outcome.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

function conflict(facts: Record<string, unknown>): Refusal {
  facts['idempotency'] = { ...(facts['idempotency'] as object), conflict: true };
  return refuse('WARDEN_IDEMPOTENCY_CONFLICT', 'This idempotency key was already used for a call with other arguments. Use a new key for a new call.');
}

function replay(text: string, expiresAt: number): CallOutcome {
  let recorded: Recorded;
  try {
    recorded = JSON.parse(text) as Recorded;
  } catch {
    return refuse('WARDEN_OUTCOME_UNKNOWN', 'An identical call was made earlier and its recorded outcome cannot be read, so it is not made again.');
  }
  const until = new Date(expiresAt).toISOString();
  const { outcome } = recorded;
  if (outcome.kind === 'result') {
    return { kind: 'result', result: { ...outcome.result, _meta: { ...outcome.result._meta, [REPLAY_META_KEY]: { correlationId: recorded.correlationId, at: recorded.at } } } };
  }
  if (outcome.kind === 'refused') {
    return refuse(outcome.code, `An identical call made at ${recorded.at} ended this way and is not repeated until ${until}: ${outcome.message}`, outcome.hints);
  }
  return refuse('WARDEN_OUTCOME_UNKNOWN', 'An identical call was made earlier and did not finish, so it is not made again.');
}
