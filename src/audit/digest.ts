import { hash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { maskSecrets } from '../guard/detect-secrets.ts';
import { cleanText, noRedactions, truncateUtf8 } from '../guard/sanitize-output.ts';

/**
 * SHA-256 of the RFC 8785 canonical JSON of a call's arguments: identifies them in the
 * audit trail without recording them. Undefined when they cannot be serialised (nesting
 * too deep for a recursive serialiser); the record is written regardless.
 */
export function digestArguments(args: unknown): string | undefined {
  try {
    return hash('sha256', canonicalize(args) ?? 'null', 'hex');
  } catch {
    return undefined;
  }
}

/**
 * A short, readable preview of a call's arguments for the audit trail, when the config
 * asks for one (audit.argumentPreviewBytes): their canonical JSON with every injected
 * credential (in every form) and every detected secret masked, escapes and invisible
 * characters removed, then cut to maxBytes. Masking happens before the cut, so no part of
 * a secret that crosses it survives. Null when the arguments cannot be serialised.
 */
export async function argumentPreview(args: unknown, credentialForms: readonly string[], maxBytes: number): Promise<string | null> {
  let text: string | undefined;
  try {
    text = canonicalize(args);
  } catch {
    return null;
  }
  if (text === undefined) return null;
  const counts = noRedactions();
  const masked = await maskSecrets(cleanText(text, credentialForms, counts), counts);
  const bytes = Buffer.byteLength(masked, 'utf8');
  if (bytes <= maxBytes) return masked;
  const kept = truncateUtf8(masked, maxBytes);
  return `${kept}…[${bytes - Buffer.byteLength(kept, 'utf8')} more bytes]`;
}
