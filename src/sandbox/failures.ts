import { WardenError } from '../errors.ts';
import type { SandboxLimitSettings } from '../manifest/types.ts';
import type { RunOutcome } from './protocol.ts';

/** The most of a run's console output quoted in an error, characters: the end, where the trouble usually is. */
const CONSOLE_TAIL_CHARS = 2000;

/**
 * The WardenError for a run that ended without a result other than by throwing (the
 * caller turns a guest's own error into a tool error). The message names the limit and
 * its setting, so the agent (or the tool owner) knows what to change.
 */
export function runFailure(outcome: Extract<RunOutcome, { ok: false }>, limits: SandboxLimitSettings, what: string, cancelled: boolean): WardenError {
  const detail = { reason: outcome.reason, cpuMs: Math.round(outcome.cpuMs) };
  const tail = outcome.console === '' ? '' : `\nConsole output before it stopped:\n${outcome.console.slice(-CONSOLE_TAIL_CHARS)}`;
  switch (outcome.reason) {
    case 'cpu':
      return new WardenError('WARDEN_SANDBOX_LIMIT', `${what} was stopped: it used more than ${limits.cpuMs} ms of CPU time (sandbox limit cpuMs).${tail}`, detail);
    case 'memory':
      return new WardenError('WARDEN_SANDBOX_LIMIT', `${what} was stopped: it used more memory than its ${limits.memoryMb} MB allow (sandbox limit memoryMb).${tail}`, detail);
    case 'wall':
      return new WardenError('WARDEN_SANDBOX_LIMIT', `${what} was stopped: it did not finish within ${limits.wallMs} ms (sandbox limit wallMs, or the call timeout).${tail}`, detail);
    case 'output':
      return new WardenError('WARDEN_SANDBOX_LIMIT', `${what} returned more than ${limits.outputBytes} bytes of JSON (sandbox limit outputBytes); return less.${tail}`, detail);
    case 'cancelled':
      return cancelled
        ? new WardenError('WARDEN_CALL_CANCELLED', `${what} was cancelled.`, detail)
        : new WardenError('WARDEN_SANDBOX_LIMIT', `${what} was stopped: it did not finish within ${limits.wallMs} ms (sandbox limit wallMs, or the call timeout).${tail}`, { ...detail, reason: 'wall' });
    case 'invalid':
      return new WardenError('WARDEN_DOWNSTREAM_ERROR', `${what} cannot be run: ${outcome.message ?? 'its module is not usable'}.`, detail);
    default:
      return new WardenError('WARDEN_SANDBOX_CRASHED', `${what} failed: the sandbox process running it ended unexpectedly. The broker replaced it; other calls are unaffected.`, detail);
  }
}

/**
 * A run's result, parsed. The worker checked it was JSON; one that says otherwise is not
 * trusted further, and the call fails as if the worker had crashed.
 */
export function parseOutput(output: string, what: string): unknown {
  try {
    return JSON.parse(output);
  } catch {
    throw new WardenError('WARDEN_SANDBOX_CRASHED', `${what} failed: the sandbox returned a malformed result.`, { reason: 'protocol' });
  }
}

/** The limits of one run: the tool's requests over the defaults, each capped by the policy maximum and the call timeout. */
export function runLimits(defaults: SandboxLimitSettings, maximum: SandboxLimitSettings, requested: Partial<SandboxLimitSettings> | undefined, timeoutMs: number): SandboxLimitSettings {
  const pick = (name: keyof SandboxLimitSettings) => Math.min(requested?.[name] ?? defaults[name], maximum[name]);
  return {
    memoryMb: pick('memoryMb'),
    cpuMs: pick('cpuMs'),
    wallMs: Math.min(pick('wallMs'), timeoutMs),
    inputBytes: pick('inputBytes'),
    outputBytes: pick('outputBytes'),
    consoleBytes: pick('consoleBytes'),
  };
}
