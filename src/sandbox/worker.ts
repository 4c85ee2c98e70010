/**
 * A sandbox worker process: runs guest code (code tools, code mode) in isolated-vm
 * isolates, one run at a time, each in a fresh isolate that is disposed after the run.
 *
 * It is started by SandboxPool with --no-node-snapshot (isolated-vm needs it) under Node's
 * permission model (no file access beyond the addon, no child processes, no workers),
 * with an empty environment and its program passed on the command line, so code that
 * escaped an isolate would still find no credentials and no files (the network is not
 * covered by Node 24's permission model: docs/sandbox.md). Some memory bombs end a whole process whatever an
 * isolate's limit says; that is why this is a process of its own, which the pool replaces.
 *
 * Only strings cross into and out of an isolate: arguments and results as JSON text. No
 * Reference, ExternalCopy, Callback or isolate object is ever reachable from guest code;
 * the two host functions the bootstrap receives are kept in its closure and take strings.
 * This file imports nothing at run time but Node's built-ins: the permission model lets it
 * read only the addon.
 */
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { Socket } from 'node:net';
import type * as IVM from 'isolated-vm';
import type { CodeJob, FailureReason, FromWorker, ModuleJob, RunOutcome, SandboxJob, ToWorker, WorkerSettings } from './protocol.ts';

/** The longest error message a run reports. */
const MAX_MESSAGE = 2000;
/** The largest argument text a guest may hand to one tool call; the broker applies its own limits after. */
const MAX_CALL_ARGS = 1024 * 1024;
/** How often the resident size and the CPU time are checked while a run is in progress, ms. */
const WATCH_MS = 20;
/**
 * CPU time past the budget after which the isolate is taken not to stop: some built-ins
 * (growing a huge array) do not check for termination, and then only ending the process
 * stops them.
 */
const CPU_GRACE_MS = 100;

const settings = JSON.parse(process.argv[2] ?? '{}') as WorkerSettings;
const ivm = (createRequire(import.meta.url)(settings.addon) as { ivm: typeof IVM }).ivm;

/**
 * Runs once in every new isolate, before any guest code: removes what guests must not have,
 * installs the captured console, and returns the three functions the worker calls. It
 * keeps its own copies of the built-ins it uses, so a guest that replaces JSON, String or
 * a prototype method confuses only itself.
 */
