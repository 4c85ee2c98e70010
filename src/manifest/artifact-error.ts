/** Why an artifact could not be digested or resolved; the broker treats it like a mismatch. */
export class ArtifactError extends Error {
  /** The file system's error code (ENOENT, EACCES, ...) when a call failed; undefined otherwise. */
  readonly code: string | undefined;

  constructor(message: string, code?: string) {
    super(message);
    this.name = 'ArtifactError';
    this.code = code;
  }

  /** The path, or a folder on the way to it, does not exist (now). */
  get missing(): boolean {
    return this.code === 'ENOENT' || this.code === 'ENOTDIR';
  }
}
