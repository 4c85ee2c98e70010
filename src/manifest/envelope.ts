/**
 * The signed-manifest envelope, after DSSE (github.com/secure-systems-lab/dsse):
 * `{ payloadType, payload, signatures: [{ keyid, sig }] }`, where payload is the base64 of
 * the manifest's RFC 8785 canonical JSON and each signature covers the pre-authentication
 * encoding of payloadType and payload, so neither can be swapped for another.
 */

export const PAYLOAD_TYPE = 'application/vnd.mcp-warden.manifest+json';

export interface EnvelopeSignature {
  /** Hex SHA-256 of the signer's raw public key: a hint for finding the key, never proof. */
  readonly keyid: string;
  /** Base64 of the 64-byte Ed25519 signature. */
  readonly sig: string;
}

export interface Envelope {
  readonly payloadType: string;
  readonly payload: string;
  readonly signatures: readonly EnvelopeSignature[];
}

/** DSSE v1 PAE: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, lengths in bytes. */
export function preAuthEncoding(payloadType: string, payload: Uint8Array): Buffer {
  const type = Buffer.from(payloadType, 'utf8');
  return Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `, 'ascii'), type, Buffer.from(` ${payload.length} `, 'ascii'), payload]);
}

/** Standard base64 with padding, and only that: one text for one byte string. */
export function decodeBase64Strict(text: string): Buffer | undefined {
  const bytes = Buffer.from(text, 'base64');
  return bytes.toString('base64') === text ? bytes : undefined;
}

/** The envelope as a file's text: stable key order, one signature a line, newline at the end. */
export function formatEnvelope(envelope: Envelope): string {
  const signatures = envelope.signatures.map((signature) => `    ${JSON.stringify({ keyid: signature.keyid, sig: signature.sig })}`).join(',\n');
  return `{\n  "payloadType": ${JSON.stringify(envelope.payloadType)},\n  "payload": ${JSON.stringify(envelope.payload)},\n  "signatures": [\n${signatures}\n  ]\n}\n`;
}
