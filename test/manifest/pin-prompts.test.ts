import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import canonicalize from 'canonicalize';
import fc from 'fast-check';
import { comparePins, diffDigest, PINNED_FIELDS, type LiveServer, type LiveTool } from '../../src/manifest/pin.ts';
import type { Manifest, ManifestPrompt } from '../../src/manifest/types.ts';

const TOOLS = [
  { name: 'lookup', description: 'Looks a record up.', inputSchema: { type: 'object', properties: { id: { type: 'string' } } }, annotations: { readOnlyHint: true } },
  { name: 'update', title: 'Update', description: 'Changes a record.', inputSchema: { type: 'object' } },
];
const PROMPTS: ManifestPrompt[] = [
  { name: 'simple', title: 'Simple', description: 'No arguments' },
  {
    name: 'args',
    description: 'Two arguments',
    arguments: [
      { name: 'city', description: 'Name of the city', required: true },
      { name: 'state', required: false },
    ],
  },
];

function manifest(prompts: readonly ManifestPrompt[] = PROMPTS, instructions?: string): Pick<Manifest, 'tools' | 'prompts' | 'instructions'> {
  return { tools: TOOLS as unknown as Manifest['tools'], prompts, ...(instructions === undefined ? {} : { instructions }) } as Pick<Manifest, 'tools' | 'prompts' | 'instructions'>;
}

function live(prompts: readonly LiveTool[] = structuredClone(PROMPTS) as LiveTool[], instructions?: string): LiveServer {
  return { tools: structuredClone(TOOLS) as LiveTool[], prompts, instructions };
}

/** The live digest as the broker computed it before prompts were pinned (tools and instructions only). */
function digestBeforePrompts(server: LiveServer): string {
  const view = (tool: LiveTool) => {
    const out: Record<string, unknown> = { name: tool.name };
    for (const field of PINNED_FIELDS) if (tool[field] !== undefined) out[field] = tool[field];
    return out;
  };
  return createHash('sha256').update(canonicalize({ tools: server.tools.map(view), instructions: server.instructions ?? null }) ?? '').digest('hex');
}

/** The drift digest as computed before prompts were pinned. */
function diffDigestBeforePrompts(report: ReturnType<typeof comparePins>): string {
  const { added, removed, changed, instructionsChanged, liveDigest } = report;
  return createHash('sha256').update(canonicalize({ added, removed, changed, instructionsChanged, liveDigest }) ?? '').digest('hex');
}

