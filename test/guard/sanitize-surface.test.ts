import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { CallToolResult, GetPromptResult, ReadResourceResult, Resource, ResourceTemplateType } from '@modelcontextprotocol/server';
import { noRedactions, REDACTED, sanitizeResult, secretForms } from '../../src/guard/sanitize-output.ts';
import { sanitizePromptResult, sanitizeResource, sanitizeResourceContents, sanitizeTemplate } from '../../src/guard/sanitize-surface.ts';

const CANARY = 'canary-Surface+Secret/77=';
const FORMS = secretForms([CANARY]);
const GITHUB_TOKEN = 'ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8';
const OPTIONS = { secretForms: FORMS, maxTextBytes: 10_000 };
const encodings = (secret: string): string[] => {
  const bytes = Buffer.from(secret);
  return [secret, bytes.toString('base64'), bytes.toString('base64').replace(/=+$/, ''), bytes.toString('base64url'), bytes.toString('hex'), encodeURIComponent(secret)];
};
const INVISIBLE = ['\u200b', '\u202e', '\u{e0041}', '\u001b[31m', '\u0000', '\ufeff', '\u2066'];

/** Fails if any form of the canary, or the detected token, is anywhere in the JSON of value. */
function assertClean(value: unknown): void {
  const json = JSON.stringify(value);
  for (const form of encodings(CANARY)) assert.ok(!json.includes(form), `${form} survived in ${json.slice(0, 300)}`);
  assert.ok(!json.includes(GITHUB_TOKEN), `the token survived in ${json.slice(0, 300)}`);
  for (const invisible of INVISIBLE) assert.ok(!JSON.parse(json.replaceAll('\\u', '\\\\u')).toString().includes(invisible));
  assert.ok(!/\\u(200b|202e|001b|0000|feff|2066)/i.test(json), `an invisible character survived in ${json.slice(0, 300)}`);
  assert.ok(!json.includes('\u{e0041}'));
}

