import { createHash } from 'node:crypto';
import { Ajv2020 } from 'ajv/dist/2020.js';
import canonicalize from 'canonicalize';
import { parse as parseYaml } from 'yaml';
import { verifySignature } from './ed25519.ts';
import { decodeBase64Strict, PAYLOAD_TYPE, preAuthEncoding, type Envelope } from './envelope.ts';
import envelopeSchema from './envelope.schema.json' with { type: 'json' };
import { ManifestRejection } from './rejections.ts';
import { parseStrictJson, StrictJsonError } from './strict-json.ts';
import { publisherCovers, type Publisher, type TrustedKey, type TrustPolicy } from './trust.ts';

/** The envelope's shape (envelope.schema.json); shared with manifest sign. */
export const validateEnvelope = new Ajv2020({ allErrors: false, strict: true }).compile(envelopeSchema);

/** Who signed, as established by verification (never by the keyid hint). */
export interface Signer {
  readonly keyId: string;
  readonly publisher: string;
}

/** An envelope whose signatures, payload type and encoding have been checked. */
export interface VerifiedEnvelope {
  /** The parsed payload; not yet checked against the manifest schema. */
  readonly document: unknown;
  /** Hex SHA-256 of the payload bytes: what trust.revoked.manifests lists. */
  readonly digest: string;
  readonly signers: readonly Signer[];
  /** Publishers whose threshold the signatures meet. */
  readonly publishers: readonly Publisher[];
}

/**
 * The cryptographic half of manifest verification, in the order that reads the least
 * untrusted data first: envelope shape, then every signature over the exact bytes, then
 * distinct trusted keys against each publisher's threshold, then the payload type, then
 * parsing (duplicate keys refused) and the canonical-form check. Nothing of the payload
 * is parsed before a threshold of trusted keys has vouched for it.
 */
export function verifyEnvelope(bytes: Buffer, trust: TrustPolicy, now: number): VerifiedEnvelope {
  const envelope = parseEnvelope(bytes);
  if (envelope.signatures.length === 0) throw new ManifestRejection('unsigned', 'the envelope has no signatures');
  const payload = decodeBase64Strict(envelope.payload);
  if (!payload) throw new ManifestRejection('not-an-envelope', 'payload is not standard base64 with padding');

  const message = preAuthEncoding(envelope.payloadType, payload);
  const verifiedBy = new Map<string, TrustedKey>();
  let hintedButFailed = false;
  const budget = { left: MAX_VERIFICATIONS };
  for (const signature of envelope.signatures) {
    const sig = decodeBase64Strict(signature.sig);
    const key = sig && findSigner(message, sig, signature.keyid, trust, budget);
    if (key) verifiedBy.set(key.id, key);
    else if (trust.keys.has(signature.keyid)) hintedButFailed = true;
  }

  const signers: Signer[] = [];
  const counts = new Map<Publisher, number>();
  let revoked = false;
  let expired = false;
  for (const key of verifiedBy.values()) {
    if (trust.revokedKeys.has(key.id)) {
      revoked = true;
      continue;
    }
    if (key.publisher.expiresAt !== undefined && key.publisher.expiresAt <= now) {
      expired = true;
      continue;
    }
    signers.push({ keyId: key.id, publisher: key.publisher.name });
    counts.set(key.publisher, (counts.get(key.publisher) ?? 0) + 1);
  }
  const publishers = [...counts].filter(([publisher, count]) => count >= publisher.threshold).map(([publisher]) => publisher);
  if (publishers.length === 0) throw thresholdRejection(counts, { revoked, expired, hintedButFailed, verified: verifiedBy.size });

  if (envelope.payloadType !== PAYLOAD_TYPE) {
    throw new ManifestRejection('wrong-payload-type', `payloadType is "${envelope.payloadType.slice(0, 100)}", expected "${PAYLOAD_TYPE}"`);
  }
  let text: string;
  try {
    // ignoreBOM keeps a leading BOM in the text, where it fails the checks below, rather
    // than dropping it and letting one release have two digests.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(payload);
  } catch {
    throw new ManifestRejection('malformed-payload', 'the payload is not valid UTF-8');
  }
  const document = parseOrReject(text, 'payload');
  let canonical: string | undefined;
  try {
    canonical = canonicalize(document);
  } catch (error) {
    // A lone surrogate, a number beyond double range: JSON can carry them, RFC 8785 cannot.
    throw new ManifestRejection('malformed-payload', `the payload cannot be put in canonical form: ${(error as Error).message}`);
  }
  if (canonical !== text) {
    throw new ManifestRejection('not-canonical', 'the payload is not the RFC 8785 canonical JSON of its own content; sign it with mcp-warden manifest sign');
  }
  return { document, digest: createHash('sha256').update(payload).digest('hex'), signers, publishers };
}

/**
 * The policy half, after the manifest schema: a publisher whose threshold was met must be
 * trusted for this name; the manifest must be within its validity and not revoked.
 */
