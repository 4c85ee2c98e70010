import { createLocalJWKSet, createRemoteJWKSet, customFetch, decodeJwt, decodeProtectedHeader, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { AgentPolicy, OAuthSettings } from '../config/types.ts';
import type { Logger } from '../log.ts';
import type { OAuthSession } from '../pipeline/types.ts';

/**
 * Longest Authorization header read as an access token; longer ones are refused unread.
 * Identity providers' tokens are mostly under 2 KiB; a few KiB more leaves room for claims.
 */
export const MAX_ACCESS_TOKEN_HEADER = 8192;
/** Largest JWKS document read from the identity provider. */
const MAX_JWKS_BYTES = 512 * 1024;
/** Longest subject or token id taken from a token. */
const MAX_CLAIM_LENGTH = 256;

/** Why an access token was refused: the auth.failure record's reason. */
export type TokenFailure =
  | 'invalid-token' // neither an agent's static token nor a JWT
  | 'oversized'
  | 'malformed'
  | 'algorithm-not-allowed'
  | 'unknown-key'
  | 'bad-signature'
  | 'jwks-unavailable'
  | 'wrong-issuer'
  | 'wrong-audience'
  | 'expired'
  | 'not-yet-valid'
  | 'missing-claim'
  | 'internal-error';

export type TokenVerdict =
  | ({ readonly ok: true } & OAuthSession)
  /** detail: facts for the audit record (a claim's name, an unverified kid or alg), never the token. */
  | { readonly ok: false; readonly reason: TokenFailure; readonly detail?: Readonly<Record<string, string>> };

/** Verifies the access token in an Authorization header value; never throws. */
export type AccessTokenVerifier = (authorization: string) => Promise<TokenVerdict>;

/** Three base64url parts: a JWS in compact form (the signature may be empty, for alg none, refused later). */
const COMPACT_JWS = /^Bearer +([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*) *$/i;

/** The identity provider's keys could not be had: fetch failed, timed out, or answered something that is not a JWKS. */
class JwksUnavailable extends Error {}

/**
 * Validates JWT access tokens from the configured identity provider: the signature
 * (asymmetric algorithms of the allowlist, with the provider's keys), iss, aud (this
 * broker's resource, which also keeps out ID tokens and tokens for other services), exp
 * (required), nbf and iat with the configured skew. The typ header (RFC 9068's at+jwt) is
 * not required: many identity providers do not set it. Fails closed: keys that cannot be
 * fetched refuse the token.
 */
export function createAccessTokenVerifier(settings: OAuthSettings, logger: Logger): AccessTokenVerifier {
  const keys: JWTVerifyGetKey = 'url' in settings.keys ? remoteKeys(settings, settings.keys.url, logger) : createLocalJWKSet(settings.keys.jwks);
  const options = {
    issuer: settings.issuer,
    audience: settings.resource,
    algorithms: [...settings.algorithms],
    clockTolerance: settings.clockSkewSeconds,
    requiredClaims: ['exp'],
  };
  return async (authorization) => {
    if (authorization.length > MAX_ACCESS_TOKEN_HEADER) return refused('oversized');
    const token = COMPACT_JWS.exec(authorization)?.[1];
    if (token === undefined) return refused('invalid-token');
    // A payload that is not a JSON object is refused before any key is looked up (or fetched).
    try {
      decodeJwt(token);
    } catch {
      return refused('malformed');
    }
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, options));
    } catch (error) {
      const verdict = failureOf(error, token);
      if (verdict.reason === 'internal-error') logger.error({ err: error instanceof Error ? error.message : String(error) }, 'access token verification failed unexpectedly');
      return verdict;
    }
    // jose checks iat only against a maximum age; a token issued in the future is not valid yet.
    if (typeof payload.iat === 'number' && payload.iat > Date.now() / 1000 + settings.clockSkewSeconds) return refused('not-yet-valid', { claim: 'iat' });
    const subject = payload[settings.subjectClaim];
    if (typeof subject !== 'string' || subject === '' || subject.length > MAX_CLAIM_LENGTH) return refused('missing-claim', { claim: settings.subjectClaim });
    const scopes = scopesOf(payload);
    if (!scopes) return refused('malformed', { claim: 'scope' });
    const tokenId = typeof payload.jti === 'string' && payload.jti.length <= MAX_CLAIM_LENGTH ? payload.jti : undefined;
    return { ok: true, subject, scopes, ...(tokenId === undefined ? {} : { tokenId }) };
  };
}

/** The agent a verified subject names (agents.<name>.oauthSubject), or undefined: no agent by default. */
export function agentForSubject(subject: string, agents: ReadonlyMap<string, AgentPolicy>): string | undefined {
  for (const agent of agents.values()) if (agent.oauthSubject === subject) return agent.name;
  return undefined;
}

/** The protected-resource metadata document (RFC 9728 section 2); scopes_supported lists the scopes grants name. */
export function protectedResourceMetadata(settings: OAuthSettings, agents: ReadonlyMap<string, AgentPolicy>): Record<string, unknown> {
  const scopes = new Set<string>();
  for (const agent of agents.values()) for (const grant of agent.grants) for (const scope of grant.scopes) scopes.add(scope);
  return {
    resource: settings.resource,
    authorization_servers: settings.authorizationServers,
    bearer_methods_supported: ['header'],
    ...(scopes.size === 0 ? {} : { scopes_supported: [...scopes].sort() }),
  };
}

