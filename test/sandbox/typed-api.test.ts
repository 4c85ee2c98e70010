import assert from 'node:assert/strict';
import { stripTypeScriptTypes } from 'node:module';
import { describe, it } from 'node:test';
import type { ExposedDefinition } from '../../src/catalog/build.ts';
import type { SandboxSettings } from '../../src/config/types.ts';
import { describeCodeMode, type BoundTool } from '../../src/sandbox/typed-api.ts';

const LIMITS = { memoryMb: 64, cpuMs: 1000, wallMs: 30_000, inputBytes: 1_048_576, outputBytes: 65_536, consoleBytes: 65_536 };
const SETTINGS: SandboxSettings = { workers: 2, warmIsolates: 2, workerMemoryMb: 512, limits: LIMITS, maxLimits: LIMITS, codeMode: { workers: 2, maxCalls: 50, concurrency: 4 } };
const MAX_DESCRIPTION = 32 * 1024;
const NO_TOOLS = 'You have no tools to call from code right now.';

function bound(server: string, tool: string, inputSchema: Record<string, unknown>, extra: { description?: string; outputSchema?: Record<string, unknown> } = {}): BoundTool {
  const definition: ExposedDefinition = {
    name: `${server}__${tool}`,
    description: extra.description ?? `The ${tool} tool.`,
    inputSchema,
    ...(extra.outputSchema ? { outputSchema: extra.outputSchema } : {}),
    annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: false },
  };
  return { server, tool, definition };
}

/** The intro: the description of no tools without its last sentence. */
const INTRO = describeCodeMode([], SETTINGS).split(`\n\n${NO_TOOLS}`)[0]!;

/** The TypeScript declaration part of a description. */
function declarationOf(description: string): string {
  const start = description.indexOf('declare const tools: {');
  assert.ok(start > 0, 'the description has a declaration');
  const end = description.indexOf('\n(Also available');
  return description.slice(start, end === -1 ? undefined : end);
}

/** The declaration parses as TypeScript and is nothing but types and comments. */
function assertValidDeclaration(description: string): void {
  const declaration = declarationOf(description);
  assert.equal(stripTypeScriptTypes(declaration).trim(), '', 'the declaration declares types only');
}

/** The type written for one tool's args (the tool's line in the declaration). */
function argsOf(description: string, tool: string): string {
  const line = declarationOf(description).split('\n').find((text) => text.trimStart().startsWith(`${tool}(args: `));
  assert.ok(line, `a line for ${tool}`);
  return line.trim().slice(`${tool}(args: `.length, line.trim().lastIndexOf('): Promise<'));
}

function outputOf(description: string, tool: string): string {
  const line = declarationOf(description).split('\n').find((text) => text.trimStart().startsWith(`${tool}(args: `))!.trim();
  return line.slice(line.lastIndexOf('): Promise<') + '): Promise<'.length, -'>;'.length);
}

/** args type of a one-property input schema. */
function typeOfProperty(schema: unknown, required = true): string {
  const description = describeCodeMode([bound('s', 't', { type: 'object', properties: { p: schema }, ...(required ? { required: ['p'] } : {}) })], SETTINGS);
  assertValidDeclaration(description);
  const args = argsOf(description, 't');
  const prefix = required ? '{ p: ' : '{ p?: ';
  assert.ok(args.startsWith(prefix) && args.endsWith(' }'), args);
  return args.slice(prefix.length, -' }'.length);
}

