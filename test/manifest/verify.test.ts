import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import canonicalize from 'canonicalize';
import { keyId, publicKeyOf, signMessage } from '../../src/manifest/ed25519.ts';
import { PAYLOAD_TYPE, preAuthEncoding } from '../../src/manifest/envelope.ts';
import { loadSignedManifest, MAX_SIGNED_MANIFEST_BYTES } from '../../src/manifest/load.ts';
import { ManifestRejection, REJECTIONS, type RejectionReason } from '../../src/manifest/rejections.ts';
import { compileTrust, type RawTrust } from '../../src/manifest/trust.ts';
import { ROOT, tempDir } from '../helpers.ts';

const { dir, cleanup } = tempDir('warden-verify-');
after(cleanup);

/** A fixed key per name, so failures reproduce. */
function key(name: string): { seed: Buffer; publicKey: string; id: string } {
  const seed = createHash('sha256').update(`verify test key ${name}`).digest();
  const publicKey = publicKeyOf(seed);
  return { seed, publicKey: publicKey.toString('base64'), id: keyId(publicKey) };
}
const ACME = key('acme-1');
const ACME2 = key('acme-2');
const ACME3 = key('acme-3');
const EVIL = key('evil');
const STRANGER = key('stranger');

const DAY = 86_400_000;
const NOW = Date.parse('2026-11-23T12:00:00Z');

const TRUST: RawTrust = {
  publishers: {
    acme: { keys: [ACME.publicKey], namespaces: ['acme.*'] },
    evil: { keys: [EVIL.publicKey], namespaces: ['evil.*'] },
    board: { keys: [ACME2.publicKey, ACME3.publicKey], namespaces: ['board.*'], threshold: 2 },
  },
};

function manifest(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    manifestVersion: 1,
    name: 'acme.crm',
    version: '1.0.0',
    serial: 1,
    issuedAt: new Date(NOW - DAY).toISOString(),
    expiresAt: new Date(NOW + 30 * DAY).toISOString(),
    transport: { type: 'http', url: 'http://127.0.0.1:9/mcp' },
    tools: [{ name: 'find', description: 'Find a customer.', access: 'read', inputSchema: { type: 'object', properties: { q: { type: 'string' } } } }],
    ...overrides,
  };
}

interface Craft {
  payloadText?: string;
  payloadType?: string;
  signedType?: string;
  signers?: { readonly seed: Buffer; readonly id: string; readonly hint?: string }[];
  mutateSig?: (sig: Buffer) => Buffer;
  envelope?: (envelope: Record<string, unknown>) => unknown;
}

/** Builds an envelope the way an attacker could: any payload, type, signers, hints. */
function envelope(document: unknown, craft: Craft = {}): string {
  const payload = Buffer.from(craft.payloadText ?? canonicalize(document)!, 'utf8');
  const payloadType = craft.payloadType ?? PAYLOAD_TYPE;
  const signers: { readonly seed: Buffer; readonly id: string; readonly hint?: string }[] = craft.signers ?? [ACME];
  const signatures = signers.map((signer) => {
    let sig = signMessage(preAuthEncoding(craft.signedType ?? payloadType, payload), signer.seed);
    if (craft.mutateSig) sig = craft.mutateSig(sig);
    return { keyid: signer.hint ?? signer.id, sig: sig.toString('base64') };
  });
  const result = { payloadType, payload: payload.toString('base64'), signatures };
  return typeof craft.envelope === 'function' ? String(craft.envelope(result)) : JSON.stringify(result);
}

let counter = 0;
function load(text: string | Buffer, trust: RawTrust = TRUST, now = NOW) {
  const file = join(dir, `m${counter++}.json`);
  writeFileSync(file, text);
  return loadSignedManifest(file, compileTrust(trust, 'warden.yaml'), { now });
}

function refused(text: string | Buffer, reason: RejectionReason, trust: RawTrust = TRUST, now = NOW): void {
  assert.throws(
    () => load(text, trust, now),
    (error: unknown) => {
      assert.ok(error instanceof ManifestRejection, `expected a ManifestRejection, got ${String(error)}`);
      assert.equal(error.reason, reason, `expected ${reason}, got ${error.reason}: ${error.message}`);
      return true;
    },
  );
}

