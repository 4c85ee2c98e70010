import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import { createRequire, stripTypeScriptTypes } from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WardenError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { encodeFrame, FrameReader } from './frames.ts';
import { type FailureReason, type FromWorker, type RunOutcome, type SandboxJob, type ToWorker, type WorkerSettings } from './protocol.ts';

export interface SandboxPoolOptions {
  /** Worker processes kept running. */
  readonly workers: number;
  /** Isolates each worker keeps ready, and their heap limit (a run with another limit starts cold). */
  readonly warmIsolates: number;
  readonly warmMemoryMb: number;
  /** A worker whose resident size passes this ends itself (and the run in it fails with memory). */
  readonly workerMemoryMb: number;
  readonly logger: Logger;
  /** A worker died or could not start: for the audit trail. */
  readonly onWorkerEvent?: (event: WorkerEvent) => void;
  /** How long a new worker may take to be ready, ms. */
  readonly startTimeoutMs?: number;
  /** Runs waiting for a worker, beyond which a run is refused at once. */
  readonly maxQueued?: number;
  /**
   * The worker's program, JavaScript, instead of src/sandbox/worker.ts: for tests that
   * stand in a misbehaving (compromised) worker. Never set from a config.
   */
  readonly program?: string;
}

export interface WorkerEvent {
  readonly state: 'crashed' | 'failed-to-start';
  /** What the run in it was stopped for, when the pool ended it (wall, cancelled), or why it died. */
  readonly reason: string;
  readonly exitCode: number | null;
  readonly signal: string | null;
  /** The end of what it wrote to stderr (V8's fatal-error text), for the operator. */
  readonly stderr: string;
}

export interface RunHooks {
  /** Aborting it cancels the run (the agent cancelled, or the call's timeout passed). */
  readonly signal?: AbortSignal;
  /** Code mode: a tool call the guest made; resolves to the answer (JSON text of the value, or of {code, message}). */
  readonly onCall?: (tool: string, args: string) => Promise<{ readonly ok: boolean; readonly json: string }>;
}

export interface PoolStats {
  readonly workers: number;
  readonly idle: number;
  readonly busy: number;
  readonly queued: number;
  /** Worker processes started since the pool was made, the first ones included. */
  readonly spawned: number;
  /** Worker processes that died while running something, or were killed by the pool. */
  readonly crashed: number;
}

/** After a run's wall time (or a cancel), how long the worker has to report before it is killed. */
export const KILL_GRACE_MS = 1000;
const DEFAULT_START_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_QUEUED = 256;
/** Start failures in a row back off from 1 s up to this. */
const MAX_RESPAWN_DELAY_MS = 30_000;
/** Kept of a worker's stderr, bytes. */
const STDERR_TAIL_BYTES = 4096;
const MAX_TOOL_PATH = 200;
const MAX_CALL_ARGS = 1024 * 1024;
/** What V8 prints when it ends a process whose isolate ran out of heap. */
const OUT_OF_MEMORY = /out of memory|allocation failed/i;
const REASONS: ReadonlySet<string> = new Set<FailureReason>(['thrown', 'invalid', 'cpu', 'memory', 'wall', 'output', 'cancelled', 'crashed']);

interface Assignment {
  readonly id: number;
  readonly job: SandboxJob;
  readonly hooks: RunHooks;
  readonly resolve: (outcome: RunOutcome) => void;
  /** Set when the pool decided to end the run: what to report if the worker dies meanwhile. */
  ending: FailureReason | undefined;
  timer: NodeJS.Timeout | undefined;
  calls: number;
  readonly onAbort: () => void;
}

interface Worker {
  readonly child: ChildProcess;
  /** The frame pipe (the worker's fd 3). */
  readonly channel: Socket;
  state: 'starting' | 'idle' | 'busy' | 'dead';
  assignment: Assignment | undefined;
  stderr: string;
}