describe('describeCodeMode: types from schemas', () => {
  it('scalars', () => {
    assert.equal(typeOfProperty({ type: 'string' }), 'string');
    assert.equal(typeOfProperty({ type: 'number' }), 'number');
    assert.equal(typeOfProperty({ type: 'integer' }), 'number');
    assert.equal(typeOfProperty({ type: 'boolean' }), 'boolean');
    assert.equal(typeOfProperty({ type: 'null' }), 'null');
    assert.equal(typeOfProperty({}), 'unknown');
    assert.equal(typeOfProperty({ type: 'bigint' }), 'unknown');
    assert.equal(typeOfProperty({ type: 42 }), 'unknown');
  });

  it('enum and const as literal types', () => {
    assert.equal(typeOfProperty({ enum: ['open', 'closed'] }), '"open" | "closed"');
    assert.equal(typeOfProperty({ enum: [1, 2.5, true, null, 'x'] }), '1 | 2.5 | true | null | "x"');
    assert.equal(typeOfProperty({ enum: ['a', 'a'] }), '"a"', 'repeats are written once');
    assert.equal(typeOfProperty({ const: 'fixed' }), '"fixed"');
    assert.equal(typeOfProperty({ const: 0 }), '0');
    assert.equal(typeOfProperty({ const: null }), 'null');
    // Values a literal type cannot say are unknown, and so is an empty enum.
    assert.equal(typeOfProperty({ const: { a: 1 } }), 'unknown');
    assert.equal(typeOfProperty({ enum: ['a', [1]] }), 'unknown');
    assert.equal(typeOfProperty({ enum: [] }), 'unknown');
    // Literal strings are JSON strings: quotes and comment markers stay inside them.
    assert.equal(typeOfProperty({ enum: ['say "hi"', '*/ x /*'] }), '"say \\"hi\\"" | "*/ x /*"');
  });

  it('anyOf, oneOf and type arrays as unions', () => {
    assert.equal(typeOfProperty({ anyOf: [{ type: 'string' }, { type: 'number' }] }), 'string | number');
    assert.equal(typeOfProperty({ oneOf: [{ type: 'boolean' }, { type: 'null' }] }), 'boolean | null');
    assert.equal(typeOfProperty({ type: ['string', 'null'] }), 'string | null');
    assert.equal(typeOfProperty({ type: ['integer', 'number'] }), 'number', 'the same type once');
    assert.equal(typeOfProperty({ anyOf: [{ type: 'string' }, {}] }), 'unknown', 'a union with unknown is unknown');
    assert.equal(typeOfProperty({ anyOf: [] }), 'unknown');
    const wide = Array.from({ length: 21 }, (_, i) => `v${i}`);
    assert.equal(typeOfProperty({ enum: wide }), 'unknown', 'a very wide union is unknown');
    assert.equal(typeOfProperty({ enum: wide.slice(0, 20) }), wide.slice(0, 20).map((v) => JSON.stringify(v)).join(' | '));
  });

  it('arrays', () => {
    assert.equal(typeOfProperty({ type: 'array', items: { type: 'string' } }), 'string[]');
    assert.equal(typeOfProperty({ type: 'array', items: { type: ['string', 'null'] } }), 'Array<string | null>');
    assert.equal(typeOfProperty({ type: 'array', items: { type: 'array', items: { type: 'integer' } } }), 'number[][]');
    assert.equal(typeOfProperty({ type: 'array' }), 'unknown[]');
    assert.equal(typeOfProperty({ type: 'array', items: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] } }), 'Array<{ id: string }>');
  });

  it('nested objects, required and optional members', () => {
    const schema = {
      type: 'object',
      properties: { id: { type: 'string' }, meta: { type: 'object', properties: { n: { type: 'integer' }, tag: { type: 'string' } }, required: ['tag'] } },
      required: ['id', 'not-a-property'],
    };
    assert.equal(typeOfProperty(schema), '{ id: string; meta?: { n?: number; tag: string } }');
    assert.equal(typeOfProperty({ type: 'string' }, false), 'string');
    assert.equal(typeOfProperty({ type: 'object' }), 'Record<string, unknown>');
    assert.equal(typeOfProperty({ type: 'object', additionalProperties: false }), '{}');
    assert.equal(typeOfProperty({ type: 'object', properties: {} }), '{}');
    // A malformed required list is read as far as it makes sense.
    assert.equal(typeOfProperty({ type: 'object', properties: { a: { type: 'string' } }, required: 'a' }), '{ a?: string }');
    assert.equal(typeOfProperty({ type: 'object', properties: { a: { type: 'string' } }, required: [1, null, 'a'] }), '{ a: string }');
  });

  it('the whole args and the result type of a tool', () => {
    const description = describeCodeMode(
      [
        bound('notes', 'search', { type: 'object', properties: { q: { type: 'string' }, limit: { type: 'integer' } }, required: ['q'] }, { outputSchema: { type: 'object', properties: { hits: { type: 'array', items: { type: 'string' } } }, required: ['hits'] } }),
        bound('notes', 'echo', { type: 'object' }),
      ],
      SETTINGS,
    );
    assertValidDeclaration(description);
    assert.equal(argsOf(description, 'search'), '{ q: string; limit?: number }');
    assert.equal(outputOf(description, 'search'), '{ hits: string[] }');
    assert.equal(outputOf(description, 'echo'), 'unknown', 'no output schema: unknown');
  });

  it('nesting deeper than 4 levels is unknown', () => {
    const nest = (levels: number): Record<string, unknown> => (levels === 0 ? { type: 'string' } : { type: 'object', properties: { [`l${levels}`]: nest(levels - 1) }, required: [`l${levels}`] });
    const description = describeCodeMode([bound('s', 'deep', nest(6)), bound('s', 'shallow', nest(4))], SETTINGS);
    assertValidDeclaration(description);
    // args is depth 0; l6 depth 1 ... l3 depth 4; l2 would be depth 5.
    assert.equal(argsOf(description, 'deep'), '{ l6: { l5: { l4: { l3: { l2: unknown } } } } }');
    assert.equal(argsOf(description, 'shallow'), '{ l4: { l3: { l2: { l1: string } } } }');
    const arrays = (levels: number): Record<string, unknown> => (levels === 0 ? { type: 'string' } : { type: 'array', items: arrays(levels - 1) });
    assert.equal(typeOfProperty(arrays(3)), 'string[][][]');
    assert.equal(typeOfProperty(arrays(5)), 'unknown[][][][]');
    // A very deep schema (as a manifest could sign) costs nothing: the walk stops at the limit.
    assert.equal(typeOfProperty(nest(5000)).includes('unknown'), true);
  });

  it('names that are not identifiers are quoted: properties, tools and servers', () => {
    const schema = {
      type: 'object',
      properties: { plain: { type: 'string' }, _under: { type: 'string' }, $dollar: { type: 'string' }, 'with-dash': { type: 'string' }, '0digit': { type: 'string' }, 'has space': { type: 'string' }, 'q"uote': { type: 'string' }, '*/': { type: 'string' }, '': { type: 'string' }, 'ünï': { type: 'string' } },
    };
    const description = describeCodeMode([bound('my-server', 'get-sum', schema), bound('my-server', 'ok_tool', { type: 'object' })], SETTINGS);
    assertValidDeclaration(description);
    const declaration = declarationOf(description);
    assert.match(declaration, /\n {2}"my-server": \{\n/);
    assert.match(declaration, /\n {4}"get-sum"\(args: /);
    assert.match(declaration, /\n {4}ok_tool\(args: /);
    const args = argsOf(description, '"get-sum"');
    assert.equal(args, '{ plain?: string; _under?: string; $dollar?: string; "with-dash"?: string; "0digit"?: string; "has space"?: string; "q\\"uote"?: string; "*/"?: string; ""?: string; "ünï"?: string }');
  });
});

describe('describeCodeMode: descriptions as comments', () => {
  it('the first line of a description becomes a doc comment', () => {
    const description = describeCodeMode([bound('s', 't', { type: 'object' }, { description: '  Finds notes.  \nSecond line is left out.' })], SETTINGS);
    assert.match(declarationOf(description), /\n {4}\/\*\* Finds notes\. \*\/\n {4}t\(args: /);
    assert.ok(!description.includes('Second line'));
    const none = describeCodeMode([bound('s', 't', { type: 'object' }, { description: '' })], SETTINGS);
    assert.ok(!declarationOf(none).includes('/**'), 'no empty comment');
  });

  it('a description containing */ cannot close the comment', () => {
    const hostile = [
      '*/ declare const evil: 1; /*',
      'Ends here */ } }; declare function steal(): void; const x = {',
      '***/***/',
      '*/',
      'a */*/ b',
      `${'x'.repeat(190)}*/ tail`,
      'star at the end *',
    ];
    const description = describeCodeMode(hostile.map((text, i) => bound('s', `t${i}`, { type: 'object' }, { description: text })), SETTINGS);
    assertValidDeclaration(description);
    const declaration = declarationOf(description);
    for (const line of declaration.split('\n').filter((text) => text.trimStart().startsWith('/**'))) {
      const inner = line.trim().slice('/**'.length, -'*/'.length);
      assert.ok(line.trim().endsWith(' */'), line);
      assert.ok(!inner.includes('*/'), `the comment closes only at its end: ${line}`);
    }
    assert.ok(!/declare const evil|declare function steal/.test(declaration.replaceAll(/\/\*\*.*\*\//g, '')), 'no text outside a comment comes from a description');
  });

  it('a long description is cut to a short comment', () => {
    const description = describeCodeMode([bound('s', 't', { type: 'object' }, { description: 'y'.repeat(10_000) })], SETTINGS);
    const comment = declarationOf(description).split('\n').find((line) => line.includes('/**'))!;
    assert.ok(comment.length < 260, String(comment.length));
  });
});

describe('describeCodeMode: size and hostile input', () => {
  it('zero tools: the no-tools sentence, no declaration', () => {
    const description = describeCodeMode([], SETTINGS);
    assert.ok(description.endsWith(`\n\n${NO_TOOLS}`));
    assert.ok(!description.includes('declare const tools'));
  });

  it('a schema with 10 000 properties: the tool is left out and named, within the size limit', () => {
    const properties = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`field_${i}`, { type: 'string', description: 'x'.repeat(50) }]));
    const description = describeCodeMode([bound('small', 'ok', { type: 'object', properties: { a: { type: 'string' } } }), bound('wide', 'huge', { type: 'object', properties })], SETTINGS);
    assert.ok(description.length <= MAX_DESCRIPTION + INTRO.length, String(description.length));
    assertValidDeclaration(description);
    assert.match(description, /\n\(Also available, not described here for length: tools\.wide\.huge\.\)$/);
    assert.ok(declarationOf(description).includes('ok(args: { a?: string })'));
    assert.ok(!declarationOf(description).includes('field_0'));
  });

  /** 1000 tools on 20 servers, with ordinary schemas and short names. */
  function thousandTools(): BoundTool[] {
    const tools: BoundTool[] = [];
    for (let s = 0; s < 20; s++) {
      for (let t = 0; t < 50; t++) {
        tools.push(bound(`srv${s}`, `tool${t}`, { type: 'object', properties: { query: { type: 'string' }, limit: { type: 'integer' }, tags: { type: 'array', items: { type: 'string' } } }, required: ['query'] }, { description: `Tool ${t} of server ${s}: does a thing with a moderately long description.` }));
      }
    }
    return tools;
  }

  it('1000 tools: the declared part stays within 32 KiB plus the intro; every tool is described, named once, or counted', () => {
    const tools = thousandTools();
    const description = describeCodeMode(tools, SETTINGS);
    const also = /\n\(Also available, not described here for length: (.*?)(?:,? and (\d+) more)?\.\)$/.exec(description);
    assert.ok(also, 'some tools are left out');
    assert.ok(also.index <= MAX_DESCRIPTION + INTRO.length, String(also.index));
    assertValidDeclaration(description);
    const listed = also[1] === '' ? [] : also[1]!.split(', ');
    const counted = Number(also[2] ?? 0);
    const named = new Set(listed);
    assert.equal(named.size, listed.length, 'each named once');
    const declaration = declarationOf(description);
    let described = 0;
    for (const tool of tools) {
      const isDescribed = new RegExp(`\\n {2}${tool.server}: \\{\\n(?: {4}.*\\n)*? {4}${tool.tool}\\(args: `).test(declaration);
      const isListed = named.has(`tools.${tool.server}.${tool.tool}`);
      assert.ok(!(isDescribed && isListed), `tools.${tool.server}.${tool.tool} is both described and listed`);
      if (isDescribed) described++;
    }
    assert.equal(described, declaration.split('\n').filter((line) => line.includes('(args: ')).length);
    assert.equal(described + listed.length + counted, 1000, 'every tool is described, named or counted');
  });

  it('1000 tools: the whole description, the "Also available" line included, stays within 32 KiB plus the intro', () => {
    const short = describeCodeMode(thousandTools(), SETTINGS);
    assert.ok(short.length <= MAX_DESCRIPTION + INTRO.length, `${short.length} > ${MAX_DESCRIPTION + INTRO.length}`);
    const long: BoundTool[] = [];
    for (let s = 0; s < 10; s++) {
      for (let t = 0; t < 100; t++) long.push(bound(`s${s}`, `${'a_long_tool_name_'.repeat(3)}${String(t).padStart(9, '0')}`, { type: 'object', properties: { text: { type: 'string' } } }));
    }
    const description = describeCodeMode(long, SETTINGS);
    assert.ok(description.length <= MAX_DESCRIPTION + INTRO.length, `${description.length} > ${MAX_DESCRIPTION + INTRO.length}`);
  });

  it('left-out tools whose names are not identifiers are named as valid accessors', () => {
    const properties = Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`f${i}`, { type: 'string' }]));
    const description = describeCodeMode([bound('my-server', 'get-sum', { type: 'object', properties })], SETTINGS);
    assert.match(description, /tools\["my-server"\]\["get-sum"\]/);
  });

  it('hostile schema shapes never throw and always give a valid declaration', () => {
    const shapes: unknown[] = [
      { type: 'object', properties: null },
      { type: 'object', properties: [] },
      { type: 'object', properties: { a: null, b: 'string', c: 1, d: [] } },
      { type: 'object', required: null, properties: { a: { type: 'string' } } },
      { type: ['object', 'null'], properties: { a: { type: 'string' } } },
      { anyOf: 'not-a-list', type: 'string' },
      { type: 'array', items: [{ type: 'string' }] },
      { type: 'object', properties: { toString: { type: 'string' }, constructor: { type: 'number' }, __proto__x: { type: 'boolean' } } },
    ];
    const tools = shapes.map((schema, i) => bound('s', `t${i}`, schema as Record<string, unknown>));
    const description = describeCodeMode(tools, SETTINGS);
    assertValidDeclaration(description);
    assert.equal(argsOf(description, 't2'), '{ a?: unknown; b?: unknown; c?: unknown; d?: unknown }');
    assert.equal(argsOf(description, 't4'), '{ a?: string } | null');
    assert.equal(argsOf(description, 't5'), 'string');
    assert.equal(argsOf(description, 't6'), 'unknown[]');
  });
});

describe('describeCodeMode: the limits it states', () => {
  it('come from the settings passed', () => {
    const settings: SandboxSettings = {
      ...SETTINGS,
      limits: { memoryMb: 16, cpuMs: 250, wallMs: 1500, inputBytes: 100, outputBytes: 1234, consoleBytes: 10 },
      codeMode: { workers: 1, maxCalls: 7, concurrency: 3 },
    };
    for (const description of [describeCodeMode([], settings), describeCodeMode([bound('s', 't', { type: 'object' })], settings)]) {
      assert.match(description, /\b250 ms of CPU\b/);
      assert.match(description, /\b16 MB of memory\b/);
      assert.match(description, /\b1\.5 s in all\b/);
      assert.match(description, /\b7 tool calls \(3 at a time\)/);
      assert.match(description, /\b1234 bytes of result\b/);
    }
    const defaults = describeCodeMode([], SETTINGS);
    assert.match(defaults, /\b1000 ms of CPU, 64 MB of memory, 30 s in all, 50 tool calls \(4 at a time\), 65536 bytes of result\b/);
  });
});
