import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import nacl from 'tweetnacl';
import {
  generateKeyPair,
  isCanonicalS,
  keyId,
  PUBLIC_KEY_BYTES,
  publicKeyOf,
  SIGNATURE_BYTES,
  signMessage,
  verifySignature,
} from '../../src/manifest/ed25519.ts';
import { ROOT } from '../helpers.ts';

interface WycheproofTest {
  tcId: number;
  comment: string;
  msg: string;
  sig: string;
  result: 'valid' | 'invalid' | 'acceptable';
  flags: string[];
}

interface WycheproofFile {
  numberOfTests: number;
  testGroups: { publicKey: { pk: string }; tests: WycheproofTest[] }[];
}

const WYCHEPROOF: WycheproofFile = JSON.parse(readFileSync(join(ROOT, 'test/fixtures/wycheproof/ed25519_test.json'), 'utf8'));

/** L = 2^252 + 27742317777372353535851937790883648493, the order of the Ed25519 base point. */
const L = 2n ** 252n + 27742317777372353535851937790883648493n;

function toLittleEndian(value: bigint, bytes = 32): Buffer {
  const out = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) {
    out[i] = Number(value & 0xffn);
    value >>= 8n;
  }
  assert.equal(value, 0n, 'value does not fit');
  return out;
}

function fromLittleEndian(bytes: Uint8Array): bigint {
  let value = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i]!);
  return value;
}

/** A 64-byte signature with R from `signature` (or zeros) and the given S. */
function withS(s: bigint, signature: Uint8Array = Buffer.alloc(SIGNATURE_BYTES)): Buffer {
  return Buffer.concat([signature.subarray(0, 32), toLittleEndian(s)]);
}

function flipped(bytes: Uint8Array, index: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[index] = copy[index]! ^ 0x01;
  return copy;
}

describe('Ed25519 against Wycheproof', () => {
  it('agrees with every vector', () => {
    let checked = 0;
    const disagreements: string[] = [];
    for (const group of WYCHEPROOF.testGroups) {
      const publicKey = Buffer.from(group.publicKey.pk, 'hex');
      for (const test of group.tests) {
        // The file has no "acceptable" vectors today. Should one appear, we treat it as
        // invalid: manifest signatures are only ever made by our own signMessage, so there
        // is no interoperability reason to accept anything borderline.
        const expected = test.result === 'valid';
        let actual: boolean;
        try {
          actual = verifySignature(Buffer.from(test.msg, 'hex'), Buffer.from(test.sig, 'hex'), publicKey);
        } catch (error) {
          disagreements.push(`tcId ${test.tcId} (${test.comment}): threw ${String(error)}`);
          checked++;
          continue;
        }
        if (actual !== expected) {
          disagreements.push(`tcId ${test.tcId} (${test.comment}) [${test.result}; ${test.flags.join(', ')}]: got ${actual}`);
        }
        checked++;
      }
    }
    assert.deepEqual(disagreements, [], `disagreements with Wycheproof:\n${disagreements.join('\n')}`);
    assert.equal(checked, WYCHEPROOF.numberOfTests, 'every vector in the file must be checked');
  });
});

describe('Ed25519 malleability', () => {
  it('refuses S + L, which tweetnacl accepts', () => {
    const { seed, publicKey } = generateKeyPair();
    const message = Buffer.from('manifest: notes-server');
    const signature = signMessage(message, seed);
    assert.ok(verifySignature(message, signature, publicKey));

    const s = fromLittleEndian(signature.subarray(32));
    assert.ok(s < L);
    const malleated = withS(s + L, signature); // S + L < 2^253: still 32 bytes
    assert.notDeepEqual(malleated, signature);

    assert.equal(isCanonicalS(malleated), false);
    assert.equal(verifySignature(message, malleated, publicKey), false);
    // Why the explicit range check exists: a verifier that skips it (tweetnacl 1.0.3 does)
    // computes [S]B with S + L, which is the same point as [S]B, and accepts.
    assert.equal(nacl.sign.detached.verify(message, signature, publicKey), true);
    assert.equal(nacl.sign.detached.verify(message, malleated, publicKey), true);
  });
});

