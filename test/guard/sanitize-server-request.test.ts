import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { checkElicitationAnswer, checkSamplingAnswer, cleanElicitationRequest, cleanSamplingRequest, cleanStrings, type Checked } from '../../src/guard/sanitize-server-request.ts';
import { noRedactions, REDACTED, secretForms, type SanitizeOptions } from '../../src/guard/sanitize-output.ts';
import { DETECTED } from '../../src/guard/detect-secrets.ts';

// What a downstream server asks the host (sampling, elicitation) is rebuilt and cleaned
// before the host sees it; the host's answer is checked and rebuilt before the server does.

const CREDENTIAL = 'injected-credential-7Hq2xZ9pL4';
const OPTIONS: SanitizeOptions = { secretForms: secretForms([CREDENTIAL]), maxTextBytes: 256 * 1024 };
const GITHUB_TOKEN = 'ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8';
const ZERO_WIDTH = '\u200b';
const BIDI = '\u202e';
const ESCAPE = '\u001b[31m';

function ok<T>(checked: Checked<T>): { value: T; redactions: NonNullable<Extract<Checked<T>, { ok: true }>['redactions']> } {
  assert.equal(checked.ok, true, checked.ok ? '' : checked.problem);
  return checked as Extract<Checked<T>, { ok: true }>;
}

function refused<T>(checked: Checked<T>, pattern?: RegExp): void {
  assert.equal(checked.ok, false, `expected a refusal, got ${JSON.stringify(checked)}`);
  if (pattern) assert.match((checked as { problem: string }).problem, pattern);
}

const SAMPLING = { messages: [{ role: 'user', content: { type: 'text', text: 'Summarise this.' } }], maxTokens: 100 };
const FORM = { mode: 'form', message: 'Your name?', requestedSchema: { type: 'object', properties: { name: { type: 'string', description: 'Name' } }, required: ['name'] } };

/** Not objects, or objects missing what the spec requires. */
const NOT_REQUESTS: readonly unknown[] = [undefined, null, 0, 42, 'text', true, [], [SAMPLING], () => 1];

