import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import canonicalize from 'canonicalize';
import { pino } from 'pino';
import { argumentPreview, digestArguments } from '../../src/audit/digest.ts';
import { Broker } from '../../src/broker.ts';
import { loadConfig } from '../../src/config/load.ts';
import { DETECTED } from '../../src/guard/detect-secrets.ts';
import { REDACTED, secretForms } from '../../src/guard/sanitize-output.ts';
import { NOTES_SERVER, NOTES_TOOLS, stdioManifest, tempDir, textOf, waitFor, writeConfig, writeManifest } from '../helpers.ts';
import { readLines } from './trails.ts';

const { dir, cleanup } = tempDir('warden-digest-');
after(cleanup);

const TOKEN = 'notes-token-5b1e9c27d4a8f063';
// A made-up value in the shape secretlint's AWS rule recognises.
const AWS_SECRET = 'Xq2ZP7kM9vLw3RtY8bNc4HdF6gJe1SaU0iOpQwEr';
const AWS = `aws_secret_access_key=${AWS_SECRET}`;

describe('argument digests and previews', () => {
  it('the digest is the SHA-256 of the RFC 8785 canonical JSON, whatever the key order', () => {
    const args = { b: [1, 'two', { z: null, a: true }], a: 1.5 };
    assert.equal(digestArguments(args), createHash('sha256').update(canonicalize(args)!).digest('hex'));
    assert.equal(digestArguments({ a: 1.5, b: [1, 'two', { a: true, z: null }] }), digestArguments(args));
    assert.notEqual(digestArguments({ a: 1.5 }), digestArguments({ a: 1.6 }));
  });

  it('a preview masks every form of an injected credential and detected secrets, then cuts to the size', async () => {
    const forms = secretForms([TOKEN]);
    const args = { note: `token ${TOKEN} url ${encodeURIComponent(TOKEN)} b64 ${Buffer.from(TOKEN).toString('base64')}`, config: AWS, more: 'x'.repeat(500) };
    const full = await argumentPreview(args, forms, 4096);
    assert.ok(full);
    assert.ok(!full.includes(TOKEN) && !full.includes(Buffer.from(TOKEN).toString('base64')) && !full.includes(AWS_SECRET), full);
    assert.ok(full.includes(REDACTED) && full.includes(DETECTED), full);
    const cut = await argumentPreview(args, forms, 60);
    assert.ok(cut);
    const [kept, rest] = cut.split('…');
    assert.ok(Buffer.byteLength(kept!) <= 60);
    assert.match(`…${rest}`, /^…\[\d+ more bytes\]$/);
    assert.ok(full.startsWith(kept!));
  });

  it('a secret that crosses the cut leaves no part of itself', async () => {
    for (let size = 10; size < 90; size += 7) {
      const preview = await argumentPreview({ a: AWS }, [], size);
      assert.ok(preview !== null);
      for (let n = 8; n <= AWS_SECRET.length; n++) assert.ok(!preview.includes(AWS_SECRET.slice(0, n)), `${size}: ${preview}`);
    }
  });

  it('a preview holds no raw escape or invisible character', async () => {
    const preview = await argumentPreview({ t: 'a\u001b[2Jb\u200bc\u202ed' }, [], 100);
    assert.ok(preview !== null);
    assert.doesNotMatch(preview, /[\u0000-\u001f\u007f-\u009f\u200b\u202e]/);
    assert.match(preview, /^\{"t":"a.*b.*c.*d"\}$/);
  });

  it('arguments that cannot be serialised have no preview', async () => {
    assert.equal(await argumentPreview({ n: 1n }, [], 100), null);
    assert.equal(digestArguments({ n: 1n }), undefined);
  });
});

describe('argument previews in a broker\'s audit trail', () => {
  async function trailOfOneCall(preview: number | undefined): Promise<Record<string, unknown>[]> {
    const folder = join(dir, `broker-${preview ?? 'none'}`);
    writeManifest(join(folder, 'manifests/notes.json'), { ...stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS), credentials: [{ name: 'NOTES_API_TOKEN' }] });
    writeFileSync(join(folder, 'notes-token'), `${TOKEN}\n`);
    const config = loadConfig(
      writeConfig(join(folder, 'warden.yaml'), {
        version: 1,
        servers: { notes: { manifest: 'notes.json' } },
        credentials: { notes: { NOTES_API_TOKEN: { file: 'notes-token' } } },
        agents: { a: { allow: [{ tools: ['notes__echo'] }] } },
        audit: { file: 'audit/audit.jsonl', ...(preview === undefined ? {} : { argumentPreviewBytes: preview }) },
      }),
    );
    assert.equal(config.rejected.size, 0);
    const broker = new Broker(config, { logger: pino({ level: 'silent' }) });
    try {
      await broker.start();
      assert.ok(await waitFor(() => broker.backends.get('notes')?.state === 'ready'));
      const result = await broker.callTool('a', 'notes__echo', { text: `use ${TOKEN} and ${AWS} ${'y'.repeat(300)}` });
      assert.equal(result.isError, undefined, textOf(result));
    } finally {
      await broker.close();
    }
    return readLines(join(folder, 'audit/audit.jsonl'))
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((record) => record['event'] === 'tools/call.dispatch' || record['event'] === 'tools/call');
  }

  it('with audit.argumentPreviewBytes, both records of a call carry the masked, cut preview', async () => {
    const records = await trailOfOneCall(96);
    assert.deepEqual(records.map((r) => r['event']), ['tools/call.dispatch', 'tools/call']);
    assert.equal(records[0]!['correlationId'], records[1]!['correlationId']);
    for (const record of records) {
      const preview = record['argsPreview'];
      assert.equal(typeof preview, 'string', JSON.stringify(record));
      const text = preview as string;
      assert.ok(!text.includes(TOKEN) && !text.includes(AWS_SECRET), text);
      assert.ok(text.startsWith(`{"text":"use ${REDACTED} and `), text);
      assert.match(text, /…\[\d+ more bytes\]$/);
      assert.ok(Buffer.byteLength(text.slice(0, text.indexOf('…'))) <= 96);
    }
    assert.ok(!JSON.stringify(records).includes(TOKEN));
  });

  it('the secret is masked even where the cut falls after it', async () => {
    const records = await trailOfOneCall(200);
    const text = records[1]!['argsPreview'] as string;
    assert.ok(text.includes(DETECTED), text);
    assert.ok(!text.includes(AWS_SECRET));
  });

  it('without the setting there is no preview, only the digest', async () => {
    const records = await trailOfOneCall(undefined);
    assert.equal(records.length, 2);
    for (const record of records) {
      assert.equal('argsPreview' in record, false);
      assert.match(String(record['argsSha256']), /^[0-9a-f]{64}$/);
    }
  });
});
