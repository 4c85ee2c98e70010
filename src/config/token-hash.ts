import { hash } from 'node:crypto';

/** SHA-256 (hex) of a bearer token: what the config stores instead of the token. */
export function sha256Hex(text: string): string {
  return hash('sha256', text, 'hex');
}