describe('cleanSamplingRequest', () => {
  it('refuses what is not a sampling request', async () => {
    for (const params of NOT_REQUESTS) refused(await cleanSamplingRequest(params, OPTIONS), /schema/);
    refused(await cleanSamplingRequest({ maxTokens: 10 }, OPTIONS));
    refused(await cleanSamplingRequest({ messages: SAMPLING.messages }, OPTIONS));
    refused(await cleanSamplingRequest({ messages: 'hello', maxTokens: 10 }, OPTIONS));
    refused(await cleanSamplingRequest({ messages: [{ role: 'user' }], maxTokens: 10 }, OPTIONS));
    refused(await cleanSamplingRequest({ messages: [{ role: 'user', content: { type: 'text' } }], maxTokens: 10 }, OPTIONS));
    refused(await cleanSamplingRequest({ ...SAMPLING, maxTokens: 'many' }, OPTIONS));
  });

  it('refuses sampling with tools, and tool_use or tool_result content', async () => {
    refused(await cleanSamplingRequest({ ...SAMPLING, tools: [{ name: 'rm', inputSchema: { type: 'object' } }] }, OPTIONS), /tools/);
    refused(await cleanSamplingRequest({ ...SAMPLING, toolChoice: { mode: 'auto' } }, OPTIONS), /tools/);
    refused(await cleanSamplingRequest({ messages: [{ role: 'assistant', content: { type: 'tool_use', id: 't1', name: 'rm', input: { path: '/' } } }], maxTokens: 10 }, OPTIONS), /tool_use|schema/);
    refused(
      await cleanSamplingRequest({ messages: [{ role: 'user', content: [{ type: 'text', text: 'x' }, { type: 'tool_result', toolUseId: 't1', content: [] }] }], maxTokens: 10 }, OPTIONS),
      /tool_result|schema/,
    );
    refused(await cleanSamplingRequest({ messages: [{ role: 'user', content: { type: 'resource', resource: { uri: 'file:///etc/passwd', text: 'x' } } }], maxTokens: 10 }, OPTIONS));
  });

  it('keeps a valid request: text, image and audio, single and array content, the model settings', async () => {
    const params = {
      messages: [
        { role: 'user', content: { type: 'text', text: 'Describe the picture.' } },
        { role: 'user', content: [{ type: 'image', data: 'iVBORw0KGgo=', mimeType: 'image/png' }, { type: 'audio', data: 'UklGRg==', mimeType: 'audio/wav' }] },
        { role: 'assistant', content: { type: 'text', text: 'A red dot.' } },
      ],
      maxTokens: 250,
      systemPrompt: 'You are terse.',
      temperature: 0.2,
      stopSequences: ['END'],
      modelPreferences: { hints: [{ name: 'claude' }], costPriority: 0.3, speedPriority: 0.5, intelligencePriority: 0.9 },
    };
    const { value, redactions } = ok(await cleanSamplingRequest(structuredClone(params), OPTIONS));
    assert.deepEqual(value, params);
    assert.deepEqual(redactions, noRedactions());
  });

  it('drops includeContext, metadata, _meta and anything else the host does not need', async () => {
    const { value } = ok(
      await cleanSamplingRequest(
        {
          messages: [{ role: 'user', content: { type: 'text', text: 'hi', _meta: { tracking: 'x' } }, _meta: { y: 1 } }],
          maxTokens: 10,
          includeContext: 'allServers',
          metadata: { exfiltrate: CREDENTIAL },
          _meta: { progressToken: 7 },
          task: { ttl: 1 },
          unknown: 'field',
        },
        OPTIONS,
      ),
    );
    assert.deepEqual(value, { messages: [{ role: 'user', content: { type: 'text', text: 'hi' } }], maxTokens: 10 });
  });

  it('masks a credential the broker injected, in any common encoding, wherever the server puts it', async () => {
    const encoded = Buffer.from(CREDENTIAL).toString('base64');
    const { value, redactions } = ok(
      await cleanSamplingRequest(
        {
          messages: [
            { role: 'user', content: { type: 'text', text: `token=${CREDENTIAL}` } },
            { role: 'user', content: [{ type: 'text', text: `b64 ${encoded}` }] },
          ],
          maxTokens: 10,
          systemPrompt: `remember ${CREDENTIAL}`,
          stopSequences: [CREDENTIAL],
          modelPreferences: { hints: [{ name: CREDENTIAL }] },
        },
        OPTIONS,
      ),
    );
    const text = JSON.stringify(value);
    assert.ok(!text.includes(CREDENTIAL) && !text.includes(encoded), text);
    assert.equal((value.messages[0]!.content as { text: string }).text, `token=${REDACTED}`);
    assert.equal(value.systemPrompt, `remember ${REDACTED}`);
    assert.deepEqual(value.stopSequences, [REDACTED]);
    assert.equal(redactions.credential, 5);
  });

  it('masks secrets the detection rules find, and strips escapes and invisible characters', async () => {
    const { value, redactions } = ok(
      await cleanSamplingRequest(
        { messages: [{ role: 'user', content: { type: 'text', text: `a${ZERO_WIDTH}b${BIDI}c ${ESCAPE}red ${GITHUB_TOKEN}` } }], maxTokens: 10, systemPrompt: `x${ZERO_WIDTH}y` },
        OPTIONS,
      ),
    );
    assert.equal((value.messages[0]!.content as { text: string }).text, `abc red ${DETECTED}`);
    assert.equal(value.systemPrompt, 'xy');
    assert.equal(redactions.detected, 1);
    assert.ok(redactions.invisible >= 4);
  });

  it('a credential split by invisible characters is still masked', async () => {
    const smuggled = [...CREDENTIAL].join(ZERO_WIDTH);
    const { value } = ok(await cleanSamplingRequest({ messages: [{ role: 'user', content: { type: 'text', text: smuggled } }], maxTokens: 10 }, OPTIONS));
    assert.equal((value.messages[0]!.content as { text: string }).text, REDACTED);
  });

  it('text past the byte budget is cut with a visible marker', async () => {
    const { value, redactions } = ok(await cleanSamplingRequest({ messages: [{ role: 'user', content: { type: 'text', text: 'x'.repeat(5000) } }], maxTokens: 10 }, { ...OPTIONS, maxTextBytes: 1000 }));
    const text = (value.messages[0]!.content as { text: string }).text;
    assert.match(text, /\[truncated by mcp-warden: 4000 bytes omitted\]$/);
    assert.equal(redactions.truncatedBytes, 4000);
  });

  it('a deeply nested modelPreferences neither throws nor passes its depth on', async () => {
    let deep: unknown = 'bottom';
    for (let i = 0; i < 10_000; i++) deep = { nested: deep };
    const checked = await cleanSamplingRequest({ ...SAMPLING, modelPreferences: { hints: [{ name: 'x', deep }] } }, OPTIONS);
    if (checked.ok) {
      let depth = 0;
      for (let node: unknown = checked.value.modelPreferences; node !== null && typeof node === 'object'; depth++) node = Object.values(node as object)[0];
      assert.ok(depth <= 40, `kept ${depth} levels`);
    }
  });

  it('never throws and never lets the credential through, whatever the input (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue(), fc.string({ maxLength: 30 }), async (junk, text) => {
        const checked = await cleanSamplingRequest({ messages: [{ role: 'user', content: { type: 'text', text: `${text}${CREDENTIAL}` } }], maxTokens: 5, modelPreferences: junk }, OPTIONS);
        if (checked.ok) assert.ok(!JSON.stringify(checked.value).includes(CREDENTIAL));
        await cleanSamplingRequest(junk, OPTIONS);
      }),
      { numRuns: 200 },
    );
  });
});

