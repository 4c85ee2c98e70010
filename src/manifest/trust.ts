import { WardenError } from '../errors.ts';
import { keyId, PUBLIC_KEY_BYTES } from './ed25519.ts';
import { decodeBase64Strict } from './envelope.ts';

/** A publisher the security team trusts: its keys, the names it may sign, how many must sign. */
export interface Publisher {
  readonly name: string;
  readonly threshold: number;
  /** Patterns: `acme.*` (any name under acme.) or an exact name such as `acme.crm`. */
  readonly namespaces: readonly string[];
  /** After this instant (ms since the epoch) none of its keys count. */
  readonly expiresAt?: number;
}

export interface TrustedKey {
  readonly id: string;
  readonly publicKey: Buffer;
  readonly publisher: Publisher;
}

export interface TrustPolicy {
  /** Every configured key, revoked ones included (so a refusal can say "revoked"), by key id. */
  readonly keys: ReadonlyMap<string, TrustedKey>;
  readonly revokedKeys: ReadonlySet<string>;
  /** Hex SHA-256 digests of manifest payloads that are refused whatever signs them. */
  readonly revokedManifests: ReadonlySet<string>;
}

export interface RawTrust {
  publishers?: Record<string, { keys: string[]; namespaces: string[]; threshold?: number; expiresAt?: string }>;
  revoked?: { keys?: string[]; manifests?: string[] };
}

/** Manifest names: two or more dot-separated labels of lowercase letters, digits and inner hyphens. */
export const MANIFEST_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/;
const LABELS = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

/** Builds the trust policy from the config's `trust` section; every mistake names its path. */
export function compileTrust(raw: RawTrust | undefined, configFile: string): TrustPolicy {
  const fail = (path: string, why: string) => new WardenError('WARDEN_CONFIG_INVALID', `${configFile}: at /trust/${path}: ${why}`, { file: configFile });
  const keys = new Map<string, TrustedKey>();
  for (const [name, entry] of Object.entries(raw?.publishers ?? {})) {
    const threshold = entry.threshold ?? 1;
    entry.namespaces.forEach((pattern, i) => {
      if (!namespaceSyntaxOk(pattern)) throw fail(`publishers/${name}/namespaces/${i}`, `"${pattern}" is not a namespace; write a dotted name (acme.crm) or a dotted prefix followed by .* (acme.*)`);
    });
    let expiresAt: number | undefined;
    if (entry.expiresAt !== undefined) {
      expiresAt = Date.parse(entry.expiresAt);
      if (Number.isNaN(expiresAt)) throw fail(`publishers/${name}/expiresAt`, 'not a date-time');
    }
    const publisher: Publisher = Object.freeze({ name, threshold, namespaces: Object.freeze([...entry.namespaces]), ...(expiresAt === undefined ? {} : { expiresAt }) });
    const own = new Set<string>();
    entry.keys.forEach((text, i) => {
      const publicKey = decodeBase64Strict(text.trim());
      if (!publicKey || publicKey.length !== PUBLIC_KEY_BYTES) throw fail(`publishers/${name}/keys/${i}`, `not an Ed25519 public key: expected the base64 of ${PUBLIC_KEY_BYTES} bytes, as in the .pub file keygen writes`);
      const id = keyId(publicKey);
      const other = keys.get(id);
      if (other?.publisher === publisher) throw fail(`publishers/${name}/keys/${i}`, `key ${id.slice(0, 16)}… is listed twice; a threshold counts distinct keys`);
      if (other) throw fail(`publishers/${name}/keys/${i}`, `key ${id.slice(0, 16)}… is also a key of publisher "${other.publisher.name}"; a key belongs to one publisher`);
      own.add(id);
      keys.set(id, Object.freeze({ id, publicKey, publisher }));
    });
    if (threshold > own.size) throw fail(`publishers/${name}/threshold`, `threshold ${threshold} is more than the ${own.size} distinct keys listed; no manifest could ever be accepted`);
  }
  const lowerHex = (list: string[] | undefined) => new Set((list ?? []).map((value) => value.toLowerCase()));
  return Object.freeze({ keys, revokedKeys: lowerHex(raw?.revoked?.keys), revokedManifests: lowerHex(raw?.revoked?.manifests) });
}

function namespaceSyntaxOk(pattern: string): boolean {
  return pattern.endsWith('.*') ? LABELS.test(pattern.slice(0, -2)) : MANIFEST_NAME.test(pattern);
}

/**
 * Whether a publisher may sign this name. `acme.*` covers `acme.crm` and `acme.crm.eu`,
 * never `acme` itself, `acmecorp.crm` or `evil.acme.crm`: matching is on whole labels from
 * the left.
 */
export function publisherCovers(publisher: Publisher, name: string): boolean {
  return publisher.namespaces.some((pattern) => (pattern.endsWith('.*') ? name.startsWith(pattern.slice(0, -1)) : name === pattern));
}