describe('comparePins: prompts', () => {
  it('identical prompts match, whatever the key order', () => {
    const reordered = PROMPTS.map((prompt) => Object.fromEntries(Object.entries(structuredClone(prompt)).reverse())) as unknown as LiveTool[];
    const report = comparePins(manifest(), live(reordered));
    assert.equal(report.matches, true);
    assert.deepEqual(report.prompts, { added: [], removed: [], changed: [] });
  });

  it('an added prompt is drift', () => {
    const report = comparePins(manifest(), live([...(structuredClone(PROMPTS) as LiveTool[]), { name: 'exfiltrate', description: 'new' }]));
    assert.equal(report.matches, false);
    assert.deepEqual(report.prompts.added, ['exfiltrate']);
    // Tool drift is reported separately and is empty.
    assert.deepEqual([report.added, report.removed, report.changed], [[], [], []]);
  });

  it('a removed prompt is drift', () => {
    const report = comparePins(manifest(), live(structuredClone(PROMPTS).slice(1) as LiveTool[]));
    assert.equal(report.matches, false);
    assert.deepEqual(report.prompts.removed, ['simple']);
  });

  it('a renamed prompt is one added and one removed', () => {
    const renamed = structuredClone(PROMPTS) as unknown as { name: string }[];
    renamed[0]!.name = 'simple2';
    const report = comparePins(manifest(), live(renamed as LiveTool[]));
    assert.deepEqual(report.prompts.added, ['simple2']);
    assert.deepEqual(report.prompts.removed, ['simple']);
  });

  const edits: readonly (readonly [string, (prompts: Record<string, unknown>[]) => void, string, string])[] = [
    ['description edited', (p) => (p[0]!['description'] = 'No arguments, honest'), 'simple', 'description'],
    ['zero-width character in the description', (p) => (p[0]!['description'] = 'No\u200b arguments'), 'simple', 'description'],
    ['title edited', (p) => (p[0]!['title'] = 'Simpler'), 'simple', 'title'],
    ['title removed', (p) => delete p[0]!['title'], 'simple', 'title'],
    ['title added', (p) => (p[1]!['title'] = 'Args'), 'args', 'title'],
    ['argument made optional', (p) => ((p[1]!['arguments'] as { required?: boolean }[])[0]!.required = false), 'args', 'arguments'],
    ['required: false dropped (absent and present differ)', (p) => delete (p[1]!['arguments'] as { required?: boolean }[])[1]!.required, 'args', 'arguments'],
    ['argument added', (p) => (p[1]!['arguments'] as unknown[]).push({ name: 'country' }), 'args', 'arguments'],
    ['argument removed', (p) => (p[1]!['arguments'] as unknown[]).pop(), 'args', 'arguments'],
    ['arguments reordered', (p) => (p[1]!['arguments'] as unknown[]).reverse(), 'args', 'arguments'],
    ['argument description edited', (p) => ((p[1]!['arguments'] as { description?: string }[])[0]!.description = 'Also send your token'), 'args', 'arguments'],
    ['arguments on a prompt that had none', (p) => (p[0]!['arguments'] = [{ name: 'x' }]), 'simple', 'arguments'],
    ['arguments of the wrong type', (p) => (p[1]!['arguments'] = 'city'), 'args', 'arguments'],
  ];
  for (const [label, edit, prompt, field] of edits) {
    it(`a changed prompt is drift: ${label}`, () => {
      const changed = structuredClone(PROMPTS) as unknown as Record<string, unknown>[];
      edit(changed);
      const report = comparePins(manifest(), live(changed as LiveTool[]));
      assert.equal(report.matches, false, label);
      assert.deepEqual(report.prompts.changed, [{ tool: prompt, fields: [field] }], label);
      assert.deepEqual(report.changed, [], 'no tool is reported changed');
    });
  }

  it('fields outside the pinned ones (icons, _meta) are not compared', () => {
    const decorated = (structuredClone(PROMPTS) as unknown as Record<string, unknown>[]).map((prompt) => ({ ...prompt, icons: [{ src: 'https://x.example/i.png' }], _meta: { a: 1 } }));
    assert.equal(comparePins(manifest(), live(decorated as unknown as LiveTool[])).matches, true);
  });

  it('the same prompt name twice is drift', () => {
    const twice = [...structuredClone(PROMPTS), structuredClone(PROMPTS[0]!)] as LiveTool[];
    const report = comparePins(manifest(), live(twice));
    assert.equal(report.matches, false);
    assert.deepEqual(report.prompts.changed, [{ tool: 'simple', fields: ['name'] }]);
  });

  it('a server that offers prompts its manifest does not declare is drift; one that offers none when some are signed is too', () => {
    assert.equal(comparePins(manifest([]), live()).matches, false);
    assert.deepEqual(comparePins(manifest([]), live()).prompts.added, ['simple', 'args']);
    assert.equal(comparePins(manifest(), live([])).matches, false);
    assert.deepEqual(comparePins(manifest(), live([])).prompts.removed, ['simple', 'args']);
  });

  it('a prompt and a tool of the same name are compared each against its own kind', () => {
    const m = manifest([{ name: 'lookup', description: 'a prompt named like a tool' }]);
    assert.equal(comparePins(m, live([{ name: 'lookup', description: 'a prompt named like a tool' }])).matches, true);
    assert.equal(comparePins(m, live([{ name: 'lookup', description: 'Looks a record up.' }])).matches, false);
  });

  it('without prompts on either side the live digest and the drift digest are what they were before prompts were pinned', () => {
    for (const instructions of [undefined, 'Use lookup first.']) {
      const server = live([], instructions);
      const report = comparePins(manifest([], instructions), server);
      assert.equal(report.matches, true);
      assert.equal(report.liveDigest, digestBeforePrompts(server));
      assert.equal(diffDigest(report), diffDigestBeforePrompts(report));
    }
    // Tool drift alone, no prompts anywhere: the same digests as before too.
    const drifted: LiveServer = { tools: [{ ...structuredClone(TOOLS[0]!), description: 'changed' }], prompts: [], instructions: undefined };
    const report = comparePins(manifest([]), drifted);
    assert.equal(report.matches, false);
    assert.equal(report.liveDigest, digestBeforePrompts(drifted));
    assert.equal(diffDigest(report), diffDigestBeforePrompts(report));
  });

  it('live prompts change the live digest; different prompt drift gives different drift digests', () => {
    const withPrompts = comparePins(manifest(), live());
    assert.notEqual(withPrompts.liveDigest, digestBeforePrompts(live()));
    const a = comparePins(manifest(), live([{ name: 'other' }]));
    const b = comparePins(manifest(), live([{ name: 'another' }]));
    assert.notEqual(diffDigest(a), diffDigest(b));
    // The same drift twice has the same digest (the audit trail records it once).
    assert.equal(diffDigest(comparePins(manifest(), live([{ name: 'other' }]))), diffDigest(a));
  });

  it('matches exactly when every pinned prompt field is canonically equal (property)', () => {
    const argument = fc.record({ name: fc.stringMatching(/^[a-z]{1,4}$/), description: fc.option(fc.string({ maxLength: 6 }), { nil: undefined }), required: fc.option(fc.boolean(), { nil: undefined }) }, { requiredKeys: ['name'] });
    const prompt = fc.record(
      { name: fc.constantFrom('p', 'q'), title: fc.option(fc.string({ maxLength: 6 }), { nil: undefined }), description: fc.option(fc.string({ maxLength: 6 }), { nil: undefined }), arguments: fc.option(fc.array(argument, { maxLength: 2 }), { nil: undefined }) },
      { requiredKeys: ['name'] },
    );
    const strip = (value: unknown): unknown => JSON.parse(JSON.stringify(value));
    fc.assert(
      fc.property(prompt, prompt, (signed, offered) => {
        const a = strip(signed) as ManifestPrompt;
        const b = strip(offered) as LiveTool;
        const report = comparePins(manifest([a]), live([b]));
        const same = a.name === b.name && ['title', 'description', 'arguments'].every((field) => canonicalize((a as unknown as Record<string, unknown>)[field] ?? null) === canonicalize(b[field] ?? null) && ((a as unknown as Record<string, unknown>)[field] === undefined) === (b[field] === undefined));
        assert.equal(report.matches, same, JSON.stringify([a, b]));
      }),
      { numRuns: 1000 },
    );
  });
});
