/**
 * The harness the call-path tests share: a fake backend, the pipeline's deps, state stores
 * in a test's temporary folder, and a pipeline with a `call` runner on top. Not a test file
 * itself (the test glob is *.test.ts); the tests import what they need from here.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after } from 'node:test';
import { pino } from 'pino';
import { memoryAuditTrail } from '../../src/audit/trail.ts';
import type { ToolBackend, ToolCall } from '../../src/backends/types.ts';
import { loadConfig } from '../../src/config/load.ts';
import type { WardenConfig } from '../../src/config/types.ts';
import { memoryLimitStore } from '../../src/guard/rate-limits.ts';
import { buildCallPipeline, CALL_STAGES } from '../../src/pipeline/pipeline.ts';
import type { CallContext, CallOutcome, PipelineDeps, StageFactory } from '../../src/pipeline/types.ts';
import { ApprovalWaiter } from '../../src/policy/approval-waiter.ts';
import { openStateStore, type StateStore } from '../../src/state/store.ts';
import { writeConfig } from '../helpers.ts';

/** How the fake backend answers a call that was sent. */
export type Behaviour = (tool: string, args: Record<string, unknown>) => Promise<unknown>;

/** Answers every call with a text naming the tool. */
export const ok: Behaviour = async (tool) => ({ content: [{ type: 'text', text: `${tool} done` }] });

/** The refusal's code, or the outcome's kind when it is not a refusal. */
export function codeOf(outcome: CallOutcome): string {
  return outcome.kind === 'refused' ? outcome.code : outcome.kind;
}

/** A destructive tool, for a manifest the tests sign themselves. */
export const WIPE_TOOL = {
  name: 'wipe',
  description: 'Erase a target for good.',
  access: 'destructive',
  inputSchema: { type: 'object', properties: { target: { type: 'string' } }, required: ['target'], additionalProperties: false },
};

/**
 * Writes `<dir>/<name>/warden.yaml` (version 1, manifests read from `<dir>/manifests`) with
 * `data` on top, loads it, and asserts that every signed manifest it names was accepted.
 */
export function configIn(dir: string, name: string, data: Record<string, unknown>): WardenConfig {
  const config = loadConfig(writeConfig(join(dir, name, 'warden.yaml'), { version: 1, manifestsDir: '../manifests', ...data }));
  assert.deepEqual([...config.rejected.keys()], [], 'every signed manifest is accepted');
  return config;
}

/**
 * State stores below `dir`: `freshDir()` names a new folder (state-1, state-2, …), `open(folder)`
 * opens a read-write store there (a fresh folder when none is given). Every store opened is
 * closed after the file's tests (closing twice is harmless).
 */
export function stateStoresIn(dir: string): { freshDir: () => string; open: (folder?: string) => StateStore } {
  const opened: StateStore[] = [];
  after(() => {
    for (const store of opened) store.close();
  });
  let folders = 0;
  const freshDir = () => join(dir, `state-${++folders}`);
  const open = (folder = freshDir()) => {
    const store = openStateStore(folder, 'read-write');
    opened.push(store);
    return store;
  };
  return { freshDir, open };
}

export interface FakeBackendOptions {
  /** Runs in the backend before anything is sent; throwing refuses the call as the real backend does (e.g. server unavailable). */
  readonly beforeSend?: (tool: string) => void;
  /** Told of each call that onSend let through, just before `behaviour` answers it. */
  readonly sent?: (tool: string, args: Record<string, unknown>) => void;
}

/** Like McpBackend.callTool: local refusals first (beforeSend), then onSend (which may veto), then the request. */
export function fakeBackend(behaviour: Behaviour, options: FakeBackendOptions = {}): ToolBackend {
  const callTool = async ({ tool, args, onSend }: ToolCall) => {
    options.beforeSend?.(tool);
    onSend?.();
    options.sent?.(tool, args);
    return behaviour(tool, args);
  };
  return { callTool } as unknown as ToolBackend;
}

const logger = pino({ level: 'silent' });
let brokers = 0;

/**
 * The pipeline's deps for `config` on `state`: no backends, a memory audit trail, a silent logger,
 * the kill switch off, the live config `config`, and a new limit store, approval waiter and
 * writes-in-flight map; the instance id is `broker-<n>`, new for each. `overrides` replace any of these.
 */
export function pipelineDeps(config: WardenConfig, state: StateStore, overrides: Partial<PipelineDeps> = {}): PipelineDeps {
  return {
    config,
    backends: overrides.backends ?? new Map(),
    audit: overrides.audit ?? memoryAuditTrail(),
    logger: overrides.logger ?? logger,
    secretForms: overrides.secretForms ?? (() => []),
    identity: overrides.identity ?? (() => undefined),
    state,
    liveConfig: overrides.liveConfig ?? (() => config),
    killSwitch: overrides.killSwitch ?? (() => 'off'),
    limits: overrides.limits ?? memoryLimitStore(),
    approvals: overrides.approvals ?? new ApprovalWaiter(state.approvals),
    writesInFlight: overrides.writesInFlight ?? new Map(),
    instanceId: overrides.instanceId ?? `broker-${++brokers}`,
  };
}

export interface HarnessOptions extends Pick<FakeBackendOptions, 'beforeSend'>, Partial<Pick<PipelineDeps, 'killSwitch' | 'liveConfig' | 'instanceId'>> {
  /** The stages to build (default CALL_STAGES). */
  readonly stages?: readonly StageFactory[];
}

/** What a test may add to a call's context. */
export type CallExtra = Partial<Pick<CallContext, 'signal' | 'userInput' | 'idempotencyKey'>>;

/**
 * A pipeline for `config` on `state`, every server the config names served by one fake backend
 * answering with `behaviour`. `call` runs a call through it (correlation ids `<instanceId>-c<n>`).
 */
export function harness(config: WardenConfig, state: StateStore, behaviour: Behaviour = ok, options: HarnessOptions = {}) {
  const { beforeSend, stages = CALL_STAGES, ...overrides } = options;
  const audit = memoryAuditTrail();
  /** Calls the backend actually sent, after onSend let them through. */
  const calls: { tool: string; args: Record<string, unknown> }[] = [];
  /** The same calls, by tool name only. */
  const tools: string[] = [];
  const backend = fakeBackend(behaviour, {
    beforeSend,
    sent: (tool, args) => {
      calls.push({ tool, args });
      tools.push(tool);
    },
  });
  const backends = new Map([...config.servers.keys()].map((server) => [server, backend]));
  const deps = pipelineDeps(config, state, { ...overrides, backends, audit });
  const run = buildCallPipeline(deps, stages);
  /** Every context run, in the order the calls were made. */
  const contexts: CallContext[] = [];
  let n = 0;
  const call = (agentName: string, toolName: string, args: Record<string, unknown> = {}, extra: CallExtra = {}) => {
    const ctx: CallContext = { correlationId: `${deps.instanceId}-c${++n}`, agentName, toolName, args, startedAt: performance.now(), facts: {}, sendGuards: [], ...extra };
    contexts.push(ctx);
    return run(ctx);
  };
  return { deps, audit, calls, tools, contexts, call };
}