const BOOTSTRAP = String.raw`
'use strict';
const emit = $0;
const send = $1;
const G = globalThis;
// WebAssembly memory is not counted by the isolate's memory limit; SharedArrayBuffer and
// Atomics allow blocking waits; finalizers run outside any call the worker times.
for (const name of ['WebAssembly', 'SharedArrayBuffer', 'Atomics', 'FinalizationRegistry', 'WeakRef']) delete G[name];
const uncurry = Function.prototype.bind.bind(Function.prototype.call);
const parse = JSON.parse;
const stringify = JSON.stringify;
const slice = uncurry(String.prototype.slice);
const indexOf = uncurry(String.prototype.indexOf);
const toText = String;
const freeze = Object.freeze;
const create = Object.create;
const PromiseCtor = Promise;
const ErrorCtor = Error;
const TypeErrorCtor = TypeError;
const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
const pending = create(null);
let nextCall = 0;
let consoleLeft = 0;

function show(value) {
  if (typeof value === 'string') return value;
  try {
    const text = stringify(value);
    if (typeof text === 'string') return text;
  } catch {}
  try {
    return toText(value);
  } catch {
    return '[value that cannot be printed]';
  }
}
function write(level, args) {
  // One line past the budget still goes out, so that the worker marks the cut.
  if (consoleLeft < 0) return;
  let line = level === 'log' ? '' : '[' + level + '] ';
  for (let i = 0; i < args.length; i++) line += (i === 0 ? '' : ' ') + show(args[i]);
  line += '\n';
  consoleLeft -= line.length;
  emit(line);
}
const console = freeze({
  log: function log() { write('log', arguments); },
  info: function info() { write('info', arguments); },
  debug: function debug() { write('debug', arguments); },
  warn: function warn() { write('warn', arguments); },
  error: function error() { write('error', arguments); },
});
Object.defineProperty(G, 'console', { value: console, writable: false, configurable: false, enumerable: false });

function describe(error) {
  try {
    if (error !== null && typeof error === 'object' && typeof error.message === 'string') {
      const name = typeof error.name === 'string' && error.name !== '' ? error.name + ': ' : '';
      return slice(name + error.message, 0, ${MAX_MESSAGE});
    }
    return slice('a non-Error value was thrown: ' + show(error), 0, ${MAX_MESSAGE});
  } catch {
    return 'an error that cannot be described was thrown';
  }
}
function finish(value) {
  let out;
  try {
    out = stringify(value === undefined ? null : value);
  } catch (error) {
    return 'T' + 'the result is not JSON: ' + describe(error);
  }
  if (typeof out !== 'string') return 'T' + 'the result is not JSON (a function or a symbol)';
  return 'R' + out;
}
function callTool(path, args) {
  return new PromiseCtor((resolve, reject) => {
    let json;
    try {
      json = stringify(args === undefined ? {} : args);
    } catch (error) {
      reject(error);
      return;
    }
    if (typeof json !== 'string' || json[0] !== '{') {
      reject(new TypeErrorCtor('a tool takes one argument: an object of its arguments'));
      return;
    }
    const id = nextCall++;
    pending[id] = { resolve, reject };
    send(id, path, json);
  });
}
function bindTools(paths) {
  const tools = create(null);
  for (let i = 0; i < paths.length; i++) {
    const path = paths[i];
    const dot = indexOf(path, '.');
    const server = slice(path, 0, dot);
    const tool = slice(path, dot + 1);
    if (tools[server] === undefined) tools[server] = create(null);
    tools[server][tool] = function (args) { return callTool(path, args); };
  }
  for (const server in tools) freeze(tools[server]);
  return freeze(tools);
}
// Results start with a mark the worker reads: R result, T thrown, I cannot be run.
async function runModule(fn, input, consoleBytes) {
  consoleLeft = consoleBytes;
  if (typeof fn !== 'function') return 'I' + 'the export is not a function';
  let value;
  try {
    value = await fn(parse(input));
  } catch (error) {
    return 'T' + describe(error);
  }
  return finish(value);
}
async function runCode(code, paths, consoleBytes) {
  consoleLeft = consoleBytes;
  let fn;
  try {
    fn = new AsyncFunction('tools', 'console', code);
  } catch (error) {
    return 'T' + describe(error);
  }
  let value;
  try {
    value = await fn(bindTools(parse(paths)), console);
  } catch (error) {
    return 'T' + describe(error);
  }
  return finish(value);
}
function settle(id, ok, json) {
  const entry = pending[id];
  if (entry === undefined) return;
  delete pending[id];
  let value = null;
  try {
    value = parse(json);
  } catch {}
  if (ok) {
    entry.resolve(value);
    return;
  }
  const failure = value !== null && typeof value === 'object' ? value : {};
  const error = new ErrorCtor(typeof failure.message === 'string' ? failure.message : 'the tool call failed');
  if (typeof failure.code === 'string') error.code = failure.code;
  entry.reject(error);
}
return [runModule, runCode, settle];
`;

/** An isolate with its context bootstrapped, waiting for one run. */
interface Prepared {
  readonly isolate: IVM.Isolate;
  readonly context: IVM.Context;
  readonly runModule: IVM.Reference;
  readonly runCode: IVM.Reference;
  readonly settle: IVM.Reference;
  /** Where the run in progress gets the guest's console lines and tool calls. */
  readonly route: { sink: Sink | undefined };
}

/** The run a prepared isolate serves. */
interface Sink {
  console: string;
  consoleBytes: number;
  readonly consoleLimit: number;
  truncated: boolean;
  onCall: ((call: number, tool: string, args: string) => void) | undefined;
}