describe('signed manifests: accepted', () => {
  test('a manifest signed by its namespace publisher loads, with digest and signer', () => {
    const text = envelope(manifest());
    const loaded = load(text);
    assert.equal(loaded.name, 'acme.crm');
    assert.equal(loaded.serial, 1);
    assert.deepEqual(loaded.signers, [{ keyId: ACME.id, publisher: 'acme' }]);
    const payload = Buffer.from(JSON.parse(text).payload, 'base64');
    assert.equal(loaded.digest, createHash('sha256').update(payload).digest('hex'));
  });

  test('a threshold of two distinct keys is met by two distinct keys', () => {
    const loaded = load(envelope(manifest({ name: 'board.minutes' }), { signers: [ACME2, ACME3] }));
    assert.deepEqual(loaded.signers.map((signer) => signer.keyId).sort(), [ACME2.id, ACME3.id].sort());
  });

  test('a signature by an unknown key beside a trusted one does not stop the trusted one', () => {
    assert.equal(load(envelope(manifest(), { signers: [STRANGER, ACME] })).name, 'acme.crm');
  });

  test('the keyid is only a hint: a wrong hint on a good signature still verifies, attributed to the real key', () => {
    const loaded = load(envelope(manifest(), { signers: [{ ...ACME, hint: EVIL.id }] }));
    assert.deepEqual(loaded.signers, [{ keyId: ACME.id, publisher: 'acme' }]);
  });
});

