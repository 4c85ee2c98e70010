import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';

/**
 * Ed25519 (RFC 8032) for manifest signatures, on raw 32-byte keys and 64-byte signatures.
 * Signing and verification use node:crypto (OpenSSL), which verifies in about 0.3 ms on
 * a 2-core machine; tweetnacl, a pure-JavaScript verifier, takes 12-15 ms there (40-60x
 * slower, measured side by side by bench/ed25519.ts), which would make verifying 200
 * manifests at start-up take about 3 s.
 * The range check on S below is ours and runs first, whatever the library does, so a
 * malleated signature (S + L) is refused even by a verifier that would accept it.
 */

export const PUBLIC_KEY_BYTES = 32;
export const SEED_BYTES = 32;
export const SIGNATURE_BYTES = 64;

/** The order L of the Ed25519 base point, little-endian bytes (RFC 8032 section 5.1). */
const GROUP_ORDER = Buffer.from('edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010', 'hex');

/** DER prefixes that wrap a raw key as SPKI / PKCS#8 (RFC 8410). */
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** A key's id: the hex SHA-256 of the raw public key. A lookup hint, never proof. */
export function keyId(publicKey: Uint8Array): string {
  return createHash('sha256').update(publicKey).digest('hex');
}

export function generateKeyPair(): { seed: Buffer; publicKey: Buffer } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const seed = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(PKCS8_PREFIX.length);
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(SPKI_PREFIX.length);
  return { seed: Buffer.from(seed), publicKey: Buffer.from(raw) };
}

export function publicKeyOf(seed: Uint8Array): Buffer {
  const der = createPublicKey(privateKeyObject(seed)).export({ format: 'der', type: 'spki' });
  return Buffer.from(der.subarray(SPKI_PREFIX.length));
}

export function signMessage(message: Uint8Array, seed: Uint8Array): Buffer {
  return sign(null, message, privateKeyObject(seed));
}

/**
 * True only for a well-formed signature by this key over exactly this message. Never
 * throws: wrong lengths, S at or above the group order and keys that do not decode are
 * all just false.
 */
export function verifySignature(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): boolean {
  if (signature.length !== SIGNATURE_BYTES || publicKey.length !== PUBLIC_KEY_BYTES) return false;
  if (!isCanonicalS(signature)) return false;
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' });
    return verify(null, message, key, signature);
  } catch {
    return false;
  }
}

/** RFC 8032 section 5.1.7: S (the signature's second half, little-endian) must be below L. */
export function isCanonicalS(signature: Uint8Array): boolean {
  if (signature.length !== SIGNATURE_BYTES) return false;
  for (let i = 31; i >= 0; i--) {
    const s = signature[32 + i]!;
    const l = GROUP_ORDER[i]!;
    if (s !== l) return s < l;
  }
  return false; // S == L
}

function privateKeyObject(seed: Uint8Array): KeyObject {
  if (seed.length !== SEED_BYTES) throw new RangeError(`an Ed25519 secret key is ${SEED_BYTES} bytes, got ${seed.length}`);
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
}
