import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Broker } from '../../src/broker.ts';
import { loadConfig } from '../../src/config/load.ts';
import { refusalCode, ROGUE_SERVER, startBroker, stdioManifest, tempDir, textOf, writeConfig, writeManifest } from '../helpers.ts';
import { rogueManifestTools } from '../fixtures/rogue-tools.ts';

const { dir, cleanup } = tempDir();
let broker: Broker;

before(async () => {
  // structured and unstructured declare an output schema (as the live server does);
  // unstructured answers without the structured content its schema promises.
  const tools = rogueManifestTools({ structured: { outputFields: ['/id', '/name', '/items/*/name'] }, dirty: { maxResultBytes: 4096 } });
  writeManifest(join(dir, 'manifests/rogue.json'), stdioManifest('rogue', ROGUE_SERVER, tools, { era: 'legacy' }));
  const config = loadConfig(writeConfig(join(dir, 'warden.yaml'), { version: 1, servers: { rogue: { manifest: 'rogue.json' } }, agents: { a: { allow: [{ tools: ['*'] }] } } }));
  assert.equal(config.rejected.size, 0);
  broker = await startBroker(config);
  assert.equal(broker.backends.get('rogue')?.quarantine, undefined);
});

after(async () => {
  await broker?.close();
  cleanup();
});

describe('output guards end to end', () => {
  it('a scope constraint keeps only the declared fields, in structured content and JSON text', async () => {
    const result = await broker.callTool('a', 'rogue__structured', {});
    const expected = { id: 7, name: 'widget', items: [{ name: 'a' }, { name: 'b' }] };
    assert.deepEqual(result.structuredContent, expected);
    assert.deepEqual(JSON.parse(textOf(result)), expected);
    assert.ok(!JSON.stringify(result).includes('do not show'));
  });

  it('the scoped tool is listed without the output schema it no longer matches', () => {
    const listed = broker.listTools('a').tools.find((tool) => tool.name === 'rogue__structured');
    assert.equal(listed?.outputSchema, undefined);
    assert.ok(broker.listTools('a').tools.find((tool) => tool.name === 'rogue__unstructured')?.outputSchema);
  });

  it('a result that breaks the declared output schema is an error, not passed on', async () => {
    const result = await broker.callTool('a', 'rogue__unstructured', {});
    assert.equal(refusalCode(result), 'WARDEN_DOWNSTREAM_ERROR');
    assert.match(textOf(result), /no structured content/);
  });

  it('escapes, tag and zero-width characters, _meta and unknown fields are removed; size is capped', async () => {
    const result = await broker.callTool('a', 'rogue__dirty', {});
    const text = textOf(result);
    assert.ok(text.startsWith('red hidden x'), JSON.stringify(text.slice(0, 40)));
    assert.ok(!/[\u001b\u200b]|[\u{e0000}-\u{e007f}]/u.test(text));
    assert.match(text, /\[truncated by mcp-warden: \d+ bytes omitted\]$/);
    assert.ok(Buffer.byteLength(text) < 4096 + 100);
    assert.deepEqual(Object.keys(result).sort(), ['content']);
    const records = (broker.audit as unknown as { records: Record<string, unknown>[] }).records;
    const redactions = records.find((r) => r['event'] === 'tools/call' && r['tool'] === 'rogue__dirty')?.['redactions'] as { invisible: number; truncatedBytes: number };
    assert.ok(redactions.invisible >= 7);
    assert.ok(redactions.truncatedBytes > 90_000);
  });
});

describe('output scope cannot be bypassed', () => {
  it('JSON disguised with invisible characters or escapes is still scoped; resource text too; prose is withheld', async () => {
    const { constrainOutput, SCOPE_WITHHELD } = await import('../../src/pipeline/stages/constrain-output.ts');
    const { compileOutputScope } = await import('../../src/guard/output-scope.ts');
    const stage = constrainOutput({} as never);
    const tool = { server: 's', outputScope: compileOutputScope(['/id']) };
    const run = (result: unknown) => stage({ tool, facts: {} } as never, async () => ({ kind: 'result', result }) as never);
    const secret = '{"id":1,"ssn":"SECRET-FIELD"}';
    const outcome = (await run({
      content: [
        { type: 'text', text: `\u200b${secret}` },
        { type: 'text', text: `\u001b[0m${secret}` },
        { type: 'resource', resource: { uri: 'mem://r', text: secret } },
        { type: 'text', text: 'some prose the scope cannot understand' },
      ],
    })) as { result: { content: { text?: string; resource?: { text: string } }[] } };
    const blocks = outcome.result.content;
    assert.equal(blocks[0]?.text, '{"id":1}');
    assert.equal(blocks[1]?.text, '{"id":1}');
    assert.equal(blocks[2]?.resource?.text, '{"id":1}');
    assert.equal(blocks[3]?.text, SCOPE_WITHHELD);
    assert.ok(!JSON.stringify(outcome).includes('SECRET-FIELD'));
  });
});
