import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { calculateJwkThumbprint, exportJWK, type JWK } from 'jose';
import { WardenError } from '../errors.ts';

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
  const privateKey = readOrCreateKey(keyFile);
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

function readOrCreateKey(keyFile: string): KeyObject {
  let pem: string;
  try {
    pem = readFileSync(keyFile, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new WardenError('WARDEN_IDENTITY_KEY', `cannot read the broker identity key ${keyFile}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`, { keyFile });
    }
    mkdirSync(dirname(keyFile), { recursive: true, mode: 0o700 });
    const { privateKey } = generateKeyPairSync('ed25519');
    pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    try {
      // 'wx': never overwrite a key another process has just written.
      writeFileSync(keyFile, pem, { mode: 0o600, flag: 'wx' });
    } catch (writeError) {
      if ((writeError as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new WardenError('WARDEN_IDENTITY_KEY', `cannot write the broker identity key ${keyFile}: ${(writeError as NodeJS.ErrnoException).code ?? 'error'}`, { keyFile });
      }
      pem = readFileSync(keyFile, 'utf8');
    }
  }
  try {
    const key = createPrivateKey(pem);
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`a ${key.asymmetricKeyType} key`);
    return key;
  } catch (error) {
    throw new WardenError('WARDEN_IDENTITY_KEY', `${keyFile} is not an Ed25519 private key in PKCS#8 PEM (${(error as Error).message})`, { keyFile });
  }
}
