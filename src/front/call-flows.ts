import { randomUUID } from 'node:crypto';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { WardenError } from '../errors.ts';
import type { LogMessage, Progress } from '../pipeline/types.ts';

/**
 * tools/call requests whose downstream server asked the host something (sampling,
 * elicitation) while the call ran. The call keeps running in the broker; the agent's
 * request is answered with the question (input_required), and the retry that carries the
 * host's answer picks the same call up where it waits. A 2026-07-28 client retries by
 * itself; for a 2025-era client the agent's server asks the question as a request of its
 * own, within the same agent request, and resumes the call with whatever comes back.
 *
 * What the call reports while it runs (progress, the server's log messages) goes to the
 * agent request of the current round: each round brings its own channel. Between rounds
 * progress is dropped and up to MAX_HELD_LOGS log messages wait for the next round.
 *
 * A continuation is held for one agent and one tool, answers only its current round (a
 * replayed answer is refused), and is dropped, its call cancelled, when nobody answers in
 * time. Nothing here outlives the process: after a restart a retry gets WARDEN_CALL_EXPIRED.
 */

/** The key of a server's question in the input requests, beside the broker's own "approval". */
export const SERVER_INPUT_PREFIX = 'server-';

/** A question for the host, as the relay cleaned it: sampling/createMessage or elicitation/create. */
export interface HostQuestion {
  readonly method: string;
  readonly params: Record<string, unknown>;
}

export type FlowStep<T> =
  | { readonly kind: 'done'; readonly value: T }
  | {
      readonly kind: 'ask';
      readonly flowId: string;
      readonly round: number;
      readonly questions: Readonly<Record<string, HostQuestion>>;
      /** Aborts when the round's questions need no answer any more: the call ended, or the server withdrew them all. */
      readonly unneeded: AbortSignal;
    };

/** What a retry names: the continuation and the round it answers. */
export interface FlowState {
  readonly flowId: string;
  readonly round: number;
}

export type AskHost = (question: HostQuestion, signal: AbortSignal) => Promise<unknown>;

/** Where one round's agent request takes what the call reports; either may be absent. */
export interface RoundChannel {
  readonly progress?: (progress: Progress) => void;
  readonly log?: (message: LogMessage) => void;
}

/** Log messages kept for the next round while the host is being asked; later ones are dropped. */
export const MAX_HELD_LOGS = 100;

interface Pending {
  readonly key: string;
  readonly question: HostQuestion;
  resolve(answer: unknown): void;
  reject(error: Error): void;
}

interface Flow<T> {
  readonly id: string;
  readonly agent: string;
  readonly tool: string;
  readonly controller: AbortController;
  round: number;
  /** Asked by the server, not yet sent to the host. */
  waiting: Pending[];
  /** Sent to the host; answered by the next retry. */
  asked: Pending[];
  /** Set while a round waits for the result or a question. */
  wake: (() => void) | undefined;
  busy: boolean;
  done: { readonly value: T } | { readonly error: unknown } | undefined;
  expiry: NodeJS.Timeout | undefined;
  /** The agent's request is still open while the host is asked (inline): no expiry, the same channel. */
  inline: boolean;
  /** Of the round whose questions are with the host (none before the first question). */
  unneeded: AbortController | undefined;
  nextKey: number;
  /** The channel of the round in progress; undefined between rounds. */
  channel: RoundChannel | undefined;
  held: LogMessage[];
}

export interface FlowLimits {
  /** Calls of one agent that may wait on their host's answer at once. */
  readonly maxPerAgent: number;
  /** Questions one call may have open at once. */
  readonly maxQuestions: number;
  /** How long a continuation waits for the retry that answers it. */
  answerTimeoutMs(): number;
}

export class CallFlows {
  readonly #flows = new Map<string, Flow<unknown>>();
  readonly #limits: FlowLimits;

  constructor(limits: FlowLimits) {
    this.#limits = limits;
  }

  /** Continuations held now (for tests and metrics). */
  get size(): number {
    return this.#flows.size;
  }

  /**
   * Starts a call. run gets the function that asks the host, the call's own signal (aborted
   * when the agent cancels a round or the continuation expires), and the channel to report
   * on, which forwards to the current round's.
   */
  begin<T>(agent: string, tool: string, run: (ask: AskHost, signal: AbortSignal, report: Required<RoundChannel>) => Promise<T>, roundSignal: AbortSignal, channel: RoundChannel = {}, inline = false): Promise<FlowStep<T>> {
    const flow: Flow<T> = { id: randomUUID(), agent, tool, controller: new AbortController(), round: 0, waiting: [], asked: [], wake: undefined, busy: false, done: undefined, expiry: undefined, inline: false, unneeded: undefined, nextKey: 0, channel, held: [] };
    this.#flows.set(flow.id, flow as Flow<unknown>);
    const report: Required<RoundChannel> = {
      progress: (progress) => flow.channel?.progress?.(progress),
      log: (message) => {
        if (flow.channel) flow.channel.log?.(message);
        else if (flow.held.length < MAX_HELD_LOGS) flow.held.push(message);
      },
    };
    void run((question, signal) => this.#ask(flow, question, signal), flow.controller.signal, report).then(
      (value) => this.#finish(flow, { value }),
      // The broker's call never rejects; if it did, the agent must not wait for ever.
      (error: unknown) => this.#finish(flow, { error }),
    );
    return this.#next(flow, roundSignal, channel, inline);
  }

