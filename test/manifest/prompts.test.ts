import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { buildManifest, loadSignedManifest } from '../../src/manifest/load.ts';
import { compileTrust } from '../../src/manifest/trust.ts';
import { NOTES_SERVER, NOTES_TOOLS, stdioManifest, TEST_TRUST, tempDir, textToolsManifest, writeManifest, expectRejection } from '../helpers.ts';

// The prompts section of a manifest: what the schema and the loader accept.
const { dir, cleanup } = tempDir('warden-manifest-prompts-');
after(cleanup);
let counter = 0;
const trust = compileTrust(TEST_TRUST, join(dir, 'warden.yaml'));
const DATES = { issuedAt: '2026-01-01T00:00:00Z', expiresAt: '2099-01-01T00:00:00Z' };
const NODE_DIR = dirname(process.execPath);

function build(source: Record<string, unknown>) {
  return buildManifest({ ...DATES, ...source }, join(dir, `m-${counter++}.json`), { resolveCommand: true, searchPath: NODE_DIR });
}

const PROMPTS = [
  { name: 'simple-prompt', title: 'Simple Prompt', description: 'A prompt with no arguments' },
  {
    name: 'args_prompt',
    description: 'Two arguments',
    arguments: [
      { name: 'city', title: 'City', description: 'Name of the city', required: true },
      { name: 'state.code', required: false },
    ],
  },
];

const withPrompts = (prompts: unknown) => ({ ...stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS), prompts });

const HTTP_API = {
  manifestVersion: 1,
  name: 'test.api',
  version: '1',
  serial: 1,
  transport: { type: 'http-api', baseUrl: 'https://api.example.com/v1' },
  tools: [{ name: 'get_x', description: 'Gets x.', inputSchema: { type: 'object' }, access: 'read', http: { method: 'GET', path: '/x' } }],
};

