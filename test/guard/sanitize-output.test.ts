import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { CallToolResult } from '@modelcontextprotocol/server';
import { cleanText, noRedactions, REDACTED, sanitizeResult, secretForms, type Redactions } from '../../src/guard/sanitize-output.ts';

const CANARY = 'canary-Secret+Value/42=';
const FORMS = secretForms([CANARY]);
const counts = (): Redactions => noRedactions();
const encodings = (secret: string): string[] => {
  const bytes = Buffer.from(secret);
  return [secret, bytes.toString('base64'), bytes.toString('base64').replace(/=+$/, ''), bytes.toString('base64url'), bytes.toString('hex'), bytes.toString('hex').toUpperCase(), encodeURIComponent(secret)];
};
const INVISIBLES = ['\u001b[31m', '\u001b]8;;http://x\u0007', '\u0000', '\u0007', '\r', '\u0085', '\u200b', '\u200d', '\u202e', '\u2066', '\ufeff', '\u{e0041}', '\u{e007f}', '\u00ad'];

describe('cleanText', () => {
  it('removes escapes and invisible characters, keeps tab and newline', () => {
    const c = counts();
    assert.equal(cleanText('a\u001b[1;31mred\u001b[0m\tb\nc\u200bd\u{e0049}\u{e0067}\u202ee', [], c), 'ared\tb\ncde');
    assert.ok(c.invisible >= 6);
  });

  it('redacts a credential in every listed encoding', () => {
    for (const encoded of encodings(CANARY)) {
      const c = counts();
      const out = cleanText(`before ${encoded} after`, FORMS, c);
      assert.equal(out, `before ${REDACTED} after`, encoded);
      assert.equal(c.credential, 1);
    }
  });

  it('invisible characters cannot split a credential to hide it', () => {
    const smuggled = [...CANARY].join('\u200b');
    assert.equal(cleanText(smuggled, FORMS, counts()), REDACTED);
  });

  it('no canary survives, in any encoding, whatever surrounds it (property)', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), fc.string({ maxLength: 40 }), fc.constantFrom(...encodings(CANARY)), (before, after, encoded) => {
        const out = cleanText(`${before}${encoded}${after}`, FORMS, counts());
        for (const form of encodings(CANARY)) assert.ok(!out.includes(form), `${JSON.stringify(out)} still has ${form}`);
      }),
      { numRuns: 2000 },
    );
  });

  it('a canary inside a longer base64 blob does not survive, at any alignment (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 20 }), fc.uint8Array({ maxLength: 20 }), (before, after) => {
        const blob = Buffer.concat([before, Buffer.from(CANARY), after]);
        for (const encoding of ['base64', 'base64url'] as const) {
          const out = cleanText(blob.toString(encoding), FORMS, counts());
          assert.ok(!Buffer.from(out.replaceAll(REDACTED, ''), encoding).toString('latin1').includes(CANARY), `${encoding} at offset ${before.length}`);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('never throws, leaves no invisible character, and is idempotent (property)', () => {
    const text = fc.array(fc.oneof(fc.string(), fc.constantFrom(...INVISIBLES, CANARY)), { maxLength: 12 }).map((parts) => parts.join(''));
    fc.assert(
      fc.property(text, (input) => {
        const once = cleanText(input, FORMS, counts());
        assert.equal(cleanText(once, FORMS, counts()), once);
        for (const invisible of INVISIBLES) {
          if (invisible.length === 1 || [...invisible].length === 1) assert.ok(!once.includes(invisible));
        }
        assert.ok(!once.includes(CANARY));
      }),
      { numRuns: 2000 },
    );
  });

  it('does not redact credentials too short to be told from ordinary text', () => {
    assert.deepEqual(secretForms(['abc']), []);
  });
});