  /**
   * Hands the host's answers to the questions of the named round, then waits again. An
   * answer that is an Error (the host failed, or did not answer in time) fails its question.
   * inline: the agent's request stays open while the next question is asked (2025 era).
   */
  resume<T>(agent: string, tool: string, state: FlowState, answers: Readonly<Record<string, unknown>> | undefined, roundSignal: AbortSignal, channel: RoundChannel = {}, inline = false): Promise<FlowStep<T>> {
    const flow = this.#flows.get(state.flowId) as Flow<T> | undefined;
    if (!flow || flow.agent !== agent || flow.tool !== tool || flow.round !== state.round || flow.busy) {
      throw new WardenError('WARDEN_CALL_EXPIRED', 'this answer belongs to a call the broker no longer holds (answered already, not answered in time, or the broker restarted); make the call again');
    }
    clearTimeout(flow.expiry);
    flow.expiry = undefined;
    for (const pending of flow.asked) {
      const answer = answers?.[pending.key];
      if (answer === undefined) pending.reject(new Error('the host sent no answer'));
      else if (answer instanceof Error) pending.reject(answer);
      else pending.resolve(answer);
    }
    flow.asked = [];
    return this.#next(flow, roundSignal, channel, inline);
  }

  /** Waits, within one agent request, for the call's result or for the server's next question. */
  async #next<T>(flow: Flow<T>, roundSignal: AbortSignal, channel: RoundChannel, inline: boolean): Promise<FlowStep<T>> {
    flow.busy = true;
    flow.inline = inline;
    flow.channel = channel;
    const held = flow.held;
    flow.held = [];
    for (const message of held) channel.log?.(message);
    // The agent cancelling its request cancels the call: there is nobody left to answer.
    const cancel = () => flow.controller.abort(roundSignal.reason);
    if (roundSignal.aborted) cancel();
    roundSignal.addEventListener('abort', cancel, { once: true });
    try {
      // Questions a server sends together (a 2026-07-28 server's input requests) go out
      // together; one withdrawn meanwhile leaves nothing to ask, and the wait goes on.
      do {
        while (!flow.done && flow.waiting.length === 0) await new Promise<void>((resolve) => (flow.wake = resolve));
        flow.wake = undefined;
        if (!flow.done) await nextTurn();
      } while (!flow.done && flow.waiting.length === 0);
      if (flow.done) {
        this.#drop(flow);
        if ('error' in flow.done) throw flow.done.error;
        return { kind: 'done', value: flow.done.value };
      }
      flow.round++;
      const questions: Record<string, HostQuestion> = {};
      for (const pending of flow.waiting) questions[pending.key] = pending.question;
      flow.asked = flow.waiting;
      flow.waiting = [];
      const unneeded = (flow.unneeded = new AbortController());
      // Inline, the agent's request is bounded by its own wait for the host; otherwise nobody may come back.
      if (!inline) {
        flow.expiry = setTimeout(() => this.#expire(flow), this.#limits.answerTimeoutMs());
        flow.expiry.unref();
      }
      return { kind: 'ask', flowId: flow.id, round: flow.round, questions, unneeded: unneeded.signal };
    } finally {
      flow.busy = false;
      if (!inline) flow.channel = undefined;
      roundSignal.removeEventListener('abort', cancel);
    }
  }

  #ask<T>(flow: Flow<T>, question: HostQuestion, signal: AbortSignal): Promise<unknown> {
    if (flow.done || flow.controller.signal.aborted) return Promise.reject(new Error('the call has ended'));
    if (flow.waiting.length + flow.asked.length >= this.#limits.maxQuestions) return Promise.reject(new Error(`the call already has ${this.#limits.maxQuestions} questions open`));
    const parked = [...this.#flows.values()].filter((other) => other.agent === flow.agent && other.asked.length > 0).length;
    if (flow.asked.length === 0 && parked >= this.#limits.maxPerAgent) return Promise.reject(new Error(`${parked} calls of this agent already wait for their host's answer`));
    return new Promise<unknown>((resolve, reject) => {
      const pending: Pending = {
        key: `${SERVER_INPUT_PREFIX}${++flow.nextKey}`,
        question,
        resolve: (answer) => {
          signal.removeEventListener('abort', withdraw);
          resolve(answer);
        },
        reject: (error) => {
          signal.removeEventListener('abort', withdraw);
          reject(error);
        },
      };
      // The server withdrew its question (cancelled it, or the answer time ran out).
      const withdraw = () => {
        const wasAsked = flow.asked.includes(pending);
        flow.waiting = flow.waiting.filter((other) => other !== pending);
        flow.asked = flow.asked.filter((other) => other !== pending);
        pending.reject(new Error('the question was withdrawn'));
        if (wasAsked && flow.asked.length === 0) flow.unneeded?.abort();
      };
      if (signal.aborted) return withdraw();
      signal.addEventListener('abort', withdraw, { once: true });
      flow.waiting.push(pending);
      flow.wake?.();
    });
  }

  #finish<T>(flow: Flow<T>, done: NonNullable<Flow<T>['done']>): void {
    flow.done = done;
    for (const pending of [...flow.waiting, ...flow.asked]) pending.reject(new Error('the call has ended'));
    flow.waiting = [];
    flow.asked = [];
    flow.unneeded?.abort();
    flow.wake?.();
    // A finished call nobody is waiting on now is collected by the next round (the inline
    // request's, which is coming back), or expires.
    if (!flow.busy && !flow.expiry && !flow.inline) this.#drop(flow);
  }

  /** Nobody came back with the answer: the questions are withdrawn and the call cancelled. */
  #expire<T>(flow: Flow<T>): void {
    if (flow.busy) return;
    for (const pending of flow.asked) pending.reject(new Error('the host did not answer in time'));
    flow.asked = [];
    flow.controller.abort(new Error('the host did not answer in time'));
    this.#drop(flow);
  }

  #drop<T>(flow: Flow<T>): void {
    clearTimeout(flow.expiry);
    this.#flows.delete(flow.id);
  }
}
