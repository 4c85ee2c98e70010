import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { encodeFrame, FrameReader } from '../../src/sandbox/frames.ts';

function reader(maxBytes = 1024) {
  const frames: unknown[] = [];
  const invalid: string[] = [];
  const read = new FrameReader(() => maxBytes, (message) => frames.push(message), (why) => invalid.push(why));
  return { read, frames, invalid };
}

function header(length: number): Buffer {
  const buffer = Buffer.alloc(4);
  buffer.writeUInt32BE(length, 0);
  return buffer;
}

describe('sandbox frames', () => {
  it('reads frames split at any byte and frames packed together, in order (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.jsonValue(), { maxLength: 8 }), fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 20 }), (messages, cuts) => {
        const bytes = Buffer.concat(messages.map(encodeFrame));
        const { read, frames, invalid } = reader(1 << 20);
        let at = 0;
        for (let i = 0; at < bytes.length; i++) {
          const size = cuts[i % cuts.length]!;
          read.push(bytes.subarray(at, at + size));
          at += size;
        }
        assert.deepEqual(invalid, []);
        assert.deepEqual(frames, JSON.parse(JSON.stringify(messages)));
      }),
      { numRuns: 200 },
    );
  });

  it('refuses a frame whose announced length is over the limit before buffering it, and reads nothing after', () => {
    const { read, frames, invalid } = reader(100);
    read.push(header(101));
    assert.deepEqual(invalid, ['a message of 101 bytes']);
    read.push(encodeFrame({ t: 'ready' }));
    assert.deepEqual(frames, []);
    assert.equal(invalid.length, 1, 'onInvalid is called once');
  });

  it('asks for the limit when each header arrives (it follows the run in progress)', () => {
    let limit = 10;
    const frames: unknown[] = [];
    const invalid: string[] = [];
    const read = new FrameReader(() => limit, (message) => frames.push(message), (why) => invalid.push(why));
    read.push(encodeFrame('short'));
    limit = 1000;
    read.push(encodeFrame('x'.repeat(500)));
    assert.equal(frames.length, 2);
    assert.deepEqual(invalid, []);
  });

  it('refuses a frame that is not JSON, or not UTF-8 JSON', () => {
    for (const body of [Buffer.from('{not json'), Buffer.from([0xff, 0xfe, 0x7b]), Buffer.alloc(0)]) {
      const { read, frames, invalid } = reader();
      read.push(Buffer.concat([header(body.length), body]));
      assert.deepEqual(frames, []);
      assert.deepEqual(invalid, ['a message that is not JSON']);
    }
  });

  it('a stream of bytes without a complete frame is held only up to the limit', () => {
    const { read, invalid } = reader(1024);
    // A header announcing 1000 bytes, then a trickle that never completes it: buffered, nothing parsed.
    read.push(header(1000));
    for (let i = 0; i < 999; i++) read.push(Buffer.from('a'));
    assert.deepEqual(invalid, []);
    // A worker that writes endless bytes with a header over the limit is refused at the header.
    const endless = reader(1024);
    endless.read.push(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    assert.deepEqual(endless.invalid, [`a message of ${0xffffffff} bytes`]);
  });
});
