import type { CallToolResult } from '@modelcontextprotocol/client';
import { CODE_MODE_SERVER, RUN_CODE_TOOL } from '../catalog/builtin.ts';
import type { SandboxSettings } from '../config/types.ts';
import { WardenError } from '../errors.ts';
import { REFUSAL_META_KEY, type OAuthSession } from '../pipeline/types.ts';
import { parseOutput, runFailure, runLimits } from '../sandbox/failures.ts';
import type { SandboxPool } from '../sandbox/pool.ts';
import type { BoundTool } from '../sandbox/typed-api.ts';
import type { BackendState, Quarantine, ToolBackend, ToolCall } from './types.ts';

/** A tool a run may call, and the name the pipeline knows it by. */
export interface CodeModeTool extends BoundTool {
  readonly exposedName: string;
}

export interface InnerCallOptions {
  readonly signal: AbortSignal;
  /** The run's correlation id, recorded with each call it makes. */
  readonly parentCorrelationId: string;
  /** The run's session, when it came with an OAuth access token: its calls get the same scopes. */
  readonly oauth?: OAuthSession;
}

export interface CodeModeBackendOptions {
  /** Code mode's own worker pool: a run waiting on a code tool never waits for its own worker. */
  readonly pool: SandboxPool;
  readonly settings: () => SandboxSettings;
  /** The broker's cap on a result's text (limits.maxResultBytes): the console gives way to the result. */
  readonly maxResultBytes: () => number;
  /** What this agent may call from code now: what its tools/list shows in this session, less code mode itself. */
  readonly toolsFor: (agent: string, oauth: OAuthSession | undefined) => readonly CodeModeTool[];
  /** One call through the whole pipeline, as the agent: never throws, refusals are tool errors. */
  readonly call: (agent: string, exposedName: string, args: Record<string, unknown>, options: InnerCallOptions) => Promise<CallToolResult>;
}

/** What the guest gets back for one call: the value, or the error it throws (code and message). */
type Answer = { readonly ok: boolean; readonly json: string };

/**
 * Code mode (warden__run_code): an agent's code runs in a sandbox with a binding for each
 * tool it may call. Every call the code makes goes back through the broker's whole
 * pipeline under the agent's name (grants, validation, approval, idempotency, rate
 * limits, credentials, sanitising, audit), exactly as if the agent had made it; the
 * run only adds caps on how many calls it makes and how many at once.
 */
export class CodeModeBackend implements ToolBackend {
  readonly server = CODE_MODE_SERVER;
  readonly credentialValues: ReadonlySet<string> = new Set();
  readonly quarantine: Quarantine | undefined = undefined;
  readonly #options: CodeModeBackendOptions;
  #state: BackendState = 'starting';

  constructor(options: CodeModeBackendOptions) {
    this.#options = options;
  }

  get state(): BackendState {
    return this.#state;
  }