describe('signed manifests: every attack is refused with its reason', () => {
  test('unsigned: the YAML source itself', () => {
    refused('manifestVersion: 1\nname: acme.crm\ntransport: {type: http, url: "http://127.0.0.1:9/mcp"}\ntools: []\n', 'unsigned');
  });
  test('unsigned: the manifest as plain JSON', () => refused(JSON.stringify(manifest()), 'unsigned'));
  test('unsigned: an envelope with no signatures', () => refused(envelope(manifest(), { signers: [] }), 'unsigned'));

  test('unknown key', () => refused(envelope(manifest(), { signers: [STRANGER] }), 'unknown-key'));

  test('a key outside its namespace: evil signs acme.crm', () => refused(envelope(manifest(), { signers: [EVIL] }), 'namespace-not-trusted'));
  for (const name of ['acme2.crm', 'evil.acme.crm', 'acmecorp.crm']) {
    test(`namespace squatting: acme.* does not cover ${name}`, () => refused(envelope(manifest({ name })), 'namespace-not-trusted'));
  }
  test('a namespace pattern never covers its bare prefix', () => {
    // "acme" is not a valid manifest name at all (one label), so the schema refuses it first.
    refused(envelope(manifest({ name: 'acme' })), 'invalid-manifest');
  });

  test('one flipped payload byte', () => {
    const good = JSON.parse(envelope(manifest()));
    const payload = Buffer.from(good.payload, 'base64');
    const at = payload.indexOf('customer');
    payload[at] = payload[at]! ^ 0x20; // "Customer"
    refused(JSON.stringify({ ...good, payload: payload.toString('base64') }), 'bad-signature');
  });

  test('one flipped signature bit', () => refused(envelope(manifest(), { mutateSig: (sig) => Buffer.from(sig.map((b, i) => (i === 5 ? b ^ 1 : b))) }), 'bad-signature'));

  test('a swapped payloadType breaks the signature (the type is signed)', () => {
    const good = JSON.parse(envelope(manifest()));
    refused(JSON.stringify({ ...good, payloadType: 'application/vnd.in-toto+json' }), 'bad-signature');
  });
  test('a payloadType the key did sign, but not ours', () => refused(envelope(manifest(), { payloadType: 'application/json' }), 'wrong-payload-type'));

  test('a keyid hint pointing to a trusted key, signed by another: refused for the real signer', () => {
    // evil signs acme.crm and claims to be acme's key: verification finds evil's key.
    refused(envelope(manifest(), { signers: [{ ...EVIL, hint: ACME.id }] }), 'namespace-not-trusted');
    // a stranger does the same: no trusted key verifies it, and the hinted key fails.
    refused(envelope(manifest(), { signers: [{ ...STRANGER, hint: ACME.id }] }), 'bad-signature');
  });

  test('below the threshold', () => refused(envelope(manifest({ name: 'board.minutes' }), { signers: [ACME2] }), 'below-threshold'));
  test('one key signing twice does not reach a threshold of two', () => {
    refused(envelope(manifest({ name: 'board.minutes' }), { signers: [ACME2, ACME2] }), 'below-threshold');
    refused(envelope(manifest({ name: 'board.minutes' }), { signers: [ACME2, { ...ACME2, hint: ACME3.id }] }), 'below-threshold');
  });

  test('duplicate JSON keys in the payload', () => {
    const text = canonicalize(manifest())!.replace('"name":"acme.crm"', '"name":"acme.crm","name":"evil.crm"');
    refused(envelope(undefined, { payloadText: text }), 'duplicate-key');
  });
  test('duplicate JSON keys in the envelope', () => {
    refused(envelope(manifest(), { envelope: (e) => JSON.stringify(e).replace('"payloadType":', `"payloadType":"x","payloadType":`) }), 'duplicate-key');
  });

  test('a non-canonical payload (signed, but with whitespace and key order of its own)', () => {
    refused(envelope(undefined, { payloadText: JSON.stringify(manifest(), null, 2) }), 'not-canonical');
  });
  test('a payload that is not JSON', () => refused(envelope(undefined, { payloadText: '{"name": ' }), 'malformed-payload'));
  test('a payload that is not UTF-8', () => {
    const good = JSON.parse(envelope(manifest()));
    const payload = Buffer.from([0xff, 0xfe, 0x7b, 0x7d]);
    const sig = signMessage(preAuthEncoding(PAYLOAD_TYPE, payload), ACME.seed).toString('base64');
    refused(JSON.stringify({ ...good, payload: payload.toString('base64'), signatures: [{ keyid: ACME.id, sig }] }), 'malformed-payload');
  });

  test('a malleated signature (S + L), which a verifier without the range check accepts', () => {
    const L = (1n << 252n) + 27742317777372353535851937790883648493n;
    const malleate = (sig: Buffer) => {
      let s = 0n;
      for (let i = 63; i >= 32; i--) s = (s << 8n) | BigInt(sig[i]!);
      s += L;
      const out = Buffer.from(sig);
      for (let i = 32; i < 64; i++) {
        out[i] = Number(s & 0xffn);
        s >>= 8n;
      }
      return out;
    };
    refused(envelope(manifest(), { mutateSig: malleate }), 'bad-signature');
  });

  test('expired', () => refused(envelope(manifest()), 'expired', TRUST, NOW + 31 * DAY));
  test('not yet valid', () => refused(envelope(manifest({ issuedAt: new Date(NOW + DAY).toISOString() })), 'not-yet-valid'));

  test('a revoked key', () => refused(envelope(manifest()), 'key-revoked', { ...TRUST, revoked: { keys: [ACME.id] } }));
  test('a revoked manifest digest', () => {
    const text = envelope(manifest());
    const digest = createHash('sha256').update(Buffer.from(JSON.parse(text).payload, 'base64')).digest('hex');
    refused(text, 'manifest-revoked', { ...TRUST, revoked: { manifests: [digest.toUpperCase()] } });
  });
  test('a publisher whose trust has expired', () => {
    refused(envelope(manifest()), 'publisher-expired', { publishers: { acme: { keys: [ACME.publicKey], namespaces: ['acme.*'], expiresAt: new Date(NOW - 1000).toISOString() } } });
  });

  test('zero-width, tag and bidi characters smuggled into a signed payload (signed without the CLI)', () => {
    for (const description of ['Find\u200b a customer.', `Find a customer.${String.fromCodePoint(0xe0069)}`, 'Find \u202ea customer.', 'Find \u001b[8ma customer.']) {
      const tools = [{ name: 'find', description, access: 'read', inputSchema: { type: 'object' } }];
      refused(envelope(manifest({ tools })), 'invisible-characters');
    }
    // inside a schema's property description, and in a property name
    refused(envelope(manifest({ tools: [{ name: 'find', description: 'ok', access: 'read', inputSchema: { type: 'object', properties: { q: { type: 'string', description: 'q\u2066' } } } }] })), 'invisible-characters');
    refused(envelope(manifest({ tools: [{ name: 'find', description: 'ok', access: 'read', inputSchema: { type: 'object', properties: { ['q\u200d']: { type: 'string' } } } }] })), 'invisible-characters');
  });

  test('unknown fields in the signed manifest', () => refused(envelope(manifest({ trustMe: true })), 'invalid-manifest'));
  test('annotations that contradict the access class', () => {
    refused(envelope(manifest({ tools: [{ name: 'wipe', description: 'Wipe.', access: 'write', annotations: { readOnlyHint: true }, inputSchema: { type: 'object' } }] })), 'invalid-manifest');
    refused(envelope(manifest({ tools: [{ name: 'peek', description: 'Peek.', access: 'read', annotations: { destructiveHint: true }, inputSchema: { type: 'object' } }] })), 'invalid-manifest');
  });
});