async function prepare(memoryMb: number): Promise<Prepared> {
  // isolated-vm's advice when v8 has lost control of an isolate: end the process.
  const isolate = new ivm.Isolate({ memoryLimit: memoryMb, onCatastrophicError: () => process.abort() });
  const context = await isolate.createContext();
  const route: Prepared['route'] = { sink: undefined };
  const emit = new ivm.Callback((line: unknown) => {
    const sink = route.sink;
    if (!sink || typeof line !== 'string' || sink.truncated) return;
    const bytes = Buffer.byteLength(line);
    if (sink.consoleBytes + bytes > sink.consoleLimit) {
      sink.truncated = true;
      sink.console += '[console output truncated]\n';
      return;
    }
    sink.consoleBytes += bytes;
    sink.console += line;
  }, { ignored: true });
  const send = new ivm.Callback((call: unknown, tool: unknown, args: unknown) => {
    const sink = route.sink;
    if (!sink?.onCall || typeof call !== 'number' || !Number.isSafeInteger(call) || typeof tool !== 'string' || typeof args !== 'string') return;
    sink.onCall(call, tool, args);
  }, { ignored: true });
  const entries = (await context.evalClosure(BOOTSTRAP, [emit, send], { result: { reference: true } })) as IVM.Reference;
  const [runModule, runCode, settle] = await Promise.all([0, 1, 2].map((index) => entries.get(index, { reference: true })));
  entries.release();
  return { isolate, context, runModule: runModule!, runCode: runCode!, settle: settle!, route };
}

const warm: Prepared[] = [];
let warming: Promise<void> | undefined;

/** Tops up the isolates kept ready; one at a time, in the background, one top-up at a time. */
function refill(): Promise<void> {
  if (warming) return warming;
  if (warm.length >= settings.warm) return Promise.resolve();
  const filling = (async () => {
    while (warm.length < settings.warm) warm.push(await prepare(settings.warmMemoryMb));
  })();
  // Cleared once settled (never before it is set: a stock already full settles at once).
  warming = filling.finally(() => {
    warming = undefined;
  });
  return warming;
}

async function take(memoryMb: number): Promise<Prepared> {
  const ready = memoryMb === settings.warmMemoryMb ? warm.shift() : undefined;
  return ready ?? prepare(memoryMb);
}

/** The run in progress: one at a time per worker. */
interface Current {
  readonly id: number;
  readonly job: SandboxJob;
  sandbox: Prepared | undefined;
  stopped: FailureReason | undefined;
  cpuBase: bigint;
  /** CPU time used as last seen, ms: the isolate cannot be asked once disposed. */
  cpuSeen: number;
}
let current: Current | undefined;

/**
 * The broker's pipe (fd 3): length-prefixed JSON frames, as src/sandbox/frames.ts reads
 * them. This side trusts the broker, so its reader is the short one; it is written out
 * here because this program can read no file but the addon.
 */
const channel = new Socket({ fd: 3, readable: true, writable: true });

function frame(message: FromWorker): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}

function send(message: FromWorker, written?: () => void): void {
  channel.write(frame(message), written);
}

let inbox: Buffer = Buffer.alloc(0);
channel.on('data', (chunk: Buffer) => {
  inbox = inbox.length === 0 ? chunk : Buffer.concat([inbox, chunk]);
  while (inbox.length >= 4 && inbox.length >= 4 + inbox.readUInt32BE(0)) {
    const length = inbox.readUInt32BE(0);
    const message = JSON.parse(inbox.subarray(4, 4 + length).toString('utf8')) as ToWorker;
    inbox = inbox.subarray(4 + length);
    receive(message);
  }
});
// The broker is gone: nothing left to serve.
channel.on('close', () => process.exit(0));
channel.on('error', () => process.exit(0));