  async start(): Promise<void> {
    if (this.#state !== 'closed') this.#state = 'ready';
  }

  async close(): Promise<void> {
    this.#state = 'closed';
  }

  async callTool(call: ToolCall): Promise<CallToolResult> {
    const agent = call.agent;
    const code = call.args['code'];
    if (call.tool !== RUN_CODE_TOOL || agent === undefined || typeof code !== 'string') {
      throw new WardenError('WARDEN_INTERNAL', 'code mode was called without an agent or code', { notSent: true });
    }
    if (this.#state === 'closed') throw new WardenError('WARDEN_SERVER_UNAVAILABLE', 'code mode is stopped', { notSent: true });
    const settings = this.#options.settings();
    const limits = runLimits(settings.limits, settings.limits, undefined, call.timeoutMs);
    const codeBytes = Buffer.byteLength(code);
    if (codeBytes > limits.inputBytes) {
      throw new WardenError('WARDEN_SANDBOX_LIMIT', `The code is ${codeBytes} bytes; the limit is ${limits.inputBytes} (sandbox limit inputBytes).`, { reason: 'input', notSent: true });
    }
    const tools = new Map<string, string>();
    for (const tool of this.#options.toolsFor(agent, call.oauth)) tools.set(`${tool.server}.${tool.tool}`, tool.exposedName);
    call.onSend?.();

    // Calls still in flight when the run ends (a limit, a cancel) are cancelled with it.
    const ended = new AbortController();
    const signal = call.signal ? AbortSignal.any([call.signal, ended.signal]) : ended.signal;
    const calls = new InnerCalls(settings.codeMode.maxCalls, settings.codeMode.concurrency);
    const onCall = async (path: string, argsJson: string): Promise<Answer> => {
      const exposedName = tools.get(path);
      if (exposedName === undefined) return failed('WARDEN_TOOL_NOT_FOUND', `There is no tool ${path} for this run.`);
      if (!calls.take()) return failed('WARDEN_SANDBOX_LIMIT', `This run has made its ${settings.codeMode.maxCalls} tool calls (sandbox limit codeMode.maxCalls).`);
      let args: unknown;
      try {
        args = JSON.parse(argsJson);
      } catch {
        return failed('WARDEN_ARGUMENTS_INVALID', 'The arguments are not JSON.');
      }
      if (typeof args !== 'object' || args === null || Array.isArray(args)) return failed('WARDEN_ARGUMENTS_INVALID', 'A tool takes one object of arguments.');
      await calls.enter();
      try {
        if (signal.aborted) return failed('WARDEN_CALL_CANCELLED', 'The run ended before this call was made.');
        return answer(await this.#options.call(agent, exposedName, args as Record<string, unknown>, { signal, parentCorrelationId: call.correlationId ?? '', ...(call.oauth ? { oauth: call.oauth } : {}) }));
      } finally {
        calls.leave();
      }
    };
    let outcome;
    try {
      outcome = await this.#options.pool.run({ kind: 'code', code, tools: [...tools.keys()], maxCalls: settings.codeMode.maxCalls, limits }, { ...(call.signal ? { signal: call.signal } : {}), onCall });
    } finally {
      ended.abort();
    }
    if (call.facts) call.facts['sandbox'] = { cpuMs: Math.round(outcome.cpuMs * 1000) / 1000, calls: calls.made, ...(outcome.ok ? {} : { reason: outcome.reason }) };
    if (outcome.ok) {
      const result = parseOutput(outcome.output, 'The code');
      const structured = { result, console: fitConsole({ result }, outcome.console, this.#options.maxResultBytes()) };
      return { content: [{ type: 'text', text: JSON.stringify(structured) }], structuredContent: structured };
    }
    if (outcome.reason === 'thrown') {
      const error = outcome.message ?? 'the code threw';
      const structured = { error, console: fitConsole({ error }, outcome.console, this.#options.maxResultBytes()) };
      return { content: [{ type: 'text', text: `The code threw: ${error}${structured.console === '' ? '' : `\nConsole output:\n${structured.console}`}` }], structuredContent: structured, isError: true };
    }
    throw runFailure(outcome, limits, 'The code', call.signal?.aborted === true);
  }
}

const CONSOLE_CUT = '\n[console output cut to fit the result size limit]\n';

/**
 * The console output, cut from the end so that the result and the console together fit
 * the broker's result cap: a result cut by the cap would lose its structured form.
 */
function fitConsole(rest: Record<string, unknown>, text: string, maxBytes: number): string {
  const size = (console: string) => Buffer.byteLength(JSON.stringify({ ...rest, console }));
  if (size(text) <= maxBytes) return text;
  let keep = Math.max(0, maxBytes - size(CONSOLE_CUT));
  // JSON escaping makes some characters longer: shrink until it fits (bounded).
  for (let attempt = 0; attempt < 16 && keep > 0; attempt++) {
    const candidate = `${text.slice(0, keep)}${CONSOLE_CUT}`;
    if (size(candidate) <= maxBytes) return candidate;
    keep = Math.floor(keep * 0.8);
  }
  return size(CONSOLE_CUT) <= maxBytes ? CONSOLE_CUT : '';
}

function failed(code: string, message: string): Answer {
  return { ok: false, json: JSON.stringify({ code, message }) };
}

/**
 * A call's result as the guest sees it: the structured content when there is one, else
 * the text. A refusal or a tool's own error becomes an error with the refusal's code
 * (TOOL_ERROR for the tool's own).
 */
function answer(result: CallToolResult): Answer {
  const text = result.content
    .filter((item): item is { type: 'text'; text: string } => item.type === 'text')
    .map((item) => item.text)
    .join('\n');
  if (result.isError === true) {
    const refusal = result._meta?.[REFUSAL_META_KEY] as { code?: unknown } | undefined;
    return failed(typeof refusal?.code === 'string' ? refusal.code : 'TOOL_ERROR', text);
  }
  return { ok: true, json: JSON.stringify(result.structuredContent ?? text) };
}

/** A run's tool calls: how many it has made (capped), and how many are in flight (the rest wait). */
class InnerCalls {
  made = 0;
  #active = 0;
  readonly #waiting: (() => void)[] = [];
  readonly #max: number;
  readonly #concurrency: number;

  constructor(max: number, concurrency: number) {
    this.#max = max;
    this.#concurrency = concurrency;
  }

  take(): boolean {
    if (this.made >= this.#max) return false;
    this.made++;
    return true;
  }

  async enter(): Promise<void> {
    if (this.#active < this.#concurrency) {
      this.#active++;
      return;
    }
    await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }

  /** Hands the slot straight to the next waiting call, if any. */
  leave(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#active--;
  }
}
