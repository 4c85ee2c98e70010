import { hash } from 'node:crypto';
import canonicalize from 'canonicalize';

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