describe('cleanElicitationRequest', () => {
  it('refuses what is not a form request, and URL mode', async () => {
    for (const params of NOT_REQUESTS) refused(await cleanElicitationRequest(params, OPTIONS));
    refused(await cleanElicitationRequest({ mode: 'form', message: 'x' }, OPTIONS));
    refused(await cleanElicitationRequest({ mode: 'form', requestedSchema: FORM.requestedSchema }, OPTIONS));
    refused(await cleanElicitationRequest({ mode: 'url', message: 'Sign in', url: 'https://evil.example/login', elicitationId: 'e1' }, OPTIONS), /URL mode/);
    refused(await cleanElicitationRequest({ ...FORM, url: 'https://evil.example/login' , mode: 'url', elicitationId: 'e2' }, OPTIONS));
  });

  it('refuses a form whose fields are not flat primitives (nested objects), and a hugely nested schema, without throwing', async () => {
    refused(await cleanElicitationRequest({ ...FORM, requestedSchema: { type: 'object', properties: { address: { type: 'object', properties: { street: { type: 'string' } } } } } }, OPTIONS));
    let deep: unknown = { type: 'string' };
    for (let i = 0; i < 10_000; i++) deep = { anyOf: [deep] };
    refused(await cleanElicitationRequest({ ...FORM, requestedSchema: { type: 'object', properties: { field: deep } } }, OPTIONS));
  });

  it('keeps a valid form as sent (every primitive and enum shape, defaults)', async () => {
    const params = {
      mode: 'form',
      message: 'Please fill in the form',
      requestedSchema: {
        type: 'object',
        properties: {
          name: { type: 'string', title: 'Name', description: 'User name', default: 'John Doe', minLength: 1, maxLength: 50 },
          email: { type: 'string', format: 'email' },
          age: { type: 'integer', minimum: 0, maximum: 150, default: 30 },
          score: { type: 'number', default: 95.5 },
          verified: { type: 'boolean', default: true },
          status: { type: 'string', enum: ['active', 'inactive'], default: 'active' },
          titled: { type: 'string', oneOf: [{ const: 'v1', title: 'One' }, { const: 'v2', title: 'Two' }] },
          legacy: { type: 'string', enum: ['a', 'b'], enumNames: ['A', 'B'] },
          multi: { type: 'array', minItems: 1, maxItems: 2, items: { type: 'string', enum: ['x', 'y'] } },
          titledMulti: { type: 'array', items: { anyOf: [{ const: 'x', title: 'X' }, { const: 'y', title: 'Y' }] } },
        },
        required: ['name'],
      },
    };
    const { value, redactions } = ok(await cleanElicitationRequest(structuredClone(params), OPTIONS));
    assert.deepEqual(value, params);
    assert.deepEqual(redactions, noRedactions());
  });

  it('a request without mode is taken as form mode (the 2025-06-18 shape) and sent with mode: form', async () => {
    const { value } = ok(await cleanElicitationRequest({ message: FORM.message, requestedSchema: FORM.requestedSchema }, OPTIONS));
    assert.equal(value.mode, 'form');
  });

  it('masks credentials and detected secrets and strips invisible characters in the message and in every schema string; keeps keys', async () => {
    const { value, redactions } = ok(
      await cleanElicitationRequest(
        {
          mode: 'form',
          message: `Confirm ${CREDENTIAL}${ZERO_WIDTH}?`,
          requestedSchema: {
            type: 'object',
            properties: { answer: { type: 'string', title: `T${BIDI}itle`, description: `token ${GITHUB_TOKEN}`, default: CREDENTIAL } },
          },
        },
        OPTIONS,
      ),
    );
    assert.equal(value.message, `Confirm ${REDACTED}?`);
    assert.deepEqual(value.requestedSchema.properties, { answer: { type: 'string', title: 'Title', description: `token ${DETECTED}`, default: REDACTED } });
    assert.equal(redactions.credential, 2);
    assert.equal(redactions.detected, 1);
    assert.equal(redactions.invisible, 2);
  });

  it('drops _meta and any top-level field other than mode, message and requestedSchema', async () => {
    const { value } = ok(await cleanElicitationRequest({ ...FORM, _meta: { x: 1 }, elicitationId: 'e1', task: { ttl: 5 } }, OPTIONS));
    assert.deepEqual(Object.keys(value).sort(), ['message', 'mode', 'requestedSchema']);
  });

  it('a field named __proto__ stays a field of its own and sets no prototype', async () => {
    const params = JSON.parse('{"mode":"form","message":"m","requestedSchema":{"type":"object","properties":{"__proto__":{"type":"string","description":"odd name"},"plain":{"type":"string"}}}}') as unknown;
    const { value } = ok(await cleanElicitationRequest(params, OPTIONS));
    const properties = value.requestedSchema.properties as Record<string, unknown>;
    assert.deepEqual(Object.keys(properties), ['__proto__', 'plain']);
    assert.equal(Object.getPrototypeOf(properties), Object.prototype);
    assert.equal((properties as { description?: unknown }).description, undefined, 'nothing is inherited from the sender');
  });
});