/**
 * Ends the run for a reason decided outside the isolate: disposing stops it at once. The
 * pool is told first, so that if disposing hangs and the pool has to kill this process,
 * the run still fails for the right reason.
 */
function stop(reason: FailureReason): void {
  if (!current || current.stopped) return;
  current.stopped = reason;
  send({ t: 'ending', id: current.id, reason });
  const isolate = current.sandbox?.isolate;
  if (isolate && !isolate.isDisposed) isolate.dispose();
}

/** The isolate will not stop (or the process is too big): this process ends, and the pool starts another. */
function endProcess(run: Current, reason: FailureReason): void {
  const kill = () => process.kill(process.pid, 'SIGKILL');
  send({ t: 'ending', id: run.id, reason }, kill);
  setTimeout(kill, 200);
}

function cpuUsedMs(run: Current): number {
  const isolate = run.sandbox?.isolate;
  if (isolate && !isolate.isDisposed) run.cpuSeen = Number(isolate.cpuTime - run.cpuBase) / 1e6;
  return run.cpuSeen;
}

/** A run ended by a limit, as the worker established it: never from a message the guest could write. */
class LimitReached extends Error {
  readonly reason: FailureReason;
  constructor(reason: FailureReason) {
    super(reason);
    this.reason = reason;
  }
}

/**
 * One entry into the isolate, with what is left of the run's CPU budget as its timeout:
 * isolated-vm's timeout covers one entry only (not code that resumes after an await), so
 * every entry gets what remains. A failure is judged by facts the guest cannot forge: the
 * run stopped by the worker, the isolate disposed (over its heap limit), or the entry cut
 * at its timeout. Anything else is the guest's own error, passed on.
 */
async function enter<T>(run: Current, entry: (timeout: number) => Promise<T>): Promise<T> {
  const left = run.job.limits.cpuMs - cpuUsedMs(run);
  if (left <= 0) throw new LimitReached('cpu');
  const timeout = Math.max(1, Math.ceil(left));
  const started = performance.now();
  try {
    return await entry(timeout);
  } catch (error) {
    if (run.stopped) throw new LimitReached(run.stopped);
    if (run.sandbox?.isolate.isDisposed) throw new LimitReached('memory');
    // A guest could throw an error worded like isolated-vm's, but not after using its whole
    // budget first (timers fire a little early: 90%).
    if (performance.now() - started >= timeout * 0.9 && /timed out/i.test(error instanceof Error ? error.message : '')) throw new LimitReached('cpu');
    throw error;
  }
}

async function runJob(id: number, job: SandboxJob): Promise<void> {
  const run: Current = { id, job, sandbox: undefined, stopped: undefined, cpuBase: 0n, cpuSeen: 0 };
  current = run;
  const wall = setTimeout(() => stop('wall'), job.limits.wallMs);
  let disposedAt: number | undefined;
  const watch = setInterval(() => {
    if (process.memoryUsage.rss() > settings.maxRssMb * 1024 * 1024) return endProcess(run, 'memory');
    if (cpuUsedMs(run) > job.limits.cpuMs + CPU_GRACE_MS) return endProcess(run, 'cpu');
    // Disposed (over its heap limit, or stopped) yet still not done: a built-in that does
    // not check for termination holds it, and its CPU time can no longer be read.
    if (run.sandbox?.isolate.isDisposed) {
      disposedAt ??= Date.now();
      if (Date.now() - disposedAt > CPU_GRACE_MS) endProcess(run, run.stopped ?? 'memory');
    }
  }, WATCH_MS);
  const sink: Sink = { console: '', consoleBytes: 0, consoleLimit: job.limits.consoleBytes, truncated: false, onCall: undefined };
  let outcome: RunOutcome;
  try {
    const sandbox = await take(job.limits.memoryMb);
    run.sandbox = sandbox;
    run.cpuBase = sandbox.isolate.cpuTime;
    sandbox.route.sink = sink;
    if (run.stopped) throw new Error('stopped');
    const marked = job.kind === 'module' ? await runModule(run, sandbox, job) : await runCode(run, sandbox, job, sink);
    outcome = finish(run, marked, sink);
  } catch (error) {
    outcome = failure(run, error, sink);
  } finally {
    clearTimeout(wall);
    clearInterval(watch);
  }
  current = undefined;
  send({ t: 'done', id, outcome });
  // Disposed after the answer is on its way: it takes a while, and nothing of it is needed.
  const isolate = run.sandbox?.isolate;
  if (isolate && !isolate.isDisposed) isolate.dispose();
  void refill().catch(() => process.exit(1));
}

