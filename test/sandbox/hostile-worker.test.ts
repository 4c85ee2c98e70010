import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WardenError } from '../../src/errors.ts';
import { createLogger } from '../../src/log.ts';
import { SandboxPool } from '../../src/sandbox/pool.ts';
import type { SandboxJob } from '../../src/sandbox/protocol.ts';

// Stand-ins for a worker that escaped its isolate: the broker must survive whatever it
// writes on its pipe, kill it, and fail only the run it had.

/** A worker program: frames in and out on fd 3, and `onRun(message)` for each run it gets. */
function program(onRun: string, onStart = "send({ t: 'ready' });"): string {
  return `
import { Socket } from 'node:net';
const channel = new Socket({ fd: 3, readable: true, writable: true });
const frame = (message) => { const body = Buffer.from(JSON.stringify(message)); const head = Buffer.alloc(4); head.writeUInt32BE(body.length, 0); return Buffer.concat([head, body]); };
const send = (message) => channel.write(frame(message));
let inbox = Buffer.alloc(0);
channel.on('data', (chunk) => {
  inbox = Buffer.concat([inbox, chunk]);
  while (inbox.length >= 4 && inbox.length >= 4 + inbox.readUInt32BE(0)) {
    const message = JSON.parse(inbox.subarray(4, 4 + inbox.readUInt32BE(0)).toString());
    inbox = inbox.subarray(4 + inbox.readUInt32BE(0));
    if (message.t === 'run') { ${onRun} }
  }
});
channel.on('close', () => process.exit(0));
${onStart}
`;
}

const LIMITS = { memoryMb: 64, cpuMs: 500, wallMs: 5000, outputBytes: 1024, consoleBytes: 1024 };
const JOB: SandboxJob = { kind: 'code', code: 'return 1', tools: ['s.t'], maxCalls: 3, limits: LIMITS };

async function withPool(code: string, use: (pool: SandboxPool) => Promise<void>): Promise<void> {
  const pool = new SandboxPool({ workers: 1, warmIsolates: 0, warmMemoryMb: 64, workerMemoryMb: 256, logger: createLogger('silent'), program: code });
  try {
    await use(pool);
  } finally {
    await pool.close();
  }
}

describe('a worker that misbehaves on its pipe', { timeout: 60_000 }, () => {
  it('bytes that are not a frame: the worker is killed, the run fails as crashed', async () => {
    await withPool(program("channel.write(Buffer.from([0, 0, 0, 9])); channel.write('{not json');"), async (pool) => {
      const outcome = await pool.run(JOB);
      assert.equal(outcome.ok, false);
      assert.equal(!outcome.ok && outcome.reason, 'crashed');
      assert.ok(pool.stats().crashed >= 1);
    });
  });

  it('a frame announced far over the limit, then endless bytes: refused at its header, nothing buffered', async () => {
    const before = process.memoryUsage().rss;
    await withPool(program("channel.write(Buffer.from([0x7f, 0xff, 0xff, 0xff])); const junk = Buffer.alloc(1 << 20, 97); for (let i = 0; i < 256; i++) channel.write(junk);"), async (pool) => {
      const outcome = await pool.run(JOB);
      assert.equal(!outcome.ok && outcome.reason, 'crashed');
    });
    // 256 MiB were written; the broker kept none of it (a generous bound for the rest of the process).
    assert.ok(process.memoryUsage().rss - before < 128 * 1024 * 1024, `rss grew by ${process.memoryUsage().rss - before}`);
  });

  it('the old IPC failure: raw newline-delimited text is just bytes that are not a frame', async () => {
    await withPool(program("channel.write('{\"t\":\"done\"\\n{garbage\\n');"), async (pool) => {
      const outcome = await pool.run(JOB);
      assert.equal(!outcome.ok && outcome.reason, 'crashed');
    });
  });

  it('more tool calls than the job allows: the worker is killed after forwarding at most maxCalls', async () => {
    let calls = 0;
    const flood = "for (let call = 0; call < 100; call++) send({ t: 'call', id: message.id, call, tool: 's.t', args: '{}' });";
    await withPool(program(flood), async (pool) => {
      const outcome = await pool.run(JOB, {
        onCall: async () => {
          calls++;
          return { ok: true, json: '1' };
        },
      });
      assert.equal(!outcome.ok && outcome.reason, 'crashed');
    });
    assert.ok(calls <= 3, `onCall ran ${calls} times`);
  });

  it('a result over the job\'s output limit, or a reason that does not exist: killed, crashed', async () => {
    const big = `send({ t: 'done', id: message.id, outcome: { ok: true, output: '"${'x'.repeat(2000)}"', console: '', cpuMs: 1 } });`;
    const made = "send({ t: 'done', id: message.id, outcome: { ok: false, reason: 'pwned', console: '', cpuMs: 1 } });";
    for (const onRun of [big, made]) {
      await withPool(program(onRun), async (pool) => {
        const outcome = await pool.run(JOB);
        assert.equal(!outcome.ok && outcome.reason, 'crashed');
      });
    }
  });

  it('a worker that cannot start: runs are refused with WARDEN_SERVER_UNAVAILABLE, and what it printed stays out of the message', async () => {
    const secretPath = '/opt/private/broker/node_modules/isolated-vm';
    await withPool(program('', `process.stderr.write('cannot load ${secretPath}\\n'); process.exit(3);`), async (pool) => {
      await pool.start();
      assert.ok(pool.unavailable?.includes(secretPath), 'the operator sees why');
      await assert.rejects(pool.run(JOB), (error: unknown) => error instanceof WardenError && error.code === 'WARDEN_SERVER_UNAVAILABLE' && !error.message.includes(secretPath));
    });
  });

  it('a worker that says nothing: a run waiting in the queue is ended by its wall time, not left waiting', async () => {
    await withPool(program('/* never answers */'), async (pool) => {
      // The first run holds the only worker until its wall time (then the worker is killed).
      const first = pool.run({ ...JOB, limits: { ...LIMITS, wallMs: 2000 } });
      const queued = await pool.run({ ...JOB, limits: { ...LIMITS, wallMs: 200 } });
      assert.equal(!queued.ok && queued.reason, 'wall');
      const held = await first;
      assert.equal(!held.ok && held.reason, 'wall');
    });
  });
});
