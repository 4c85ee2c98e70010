import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { WardenError } from '../errors.ts';
import { generateKeyPair, keyId, publicKeyOf, SEED_BYTES } from './ed25519.ts';
import { decodeBase64Strict } from './envelope.ts';

/**
 * A publisher's key pair on disk: PREFIX.key holds the base64 of the 32-byte Ed25519 seed
 * (mode 0600, never printed), PREFIX.pub the base64 of the raw 32-byte public key, which is
 * what the security team pastes into trust.publishers.
 */
export function writeKeyPair(prefix: string): { keyFile: string; pubFile: string; publicKey: string; keyId: string } {
  const keyFile = `${prefix}.key`;
  const pubFile = `${prefix}.pub`;
  for (const file of [keyFile, pubFile]) {
    if (existsSync(file)) throw new WardenError('WARDEN_SIGNING_KEY', `${file} already exists; keygen never replaces a key. Choose another --out`, { file });
  }
  const { seed, publicKey } = generateKeyPair();
  mkdirSync(dirname(resolve(keyFile)), { recursive: true, mode: 0o700 });
  writeNew(keyFile, `${seed.toString('base64')}\n`, 0o600);
  writeNew(pubFile, `${publicKey.toString('base64')}\n`, 0o644);
  return { keyFile, pubFile, publicKey: publicKey.toString('base64'), keyId: keyId(publicKey) };
}

export function readSigningKey(file: string): { seed: Buffer; publicKey: Buffer; keyId: string } {
  let text: string;
  try {
    const mode = statSync(file).mode;
    if ((mode & 0o077) !== 0) {
      throw new WardenError('WARDEN_SIGNING_KEY', `${file}: the secret key is readable by other users (mode ${(mode & 0o777).toString(8)}); run chmod 600 ${file}`, { file });
    }
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if (error instanceof WardenError) throw error;
    throw new WardenError('WARDEN_SIGNING_KEY', `${file}: cannot read the key (${(error as NodeJS.ErrnoException).code ?? 'read error'})`, { file });
  }
  const seed = decodeBase64Strict(text.trim());
  if (!seed || seed.length !== SEED_BYTES) {
    throw new WardenError('WARDEN_SIGNING_KEY', `${file}: not a signing key written by mcp-warden keygen (expected the base64 of ${SEED_BYTES} bytes); is this the .pub file?`, { file });
  }
  const publicKey = publicKeyOf(seed);
  return { seed, publicKey, keyId: keyId(publicKey) };
}

/** 'wx': never replaces a file, even one created a moment ago; a lost key cannot be recovered. */
function writeNew(file: string, content: string, mode: number): void {
  let fd: number;
  try {
    fd = openSync(file, 'wx', mode);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new WardenError('WARDEN_SIGNING_KEY', code === 'EEXIST' ? `${file} already exists; keygen never replaces a key. Choose another --out` : `${file}: cannot write (${code ?? 'write error'})`, { file });
  }
  try {
    writeSync(fd, content);
  } finally {
    closeSync(fd);
  }
}
