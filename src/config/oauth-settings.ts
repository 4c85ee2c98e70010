import { createPublicKey, type JsonWebKey } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { JSONWebKeySet } from 'jose';
import { WardenError } from '../errors.ts';
import { classifyAddress } from '../guard/address-class.ts';
import type { OAuthSettings } from './types.ts';

/** http.oauth as written in the config (the schema has checked types and bounds). */
export interface RawOAuth {
  readonly issuer: string;
  readonly resource: string;
  readonly jwksUrl?: string;
  readonly jwksFile?: string;
  readonly algorithms?: readonly string[];
  readonly clockSkewSeconds?: number;
  readonly subjectClaim?: string;
  readonly authorizationServers?: readonly string[];
  readonly jwksTimeoutMs?: number;
  readonly jwksCooldownSeconds?: number;
  readonly jwksCacheSeconds?: number;
}

export const OAUTH_DEFAULTS = {
  algorithms: ['RS256', 'PS256', 'ES256', 'EdDSA', 'Ed25519'],
  clockSkewSeconds: 30,
  subjectClaim: 'sub',
  jwksTimeoutMs: 5_000, // 5 s
  jwksCooldownSeconds: 30,
  jwksCacheSeconds: 600, // 10 min
} as const;

/**
 * Signature algorithms an access token may use: asymmetric only. With an HMAC algorithm
 * the verification key is a shared secret, and a verifier handed the identity provider's
 * public key could be fooled by a token "signed" with that public key (RFC 8725 section 2.1).
 */
const ASYMMETRIC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];

/** The metadata document's well-known path (RFC 9728 section 3). */
export const METADATA_PATH = '/.well-known/oauth-protected-resource';

/** Largest JWKS file read. */
const MAX_JWKS_FILE_BYTES = 1024 * 1024;
/** Members of a private or symmetric JWK: none may be in a file of public keys. */
const SECRET_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

/**
 * Checks http.oauth and compiles it. Anything that would weaken token validation (an HMAC
 * or unsigned algorithm, keys fetched over plain http from another machine, a private or
 * symmetric key in the key file) is a config error that says what to write instead.
 */
export function compileOAuth(raw: RawOAuth, dir: string, path: string, warnings: string[]): OAuthSettings {
  const fail = (at: string, why: string) => new WardenError('WARDEN_CONFIG_INVALID', `${path}: at /http/oauth${at}: ${why}`, { file: path });
  const algorithms = raw.algorithms ?? OAUTH_DEFAULTS.algorithms;
  algorithms.forEach((algorithm, index) => {
    if (ASYMMETRIC_ALGORITHMS.includes(algorithm)) return;
    const why = /^HS\d+$/i.test(algorithm)
      ? `"${algorithm}" is an HMAC (shared-secret) algorithm: a token signed with the identity provider's public key as the secret would pass. List asymmetric algorithms only`
      : algorithm.toLowerCase() === 'none'
        ? '"none" means unsigned tokens, which are never accepted. List asymmetric algorithms only'
        : `"${algorithm}" is not a signature algorithm the broker accepts`;
    throw fail(`/algorithms/${index}`, `${why}: ${ASYMMETRIC_ALGORITHMS.join(', ')}`);
  });

  const resource = checkUrl(raw.resource, (why) => fail('/resource', `${why}; write this broker's MCP endpoint as clients reach it, e.g. https://warden.example.com/mcp`));
  if (resource.search !== '' || resource.hash !== '') throw fail('/resource', 'a resource identifier has no query or fragment (RFC 8707)');
  if (resource.pathname !== '/mcp') {
    warnings.push(`/http/oauth/resource: its path is ${resource.pathname}, the broker serves /mcp; clients will look for the metadata at ${metadataUrlOf(resource)}, so a proxy in front must route that and the endpoint here`);
  }

  if ((raw.jwksUrl === undefined) === (raw.jwksFile === undefined)) {
    throw fail('', raw.jwksUrl === undefined ? 'give jwksUrl (the identity provider\'s JWKS endpoint) or jwksFile (its public keys in a file)' : 'give jwksUrl or jwksFile, not both');
  }
  let keys: OAuthSettings['keys'];
  if (raw.jwksUrl !== undefined) {
    const url = checkUrl(raw.jwksUrl, (why) => fail('/jwksUrl', why));
    if (url.username !== '' || url.password !== '') throw fail('/jwksUrl', 'the URL must not hold credentials');
    keys = { url: url.href };
  } else {
    const file = resolve(dir, raw.jwksFile!);
    keys = { file, jwks: readKeyFile(file, (why) => fail('/jwksFile', `${file} ${why}`)) };
  }

  return {
    issuer: raw.issuer,
    resource: resource.href,
    metadataUrl: metadataUrlOf(resource),
    authorizationServers: raw.authorizationServers ?? [raw.issuer],
    keys,
    algorithms,
    clockSkewSeconds: raw.clockSkewSeconds ?? OAUTH_DEFAULTS.clockSkewSeconds,
    subjectClaim: raw.subjectClaim ?? OAUTH_DEFAULTS.subjectClaim,
    jwksTimeoutMs: raw.jwksTimeoutMs ?? OAUTH_DEFAULTS.jwksTimeoutMs,
    jwksCooldownMs: (raw.jwksCooldownSeconds ?? OAUTH_DEFAULTS.jwksCooldownSeconds) * 1000,
    jwksCacheMs: (raw.jwksCacheSeconds ?? OAUTH_DEFAULTS.jwksCacheSeconds) * 1000,
  };
}