/**
 * The scope claim (RFC 9068: a space-separated string), or scp (a list, or a string, as
 * some identity providers write it); undefined when present but neither. No claim: no scopes.
 */
function scopesOf(payload: JWTPayload): ReadonlySet<string> | undefined {
  const claim = payload['scope'] ?? payload['scp'];
  if (claim === undefined) return new Set();
  if (typeof claim === 'string') return new Set(claim.split(' ').filter((scope) => scope !== ''));
  if (Array.isArray(claim) && claim.every((scope) => typeof scope === 'string')) return new Set(claim as string[]);
  return undefined;
}

function refused(reason: TokenFailure, detail?: Record<string, string>): TokenVerdict {
  return detail ? { ok: false, reason, detail } : { ok: false, reason };
}

/** jose's error, as the reason the audit trail records. */
function failureOf(error: unknown, token: string): TokenVerdict & { ok: false } {
  const fail = (reason: TokenFailure, detail?: Record<string, string>) => refused(reason, detail) as TokenVerdict & { ok: false };
  if (error instanceof JwksUnavailable || error instanceof errors.JWKSTimeout || error instanceof errors.JWKSInvalid || error instanceof errors.JWKInvalid) return fail('jwks-unavailable');
  if (error instanceof errors.JOSEAlgNotAllowed) return fail('algorithm-not-allowed', headerFact(token, 'alg'));
  if (error instanceof errors.JWKSNoMatchingKey || error instanceof errors.JWKSMultipleMatchingKeys) return fail('unknown-key', headerFact(token, 'kid'));
  if (error instanceof errors.JWSSignatureVerificationFailed) return fail('bad-signature');
  if (error instanceof errors.JWTExpired) return fail('expired');
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.reason === 'missing') return fail('missing-claim', { claim: error.claim });
    if (error.claim === 'iss') return fail('wrong-issuer');
    if (error.claim === 'aud') return fail('wrong-audience');
    if (error.claim === 'nbf') return fail('not-yet-valid', { claim: 'nbf' });
    return fail('malformed', { claim: error.claim });
  }
  // JWSInvalid, JWTInvalid, JOSENotSupported: not a well-formed signed JWT.
  if (error instanceof errors.JOSEError) return fail('malformed');
  return fail('internal-error');
}

/** An unverified header value for the audit record, made printable and short. */
function headerFact(token: string, name: 'alg' | 'kid'): Record<string, string> | undefined {
  try {
    const value = decodeProtectedHeader(token)[name];
    return typeof value === 'string' ? { [name]: value.replace(/[^\x20-\x7e]/g, '?').slice(0, 128) } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * jose's remote key set (cached for jwksCacheMs, fetched again for an unknown kid at most
 * once per cooldown, each fetch bounded by the timeout), with the fetch wrapped so that the
 * response is size-capped and checked, a failure is logged once, and no fetch follows a
 * failed one within the cooldown: a stream of tokens never becomes a stream of requests.
 */
function remoteKeys(settings: OAuthSettings, url: string, logger: Logger): JWTVerifyGetKey {
  let failedAt = Number.NEGATIVE_INFINITY;
  const fetchKeys = async (input: string | URL, init: RequestInit): Promise<Response> => {
    if (Date.now() - failedAt < settings.jwksCooldownMs) throw new JwksUnavailable('the last fetch failed; waiting for the cooldown');
    try {
      // jose asks for redirect: manual, so a redirect is not followed but refused below.
      const response = await fetch(input, init);
      if (response.status !== 200) {
        await response.body?.cancel().catch(() => undefined);
        throw new Error(`answered HTTP ${response.status}`);
      }
      const text = await readCapped(response, MAX_JWKS_BYTES);
      const jwks = JSON.parse(text) as { keys?: unknown } | null;
      if (!Array.isArray(jwks?.keys)) throw new Error('answered something that is not a JWKS');
      return new Response(text, { status: 200, headers: { 'content-type': 'application/json' } });
    } catch (error) {
      failedAt = Date.now();
      const reason = error instanceof Error ? (error.name === 'TimeoutError' ? `timed out after ${settings.jwksTimeoutMs} ms` : error.message) : String(error);
      logger.warn({ jwksUrl: url, err: reason }, 'cannot fetch the identity provider\'s keys (JWKS); access tokens are refused until it can');
      throw new JwksUnavailable(reason);
    }
  };
  return createRemoteJWKSet(new URL(url), {
    timeoutDuration: settings.jwksTimeoutMs,
    cooldownDuration: settings.jwksCooldownMs,
    cacheMaxAge: settings.jwksCacheMs,
    [customFetch]: fetchKeys,
  });
}

async function readCapped(response: Response, limit: number): Promise<string> {
  if (Number(response.headers.get('content-length') ?? 0) > limit) {
    await response.body?.cancel().catch(() => undefined);
    throw new Error(`answered more than ${limit} bytes`);
  }
  const reader = response.body?.getReader();
  if (!reader) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  // Bounded: the limit stops it, and jose's timeout aborts a body that never ends.
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => undefined);
      throw new Error(`answered more than ${limit} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}