describe('sanitizeResult', () => {
  it('keeps only content, structuredContent and isError; drops _meta and unknown fields', async () => {
    const input = { content: [{ type: 'text', text: 'ok' }], structuredContent: { a: 1 }, isError: true, _meta: { internal: 1 }, extra: 'x' } as unknown as CallToolResult;
    assert.deepEqual((await sanitizeResult(input, { secretForms: [], maxTextBytes: 1000 })).result, { content: [{ type: 'text', text: 'ok' }], structuredContent: { a: 1 }, isError: true });
  });

  it('cleans structured content keys and values, resources and links', async () => {
    const input = {
      content: [
        { type: 'resource', resource: { uri: 'mem://x', mimeType: 'text/plain', text: `key=${CANARY}` } },
        { type: 'resource_link', uri: 'mem://y', name: `n\u200b${CANARY}` },
      ],
      structuredContent: { [`k${CANARY}`]: [{ deep: `\u001b[2J${CANARY}` }] },
    } as unknown as CallToolResult;
    const { result, redactions } = await sanitizeResult(input, { secretForms: FORMS, maxTextBytes: 10_000 });
    assert.ok(!JSON.stringify(result).includes(CANARY));
    assert.ok(!JSON.stringify(result).includes('\\u001b'));
    assert.equal(redactions.credential, 4);
  });

  it('caps text with a visible marker, never splitting a character', async () => {
    const { result, redactions } = await sanitizeResult({ content: [{ type: 'text', text: 'é'.repeat(1000) }, { type: 'text', text: 'more' }] }, { secretForms: [], maxTextBytes: 101 });
    const first = result.content[0] as { text: string };
    assert.match(first.text, /^é{50}\n\[truncated by mcp-warden: 1900 bytes omitted\]$/);
    assert.match((result.content[1] as { text: string }).text, /truncated by mcp-warden: 4 bytes/);
    assert.equal(redactions.truncatedBytes, 1904);
  });

  it('drops oversized structured content with a marker', async () => {
    const { result } = await sanitizeResult({ content: [], structuredContent: { big: 'x'.repeat(5000) } }, { secretForms: [], maxTextBytes: 1000 });
    assert.equal(result.structuredContent, undefined);
    assert.match((result.content[0] as { text: string }).text, /structured content omitted/);
  });

  it('never throws on any JSON as structured content (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue(), fc.string(), async (structured, text) => {
        await sanitizeResult({ content: [{ type: 'text', text }], structuredContent: structured as never }, { secretForms: FORMS, maxTextBytes: 2000 });
      }),
      { numRuns: 300 },
    );
  });

  it('masks detected secrets before truncating, so a cut never leaves part of one', async () => {
    const key = `-----BEGIN OPENSSH PRIVATE KEY-----\n${'b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n'.repeat(3)}-----END OPENSSH PRIVATE KEY-----`;
    const { result, redactions } = await sanitizeResult({ content: [{ type: 'text', text: `config:\n${key}\nend` }] }, { secretForms: [], maxTextBytes: 60 });
    const text = (result.content[0] as { text: string }).text;
    assert.ok(!text.includes('b3BlbnNzaC1rZXkt'), text);
    assert.ok(text.includes('[redacted: secret]'));
    assert.equal(redactions.detected, 1);
  });

  it('detects secrets inside structured content', async () => {
    const { result, redactions } = await sanitizeResult(
      { content: [], structuredContent: { db: { url: 'postgres://admin:s3cretPassw0rd@10.0.0.1:5432/app' }, ok: 'nothing here' } },
      { secretForms: [], maxTextBytes: 10_000 },
    );
    assert.deepEqual(result.structuredContent, { db: { url: '[redacted: secret]' }, ok: 'nothing here' });
    assert.equal(redactions.detected, 1);
  });

  it('structured content with a secret in more strings than are checked one by one is withheld', async () => {
    const many = Object.fromEntries(Array.from({ length: 1500 }, (_, i) => [`k${i}`, `value ${i}`]));
    const { result, redactions } = await sanitizeResult(
      { content: [], structuredContent: { ...many, token: 'ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8' } },
      { secretForms: [], maxTextBytes: 1024 * 1024 },
    );
    assert.equal(result.structuredContent, undefined);
    assert.match((result.content[0] as { text: string }).text, /withheld/);
    assert.ok(!JSON.stringify(result).includes('ghp_A1b2'));
    assert.equal(redactions.detected, 1);
  });

  it('a secret only visible across a key and its value withholds the structured content', async () => {
    const { result } = await sanitizeResult(
      { content: [], structuredContent: { aws_secret_access_key: 'Xq2ZP7kM9vLw3RtY8bNc4HdF6gJe1SaU0iOpQwEr' } },
      { secretForms: [], maxTextBytes: 10_000 },
    );
    assert.ok(!JSON.stringify(result).includes('Xq2ZP7kM9vLw3RtY8bNc4HdF6gJe1SaU0iOpQwEr'), JSON.stringify(result));
  });

  it('a secret just past the size cap is masked, not cut in half', async () => {
    const token = 'ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8';
    const text = `${'x'.repeat(989)} ${token} ${'y'.repeat(4 * 1024 * 1024)}`;
    const { result } = await sanitizeResult({ content: [{ type: 'text', text }] }, { secretForms: [], maxTextBytes: 1000 });
    const shown = (result.content[0] as { text: string }).text;
    assert.ok(!shown.includes('ghp_A1b2C3'), shown.slice(980, 1040));
    assert.match(shown, /truncated by mcp-warden/);
  });
});

