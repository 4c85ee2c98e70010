import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { digestArguments } from '../../src/audit/digest.ts';
import { trailFiles, trailLines } from '../../src/audit/read.ts';
import { CLI, NOTES_SERVER, NOTES_TOOLS, runCli, stdioManifest, tempDir, textOf, waitFor, writeConfig, writeManifest } from '../helpers.ts';

/**
 * A broker killed with SIGKILL while calls are in flight loses no record of a call whose
 * result reached the agent: the write-ahead record (tools/call.dispatch) is written before
 * the call is sent, the outcome record (tools/call) before the result is returned, each
 * with one write(2). The next broker takes over the lock, continues the chain, and the
 * whole trail verifies.
 */

const { dir, cleanup } = tempDir('warden-sigkill-');
after(cleanup);
writeManifest(join(dir, 'manifests/notes.json'), stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS));
const CONFIG = writeConfig(join(dir, 'warden.yaml'), {
  version: 1,
  servers: { notes: { manifest: 'notes.json' } },
  agents: { a: { allow: [{ tools: ['notes__echo'] }] } },
  rateLimits: { perAgent: { perMinute: 100000, burst: 10000, concurrent: 64 }, perTool: { perMinute: 100000, burst: 10000, concurrent: 64 } },
  // Checkpoints often, so kills land between and after them.
  audit: { file: 'audit/audit.jsonl', checkpointEvery: 5 },
});
const AUDIT_FILE = join(dir, 'audit/audit.jsonl');
const WORKERS = 6;
const MAX_CALLS = 120;

async function startBroker(): Promise<{ client: Client; pid: number }> {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [CLI, 'serve', '--config', CONFIG, '--stdio', '--agent', 'a'],
    env: { PATH: process.env['PATH'] ?? '' },
    stderr: 'ignore',
  });
  const client = new Client({ name: 'test-agent', version: '1.0.0' }, { versionNegotiation: { mode: 'legacy' } });
  await client.connect(transport);
  assert.ok(transport.pid, 'the broker process has a pid');
  return { client, pid: transport.pid };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Every record of the trail, rotated files included. */
function records(): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const file of trailFiles(AUDIT_FILE)) {
    for (const line of trailLines(file)) if (line.text !== undefined && line.complete) out.push(JSON.parse(line.text) as Record<string, unknown>);
  }
  return out;
}

/**
 * Runs calls from several workers at once, each call's arguments distinct, and kills the
 * broker once `killAfter` results have come back (0: as soon as the first calls are sent).
 * Returns the argument digests of the calls whose results reached the client.
 */
async function callsUntilKilled(round: number, killAfter: number): Promise<{ returned: string[]; pid: number }> {
  const { client, pid } = await startBroker();
  const returned: string[] = [];
  let killed = false;
  let next = 0;
  const kill = () => {
    if (killed) return;
    killed = true;
    process.kill(pid, 'SIGKILL');
  };
  const worker = async (): Promise<void> => {
    while (!killed && next < MAX_CALLS) {
      const args = { text: `round ${round} call ${next++}` };
      let result;
      try {
        result = await client.callTool({ name: 'notes__echo', arguments: args });
      } catch {
        return; // in flight when the broker died
      }
      assert.equal(textOf(result), args.text);
      returned.push(digestArguments(args)!);
      if (returned.length >= killAfter) kill();
    }
  };
  const workers = Array.from({ length: WORKERS }, () => worker());
  if (killAfter === 0) {
    await new Promise((resolve) => setImmediate(resolve));
    kill();
  }
  await Promise.all(workers);
  assert.ok(killed, `the broker was killed in round ${round}`);
  assert.ok(await waitFor(() => !alive(pid), 200, 25), 'the killed broker is gone');
  await client.close().catch(() => undefined);
  return { returned, pid };
}

describe('audit trail of a broker killed with SIGKILL', () => {
  const moments = [0, 1, 7, 23];
  for (const [round, killAfter] of moments.entries()) {
    it(`every call whose result came back is recorded, and the trail verifies (killed after ${killAfter} result(s))`, async () => {
      const { returned, pid: killedPid } = await callsUntilKilled(round, killAfter);
      assert.ok(returned.length >= killAfter);
      assert.equal(readFileSync(`${AUDIT_FILE}.lock`, 'utf8').split(' ')[0], String(killedPid), 'the killed broker left its lock');

      // The next broker takes over the lock and continues the chain.
      const { client, pid } = await startBroker();
      try {
        assert.equal(readFileSync(`${AUDIT_FILE}.lock`, 'utf8').split(' ')[0], String(pid));
        const args = { text: `round ${round} after the restart` };
        const result = await client.callTool({ name: 'notes__echo', arguments: args });
        assert.equal(textOf(result), args.text);
        returned.push(digestArguments(args)!);
      } finally {
        await client.close();
      }
      assert.ok(await waitFor(() => !alive(pid), 200, 25), 'the broker stopped');
      assert.equal(existsSync(`${AUDIT_FILE}.lock`), false, 'a broker that stopped cleanly releases the lock');

      const all = records();
      const reopened = all.filter((record) => record['event'] === 'audit.opened' && record['pid'] === pid);
      assert.equal(reopened.length, 1);
      assert.equal(reopened[0]!['reason'], 'resumed');
      const last = all.at(-1)!;
      assert.equal(last['event'], 'audit.checkpoint');
      assert.equal(last['final'], true, 'closed cleanly: a closing checkpoint');

      for (const digest of returned) {
        const dispatched = all.filter((record) => record['event'] === 'tools/call.dispatch' && record['argsSha256'] === digest);
        const outcomes = all.filter((record) => record['event'] === 'tools/call' && record['argsSha256'] === digest);
        assert.equal(dispatched.length, 1, `one write-ahead record for ${digest}`);
        assert.equal(outcomes.length, 1, `one outcome record for ${digest}`);
        assert.equal(outcomes[0]!['correlationId'], dispatched[0]!['correlationId']);
        assert.equal(outcomes[0]!['outcome'], 'ok');
        assert.ok(all.indexOf(dispatched[0]!) < all.indexOf(outcomes[0]!), 'the write-ahead record comes first');
      }

      const verify = runCli(['audit', 'verify', '--config', CONFIG]);
      assert.equal(verify.code, 0, verify.stdout + verify.stderr);
      assert.match(verify.stdout, /^audit trail intact: \d+ records/m);
    });
  }
});
