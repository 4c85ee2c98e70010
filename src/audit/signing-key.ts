import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { readOrCreateEd25519Key } from '../identity/key-file.ts';
import { WardenError } from '../errors.ts';
import { auditKeyId } from './chain.ts';

export interface AuditKey {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** auditKeyId(publicKey): written into every checkpoint. */
  readonly keyId: string;
}

/** Where the public half of an audit key file is kept, for whoever verifies the trail. */
export function auditPublicKeyFile(keyFile: string): string {
  return `${keyFile}.pub`;
}

/**
 * The broker's audit signing key (Ed25519, PKCS#8 PEM, owner-only), created on first use,
 * and its public key beside it (`<keyFile>.pub`, SPKI PEM, world-readable): a security
 * team verifies checkpoints with the public file and never needs the private one. The
 * public file is rewritten when it is missing or does not match the private key.
 */
export function loadAuditKey(keyFile: string): AuditKey {
  const privateKey = readOrCreateEd25519Key(keyFile, 'WARDEN_AUDIT_UNWRITABLE', 'the audit signing key');
  const publicKey = createPublicKey(privateKey);
  const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const publicFile = auditPublicKeyFile(keyFile);
  let current: string | undefined;
  try {
    current = readFileSync(publicFile, 'utf8');
  } catch {
    current = undefined;
  }
  if (current !== pem) {
    try {
      // Written aside and renamed: a reader never sees half a key.
      writeFileSync(`${publicFile}.tmp`, pem, { mode: 0o644 });
      renameSync(`${publicFile}.tmp`, publicFile);
    } catch (error) {
      throw new WardenError('WARDEN_AUDIT_UNWRITABLE', `cannot write the audit public key ${publicFile}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`, { keyFile });
    }
  }
  return { privateKey, publicKey, keyId: auditKeyId(publicKey) };
}