describe('signed manifests: malformed and hostile files', () => {
  test('too large: refused before parsing', () => refused(Buffer.alloc(MAX_SIGNED_MANIFEST_BYTES + 1, 0x20), 'too-large'));
  test('unreadable', () => {
    assert.throws(() => loadSignedManifest(join(dir, 'missing.json'), compileTrust(TRUST, 'w'), { now: NOW }), (error: unknown) => error instanceof ManifestRejection && error.reason === 'unreadable');
  });
  for (const [label, text] of [
    ['empty', ''],
    ['not JSON', 'not json at all'],
    ['a JSON array', '[]'],
    ['missing signatures', JSON.stringify({ payloadType: PAYLOAD_TYPE, payload: 'e30=' })],
    ['an extra field', JSON.stringify({ payloadType: PAYLOAD_TYPE, payload: 'e30=', signatures: [], note: 'x' })],
    ['non-standard base64 payload', JSON.stringify({ payloadType: PAYLOAD_TYPE, payload: 'e30', signatures: [{ keyid: ACME.id, sig: 'A'.repeat(86) + '==' }] })],
    ['a short signature', JSON.stringify({ payloadType: PAYLOAD_TYPE, payload: 'e30=', signatures: [{ keyid: ACME.id, sig: 'AAAA' }] })],
    ['a keyid that is not hex', JSON.stringify({ payloadType: PAYLOAD_TYPE, payload: 'e30=', signatures: [{ keyid: 'x'.repeat(64), sig: 'A'.repeat(86) + '==' }] })],
    ['deep nesting', '['.repeat(200_000)],
  ] as const) {
    test(`${label}: refused as not an envelope`, () => refused(text, 'not-an-envelope'));
  }
  test('a raw control character inside a JSON string (momoa is lenient there, JSON.parse is not)', () => {
    refused(`{"payloadType":"a\tb","payload":"AAAA","signatures":[]}`, 'not-an-envelope');
  });
  test('a FIFO in place of the manifest is refused, not waited on', () => {
    const fifo = join(dir, 'fifo.json');
    execFileSync('mkfifo', [fifo]);
    assert.throws(() => loadSignedManifest(fifo, compileTrust(TRUST, 'w'), { now: NOW }), (error: unknown) => error instanceof ManifestRejection && error.reason === 'unreadable');
  });
  test('a signed payload that RFC 8785 cannot represent: a lone surrogate, a number beyond double range', () => {
    refused(envelope(undefined, { payloadText: '{"description":"\\ud800","name":"acme.x"}' }), 'malformed-payload');
    refused(envelope(undefined, { payloadText: canonicalize(manifest())!.replace('"serial":1', '"serial":1e400') }), 'malformed-payload');
  });
  test('a signed payload nested deeper than any manifest needs', () => {
    refused(envelope(undefined, { payloadText: `${'['.repeat(2500)}${']'.repeat(2500)}` }), 'malformed-payload');
  });
  test('a byte-order mark before the canonical payload (one release, two digests) is refused', () => {
    const good = JSON.parse(envelope(manifest()));
    const payload = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(good.payload, 'base64')]);
    const sig = signMessage(preAuthEncoding(PAYLOAD_TYPE, payload), ACME.seed).toString('base64');
    refused(JSON.stringify({ ...good, payload: payload.toString('base64'), signatures: [{ keyid: ACME.id, sig }] }), 'malformed-payload');
  });
  test('a leap-second expiry, which would never compare as past, is refused', () => {
    refused(envelope(manifest({ expiresAt: '2016-12-31T23:59:60Z' })), 'invalid-manifest');
  });
  test('sixteen junk signatures against many trusted keys: refused, within a bounded number of verifications', () => {
    const many: RawTrust = { publishers: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`p${i}`, { keys: [key(`many-${i}`).publicKey], namespaces: [`p${i}.*`] }])) };
    const junk = Array.from({ length: 16 }, (_, i) => ({ ...STRANGER, hint: key(`many-${i}`).id }));
    refused(envelope(manifest(), { signers: junk }), 'bad-signature', many);
  });
  test('terminal escapes quoted from a hostile file do not reach the message', () => {
    const text = `{"payloadType":"x","\u001b[2Jk":1,"\u001b[2Jk":2}`;
    assert.throws(() => load(text), (error: unknown) => error instanceof ManifestRejection && error.reason === 'duplicate-key' && !error.message.includes('\u001b'));
  });

  test('every reason has a distinct exit code and is documented', async () => {
    const { readFileSync } = await import('node:fs');
    const docs = readFileSync(join(ROOT, 'docs/manifests.md'), 'utf8');
    const codes = new Set<number>();
    for (const [reason, { exit }] of Object.entries(REJECTIONS)) {
      assert.ok(!codes.has(exit), `exit ${exit} used twice`);
      codes.add(exit);
      assert.ok(docs.includes(`\`${reason}\``), `docs/manifests.md does not explain ${reason}`);
    }
  });
});

