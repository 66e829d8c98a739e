import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import type { Digest } from '../oci/digest.js';

export class CorruptBlobError extends Error {
  constructor(readonly digest: string, detail: string) {
    super(`cached blob ${digest} is damaged: ${detail}`);
    this.name = 'CorruptBlobError';
  }
}

/**
 * Re-hashes a cached blob while it streams, holding back the last chunk until
 * the digest matches: a damaged file is never served as a complete response.
 */
export class VerifyingStream extends Transform {
  private readonly hash: Hash;
  private held: Buffer | undefined;
  private bytes = 0;

  constructor(
    private readonly digest: Digest,
    private readonly expectedSize: number,
    private readonly onResult: (ok: boolean) => void,
  ) {
    super();
    this.hash = createHash(digest.algorithm);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    const previous = this.held;
    this.held = chunk;
    callback(null, previous);
  }

  override _flush(callback: TransformCallback): void {
    const actual = `${this.digest.algorithm}:${this.hash.digest('hex')}`;
    if (actual !== this.digest.value || this.bytes !== this.expectedSize) {
      this.onResult(false);
      callback(new CorruptBlobError(this.digest.value, `read ${this.bytes} bytes hashing to ${actual}`));
      return;
    }
    this.onResult(true);
    callback(null, this.held);
  }
}