describe('cleanStrings', () => {
  it('cleans every string value, keeps numbers, booleans, null and keys, cuts past 32 levels', async () => {
    const counts = noRedactions();
    const out = await cleanStrings({ a: [`x${ZERO_WIDTH}`, 1, true, null, { b: CREDENTIAL }] }, OPTIONS, counts);
    assert.deepEqual(out, { a: ['x', 1, true, null, { b: REDACTED }] });
    assert.equal(counts.credential, 1);
    let deep: unknown = 'leaf';
    for (let i = 0; i < 40; i++) deep = [deep];
    let node = (await cleanStrings(deep, OPTIONS, noRedactions())) as unknown;
    let depth = 0;
    while (Array.isArray(node)) {
      node = node[0];
      depth++;
    }
    assert.equal(node, null);
    assert.equal(depth, 33);
  });
});

describe('checkSamplingAnswer', () => {
  const ANSWER = { role: 'assistant', content: { type: 'text', text: 'Done.' }, model: 'claude-x', stopReason: 'endTurn' };

  it('refuses what is not a sampling result', () => {
    for (const answer of NOT_REQUESTS) refused(checkSamplingAnswer(answer));
    refused(checkSamplingAnswer({ role: 'assistant', content: { type: 'text', text: 'x' } }), /not a sampling result/);
    refused(checkSamplingAnswer({ role: 'assistant', model: 'm' }));
    refused(checkSamplingAnswer({ ...ANSWER, role: 'system' }));
    refused(checkSamplingAnswer({ ...ANSWER, content: { type: 'text' } }));
    refused(checkSamplingAnswer({ ...ANSWER, model: 7 }));
  });

  it('refuses tool use in the answer', () => {
    refused(checkSamplingAnswer({ ...ANSWER, content: { type: 'tool_use', id: 't', name: 'rm', input: {} }, stopReason: 'toolUse' }));
    refused(checkSamplingAnswer({ ...ANSWER, content: [{ type: 'text', text: 'x' }, { type: 'tool_use', id: 't', name: 'rm', input: {} }] }));
  });

  it('keeps a valid answer and drops everything else', () => {
    assert.deepEqual(ok(checkSamplingAnswer(structuredClone(ANSWER))).value, ANSWER);
    const { value } = ok(checkSamplingAnswer({ ...ANSWER, _meta: { host: 'secret' }, usage: { tokens: 5 }, extra: 1 }));
    assert.deepEqual(value, ANSWER);
    const { value: noStop } = ok(checkSamplingAnswer({ role: 'assistant', content: { type: 'image', data: 'AAAA', mimeType: 'image/png' }, model: 'm' }));
    assert.deepEqual(noStop, { role: 'assistant', content: { type: 'image', data: 'AAAA', mimeType: 'image/png' }, model: 'm' });
  });
});