export function checkManifestPolicy(
  manifest: { readonly name: string; readonly issuedAt: string; readonly expiresAt: string },
  verified: VerifiedEnvelope,
  trust: TrustPolicy,
  now: number,
): void {
  if (!verified.publishers.some((publisher) => publisherCovers(publisher, manifest.name))) {
    const names = verified.publishers.map((publisher) => `"${publisher.name}" (${publisher.namespaces.join(', ')})`).join(', ');
    throw new ManifestRejection('namespace-not-trusted', `"${manifest.name}" is outside the namespaces of the publishers that signed it: ${names}`, { name: manifest.name });
  }
  if (trust.revokedManifests.has(verified.digest)) {
    throw new ManifestRejection('manifest-revoked', `manifest ${verified.digest} is revoked (trust.revoked.manifests)`, { digest: verified.digest });
  }
  // Compared so that a date that does not parse (NaN) refuses rather than passes.
  if (!(Date.parse(manifest.expiresAt) > now)) {
    throw new ManifestRejection('expired', `expired at ${manifest.expiresAt}; the publisher must sign a new release`, { expiresAt: manifest.expiresAt });
  }
  if (!(Date.parse(manifest.issuedAt) <= now + CLOCK_SKEW_MS)) {
    throw new ManifestRejection('not-yet-valid', `issued at ${manifest.issuedAt}, which is in the future`, { issuedAt: manifest.issuedAt });
  }
}

/**
 * Signature verifications one envelope may cost: each hashes the whole payload, so 16
 * junk signatures against many trusted keys would otherwise make one file take seconds.
 */
const MAX_VERIFICATIONS = 64;

/** Tolerated difference between the signer's clock and the broker's. */
const CLOCK_SKEW_MS = 5 * 60_000;

/**
 * The trusted key that verifies this signature. The keyid names the key to try first; if
 * it is wrong, every other trusted key is tried, so the signer is always the key that
 * verifies and a hint naming someone else's key gains nothing.
 */
function findSigner(message: Buffer, sig: Buffer, hint: string, trust: TrustPolicy, budget: { left: number }): TrustedKey | undefined {
  const hinted = trust.keys.get(hint);
  const tries = hinted ? [hinted, ...[...trust.keys.values()].filter((key) => key !== hinted)] : [...trust.keys.values()];
  for (const key of tries) {
    if (budget.left <= 0) return undefined;
    budget.left--;
    if (verifySignature(message, sig, key.publicKey)) return key;
  }
  return undefined;
}

function thresholdRejection(
  counts: ReadonlyMap<Publisher, number>,
  seen: { revoked: boolean; expired: boolean; hintedButFailed: boolean; verified: number },
): ManifestRejection {
  const partial = [...counts].find(([publisher, count]) => count > 0 && count < publisher.threshold);
  if (partial) {
    const [publisher, count] = partial;
    return new ManifestRejection('below-threshold', `${count} distinct key(s) of publisher "${publisher.name}" signed; its threshold is ${publisher.threshold}`, { publisher: publisher.name });
  }
  if (seen.revoked) return new ManifestRejection('key-revoked', 'the only trusted key(s) that signed are revoked');
  if (seen.expired) return new ManifestRejection('publisher-expired', 'the publisher that signed is no longer trusted (its expiresAt has passed)');
  if (seen.hintedButFailed) return new ManifestRejection('bad-signature', 'a signature names a trusted key but does not verify: the manifest was changed after signing, or the signature is malformed');
  return new ManifestRejection('unknown-key', 'no signature is by a key in trust.publishers; the security team must trust the publisher\'s key');
}

function parseEnvelope(bytes: Buffer): Envelope {
  const text = bytes.toString('utf8');
  const data = parseOrReject(text, 'envelope', () => looksLikeUnsignedManifest(text));
  if (!validateEnvelope(data)) {
    if (isManifestShaped(data)) throw new ManifestRejection('unsigned', 'this is an unsigned manifest; sign it with: mcp-warden manifest sign --key KEY FILE');
    const error = validateEnvelope.errors?.[0];
    throw new ManifestRejection('not-an-envelope', `not a signed-manifest envelope: at ${error?.instancePath || '/'}: ${error?.message ?? 'invalid'}`);
  }
  return data as unknown as Envelope;
}

function parseOrReject(text: string, what: 'envelope' | 'payload', unsigned?: () => boolean): unknown {
  try {
    return parseStrictJson(text);
  } catch (error) {
    if (!(error instanceof StrictJsonError)) throw error;
    if (error.kind === 'duplicate-key') throw new ManifestRejection('duplicate-key', `the ${what} has a ${error.message}`);
    if (unsigned?.()) throw new ManifestRejection('unsigned', 'this is an unsigned manifest (YAML); sign it with: mcp-warden manifest sign --key KEY FILE');
    throw new ManifestRejection(what === 'envelope' ? 'not-an-envelope' : 'malformed-payload', `the ${what} is ${error.message}`);
  }
}

/** Only to give a better reason; small files only, and without YAML's quadratic key check. */
function looksLikeUnsignedManifest(text: string): boolean {
  if (text.length > 256 * 1024) return false;
  try {
    return isManifestShaped(parseYaml(text, { maxAliasCount: 100, uniqueKeys: false }));
  } catch {
    return false;
  }
}

function isManifestShaped(data: unknown): boolean {
  return typeof data === 'object' && data !== null && !Array.isArray(data) && 'tools' in data && 'transport' in data;
}