describe('manifest prompts', () => {
  it('loads declared prompts as they are; none declared is an empty list', () => {
    assert.deepEqual(build(withPrompts(PROMPTS)).prompts, PROMPTS);
    assert.deepEqual(build(stdioManifest('notes', NOTES_SERVER, NOTES_TOOLS)).prompts, []);
    assert.deepEqual(build(withPrompts([])).prompts, []);
  });

  it('prompts are signed and come back from a signed file', () => {
    const file = writeManifest(join(dir, 'signed/notes.json'), withPrompts(PROMPTS));
    assert.deepEqual(loadSignedManifest(file, trust, { searchPath: NODE_DIR }).prompts, PROMPTS);
  });

  it('accepts prompts on a Streamable HTTP server', () => {
    const http = { manifestVersion: 1, name: 'test.h', version: '1', serial: 1, transport: { type: 'http', url: 'https://mcp.example.com/mcp' }, tools: NOTES_TOOLS, prompts: PROMPTS };
    assert.equal(build(http).prompts.length, 2);
  });

  it('refuses a prompt declared twice', () => {
    expectRejection(() => build(withPrompts([...PROMPTS, { name: 'simple-prompt', description: 'again' }])), 'invalid-manifest', /\/prompts\/2\/name/);
  });

  it('refuses an argument declared twice in one prompt (the same name in two prompts is fine)', () => {
    expectRejection(() => build(withPrompts([{ name: 'p', arguments: [{ name: 'a' }, { name: 'b' }, { name: 'a', required: true }] }])), 'invalid-manifest', /\/prompts\/0\/arguments\/2\/name/);
    assert.equal(build(withPrompts([{ name: 'p', arguments: [{ name: 'a' }] }, { name: 'q', arguments: [{ name: 'a' }] }])).prompts.length, 2);
  });

  it('refuses prompts on an http-api server and on a sandbox server (they have no MCP server to offer them)', () => {
    assert.equal(build(HTTP_API).prompts.length, 0);
    expectRejection(() => build({ ...HTTP_API, prompts: [{ name: 'p' }] }), 'invalid-manifest', /\/prompts/);
    const sandbox = textToolsManifest() as { transport: Record<string, unknown> };
    // The signer fills sha256 in; any well-formed value reaches the prompts check, which comes first.
    expectRejection(() => build({ ...sandbox, transport: { ...sandbox.transport, sha256: '0'.repeat(64) }, prompts: [{ name: 'p' }] }), 'invalid-manifest', /\/prompts/);
    // An empty list says nothing and is accepted.
    assert.equal(build({ ...HTTP_API, prompts: [] }).prompts.length, 0);
  });

  const invisible: readonly (readonly [string, unknown[]])[] = [
    ['zero-width space in a description', [{ name: 'p', description: 'Summarise\u200b the notes' }]],
    ['bidi override in a title', [{ name: 'p', title: 'Sum\u202emary' }]],
    ['tag characters in a description', [{ name: 'p', description: 'ok\u{e0049}\u{e0067}' }]],
    ['an escape in an argument description', [{ name: 'p', arguments: [{ name: 'a', description: '\u001b[8mhidden' }] }]],
    ['a soft hyphen in an argument title', [{ name: 'p', arguments: [{ name: 'a', title: 'ci\u00adty' }] }]],
    ['NUL in a description', [{ name: 'p', description: 'a\u0000b' }]],
  ];
  for (const [label, prompts] of invisible) {
    it(`refuses ${label}`, () => {
      expectRejection(() => build(withPrompts(prompts)), 'invisible-characters', /\/prompts\/0/);
    });
  }

  const schema: readonly (readonly [string, unknown])[] = [
    ['a prompt without a name', [{ description: 'x' }]],
    ['a prompt name with a space', [{ name: 'my prompt' }]],
    ['a prompt name with a dot', [{ name: 'my.prompt' }]],
    ['a prompt name with a slash', [{ name: '../p' }]],
    ['an empty prompt name', [{ name: '' }]],
    ['a prompt name over 64 characters', [{ name: 'p'.repeat(65) }]],
    ['an unknown prompt field', [{ name: 'p', icons: [] }]],
    ['_meta on a prompt', [{ name: 'p', _meta: {} }]],
    ['a title over 256 characters', [{ name: 'p', title: 't'.repeat(257) }]],
    ['a description over 8192 characters', [{ name: 'p', description: 'd'.repeat(8193) }]],
    ['a non-string description', [{ name: 'p', description: 5 }]],
    ['arguments that are not a list', [{ name: 'p', arguments: { a: {} } }]],
    ['an argument without a name', [{ name: 'p', arguments: [{ required: true }] }]],
    ['an argument name with a space', [{ name: 'p', arguments: [{ name: 'a b' }] }]],
    ['an unknown argument field', [{ name: 'p', arguments: [{ name: 'a', default: 'x' }] }]],
    ['required that is not a boolean', [{ name: 'p', arguments: [{ name: 'a', required: 'yes' }] }]],
    ['more than 64 arguments', [{ name: 'p', arguments: Array.from({ length: 65 }, (_, i) => ({ name: `a${i}` })) }]],
    ['more than 512 prompts', Array.from({ length: 513 }, (_, i) => ({ name: `p${i}` }))],
    ['prompts that are not a list', { p: { name: 'p' } }],
  ];
  for (const [label, prompts] of schema) {
    it(`refuses ${label} (schema)`, () => {
      expectRejection(() => build(withPrompts(prompts)), 'invalid-manifest');
    });
  }

  it('accepts the limits exactly: 512 prompts, 64 arguments, a 64-character name', () => {
    assert.equal(build(withPrompts(Array.from({ length: 512 }, (_, i) => ({ name: `p${i}` })))).prompts.length, 512);
    assert.equal(build(withPrompts([{ name: 'p'.repeat(64), arguments: Array.from({ length: 64 }, (_, i) => ({ name: `a${i}` })) }])).prompts.length, 1);
  });
});
