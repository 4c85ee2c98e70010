import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { WardenError, type WardenErrorCode } from '../errors.ts';

/**
 * The broker's own Ed25519 private key in a PKCS#8 PEM file, created on first use and
 * readable by its owner only. `what` names the key in errors ("the broker identity key");
 * failures are WardenErrors with the given code.
 */
export function readOrCreateEd25519Key(keyFile: string, code: WardenErrorCode, what: string): KeyObject {
  let pem: string;
  try {
    pem = readFileSync(keyFile, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new WardenError(code, `cannot read ${what} ${keyFile}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`, { keyFile });
    }
    const { privateKey } = generateKeyPairSync('ed25519');
    pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    try {
      mkdirSync(dirname(keyFile), { recursive: true, mode: 0o700 });
      // 'wx': never overwrite a key another process has just written.
      writeFileSync(keyFile, pem, { mode: 0o600, flag: 'wx' });
    } catch (writeError) {
      if ((writeError as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new WardenError(code, `cannot write ${what} ${keyFile}: ${(writeError as NodeJS.ErrnoException).code ?? 'error'}`, { keyFile });
      }
      pem = readFileSync(keyFile, 'utf8');
    }
  }
  try {
    const key = createPrivateKey(pem);
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`a ${key.asymmetricKeyType} key`);
    return key;
  } catch (error) {
    throw new WardenError(code, `${keyFile} is not an Ed25519 private key in PKCS#8 PEM (${(error as Error).message})`, { keyFile });
  }
}
