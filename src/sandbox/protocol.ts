/**
 * What the broker and a sandbox worker process say to each other, as JSON frames on the
 * worker's fd 3 (src/sandbox/frames.ts). Types only: the worker's program imports nothing
 * at run time but Node's built-ins and isolated-vm, so that it runs under Node's
 * permission model with read access to the addon alone.
 */

/** Hard limits of one run. The broker fills them in from the config and the manifest. */
export interface SandboxLimits {
  /** The isolate's heap, MB (isolated-vm's memoryLimit; at least 8). */
  readonly memoryMb: number;
  /** CPU time the guest may use over the whole run, across every await, ms. */
  readonly cpuMs: number;
  /** Time from the start of the run to its result, ms. */
  readonly wallMs: number;
  /** The result as JSON text, bytes (UTF-8). */
  readonly outputBytes: number;
  /** Captured console output, bytes (UTF-8); more is dropped and marked. */
  readonly consoleBytes: number;
}

/** A code tool: call one export of a module with the call's arguments. */
export interface ModuleJob {
  readonly kind: 'module';
  /** The module's text, as pinned by the signed manifest. */
  readonly source: string;
  /** Shown in guest stack traces. */
  readonly filename: string;
  /** The export to call: the tool's name. */
  readonly exportName: string;
  /** The arguments, as JSON text. */
  readonly input: string;
  readonly limits: SandboxLimits;
}

/** Code mode: run an agent's code with bindings for its tools. */
export interface CodeJob {
  readonly kind: 'code';
  /** The body of an async function. */
  readonly code: string;
  /** The tools it may call, as "server.tool" paths. */
  readonly tools: readonly string[];
  /** Calls the worker forwards; the guest's later calls fail at once, in the worker. */
  readonly maxCalls: number;
  readonly limits: SandboxLimits;
}

export type SandboxJob = ModuleJob | CodeJob;

/** Why a run ended without a result. */
export type FailureReason =
  /** The guest threw, rejected or did not compile: its own error, with its message. */
  | 'thrown'
  /** The module or code cannot be run as asked (no such export, an import, not a function). */
  | 'invalid'
  | 'cpu'
  | 'memory'
  | 'wall'
  | 'output'
  | 'cancelled'
  /** The worker process died or broke the protocol. */
  | 'crashed';

export type RunOutcome =
  | { readonly ok: true; readonly output: string; readonly console: string; readonly cpuMs: number }
  | { readonly ok: false; readonly reason: FailureReason; readonly message?: string; readonly console: string; readonly cpuMs: number };

/** Broker to worker. */
export type ToWorker =
  | { readonly t: 'run'; readonly id: number; readonly job: SandboxJob }
  /** The answer to a tool call the guest made (code mode): JSON text of the value or of the error. */
  | { readonly t: 'settle'; readonly id: number; readonly call: number; readonly ok: boolean; readonly json: string }
  | { readonly t: 'cancel'; readonly id: number };

/** Worker to broker. */
export type FromWorker =
  | { readonly t: 'ready' }
  | { readonly t: 'call'; readonly id: number; readonly call: number; readonly tool: string; readonly args: string }
  /** The worker is ending the run (and may end itself): if it dies, this is why. */
  | { readonly t: 'ending'; readonly id: number; readonly reason: FailureReason }
  | { readonly t: 'done'; readonly id: number; readonly outcome: RunOutcome };

/** The worker's settings, passed as its one command-line argument (JSON). */
export interface WorkerSettings {
  /** The isolated-vm addon file, resolved by the broker. */
  readonly addon: string;
  /** Isolates kept ready, and the heap limit they are made with. */
  readonly warm: number;
  readonly warmMemoryMb: number;
  /** Above this resident size the worker ends itself (the run fails with memory). */
  readonly maxRssMb: number;
}
