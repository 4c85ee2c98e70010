import { readFileSync, statSync } from 'node:fs';
import type { CredentialSource } from '../config/types.ts';
import { WardenError } from '../errors.ts';
import type { ManifestCredential } from '../manifest/types.ts';

/** Largest credential file read, in bytes. */
const MAX_CREDENTIAL_BYTES = 64 * 1024;

export interface ResolvedCredential {
  readonly credential: ManifestCredential;
  readonly value: string;
}

/**
 * Reads every credential a server declares from its configured source, each time the
 * server is started (so a rotated file or variable is picked up on restart). Any missing
 * value is a WARDEN_CREDENTIAL_MISSING naming the credential and where it was looked
 * for, never its value; the server is then not started.
 */
export function resolveCredentials(
  server: string,
  declared: readonly ManifestCredential[],
  sources: ReadonlyMap<string, CredentialSource> | undefined,
  environment: NodeJS.ProcessEnv = process.env,
): ResolvedCredential[] {
  return declared.map((credential) => {
    const source = sources?.get(credential.name);
    const missing = (where: string) =>
      new WardenError('WARDEN_CREDENTIAL_MISSING', `server "${server}": credential "${credential.name}" is not available (${where})`, { server, credential: credential.name });
    if (!source) throw missing('the config names no source for it');
    let value: string | undefined;
    if ('env' in source) {
      value = environment[source.env];
      if (value === undefined || value === '') throw missing(`environment variable ${source.env} is not set`);
    } else {
      try {
        const size = statSync(source.file).size;
        if (size > MAX_CREDENTIAL_BYTES) throw missing(`file ${source.file} is larger than ${MAX_CREDENTIAL_BYTES} bytes`);
        value = readFileSync(source.file, 'utf8').replace(/\r?\n$/, '');
      } catch (error) {
        if (error instanceof WardenError) throw error;
        throw missing(`file ${source.file} cannot be read: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
      }
      if (value === '') throw missing(`file ${source.file} is empty`);
    }
    // A value that would break the header or environment it goes into is refused, not sent.
    // A client certificate is PEM text, in lines, and goes to TLS only.
    const forbidden = credential.clientCertificate ? /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/ : /[\u0000-\u001f\u007f]/;
    if (forbidden.test(value)) throw missing('the value contains control characters');
    return { credential, value };
  });
}