describe('sanitizeResourceContents', () => {
  it('masks credentials (every encoding) and detected secrets in resource text, removes invisible characters', async () => {
    for (const encoded of encodings(CANARY)) {
      const input: ReadResourceResult = {
        contents: [{ uri: 'file:///a.md', mimeType: 'text/markdown', text: `key ${encoded}\u200b and ${GITHUB_TOKEN}\u202e\u001b[31m red` }],
      };
      const { result, redactions } = await sanitizeResourceContents(input, OPTIONS);
      assertClean(result);
      const text = (result.contents[0] as { text: string }).text;
      assert.ok(text.includes(REDACTED), encoded);
      assert.ok(text.includes('[redacted: secret]'), text);
      assert.equal(redactions.credential, 1, encoded);
      assert.equal(redactions.detected, 1);
      assert.ok(redactions.invisible >= 3);
    }
  });

  it('a canary inside a longer base64 text does not survive at any alignment (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 12 }), fc.uint8Array({ maxLength: 12 }), async (before, after) => {
        const text = Buffer.concat([before, Buffer.from(CANARY), after]).toString('base64');
        const { result } = await sanitizeResourceContents({ contents: [{ uri: 'file:///b64', text }] }, OPTIONS);
        const out = (result.contents[0] as { text: string }).text.replaceAll(REDACTED, '');
        assert.ok(!Buffer.from(out, 'base64').toString('latin1').includes(CANARY), `offset ${before.length}`);
      }),
      { numRuns: 300 },
    );
  });

  it('rebuilds each entry from uri, mimeType and text or blob: _meta, icons and unknown fields are dropped', async () => {
    const input = {
      contents: [
        { uri: 'file:///a', mimeType: 'text/plain', text: 'hello', _meta: { secret: CANARY }, icons: [{ src: `https://evil.example/${CANARY}` }], annotations: { audience: ['user'] }, extra: CANARY },
        { uri: 'file:///b', mimeType: 'image/png', blob: Buffer.from('png').toString('base64'), _meta: { secret: CANARY }, extra: 1 },
        { uri: 'file:///c', text: 'no mime type' },
      ],
      _meta: { secret: CANARY },
      nextCursor: CANARY,
    } as unknown as ReadResourceResult;
    const { result } = await sanitizeResourceContents(input, OPTIONS);
    assert.deepEqual(result, {
      contents: [
        { uri: 'file:///a', mimeType: 'text/plain', text: 'hello' },
        { uri: 'file:///b', mimeType: 'image/png', blob: Buffer.from('png').toString('base64') },
        { uri: 'file:///c', text: 'no mime type' },
      ],
    });
  });

  it('an entry without a string uri is dropped; neither text nor blob gives empty text; a non-array contents is empty', async () => {
    const input = { contents: [{ text: 'no uri' }, { uri: 7, text: 'numeric uri' }, { uri: 'file:///x' }, { uri: 'file:///y', text: 42 }] } as unknown as ReadResourceResult;
    const { result } = await sanitizeResourceContents(input, OPTIONS);
    assert.deepEqual(result, { contents: [{ uri: 'file:///x', text: '' }, { uri: 'file:///y', text: '' }] });
    assert.deepEqual((await sanitizeResourceContents({ contents: 'nope' } as unknown as ReadResourceResult, OPTIONS)).result, { contents: [] });
    assert.deepEqual((await sanitizeResourceContents({} as unknown as ReadResourceResult, OPTIONS)).result, { contents: [] });
  });

  it('a credential in an entry URI or mimeType is masked too', async () => {
    const { result } = await sanitizeResourceContents({ contents: [{ uri: `file:///${CANARY}`, mimeType: `text/${CANARY}`, text: 'x' }] }, OPTIONS);
    assertClean(result);
  });

  it('oversize text is truncated with a visible marker, and the text budget is shared by all entries', async () => {
    const { result, redactions } = await sanitizeResourceContents(
      { contents: [{ uri: 'file:///big', text: 'a'.repeat(5000) }, { uri: 'file:///more', text: 'b'.repeat(100) }] },
      { secretForms: [], maxTextBytes: 1000 },
    );
    const [first, second] = result.contents as { text: string }[];
    assert.match(first!.text, /^a{1000}\n\[truncated by mcp-warden: 4000 bytes omitted\]$/);
    assert.match(second!.text, /^\n\[truncated by mcp-warden: 100 bytes omitted\]$/);
    assert.equal(redactions.truncatedBytes, 4100);
  });

  it('a secret straddling the cut is masked whole, never left half-shown', async () => {
    const text = `${'x'.repeat(990)} ${GITHUB_TOKEN} tail`;
    const { result } = await sanitizeResourceContents({ contents: [{ uri: 'file:///s', text }] }, { secretForms: [], maxTextBytes: 1000 });
    const shown = (result.contents[0] as { text: string }).text;
    assert.ok(!shown.includes('ghp_A1b2'), shown.slice(980));
    assert.match(shown, /truncated by mcp-warden/);
  });

  it('a blob within the budget passes whole; one over it is withheld whole with a marker, never cut', async () => {
    const small = Buffer.alloc(600, 1).toString('base64');
    const big = Buffer.alloc(3000, 2).toString('base64');
    const { result, redactions } = await sanitizeResourceContents(
      { contents: [{ uri: 'file:///small.bin', mimeType: 'application/octet-stream', blob: small }, { uri: 'file:///big.bin', mimeType: 'application/octet-stream', blob: big }] },
      { secretForms: [], maxTextBytes: 1000 },
    );
    const [first, second] = result.contents as ({ blob?: string; text?: string; mimeType?: string })[];
    assert.equal(first!.blob, small);
    assert.equal(second!.blob, undefined);
    assert.equal(second!.mimeType, 'text/plain');
    assert.match(second!.text ?? '', /withheld by mcp-warden/);
    assert.ok(!JSON.stringify(result).includes(big.slice(0, 100)));
    assert.ok(redactions.truncatedBytes >= 3000);
  });

  it('binary content that holds a credential form is withheld whole, in resources, prompt messages and tool results', async () => {
    for (const offset of [0, 1, 2, 5]) {
      const blob = Buffer.concat([Buffer.alloc(offset, 7), Buffer.from(`API_TOKEN=${CANARY}`), Buffer.alloc(3, 9)]).toString('base64');
      const { result, redactions } = await sanitizeResourceContents({ contents: [{ uri: 'file:///leak.bin', mimeType: 'text/plain', blob }] }, OPTIONS);
      const [entry] = result.contents as ({ blob?: string; text?: string })[];
      assert.equal(entry!.blob, undefined, `offset ${offset}`);
      assert.match(entry!.text ?? '', /withheld by mcp-warden/);
      assert.ok(redactions.credential >= 1);
      const prompt = await sanitizePromptResult({ messages: [{ role: 'user', content: { type: 'image', data: blob, mimeType: 'image/png' } }] }, OPTIONS);
      assert.ok(!JSON.stringify(prompt.result).includes(blob), `offset ${offset}`);
      const tool = await sanitizeResult({ content: [{ type: 'audio', data: blob, mimeType: 'audio/wav' }] }, OPTIONS);
      assert.ok(!JSON.stringify(tool.result).includes(blob), `offset ${offset}`);
    }
    // Ordinary binary data passes unchanged.
    const clean = Buffer.from('PNG ordinary bytes').toString('base64');
    const { result } = await sanitizeResourceContents({ contents: [{ uri: 'file:///ok.bin', blob: clean }] }, OPTIONS);
    assert.equal((result.contents[0] as { blob?: string }).blob, clean);
  });

  it('the blob budget is shared: the second blob that does not fit is withheld', async () => {
    const blob = Buffer.alloc(600, 3).toString('base64');
    const { result } = await sanitizeResourceContents({ contents: [{ uri: 'file:///1', blob }, { uri: 'file:///2', blob }] }, { secretForms: [], maxTextBytes: 1000 });
    assert.equal((result.contents[0] as { blob?: string }).blob, blob);
    assert.equal((result.contents[1] as { blob?: string }).blob, undefined);
  });

  it('never throws on hostile contents, and what comes back is clean (property)', async () => {
    // The token stands as a word (detection rules look for it at a word boundary); the canary anywhere.
    const text = fc.array(fc.oneof(fc.string({ maxLength: 20 }), fc.constantFrom(...INVISIBLE, CANARY, ` ${GITHUB_TOKEN} `, ...encodings(CANARY))), { maxLength: 8 }).map((parts) => parts.join(''));
    const entry = fc.oneof(
      fc.record({ uri: fc.constantFrom('file:///a', 'demo://x'), text, mimeType: fc.option(fc.constantFrom('text/plain', `text/${CANARY}`), { nil: undefined }) }),
      fc.record({ uri: fc.constantFrom('file:///b'), blob: fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes).toString('base64')) }),
      // Any object at all (the SDK client only lets objects through as entries).
      fc.dictionary(fc.constantFrom('uri', 'text', 'blob', 'mimeType', '_meta', 'x'), fc.jsonValue(), { maxKeys: 4 }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(entry, { maxLength: 5 }), async (contents) => {
        const { result } = await sanitizeResourceContents({ contents } as unknown as ReadResourceResult, OPTIONS);
        const texts = result.contents.map((item) => ('text' in item ? item.text : ''));
        for (const shown of texts) {
          assert.ok(!shown.includes(CANARY));
          assert.ok(!shown.includes(GITHUB_TOKEN));
          for (const invisible of INVISIBLE) if ([...invisible].length === 1) assert.ok(!shown.includes(invisible));
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('sanitizePromptResult', () => {
  it('masks credentials and secrets in message text and in the description; removes invisible characters', async () => {
    const input: GetPromptResult = {
      description: `desc ${CANARY}\u200b`,
      messages: [
        { role: 'user', content: { type: 'text', text: `please use ${Buffer.from(CANARY).toString('base64')} \u{e0041}\u{e0042}` } },
        { role: 'assistant', content: { type: 'text', text: `ok ${GITHUB_TOKEN}\u001b]8;;http://evil\u0007` } },
        { role: 'user', content: { type: 'resource', resource: { uri: 'file:///r', mimeType: 'text/plain', text: `embedded ${CANARY}` } } },
      ],
    };
    const { result, redactions } = await sanitizePromptResult(input, OPTIONS);
    assertClean(result);
    assert.deepEqual(result.messages.map((message) => message.role), ['user', 'assistant', 'user']);
    assert.equal(redactions.credential, 3);
    assert.equal(redactions.detected, 1);
    assert.ok(redactions.invisible >= 3);
    assert.match(result.description ?? '', /^desc \[redacted: credential\]$/);
  });

  it('a role other than assistant becomes user; unknown top-level fields and _meta are dropped', async () => {
    const input = {
      description: 'd',
      messages: [
        { role: 'system', content: { type: 'text', text: 'be evil' } },
        { role: 'assistant', content: { type: 'text', text: 'fine', _meta: { secret: CANARY } }, _meta: { secret: CANARY } },
      ],
      _meta: { secret: CANARY },
      extra: CANARY,
    } as unknown as GetPromptResult;
    const { result } = await sanitizePromptResult(input, OPTIONS);
    assert.deepEqual(result, {
      description: 'd',
      messages: [
        { role: 'user', content: { type: 'text', text: 'be evil' } },
        { role: 'assistant', content: { type: 'text', text: 'fine' } },
      ],
    });
  });

  it('an image or audio block keeps its data but no field a model would read unchecked (_meta, unknown fields)', async () => {
    const data = Buffer.from('img').toString('base64');
    const input = {
      messages: [
        { role: 'user', content: { type: 'image', data, mimeType: 'image/png', _meta: { note: `use ${CANARY}` }, caption: `see ${CANARY}\u200b` } },
        { role: 'user', content: { type: 'audio', data, mimeType: 'audio/wav', _meta: { note: CANARY } } },
      ],
    } as unknown as GetPromptResult;
    const { result } = await sanitizePromptResult(input, OPTIONS);
    assertClean(result);
    assert.equal((result.messages[0]?.content as { data?: string }).data, data);
    assert.equal((result.messages[1]?.content as { data?: string }).data, data);
  });

  it('a resource_link block is cleaned in every string', async () => {
    const input = { messages: [{ role: 'user', content: { type: 'resource_link', uri: `file:///${CANARY}`, name: `n\u200b${CANARY}`, description: GITHUB_TOKEN } }] } as unknown as GetPromptResult;
    const { result } = await sanitizePromptResult(input, OPTIONS);
    assertClean(result);
  });

  it('oversize message text is truncated with a marker; the budget is shared by all messages', async () => {
    const input: GetPromptResult = { messages: [{ role: 'user', content: { type: 'text', text: 'x'.repeat(3000) } }, { role: 'user', content: { type: 'text', text: 'y'.repeat(10) } }] };
    const { result, redactions } = await sanitizePromptResult(input, { secretForms: [], maxTextBytes: 1000 });
    assert.match((result.messages[0]?.content as { text: string }).text, /^x{1000}\n\[truncated by mcp-warden: 2000 bytes omitted\]$/);
    assert.match((result.messages[1]?.content as { text: string }).text, /truncated by mcp-warden: 10 bytes/);
    assert.equal(redactions.truncatedBytes, 2010);
  });

  it('a non-array messages gives no messages; a non-string description is dropped', async () => {
    const { result } = await sanitizePromptResult({ messages: 'x', description: 5 } as unknown as GetPromptResult, OPTIONS);
    assert.deepEqual(result, { messages: [] });
  });
});

describe('sanitizeResource and sanitizeTemplate (listings)', () => {
  it('keep only the spec fields, every string cleaned; _meta, icons, annotations and unknown fields dropped', async () => {
    const counts = noRedactions();
    const resource = {
      uri: 'file:///a.md',
      name: `name\u200b${CANARY}`,
      title: `title ${GITHUB_TOKEN}`,
      description: `desc \u202e${Buffer.from(CANARY).toString('hex')}`,
      mimeType: 'text/markdown',
      size: 12,
      _meta: { secret: CANARY },
      icons: [{ src: 'https://evil.example/x.png' }],
      annotations: { priority: 1 },
      extra: CANARY,
    } as unknown as Resource;
    const cleaned = await sanitizeResource(resource, OPTIONS, counts);
    assert.deepEqual(Object.keys(cleaned).sort(), ['description', 'mimeType', 'name', 'size', 'title', 'uri']);
    assertClean(cleaned);
    assert.equal(counts.credential, 2);
    assert.equal(counts.detected, 1);
    assert.ok(counts.invisible >= 2);

    const template = {
      uriTemplate: 'file:///docs/{name}',
      name: `t ${CANARY}`,
      description: `d\u{e0041}`,
      mimeType: 'text/plain',
      _meta: { secret: CANARY },
      icons: [{ src: 'https://evil.example/x.png' }],
      extra: 1,
    } as unknown as ResourceTemplateType;
    const cleanedTemplate = await sanitizeTemplate(template, OPTIONS, noRedactions());
    assert.deepEqual(Object.keys(cleanedTemplate).sort(), ['description', 'mimeType', 'name', 'uriTemplate']);
    assertClean(cleanedTemplate);
  });

  it('a missing name becomes empty; a size that is not a finite number is dropped; non-string optional fields are dropped', async () => {
    const cleaned = await sanitizeResource({ uri: 'file:///x', size: Number.POSITIVE_INFINITY, title: 5, description: null } as unknown as Resource, OPTIONS, noRedactions());
    assert.deepEqual(cleaned, { uri: 'file:///x', name: '' });
    const negative = await sanitizeResource({ uri: 'file:///x', name: 'n', size: Number.NaN } as unknown as Resource, OPTIONS, noRedactions());
    assert.deepEqual(negative, { uri: 'file:///x', name: 'n' });
  });

  it('a long description is capped with a marker', async () => {
    const cleaned = await sanitizeResource({ uri: 'file:///x', name: 'n', description: 'd'.repeat(10_000) } as Resource, OPTIONS, noRedactions());
    assert.ok((cleaned.description ?? '').length < 4200);
    assert.match(cleaned.description ?? '', /\[truncated by mcp-warden\]$/);
  });

  it('a credential in a listed URI or URI template does not reach the agent', async () => {
    const resource = await sanitizeResource({ uri: `file:///docs/${CANARY}`, name: 'n' } as Resource, OPTIONS, noRedactions());
    assertClean(resource);
    const template = await sanitizeTemplate({ uriTemplate: `file:///docs/${CANARY}/{name}`, name: 'n' } as ResourceTemplateType, OPTIONS, noRedactions());
    assertClean(template);
  });
});

describe('the block cleaning prompts share with tool results (sanitizeResult)', () => {
  it('an image or audio block of a tool result loses its _meta; its mimeType is cleaned', async () => {
    const data = Buffer.from('img').toString('base64');
    const input = {
      content: [
        { type: 'image', data, mimeType: `image/png${CANARY}`, _meta: { note: CANARY }, annotations: { audience: ['user'] } },
        { type: 'audio', data, mimeType: 'audio/wav', _meta: { note: GITHUB_TOKEN } },
      ],
    } as unknown as CallToolResult;
    const { result } = await sanitizeResult(input, OPTIONS);
    assertClean(result);
    assert.deepEqual(result.content[1], { type: 'audio', data, mimeType: 'audio/wav' });
    assert.equal((result.content[0] as { data: string }).data, data);
  });

  it('an embedded text resource of a tool result has its mimeType cleaned too', async () => {
    const input = { content: [{ type: 'resource', resource: { uri: 'file:///x', mimeType: `text/plain; x=${CANARY}`, text: 'ok' } }] } as unknown as CallToolResult;
    assertClean((await sanitizeResult(input, OPTIONS)).result);
  });

  it('a block of a type the broker does not know has every string cleaned', async () => {
    const input = { content: [{ type: 'future', text: `x ${CANARY}`, nested: { deep: `\u200b${CANARY}` } }] } as unknown as CallToolResult;
    assertClean((await sanitizeResult(input, OPTIONS)).result);
  });
});
