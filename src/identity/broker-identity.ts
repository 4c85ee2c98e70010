import { createPublicKey, sign } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, type JWK } from 'jose';
import { readOrCreateEd25519Key } from './key-file.ts';

/** Longest lifetime of an identity token, seconds: a leaked token is useless soon. */
export const MAX_IDENTITY_LIFETIME_S = 300;

export interface IdentityClaims {
  /** The tool server the token is for. */
  readonly audience: string;
  /** The agent, as the broker authenticated it. */
  readonly agent: string;
  /** The tool's name on that server. */
  readonly tool: string;
  /** The call's correlation id, also the token's jti. */
  readonly callId: string;
  readonly lifetimeSeconds: number;
}

export interface BrokerIdentity {
  readonly kid: string;
  /** The public key set tool servers verify tokens with. */
  readonly jwks: { readonly keys: readonly JWK[] };
  sign(claims: IdentityClaims): Promise<string>;
}

/**
 * The broker's own Ed25519 signing key, for identity tokens it mints per call (EdDSA JWTs:
 * iss, aud = the tool server, sub = the agent, tool, jti = the call id, exp at most 5 min
 * after iat). The key is created on first use, as PKCS#8 PEM, readable by its owner only.
 * The agent's own credentials are never passed on.
 */
export async function loadBrokerIdentity(keyFile: string, issuer: string): Promise<BrokerIdentity> {
  const privateKey = readOrCreateEd25519Key(keyFile, 'WARDEN_IDENTITY_KEY', 'the broker identity key');
  const publicJwk = await exportJWK(createPublicKey(privateKey));
  const kid = await calculateJwkThumbprint(publicJwk);
  const jwk: JWK = { ...publicJwk, kid, alg: 'EdDSA', use: 'sig' };
  const header = base64url(JSON.stringify({ alg: 'EdDSA', kid, typ: 'JWT' }));
  return {
    kid,
    jwks: { keys: [jwk] },
    async sign(claims) {
      const lifetime = Math.min(Math.max(1, Math.floor(claims.lifetimeSeconds)), MAX_IDENTITY_LIFETIME_S);
      const iat = Math.floor(Date.now() / 1000);
      const payload = { iss: issuer, aud: claims.audience, sub: claims.agent, tool: claims.tool, jti: claims.callId, iat, exp: iat + lifetime };
      // A compact JWS (RFC 7515 section 7.1) over "header.payload", signed with Ed25519
      // (RFC 8037) by node:crypto: about 40 us, where signing through WebCrypto takes
      // 130-200 us per call. The tests verify every token shape with jose.
      const input = `${header}.${base64url(JSON.stringify(payload))}`;
      return `${input}.${sign(null, Buffer.from(input, 'ascii'), privateKey).toString('base64url')}`;
    },
  };
}

function base64url(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64url');
}
