import { INVISIBLE } from '../guard/invisible.ts';

/**
 * Why a manifest was not loaded. Each reason has its own exit code for
 * `mcp-warden manifest verify`, so scripts can act on it; docs/manifests.md lists them.
 * Listed in the order of the checks (docs/manifests.md, "What the broker checks").
 */
export const REJECTIONS = {
  'unreadable': { exit: 20, summary: 'the file cannot be read' },
  'too-large': { exit: 21, summary: 'the file is over the size limit (checked before anything is parsed)' },
  'unsigned': { exit: 22, summary: 'the file is an unsigned manifest, or an envelope without signatures' },
  'not-an-envelope': { exit: 23, summary: 'the file is not a signed-manifest envelope (bad JSON, missing or extra fields, bad base64)' },
  'duplicate-key': { exit: 24, summary: 'the envelope or the payload repeats a JSON key' },
  'bad-signature': { exit: 25, summary: 'a signature names a trusted key but does not verify over these exact bytes' },
  'unknown-key': { exit: 26, summary: 'no signature is by a key the config trusts' },
  'key-revoked': { exit: 27, summary: 'the signing key is revoked (trust.revoked.keys)' },
  'publisher-expired': { exit: 28, summary: 'the signing publisher\'s trust has expired (trust.publishers.*.expiresAt)' },
  'below-threshold': { exit: 29, summary: 'fewer distinct trusted keys signed than the publisher\'s threshold' },
  'wrong-payload-type': { exit: 30, summary: 'the payloadType is not a mcp-warden manifest' },
  'malformed-payload': { exit: 31, summary: 'the payload is not UTF-8 JSON' },
  'not-canonical': { exit: 32, summary: 'the payload is not in RFC 8785 canonical form' },
  'invalid-manifest': { exit: 33, summary: 'the manifest breaks the manifest schema or a rule (a schema that does not compile, a command that is not there)' },
  'invisible-characters': { exit: 34, summary: 'a text of the manifest contains control, zero-width, bidi or tag characters' },
  'namespace-not-trusted': { exit: 35, summary: 'no publisher that signed is trusted for the manifest\'s name' },
  'manifest-revoked': { exit: 36, summary: 'the manifest\'s digest is revoked (trust.revoked.manifests)' },
  'expired': { exit: 37, summary: 'the manifest\'s expiresAt has passed' },
  'not-yet-valid': { exit: 38, summary: 'the manifest\'s issuedAt is in the future' },
  'unexpected-name': { exit: 39, summary: 'the manifest\'s name is not the one the config expects for this server (servers.<key>.name)' },
  'rollback': { exit: 40, summary: 'a manifest with a higher serial has already been accepted for this name' },
  'equivocation': { exit: 41, summary: 'a different manifest with the same serial has already been accepted for this name' },
  'module-unreadable': { exit: 42, summary: 'a code tool\'s module file (transport.module) cannot be read, is not UTF-8 text or is over the size limit' },
  'module-modified': { exit: 43, summary: 'a code tool\'s module file differs from the SHA-256 the signed manifest pins (transport.sha256)' },
  'artifact-unpinned': { exit: 44, summary: 'a stdio server\'s argument names a file or folder that no pin covers (transport.pins)' },
  'artifact-modified': { exit: 45, summary: 'what a stdio server runs differs from its pins: the executable, a pinned file, folder or package (manifest verify only; the broker quarantines the server instead)' },
  'insecure-transport': { exit: 46, summary: 'a Streamable HTTP server\'s URL is plain http, and the config does not allow it for this loopback server (servers.<key>.allowPlainHttp)' },
} as const;

export type RejectionReason = keyof typeof REJECTIONS;

/** A manifest the broker refuses; its tools do not exist for any agent. */
export class ManifestRejection extends Error {
  readonly reason: RejectionReason;
  readonly detail: Readonly<Record<string, unknown>>;
  constructor(reason: RejectionReason, message: string, detail: Record<string, unknown> = {}) {
    // Messages may quote hostile input (a key, a payloadType): no escapes, bounded length.
    super(message.replace(INVISIBLE, '?').slice(0, 2000));
    this.name = 'ManifestRejection';
    this.reason = reason;
    this.detail = detail;
  }
}
