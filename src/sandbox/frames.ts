/**
 * Messages between the broker and a sandbox worker, on a pipe of their own: each is a
 * 4-byte big-endian length, then that many bytes of UTF-8 JSON. Node's IPC channel is not
 * used because a worker that escaped its isolate could write to it directly, and Node
 * parses that channel where a malformed or endless message throws in the broker or
 * grows without bound. Here every frame is size-checked before it is buffered, and
 * parsed where a failure only ends that worker.
 */

const HEADER_BYTES = 4;

export function encodeFrame(message: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}

/**
 * Reads frames from a worker. A frame over `maxBytes()` (asked when its header arrives),
 * or one that is not JSON, calls `onInvalid` once and nothing more is read.
 */
export class FrameReader {
  readonly #maxBytes: () => number;
  readonly #onFrame: (message: unknown) => void;
  readonly #onInvalid: (why: string) => void;
  #chunks: Buffer[] = [];
  #buffered = 0;
  /** The length of the frame being read, once its header is in. */
  #expected: number | undefined;
  #failed = false;

  constructor(maxBytes: () => number, onFrame: (message: unknown) => void, onInvalid: (why: string) => void) {
    this.#maxBytes = maxBytes;
    this.#onFrame = onFrame;
    this.#onInvalid = onInvalid;
  }

  push(chunk: Buffer): void {
    if (this.#failed) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    for (;;) {
      if (this.#expected === undefined) {
        if (this.#buffered < HEADER_BYTES) return;
        const length = this.#take(HEADER_BYTES).readUInt32BE(0);
        if (length > this.#maxBytes()) return this.#fail(`a message of ${length} bytes`);
        this.#expected = length;
      }
      if (this.#buffered < this.#expected) return;
      const body = this.#take(this.#expected);
      this.#expected = undefined;
      let message: unknown;
      try {
        message = JSON.parse(body.toString('utf8'));
      } catch {
        return this.#fail('a message that is not JSON');
      }
      this.#onFrame(message);
      if (this.#failed) return;
    }
  }

  /** The first `length` bytes buffered (the caller checked they are there). */
  #take(length: number): Buffer {
    const all = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks, this.#buffered);
    const rest = all.subarray(length);
    this.#chunks = rest.length > 0 ? [rest] : [];
    this.#buffered = rest.length;
    return all.subarray(0, length);
  }

  #fail(why: string): void {
    this.#failed = true;
    this.#chunks = [];
    this.#buffered = 0;
    this.#onInvalid(why);
  }
}
