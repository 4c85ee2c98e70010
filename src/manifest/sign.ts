import { dirname, resolve } from 'node:path';
import canonicalize from 'canonicalize';
import { WardenError } from '../errors.ts';
import { signMessage } from './ed25519.ts';
import { decodeBase64Strict, PAYLOAD_TYPE, preAuthEncoding, type Envelope } from './envelope.ts';
import { buildManifest } from './load.ts';
import { readModuleFile } from './module-file.ts';
import { ArtifactError } from './artifacts.ts';
import { fillLaunchPins } from './pin-launch.ts';
import { ManifestRejection } from './rejections.ts';
import { parseStrictJson } from './strict-json.ts';
import type { Manifest } from './types.ts';

const DAY_MS = 86_400_000;

export interface SigningKey {
  readonly seed: Buffer;
  readonly keyId: string;
}

export interface SignOptions {
  readonly now: number;
  readonly validDays: number;
  /** Where the signed file goes: a code tool's module path and a stdio server's cwd are relative to it. Default: FILE's folder. */
  readonly moduleBase?: string;
  /** Where a stdio server's bare command is looked up to pin it. Default: this process's PATH. */
  readonly searchPath?: string | undefined;
}

/**
 * Signs a manifest source (parsed YAML or JSON). issuedAt defaults to now and expiresAt to
 * now + validDays; a code tool's module SHA-256 and a stdio server's missing pins are filled
 * in from the files on this machine; everything else is the owner's. Refuses what the broker would refuse for its content: a schema or rule
 * violation, invisible characters, a past expiry, a module that is not the pinned one.
 */
export function signManifestSource(source: unknown, file: string, key: SigningKey, options: SignOptions): { envelope: Envelope; manifest: Manifest } {
  if (typeof source !== 'object' || source === null || Array.isArray(source)) {
    throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: a manifest is a mapping (name, serial, transport, tools, ...)`, { file });
  }
  const issuedAt = new Date(options.now).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const base = options.moduleBase ?? dirname(resolve(file));
  const pinned = pinLaunch(pinModule(source as Record<string, unknown>, file, base), file, base, 'searchPath' in options ? options.searchPath : process.env['PATH']);
  const document = { issuedAt, expiresAt: new Date(options.now + options.validDays * DAY_MS).toISOString().replace(/\.\d{3}Z$/, 'Z'), ...pinned };
  let text: string | undefined;
  try {
    text = canonicalize(document);
  } catch {
    text = undefined;
  }
  if (text === undefined) throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: the manifest holds a value JSON cannot represent (such as .inf or .nan)`, { file });
  const payload = Buffer.from(text, 'utf8');
  // Check exactly what the broker will parse, not the source object.
  const manifest = checkForSigning(JSON.parse(text), file, options.now, base);
  return { envelope: { payloadType: PAYLOAD_TYPE, payload: payload.toString('base64'), signatures: [signature(payload, key)] }, manifest };
}

/** Adds a signature to an already signed manifest (for publishers with a threshold above 1). */
export function addSignature(envelope: Envelope, file: string, key: SigningKey, now: number): { envelope: Envelope; manifest: Manifest } {
  if (envelope.payloadType !== PAYLOAD_TYPE) throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: payloadType is "${envelope.payloadType}", not ${PAYLOAD_TYPE}`, { file });
  const payload = decodeBase64Strict(envelope.payload);
  if (!payload) throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: the payload is not standard base64`, { file });
  let document: unknown;
  try {
    document = parseStrictJson(new TextDecoder('utf-8', { fatal: true }).decode(payload));
  } catch (error) {
    throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: the payload is not JSON: ${(error as Error).message}`, { file });
  }
  let canonical: string | undefined;
  try {
    canonical = canonicalize(document);
  } catch {
    canonical = undefined;
  }
  if (canonical !== payload.toString('utf8')) throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: the payload is not canonical JSON; it was not written by manifest sign`, { file });
  if (envelope.signatures.some((existing) => existing.keyid === key.keyId)) {
    throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: already signed by key ${key.keyId}; a threshold counts distinct keys`, { file });
  }
  // A co-signer vouches for the module too: the file beside the signed manifest must be the pinned one.
  pinModule(document as Record<string, unknown>, file, dirname(resolve(file)));
  const manifest = checkForSigning(document, file, now);
  return { envelope: { ...envelope, signatures: [...envelope.signatures, signature(payload, key)] }, manifest };
}

function checkForSigning(document: unknown, file: string, now: number, base?: string): Manifest {
  let manifest: Manifest;
  try {
    manifest = buildManifest(document, file, { resolveCommand: false, ...(base === undefined ? {} : { base }) });
  } catch (error) {
    if (error instanceof ManifestRejection) throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: ${error.message}`, { file, reason: error.reason });
    throw error;
  }
  if (Date.parse(manifest.expiresAt) <= now) {
    throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: expiresAt ${manifest.expiresAt} is in the past; set a later one or leave it out (--valid-days)`, { file });
  }
  if (Date.parse(manifest.issuedAt) >= Date.parse(manifest.expiresAt)) {
    throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: issuedAt is not before expiresAt`, { file });
  }
  return manifest;
}

/**
 * A code tool's manifest with transport.sha256 set from its module file: the owner signs
 * the digest of the file as it is now. A digest already written must match the file.
 */
function pinModule(source: Record<string, unknown>, file: string, base: string): Record<string, unknown> {
  const transport = source['transport'];
  if (typeof transport !== 'object' || transport === null || (transport as Record<string, unknown>)['type'] !== 'sandbox') return source;
  const { module, sha256 } = transport as Record<string, unknown>;
  if (typeof module !== 'string' || module === '') return source; // the schema check reports it
  let actual: string;
  try {
    actual = readModuleFile(resolve(base, module)).sha256;
  } catch (error) {
    throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: at /transport/module: ${(error as Error).message}`, { file });
  }
  if (sha256 !== undefined && typeof sha256 !== 'string') {
    throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: at /transport/sha256: write it as a quoted string of 64 hex digits (YAML reads an unquoted all-digit value as a number), or remove it to have it filled in`, { file });
  }
  if (sha256 !== undefined && sha256 !== actual) {
    throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: at /transport/sha256: the module's SHA-256 is ${actual}, not ${String(sha256)}; remove sha256 to pin the file as it is now, or restore the file`, { file });
  }
  return { ...source, transport: { ...transport, sha256: actual } };
}

/** A stdio manifest with its missing pins filled in from this machine's files (fillLaunchPins). */
function pinLaunch(source: Record<string, unknown>, file: string, base: string, searchPath: string | undefined): Record<string, unknown> {
  try {
    return fillLaunchPins(source, base, searchPath);
  } catch (error) {
    if (error instanceof ArtifactError) throw new WardenError('WARDEN_MANIFEST_INVALID', `${file}: at /transport/pins: ${error.message}`, { file });
    throw error;
  }
}

function signature(payload: Buffer, key: SigningKey): { keyid: string; sig: string } {
  return { keyid: key.keyId, sig: signMessage(preAuthEncoding(PAYLOAD_TYPE, payload), key.seed).toString('base64') };
}
