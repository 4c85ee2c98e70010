import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { WardenError, type WardenErrorCode } from '../errors.ts';

/** Config and manifest files are small; anything larger is a mistake or an attack. */
export const MAX_DOCUMENT_BYTES = 1024 * 1024; // 1 MiB

/**
 * Reads a YAML or JSON file into plain data. YAML is a superset of JSON, so one parser
 * serves both. Aliases are capped (billion-laughs expansion), duplicate keys are an error,
 * and the size is checked before the file is read.
 */
export function readDocument(file: string, code: WardenErrorCode): unknown {
  return readDocumentWithDigest(file, code).data;
}

/** The same, with the SHA-256 of the bytes parsed (what an audited config change names). */
export function readDocumentWithDigest(file: string, code: WardenErrorCode): { data: unknown; sha256: string } {
  let text: string;
  try {
    const size = statSync(file).size;
    if (size > MAX_DOCUMENT_BYTES) {
      throw new WardenError(code, `${file}: file is ${size} bytes; the limit is ${MAX_DOCUMENT_BYTES} bytes`, { file });
    }
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if (error instanceof WardenError) throw error;
    const reason = (error as NodeJS.ErrnoException).code ?? 'read error';
    throw new WardenError(code, `${file}: cannot read the file (${reason})`, { file }, { cause: error });
  }
  if (text.trim() === '') {
    throw new WardenError(code, `${file}: the file is empty`, { file });
  }
  try {
    const data: unknown = parseYaml(text, { maxAliasCount: 100, uniqueKeys: true, prettyErrors: true, version: '1.2' });
    return { data, sha256: createHash('sha256').update(text, 'utf8').digest('hex') };
  } catch (error) {
    const message = error instanceof Error ? error.message.split('\n')[0] : String(error);
    throw new WardenError(code, `${file}: not valid YAML or JSON: ${message}`, { file }, { cause: error });
  }
}