/**
 * An absolute https URL, or plain http to a loopback address written as an address (a
 * name could resolve elsewhere): for a local identity provider and for tests.
 */
function checkUrl(text: string, fail: (why: string) => WardenError): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw fail(`"${text}" is not an absolute URL`);
  }
  if (url.protocol === 'https:') return url;
  if (url.protocol !== 'http:') throw fail(`${url.protocol} is not https`);
  if (classifyAddress(url.hostname)?.range !== 'loopback') {
    throw fail(`plain http is accepted only to a loopback address written as an address (127.0.0.1, [::1]); use https for ${url.hostname}`);
  }
  return url;
}

/** RFC 9728 section 3.1: the well-known path goes between the host and the resource's path. */
function metadataUrlOf(resource: URL): string {
  const path = resource.pathname === '/' ? '' : resource.pathname;
  return `${resource.origin}${METADATA_PATH}${path}`;
}

/** The identity provider's public keys from a file: a JWKS of asymmetric public keys that Node can use. */
function readKeyFile(file: string, fail: (why: string) => WardenError): JSONWebKeySet {
  let text: string;
  try {
    const stat = statSync(file);
    if (!stat.isFile()) throw fail('is not a regular file');
    if (stat.size > MAX_JWKS_FILE_BYTES) throw fail(`is ${stat.size} bytes; the limit is ${MAX_JWKS_FILE_BYTES}`);
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if (error instanceof WardenError) throw error;
    throw fail(`cannot be read (${(error as NodeJS.ErrnoException).code ?? 'read error'})`);
  }
  let jwks: unknown;
  try {
    jwks = JSON.parse(text);
  } catch {
    throw fail('is not JSON; it must be a JWKS ({"keys": [...]}) as the identity provider publishes it');
  }
  const list = (jwks as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(list) || list.length === 0) throw fail('is not a JWKS with keys ({"keys": [...]})');
  list.forEach((key: unknown, index) => {
    if (typeof key !== 'object' || key === null || Array.isArray(key)) throw fail(`holds keys/${index}, which is not a JSON object`);
    const jwk = key as Record<string, unknown>;
    if (jwk['kty'] !== 'RSA' && jwk['kty'] !== 'EC' && jwk['kty'] !== 'OKP') throw fail(`holds keys/${index} with kty ${JSON.stringify(jwk['kty'])}; only public keys of kty RSA, EC or OKP are accepted`);
    const secret = SECRET_MEMBERS.find((member) => member in jwk);
    if (secret) throw fail(`holds keys/${index} with private key material ("${secret}"); put only the identity provider's public keys in this file`);
    try {
      createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
    } catch (error) {
      throw fail(`holds keys/${index}, which is not a usable public key (${(error as Error).message})`);
    }
  });
  return { keys: list } as JSONWebKeySet;
}