describe('trust configuration', () => {
  const fails = (trust: RawTrust, pattern: RegExp) => assert.throws(() => compileTrust(trust, 'warden.yaml'), (error: Error & { code?: string }) => error.code === 'WARDEN_CONFIG_INVALID' && pattern.test(error.message));
  test('a key that is not 32 bytes of base64', () => fails({ publishers: { a: { keys: ['abc'], namespaces: ['a.*'] } } }, /publishers\/a\/keys\/0/));
  test('a threshold above the number of keys', () => fails({ publishers: { a: { keys: [ACME.publicKey], namespaces: ['a.*'], threshold: 2 } } }, /threshold/));
  test('the same key listed twice cannot count twice toward a threshold', () => fails({ publishers: { a: { keys: [ACME.publicKey, ACME.publicKey], namespaces: ['a.*'], threshold: 2 } } }, /listed twice/));
  test('one key in two publishers', () => fails({ publishers: { a: { keys: [ACME.publicKey], namespaces: ['a.*'] }, b: { keys: [ACME.publicKey], namespaces: ['b.*'] } } }, /also a key of publisher "a"/));
  for (const pattern of ['*', 'acme', 'Acme.*', 'acme.**', '.acme.*', 'acme..crm', 'acme.*.crm']) {
    test(`the namespace pattern "${pattern}" is refused`, () => fails({ publishers: { a: { keys: [ACME.publicKey], namespaces: [pattern] } } }, /namespaces\/0/));
  }
  test('a publisher expiry that is not a date', () => fails({ publishers: { a: { keys: [ACME.publicKey], namespaces: ['a.*'], expiresAt: 'soon' } } }, /expiresAt/));
});
