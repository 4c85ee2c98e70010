import { createPublicKey, hash, sign, verify, type KeyObject } from 'node:crypto';
import canonicalize from 'canonicalize';

/**
 * The audit trail's chain: every line is one JSON record that carries its sequence number
 * and the SHA-256 of the line before it, so an edited, removed, reordered or inserted
 * record breaks the chain where it happened. Checkpoint records are signed with the
 * broker's Ed25519 audit key, and the signature covers the whole checkpoint, its `prev`
 * (the chain's head) included, so rewriting the chain after an edit is caught at the next
 * checkpoint, and the last checkpoint of a closed trail cannot be edited either. This
 * module is the format: the writer (trail.ts) and the checker (verify.ts) both use it,
 * and nothing else decides what a line means.
 */

/** The `prev` of the very first record of a trail. */
export const GENESIS = '0'.repeat(64);

/** Longest line the writer emits; verify refuses longer lines unread. */
export const MAX_LINE_BYTES = 64 * 1024;

/** Fields the writer sets on every line; a record cannot set them itself. */
export const RESERVED_FIELDS = ['seq', 'time', 'service', 'prev'] as const;

/** Keeps a checkpoint signature from being valid as any other Ed25519 signature of the same key. */
const CHECKPOINT_DOMAIN = 'mcp-warden audit checkpoint v1\n';

/** SHA-256 (hex) of one line's UTF-8 bytes, without its newline: what the next line's `prev` holds. */
export function lineHash(line: string): string {
  return hash('sha256', line, 'hex');
}

/**
 * One record as the writer appends it. The chain fields come first (seq, time) and last
 * (prev) and always win over a record's own fields of the same name.
 */
export function chainRecord(seq: number, time: string, prev: string, record: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const line: Record<string, unknown> = { seq, time, service: 'mcp-warden' };
  for (const [key, value] of Object.entries(record)) {
    if (!(RESERVED_FIELDS as readonly string[]).includes(key)) line[key] = value;
  }
  line['prev'] = prev;
  return line;
}

/**
 * One record as the line the writer appends (without the newline). A line is always
 * exactly this serialisation of its record: verify refuses any other spelling of the same
 * JSON (spacing, escapes, repeated keys), so a line's bytes change only with its content.
 */
export function formatLine(seq: number, time: string, prev: string, record: Readonly<Record<string, unknown>>): string {
  if (RESERVED_FIELDS.some((field) => Object.hasOwn(record, field)) || Object.hasOwn(record, '__proto__') || startsWithIndexKey(record)) {
    return JSON.stringify(chainRecord(seq, time, prev, record));
  }
  // Every call writes two records: the same bytes as above, without copying the record.
  const body = JSON.stringify(record);
  return `{"seq":${seq},"time":${JSON.stringify(time)},"service":"mcp-warden",${body.length > 2 ? `${body.slice(1, -1)},` : ''}"prev":${JSON.stringify(prev)}}`;
}

/** Whether an object's first key is an array index: JavaScript orders those before all others. */
function startsWithIndexKey(record: Readonly<Record<string, unknown>>): boolean {
  for (const key in record) return /^(?:0|[1-9]\d{0,9})$/.test(key) && Number(key) < 2 ** 32 - 1;
  return false;
}

/** A short, stable name for an Ed25519 public key: the first 16 hex digits of its SPKI SHA-256. */
export function auditKeyId(publicKey: KeyObject): string {
  return hash('sha256', publicKey.export({ type: 'spki', format: 'der' }), 'hex').slice(0, 16);
}

/**
 * Signs a checkpoint: the record as chainRecord builds it, without its signature. Every
 * field is covered (seq, time, prev, keyId, final, records, ...), as RFC 8785 canonical
 * JSON after a fixed domain string.
 */
export function signCheckpoint(record: Readonly<Record<string, unknown>>, privateKey: KeyObject): string {
  return sign(null, checkpointPayload(record), privateKey).toString('base64');
}

/** False for a wrong key, a bad signature or any malformed input; never throws. */
export function checkpointSignatureValid(record: Readonly<Record<string, unknown>>, signature: string, publicKey: KeyObject): boolean {
  try {
    if (!/^[A-Za-z0-9+/]{86}==$/.test(signature)) return false;
    const bytes = Buffer.from(signature, 'base64');
    // Only the one spelling the writer produces: the last character's unused bits must be
    // zero, or a closing checkpoint's text could change while its signature still verifies.
    if (bytes.toString('base64') !== signature) return false;
    return verify(null, checkpointPayload(record), publicKey, bytes);
  } catch {
    return false;
  }
}

/** The public half of a PEM key file's key: a public key as is, a private key's derived. */
export function publicKeyFromPem(pem: string): KeyObject {
  const key = createPublicKey(pem);
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`a ${key.asymmetricKeyType} key, not Ed25519`);
  return key;
}

function checkpointPayload(record: Readonly<Record<string, unknown>>): Buffer {
  const signed: Record<string, unknown> = { ...record };
  delete signed['signature'];
  return Buffer.from(CHECKPOINT_DOMAIN + canonicalize(signed), 'utf8');
}