async function runModule(run: Current, sandbox: Prepared, job: ModuleJob): Promise<unknown> {
  // Set by a line after the module's own code: evaluation resolves at a top-level await
  // that is still pending, and then the module's top level has not finished.
  const finished = `__moduleFinished${randomUUID().replaceAll('-', '')}`;
  // Compiling and linking run no guest code: done synchronously, which is quicker.
  let module: IVM.Module;
  try {
    module = sandbox.isolate.compileModuleSync(`${job.source}\n;globalThis.${finished} = true;\n`, { filename: job.filename });
  } catch (error) {
    // The module's own syntax error, as it reads without the added line.
    sandbox.isolate.compileModuleSync(job.source, { filename: job.filename });
    throw error;
  }
  const imports = module.dependencySpecifiers;
  if (imports.length > 0) return `Ia code tool cannot import modules (it imports "${imports[0]}")`;
  module.instantiateSync(sandbox.context, () => {
    throw new Error('imports are not available');
  });
  // The module's top-level code is guest code: asynchronous, with the budget as its timeout.
  await enter(run, (timeout) => module.evaluate({ timeout }));
  if (sandbox.context.global.getSync(finished) !== true) return 'Ia code tool\'s module must not wait at its top level (a top-level await); export functions, and await inside them';
  sandbox.context.global.deleteSync(finished);
  const exported = module.namespace.getSync(job.exportName, { reference: true });
  if (exported.typeof !== 'function') return `Ithe module has no function export named "${job.exportName}"`;
  return runEntry(run, (timeout) => sandbox.runModule.apply(undefined, [exported.derefInto(), job.input, job.limits.consoleBytes], { timeout, result: { promise: true, copy: true } }));
}

/**
 * Calls the bootstrap's runner, which catches everything the guest throws and returns a
 * marked string: a rejection here comes from isolated-vm, never from the guest. A result
 * promise that the guest left unreachable is collected and "abandoned".
 */
async function runEntry(run: Current, entry: (timeout: number) => Promise<unknown>): Promise<unknown> {
  try {
    return await enter(run, entry);
  } catch (error) {
    if (error instanceof LimitReached || !/abandoned/i.test(error instanceof Error ? error.message : '')) throw error;
    return 'Tthe code waits for a promise that nothing can settle';
  }
}

/** Code mode: each tool call the guest makes goes to the broker; its answer re-enters the isolate with the budget left. */
async function runCode(run: Current, sandbox: Prepared, job: CodeJob, sink: Sink): Promise<unknown> {
  const allowed = new Set(job.tools);
  const settled = new Set<number>();
  const calls = new Map<number, true>();
  let forwarded = 0;
  sink.onCall = (call, tool, args) => {
    if (run.stopped || calls.has(call)) return;
    calls.set(call, true);
    if (args.length > MAX_CALL_ARGS) {
      void settleCall(run, sandbox, call, false, JSON.stringify({ code: 'WARDEN_ARGUMENTS_INVALID', message: `The arguments are over ${MAX_CALL_ARGS} characters as JSON.` }));
      return;
    }
    if (!allowed.has(tool)) {
      void settleCall(run, sandbox, call, false, JSON.stringify({ code: 'WARDEN_TOOL_NOT_FOUND', message: `no tool ${tool} is available here` }));
      return;
    }
    if (forwarded >= job.maxCalls) {
      void settleCall(run, sandbox, call, false, JSON.stringify({ code: 'WARDEN_SANDBOX_LIMIT', message: `This run has made its ${job.maxCalls} tool calls (sandbox limit codeMode.maxCalls).` }));
      return;
    }
    forwarded++;
    send({ t: 'call', id: run.id, call, tool, args });
  };
  settlers.set(run.id, (call, ok, json) => {
    if (!calls.has(call) || settled.has(call)) return;
    settled.add(call);
    void settleCall(run, sandbox, call, ok, json);
  });
  try {
    return await runEntry(run, (timeout) => sandbox.runCode.apply(undefined, [job.code, JSON.stringify(job.tools), job.limits.consoleBytes], { timeout, result: { promise: true, copy: true } }));
  } finally {
    settlers.delete(run.id);
  }
}