describe('isCanonicalS', () => {
  it('draws the line at L', () => {
    assert.equal(isCanonicalS(withS(0n)), true);
    assert.equal(isCanonicalS(withS(L - 1n)), true);
    assert.equal(isCanonicalS(withS(L)), false);
    assert.equal(isCanonicalS(withS(L + 1n)), false);
    assert.equal(isCanonicalS(withS(2n ** 256n - 1n)), false);
  });

  it('is false for the wrong length', () => {
    assert.equal(isCanonicalS(new Uint8Array(0)), false);
    assert.equal(isCanonicalS(new Uint8Array(63)), false);
    assert.equal(isCanonicalS(new Uint8Array(65)), false);
  });
});

describe('Ed25519 round trip', () => {
  const { seed, publicKey } = generateKeyPair();
  const message = Buffer.from(JSON.stringify({ name: 'notes', tools: ['read', 'write'] }));
  const signature = signMessage(message, seed);

  it('verifies its own signature', () => {
    assert.equal(seed.length, 32);
    assert.equal(publicKey.length, PUBLIC_KEY_BYTES);
    assert.equal(signature.length, SIGNATURE_BYTES);
    assert.equal(verifySignature(message, signature, publicKey), true);
    assert.equal(verifySignature(new Uint8Array(message), new Uint8Array(signature), new Uint8Array(publicKey)), true);
  });

  it('refuses a changed message, signature or key', () => {
    for (let i = 0; i < message.length; i += 7) assert.equal(verifySignature(flipped(message, i), signature, publicKey), false, `message byte ${i}`);
    for (let i = 0; i < SIGNATURE_BYTES; i++) assert.equal(verifySignature(message, flipped(signature, i), publicKey), false, `signature byte ${i}`);
    assert.equal(verifySignature(Buffer.concat([message, Buffer.from(' ')]), signature, publicKey), false);
    assert.equal(verifySignature(message, signature, generateKeyPair().publicKey), false);
  });

  it('is false, never throws, for wrong lengths and odd keys', () => {
    const cases: [Uint8Array, Uint8Array][] = [
      [signature.subarray(0, 63), publicKey],
      [Buffer.concat([signature, Buffer.alloc(1)]), publicKey],
      [new Uint8Array(0), publicKey],
      [signature, publicKey.subarray(0, 31)],
      [signature, Buffer.concat([publicKey, Buffer.alloc(1)])],
      [signature, new Uint8Array(0)],
      [signature, Buffer.alloc(32)],
      [signature, Buffer.alloc(32, 0xff)],
    ];
    for (const [sig, key] of cases) {
      assert.doesNotThrow(() => verifySignature(message, sig, key));
      assert.equal(verifySignature(message, sig, key), false, `signature ${sig.length} bytes, key ${Buffer.from(key).toString('hex')}`);
    }
  });

  it('derives the public key and key id from the seed', () => {
    assert.deepEqual(publicKeyOf(seed), publicKey);
    const id = keyId(publicKey);
    assert.match(id, /^[0-9a-f]{64}$/);
    assert.equal(id, createHash('sha256').update(publicKey).digest('hex'));
    assert.notEqual(keyId(generateKeyPair().publicKey), id);
  });

  it('is deterministic and interoperates with tweetnacl', () => {
    assert.deepEqual(signMessage(message, seed), signature);
    const naclPair = nacl.sign.keyPair.fromSeed(seed);
    assert.deepEqual(Buffer.from(naclPair.publicKey), publicKey);
    assert.deepEqual(Buffer.from(nacl.sign.detached(message, naclPair.secretKey)), signature);
  });

  it('refuses a seed of the wrong length', () => {
    assert.throws(() => signMessage(message, seed.subarray(0, 31)), RangeError);
    assert.throws(() => signMessage(message, Buffer.alloc(33)), RangeError);
    assert.throws(() => publicKeyOf(seed.subarray(0, 31)), RangeError);
  });
});