/**
 * A fixed number of sandbox worker processes, one run at a time each. A worker that dies
 * is replaced; the run in it fails (memory, wall, crashed) and nothing else does: other
 * workers and the broker go on. Runs wait in a bounded queue when every worker is busy.
 */
export class SandboxPool {
  readonly #options: SandboxPoolOptions;
  readonly #workers = new Set<Worker>();
  readonly #queue: { readonly take: (worker: Worker | undefined) => void }[] = [];
  #code: string | undefined;
  #addon: string | undefined;
  #closed = false;
  #started = false;
  #nextId = 1;
  #spawned = 0;
  #crashed = 0;
  #startFailures = 0;
  #respawnTimer: NodeJS.Timeout | undefined;
  /** Why no worker could start, while none can. */
  #unavailable: string | undefined;
  #firstReady: Promise<void> | undefined;

  constructor(options: SandboxPoolOptions) {
    this.#options = options;
  }

  /** Starts the workers; resolves once each has become ready or failed to. */
  async start(): Promise<void> {
    if (this.#started || this.#closed) return this.#firstReady;
    this.#started = true;
    const ready: Promise<void>[] = [];
    for (let i = 0; i < this.#options.workers; i++) ready.push(this.#spawn());
    this.#firstReady = Promise.all(ready).then(() => undefined);
    return this.#firstReady;
  }

  /** Why runs are refused now, or undefined when workers are running. */
  get unavailable(): string | undefined {
    return this.#unavailable;
  }

  stats(): PoolStats {
    let idle = 0;
    let busy = 0;
    for (const worker of this.#workers) {
      if (worker.state === 'idle') idle++;
      if (worker.state === 'busy') busy++;
    }
    return { workers: this.#workers.size, idle, busy, queued: this.#queue.length, spawned: this.#spawned, crashed: this.#crashed };
  }

  /**
   * Runs one job in a fresh isolate of some worker. Resolves with its outcome whatever
   * happens to the worker; throws only WardenError, when no worker can run it at all.
   */
  async run(job: SandboxJob, hooks: RunHooks = {}): Promise<RunOutcome> {
    // The wall time counts from here: waiting for a worker uses it up too.
    const deadline = performance.now() + job.limits.wallMs;
    if (this.#closed) throw unavailable('the sandbox is stopped');
    if (!this.#started) await this.start();
    if (hooks.signal?.aborted) return cancelled();
    const waited = AbortSignal.timeout(Math.max(1, Math.ceil(deadline - performance.now())));
    const worker = await this.#acquire(hooks.signal ? AbortSignal.any([hooks.signal, waited]) : waited);
    if (!worker) {
      if (hooks.signal?.aborted) return cancelled();
      if (waited.aborted) return { ok: false, reason: 'wall', console: '', cpuMs: 0 };
      throw unavailable(this.#closed ? 'the sandbox is stopped' : (this.#unavailable ?? 'no worker is running'));
    }
    // Cancelled, or out of time, while the worker was being handed over: give it back unused.
    const left = Math.floor(deadline - performance.now());
    if (hooks.signal?.aborted || left < 1) {
      this.#release(worker);
      return hooks.signal?.aborted ? cancelled() : { ok: false, reason: 'wall', console: '', cpuMs: 0 };
    }
    job = { ...job, limits: { ...job.limits, wallMs: left } };
    return new Promise<RunOutcome>((resolve) => {
      const assignment: Assignment = {
        id: this.#nextId++,
        job,
        hooks,
        resolve,
        ending: undefined,
        timer: undefined,
        calls: 0,
        onAbort: () => this.#end(worker, assignment, 'cancelled'),
      };
      worker.assignment = assignment;
      // The worker stops the run at its wall time; if it cannot, it is killed a little later.
      assignment.timer = setTimeout(() => this.#kill(worker, 'wall'), job.limits.wallMs + KILL_GRACE_MS);
      hooks.signal?.addEventListener('abort', assignment.onAbort, { once: true });
      this.#send(worker, { t: 'run', id: assignment.id, job });
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#respawnTimer);
    for (const waiter of this.#queue.splice(0)) waiter.take(undefined);
    const exits: Promise<void>[] = [];
    for (const worker of this.#workers) {
      if (worker.state === 'dead') continue;
      exits.push(new Promise((resolve) => worker.child.once('exit', () => resolve())));
      worker.child.kill('SIGKILL');
    }
    await Promise.all(exits);
  }

  /**
   * A worker reserved for the caller (busy from this moment, so no other run can take it),
   * waiting in the queue for one if need be; undefined when cancelled meanwhile.
   */
  async #acquire(signal: AbortSignal | undefined): Promise<Worker | undefined> {
    for (const worker of this.#workers) {
      if (worker.state === 'idle') {
        worker.state = 'busy';
        return worker;
      }
    }
    if (this.#unavailable && ![...this.#workers].some((worker) => worker.state !== 'dead')) throw unavailable(this.#unavailable);
    if (this.#queue.length >= (this.#options.maxQueued ?? DEFAULT_MAX_QUEUED)) {
      throw new WardenError('WARDEN_RATE_LIMITED', 'every sandbox worker is busy and the queue is full; call again shortly', { retryAfterMs: 1000 });
    }
    return new Promise<Worker | undefined>((resolve) => {
      const waiter = {
        take: (worker: Worker | undefined) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(worker);
        },
      };
      const onAbort = () => {
        const index = this.#queue.indexOf(waiter);
        if (index !== -1) this.#queue.splice(index, 1);
        resolve(undefined);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#queue.push(waiter);
    });
  }

  /** A worker became idle: the first waiter gets it, reserved, or it waits for the next run. */
  #release(worker: Worker): void {
    const waiter = this.#queue.shift();
    worker.state = waiter ? 'busy' : 'idle';
    waiter?.take(worker);
  }

  #spawn(): Promise<void> {
    let settings: WorkerSettings;
    let code: string;
    try {
      ({ code, settings } = this.#workerProgram());
    } catch (error) {
      this.#unavailable = `isolated-vm cannot be loaded (${(error as Error).message})`;
      this.#options.logger.error({ err: (error as Error).message }, 'the sandbox cannot start: isolated-vm is not available');
      this.#options.onWorkerEvent?.({ state: 'failed-to-start', reason: this.#unavailable, exitCode: null, signal: null, stderr: '' });
      this.#failQueue();
      return Promise.resolve();
    }
    // Node's permission model: the worker may read the addon and nothing else, and may not
    // start processes or threads. The program itself comes in with --eval; messages go
    // over fd 3 (src/sandbox/frames.ts), not Node's IPC channel.
    const child = spawn(
      process.execPath,
      ['--no-node-snapshot', '--permission', '--allow-addons', `--allow-fs-read=${settings.addon}`, '--disable-warning=SecurityWarning', '--input-type=module', '--eval', code, '-', JSON.stringify(settings)],
      // Nothing of the broker's environment (credential variables) reaches it.
      { env: {}, stdio: ['ignore', 'ignore', 'pipe', 'pipe'] },
    );
    this.#spawned++;
    const channel = child.stdio[3] as Socket;
    const worker: Worker = { child, channel, state: 'starting', assignment: undefined, stderr: '' };
    this.#workers.add(worker);
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      worker.stderr = (worker.stderr + chunk).slice(-STDERR_TAIL_BYTES);
    });
    return new Promise<void>((resolve) => {
      const startTimer = setTimeout(() => {
        if (worker.state === 'starting') child.kill('SIGKILL');
      }, this.#options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
      const reader = new FrameReader(
        () => maxFrameBytes(worker.assignment?.job),
        (message) => onFrame(message),
        () => this.#kill(worker, 'crashed'),
      );
      channel.on('data', (chunk: Buffer) => reader.push(chunk));
      channel.on('error', () => this.#kill(worker, 'crashed'));
      const onFrame = (message: unknown) => {
        if (worker.state === 'starting') {
          if ((message as FromWorker | null)?.t !== 'ready') return this.#kill(worker, 'crashed');
          clearTimeout(startTimer);
          this.#startFailures = 0;
          this.#unavailable = undefined;
          this.#release(worker);
          resolve();
          return;
        }
        this.#onMessage(worker, message);
      };
      child.on('error', () => undefined); // 'exit' follows and handles it
      child.on('exit', (exitCode, signal) => {
        clearTimeout(startTimer);
        const wasStarting = worker.state === 'starting';
        this.#onExit(worker, exitCode, signal);
        if (wasStarting) resolve();
      });
    });
  }

  /** The worker's program (types stripped) and its settings; read once. */
  #workerProgram(): { code: string; settings: WorkerSettings } {
    if (this.#code === undefined || this.#addon === undefined) {
      const here = fileURLToPath(import.meta.url);
      const file = here.endsWith('.ts') ? here.replace(/pool\.ts$/, 'worker.ts') : here.replace(/pool\.js$/, 'worker.js');
      const source = readFileSync(file, 'utf8');
      this.#code = this.#options.program ?? (file.endsWith('.ts') ? stripTypes(source) : source);
      this.#addon = addonPath();
    }
    return {
      code: this.#code,
      settings: { addon: this.#addon, warm: this.#options.warmIsolates, warmMemoryMb: this.#options.warmMemoryMb, maxRssMb: this.#options.workerMemoryMb },
    };
  }

  #onMessage(worker: Worker, raw: unknown): void {
    const assignment = worker.assignment;
    const message = raw as FromWorker | null;
    if (!assignment || typeof message !== 'object' || message === null) return this.#kill(worker, 'crashed');
    if (message.t === 'call') {
      // The worker forwards no more calls than the job allows: more is a worker out of control.
      const allowed = assignment.job.kind === 'code' ? assignment.job.maxCalls : 0;
      if (message.id !== assignment.id || !Number.isSafeInteger(message.call) || message.call < 0 || typeof message.tool !== 'string' || message.tool.length > MAX_TOOL_PATH || typeof message.args !== 'string' || message.args.length > MAX_CALL_ARGS || ++assignment.calls > allowed) {
        return this.#kill(worker, 'crashed');
      }
      void this.#forwardCall(worker, assignment, message.call, message.tool, message.args);
      return;
    }
    if (message.t === 'ending') {
      if (message.id !== assignment.id || typeof message.reason !== 'string' || !REASONS.has(message.reason)) return this.#kill(worker, 'crashed');
      assignment.ending ??= message.reason;
      return;
    }
    if (message.t === 'done') {
      if (message.id !== assignment.id) return this.#kill(worker, 'crashed');
      const outcome = checkOutcome(message.outcome, assignment.job);
      if (!outcome) return this.#kill(worker, 'crashed');
      this.#finish(worker, assignment, outcome);
      this.#release(worker);
      return;
    }
    this.#kill(worker, 'crashed');
  }

  async #forwardCall(worker: Worker, assignment: Assignment, call: number, tool: string, args: string): Promise<void> {
    let answer: { ok: boolean; json: string };
    try {
      answer = assignment.hooks.onCall ? await assignment.hooks.onCall(tool, args) : { ok: false, json: JSON.stringify({ code: 'WARDEN_TOOL_NOT_FOUND', message: 'this run has no tools' }) };
    } catch {
      answer = { ok: false, json: JSON.stringify({ code: 'WARDEN_INTERNAL', message: 'the tool call failed inside the broker' }) };
    }
    // The run may have ended meanwhile (limit, cancel): the answer has nowhere to go.
    if (worker.assignment !== assignment || worker.state !== 'busy') return;
    this.#send(worker, { t: 'settle', id: assignment.id, call, ok: answer.ok, json: answer.json });
  }

  /** The pool ends a run: asks the worker to stop it, and kills the worker if it does not report in time. */
  #end(worker: Worker, assignment: Assignment, reason: FailureReason): void {
    if (worker.assignment !== assignment || assignment.ending) return;
    assignment.ending = reason;
    this.#send(worker, { t: 'cancel', id: assignment.id });
    clearTimeout(assignment.timer);
    assignment.timer = setTimeout(() => this.#kill(worker, reason), KILL_GRACE_MS);
  }

  #kill(worker: Worker, reason: FailureReason): void {
    if (worker.state === 'dead') return;
    if (worker.assignment && !worker.assignment.ending) worker.assignment.ending = reason;
    worker.child.kill('SIGKILL');
  }

  #finish(worker: Worker, assignment: Assignment, outcome: RunOutcome): void {
    clearTimeout(assignment.timer);
    assignment.hooks.signal?.removeEventListener('abort', assignment.onAbort);
    worker.assignment = undefined;
    // A run the pool was ending reports why it ended, whatever the worker saw.
    assignment.resolve(assignment.ending && outcome.ok ? { ok: false, reason: assignment.ending, console: outcome.console, cpuMs: outcome.cpuMs } : outcome);
  }

  #onExit(worker: Worker, exitCode: number | null, signal: NodeJS.Signals | null): void {
    const wasStarting = worker.state === 'starting';
    worker.state = 'dead';
    this.#workers.delete(worker);
    worker.child.removeAllListeners();
    worker.child.stderr?.removeAllListeners();
    worker.channel.removeAllListeners();
    worker.channel.on('error', () => undefined);
    worker.channel.destroy();
    const assignment = worker.assignment;
    if (assignment) {
      // V8 ends the process itself when an isolate's heap cannot grow (it says so on stderr,
      // which only V8 and Node write to: guest console output is captured, never printed).
      const reason: FailureReason = assignment.ending ?? (OUT_OF_MEMORY.test(worker.stderr) ? 'memory' : 'crashed');
      this.#crashed++;
      this.#finish(worker, assignment, { ok: false, reason, console: '', cpuMs: 0 });
      this.#options.logger.warn({ exitCode, signal, reason, stderr: worker.stderr.trim() }, 'a sandbox worker ended during a run; starting another');
      this.#options.onWorkerEvent?.({ state: 'crashed', reason, exitCode, signal, stderr: worker.stderr.trim() });
    } else if (!wasStarting && !this.#closed) {
      this.#crashed++;
      this.#options.logger.warn({ exitCode, signal, stderr: worker.stderr.trim() }, 'an idle sandbox worker ended; starting another');
      this.#options.onWorkerEvent?.({ state: 'crashed', reason: 'idle', exitCode, signal, stderr: worker.stderr.trim() });
    } else if (wasStarting && !this.#closed) {
      this.#startFailures++;
      const why = worker.stderr.trim().split('\n').at(-1) ?? '';
      this.#unavailable = `a sandbox worker failed to start (exit ${exitCode ?? signal})${why ? `: ${why.slice(0, 300)}` : ''}`;
      this.#options.logger.error({ exitCode, signal, stderr: worker.stderr.trim() }, 'a sandbox worker failed to start');
      this.#options.onWorkerEvent?.({ state: 'failed-to-start', reason: this.#unavailable, exitCode, signal, stderr: worker.stderr.trim() });
    }
    if (this.#closed) return;
    if (this.#startFailures === 0) {
      void this.#spawn();
      return;
    }
    // Failing to start again and again: back off, and refuse runs meanwhile rather than queue them.
    this.#failQueue();
    const delay = Math.min(MAX_RESPAWN_DELAY_MS, 1000 * 2 ** Math.min(this.#startFailures - 1, 5));
    clearTimeout(this.#respawnTimer);
    this.#respawnTimer = setTimeout(() => {
      const missing = this.#options.workers - this.#workers.size;
      for (let i = 0; i < missing; i++) void this.#spawn();
    }, delay);
    this.#respawnTimer.unref();
  }

  /** No worker can start: runs waiting for one are told so instead of waiting out their time. */
  #failQueue(): void {
    if ([...this.#workers].some((worker) => worker.state !== 'dead' && worker.state !== 'starting')) return;
    for (const waiter of this.#queue.splice(0)) waiter.take(undefined);
  }

  #send(worker: Worker, message: ToWorker): void {
    if (worker.state === 'dead' || worker.channel.destroyed) return;
    worker.channel.write(encodeFrame(message), (error) => {
      if (error) this.#kill(worker, 'crashed');
    });
  }
}

/**
 * The largest frame a worker may send: a run's result and console, or a tool call's
 * arguments, as JSON inside JSON (escaping can make text up to six times longer), and a
 * little for the rest; small when it is running nothing.
 */
function maxFrameBytes(job: SandboxJob | undefined): number {
  const IDLE = 64 * 1024;
  if (!job) return IDLE;
  return 6 * (job.limits.outputBytes + job.limits.consoleBytes + MAX_CALL_ARGS) + IDLE;
}

/** The agent is told the sandbox cannot run code; why (a path, the worker's stderr) is for the operator. */
function unavailable(reason: string): WardenError {
  return new WardenError('WARDEN_SERVER_UNAVAILABLE', 'the sandbox cannot run code right now; the operator can see why in the broker\'s log and audit trail', { reason });
}

function cancelled(): RunOutcome {
  return { ok: false, reason: 'cancelled', console: '', cpuMs: 0 };
}

/** A worker's report, checked: the worker runs hostile code and is trusted no further than its messages check out. */
function checkOutcome(raw: unknown, job: SandboxJob): RunOutcome | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const outcome = raw as Record<string, unknown>;
  const consoleText = outcome['console'];
  const cpuMs = outcome['cpuMs'];
  // The console cap plus the truncation marker.
  if (typeof consoleText !== 'string' || Buffer.byteLength(consoleText) > job.limits.consoleBytes + 64) return undefined;
  if (typeof cpuMs !== 'number' || !Number.isFinite(cpuMs)) return undefined;
  if (outcome['ok'] === true) {
    const output = outcome['output'];
    if (typeof output !== 'string' || Buffer.byteLength(output) > job.limits.outputBytes) return undefined;
    return { ok: true, output, console: consoleText, cpuMs };
  }
  const reason = outcome['reason'];
  const message = outcome['message'];
  if (outcome['ok'] !== false || typeof reason !== 'string' || !REASONS.has(reason)) return undefined;
  if (message !== undefined && (typeof message !== 'string' || message.length > 4096)) return undefined;
  return { ok: false, reason: reason as FailureReason, ...(message === undefined ? {} : { message }), console: consoleText, cpuMs };
}

/**
 * The worker's TypeScript as JavaScript (a checkout runs the sources; a package ships
 * JavaScript). Stripping here, once, keeps Node's type stripper out of every worker's
 * start-up (about 80 ms each). Node flags the API as experimental on every first use;
 * that notice is held back for this one call, since it says nothing to an operator.
 */
function stripTypes(source: string): string {
  const emitWarning = process.emitWarning;
  process.emitWarning = () => undefined;
  try {
    return stripTypeScriptTypes(source);
  } finally {
    process.emitWarning = emitWarning;
  }
}

/** The isolated-vm addon for this platform and Node ABI, as isolated-vm itself would load it. */
function addonPath(): string {
  const manifest = createRequire(import.meta.url).resolve('isolated-vm/package.json');
  const root = dirname(manifest);
  // isolated-vm's own loader, resolved from isolated-vm's folder.
  const locate = createRequire(manifest)('node-gyp-build') as { path: (dir: string) => string };
  return locate.path(root);
}