describe('checkElicitationAnswer', () => {
  it('refuses what is not an elicitation result', () => {
    for (const answer of NOT_REQUESTS) refused(checkElicitationAnswer(answer));
    refused(checkElicitationAnswer({ action: 'bogus' }), /not an elicitation result/);
    refused(checkElicitationAnswer({ action: 'ACCEPT' }));
    refused(checkElicitationAnswer({}));
    refused(checkElicitationAnswer({ action: 'accept', content: { address: { street: 'x' } } }));
    refused(checkElicitationAnswer({ action: 'accept', content: 'text' }));
  });

  it('accept keeps its flat content; decline and cancel lose any content; extra fields are dropped', () => {
    assert.deepEqual(ok(checkElicitationAnswer({ action: 'accept', content: { name: 'Ann', age: 3, ok: true, tags: ['a', 'b'] }, _meta: { x: 1 }, extra: 2 })).value, {
      action: 'accept',
      content: { name: 'Ann', age: 3, ok: true, tags: ['a', 'b'] },
    });
    assert.deepEqual(ok(checkElicitationAnswer({ action: 'accept' })).value, { action: 'accept' });
    assert.deepEqual(ok(checkElicitationAnswer({ action: 'decline', content: { name: 'leaked' } })).value, { action: 'decline' });
    assert.deepEqual(ok(checkElicitationAnswer({ action: 'cancel', content: { name: 'leaked' } })).value, { action: 'cancel' });
  });

  it('never throws, whatever the answer (property)', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (answer) => {
        checkElicitationAnswer(answer);
        checkSamplingAnswer(answer);
        checkElicitationAnswer({ action: 'accept', content: answer });
      }),
      { numRuns: 300 },
    );
  });
});