describe('progress through the sanitiser stage', () => {
  it('masks before cutting, and forwards in order', async () => {
    const { sanitizeOutput } = await import('../../src/pipeline/stages/sanitize-output.ts');
    const stage = sanitizeOutput({ config: { limits: { maxResultBytes: 1000 } }, secretForms: () => [] } as never);
    const received: { progress: number; message?: string }[] = [];
    const token = 'ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8';
    const ctx = { facts: {}, callSecrets: [], onProgress: (p: { progress: number; message?: string }) => received.push(p) } as never as { onProgress: (p: { progress: number; message?: string }) => void };
    await stage(ctx as never, async () => {
      ctx.onProgress({ progress: 1, message: `${'x'.repeat(969)} ${token} done` });
      ctx.onProgress({ progress: 2, message: 'second' });
      ctx.onProgress({ progress: 3 });
      return { kind: 'result', result: { content: [] } };
    });
    for (let i = 0; i < 20 && received.length < 3; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(received.map((p) => p.progress), [1, 2, 3]);
    assert.ok(!received[0]?.message?.includes('ghp_A1b2'), received[0]?.message?.slice(960));
    assert.ok((received[0]?.message?.length ?? 0) <= 1000);
  });

  it('a progress message that fails to go out does not stop the next one, nor escape as a rejection', async () => {
    const { sanitizeOutput } = await import('../../src/pipeline/stages/sanitize-output.ts');
    const stage = sanitizeOutput({ config: { limits: { maxResultBytes: 1000 } }, secretForms: () => [] } as never);
    const received: number[] = [];
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    process.on('unhandledRejection', onRejection);
    try {
      const ctx = {
        facts: {},
        callSecrets: [],
        onProgress: (p: { progress: number }) => {
          if (p.progress === 1) throw new Error('the agent went away');
          received.push(p.progress);
        },
      } as never as { onProgress: (p: { progress: number; message?: string }) => void };
      await stage(ctx as never, async () => {
        ctx.onProgress({ progress: 1, message: 'first' });
        ctx.onProgress({ progress: 2, message: 'second' });
        return { kind: 'result', result: { content: [] } };
      });
      for (let i = 0; i < 20 && received.length < 1; i++) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(received, [2]);
      assert.deepEqual(rejections, []);
    } finally {
      process.off('unhandledRejection', onRejection);
    }
  });
});
