import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compileArgumentSchema, describeArgumentError, SchemaCompileError } from '../../src/guard/argument-schema.ts';

describe('compileArgumentSchema', () => {
  it('no coercion and no injected defaults: the arguments are checked as sent', () => {
    const validate = compileArgumentSchema({ type: 'object', properties: { n: { type: 'integer' }, flag: { type: 'boolean', default: true } }, required: ['n'] });
    const args: Record<string, unknown> = { n: '5' };
    assert.equal(validate(args), false);
    assert.deepEqual(describeArgumentError(validate.errors), { path: '/n', rule: 'type', message: 'must be integer' });
    const ok: Record<string, unknown> = { n: 5 };
    assert.equal(validate(ok), true);
    assert.deepEqual(ok, { n: 5 }, 'no default was injected');
  });

  it('refuses unknown properties unless the schema allows them', () => {
    const closed = compileArgumentSchema({ type: 'object', properties: { a: { type: 'string' }, inner: { type: 'object', properties: { b: { type: 'number' } } } } });
    assert.equal(closed({ a: 'x', extra: 1 }), false);
    assert.deepEqual(describeArgumentError(closed.errors), { path: '/', rule: 'additionalProperties', message: 'has unknown property "extra"' });
    assert.equal(closed({ inner: { b: 1, c: 2 } }), false, 'nested objects are closed too');
    const open = compileArgumentSchema({ type: 'object', properties: { a: { type: 'string' } }, additionalProperties: true });
    assert.equal(open({ a: 'x', extra: 1 }), true);
    const patterned = compileArgumentSchema({ type: 'object', properties: { a: { type: 'string' } }, patternProperties: { '^x-': { type: 'string' } } });
    assert.equal(patterned({ a: 'x', 'x-y': 'z' }), true);
  });

  it('leaves allOf branches as written', () => {
    const validate = compileArgumentSchema({ allOf: [{ type: 'object', properties: { a: { type: 'string' } } }, { type: 'object', properties: { b: { type: 'string' } } }] });
    assert.equal(validate({ a: 'x', b: 'y' }), true);
  });

  it('supports 2020-12 and draft-07, and refuses other dialects', () => {
    const modern = compileArgumentSchema({ $schema: 'https://json-schema.org/draft/2020-12/schema', type: 'object', properties: { t: { type: 'array', prefixItems: [{ type: 'string' }], minItems: 1, items: false } } });
    assert.equal(modern({ t: ['x'] }), true);
    assert.equal(modern({ t: [1] }), false);
    const draft7 = compileArgumentSchema({ $schema: 'http://json-schema.org/draft-07/schema#', type: 'object', properties: { t: { type: 'array', items: [{ type: 'string' }], minItems: 1, additionalItems: false } } });
    assert.equal(draft7({ t: [1] }), false);
    assert.throws(() => compileArgumentSchema({ $schema: 'http://json-schema.org/draft-04/schema#', type: 'object' }), SchemaCompileError);
    assert.throws(() => compileArgumentSchema({ $schema: 'https://evil.example/schema', type: 'object' }), SchemaCompileError);
  });

  it('strict mode: unknown keywords, bad regexes and unknown formats do not compile', () => {
    assert.throws(() => compileArgumentSchema({ type: 'object', properties: { a: { type: 'string', patern: 'x' } } }), SchemaCompileError);
    assert.throws(() => compileArgumentSchema({ type: 'object', properties: { a: { type: 'string', pattern: '(' } } }), SchemaCompileError);
    assert.throws(() => compileArgumentSchema({ type: 'object', properties: { a: { type: 'string', format: 'no-such-format' } } }), SchemaCompileError);
    assert.throws(() => compileArgumentSchema({ type: 'object', properties: { a: { $ref: '#/$defs/missing' } } }), SchemaCompileError);
  });

  it('refuses $id and anchors (schemas must stand alone), allows local refs and a property named $id', () => {
    assert.throws(() => compileArgumentSchema({ $id: 'https://x.example/s', type: 'object' }), /\$id at \//);
    assert.throws(() => compileArgumentSchema({ type: 'object', $defs: { a: { $anchor: 'a', type: 'string' } } }), /\$anchor/);
    const local = compileArgumentSchema({ type: 'object', properties: { a: { $ref: '#/$defs/n' }, $id: { type: 'string' } }, $defs: { n: { type: 'integer' } } });
    assert.equal(local({ a: 1, $id: 'x' }), true);
    assert.equal(local({ a: 'x' }), false);
    // the same schema compiled twice (a config loaded twice) is fine
    compileArgumentSchema({ type: 'object', properties: { a: { type: 'string' } } });
    compileArgumentSchema({ type: 'object', properties: { a: { type: 'string' } } });
  });

  it('formats are validated', () => {
    const validate = compileArgumentSchema({ type: 'object', properties: { url: { type: 'string', format: 'uri' } } });
    assert.equal(validate({ url: 'https://example.test/x' }), true);
    assert.equal(validate({ url: 'not a uri' }), false);
  });

  it('does not change the schema it was given', () => {
    const schema = Object.freeze({ type: 'object', properties: Object.freeze({ a: Object.freeze({ type: 'string' }) }) });
    compileArgumentSchema(schema);
    assert.equal('additionalProperties' in schema, false);
  });
});