/** Answers received for the run in progress, by run id. */
const settlers = new Map<number, (call: number, ok: boolean, json: string) => void>();

async function settleCall(run: Current, sandbox: Prepared, call: number, ok: boolean, json: string): Promise<void> {
  try {
    await enter(run, (timeout) => sandbox.settle.apply(undefined, [call, ok, json], { timeout }));
  } catch (error) {
    // Over a limit while resuming: the run ends (its result promise is abandoned). settle
    // itself throws nothing a guest controls: the guest's code runs in later microtasks.
    if (!run.stopped) run.stopped = error instanceof LimitReached ? error.reason : 'crashed';
    if (!sandbox.isolate.isDisposed) sandbox.isolate.dispose();
  }
}

function finish(run: Current, marked: unknown, sink: Sink): RunOutcome {
  const cpuMs = cpuUsedMs(run);
  if (run.stopped) return { ok: false, reason: run.stopped, console: sink.console, cpuMs };
  if (typeof marked !== 'string' || marked.length === 0) return { ok: false, reason: 'crashed', message: 'the run returned no result', console: sink.console, cpuMs };
  const body = marked.slice(1);
  switch (marked[0]) {
    case 'R':
      if (Buffer.byteLength(body) > run.job.limits.outputBytes) return { ok: false, reason: 'output', console: sink.console, cpuMs };
      return { ok: true, output: body, console: sink.console, cpuMs };
    case 'T':
      return { ok: false, reason: 'thrown', message: body.slice(0, MAX_MESSAGE), console: sink.console, cpuMs };
    case 'I':
      return { ok: false, reason: 'invalid', message: body.slice(0, MAX_MESSAGE), console: sink.console, cpuMs };
    default:
      return { ok: false, reason: 'crashed', message: 'the run returned an unexpected result', console: sink.console, cpuMs };
  }
}

function failure(run: Current, error: unknown, sink: Sink): RunOutcome {
  const cpuMs = cpuUsedMs(run);
  const reason = run.stopped ?? (error instanceof LimitReached ? error.reason : undefined);
  if (reason) return { ok: false, reason, console: sink.console, cpuMs };
  // The guest's own error (a module's top level, a syntax error), as the runner reports one.
  const message = error instanceof Error ? `${error.name || 'Error'}: ${error.message}` : String(error);
  return { ok: false, reason: 'thrown', message: message.slice(0, MAX_MESSAGE), console: sink.console, cpuMs };
}

function receive(message: ToWorker): void {
  if (message.t === 'run') {
    // One run at a time: the pool never sends a second; if it did, refuse it rather than mix them.
    if (current) {
      send({ t: 'done', id: message.id, outcome: { ok: false, reason: 'crashed', message: 'the worker is busy', console: '', cpuMs: 0 } });
      return;
    }
    void runJob(message.id, message.job);
  } else if (message.t === 'settle') {
    settlers.get(message.id)?.(message.call, message.ok, message.json);
  } else if (message.t === 'cancel') {
    if (current?.id === message.id) stop('cancelled');
  }
}

refill().then(
  () => send({ t: 'ready' }),
  () => process.exit(1),
);
