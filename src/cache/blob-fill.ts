import { EventEmitter } from 'node:events';
import type { FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';
import type { Hash } from 'node:crypto';
import { createDigester, type Digest } from '../oci/digest.js';
import { GrowingReader } from './growing-reader.js';

export type FillState = 'filling' | 'committed' | 'failed';

export class DigestMismatchError extends Error {
  constructor(readonly expected: string, readonly actual: string, readonly size: number) {
    super(`digest mismatch: expected ${expected}, upstream sent ${actual} (${size} bytes)`);
    this.name = 'DigestMismatchError';
  }
}

export class SizeMismatchError extends Error {
  constructor(readonly expected: number, readonly actual: number) {
    super(`size mismatch: expected ${expected} bytes, got ${actual}`);
    this.name = 'SizeMismatchError';
  }
}

export interface FillFiles {
  /** Handle the fill writes through. */
  writeHandle: FileHandle;
  /** Handle readers pread through; stays valid across the rename into place. */
  readHandle: FileHandle;
  tempPath: string;
  /** Verifies nothing: moves the temp file into place durably. */
  publish(): Promise<void>;
  discard(): Promise<void>;
}

/**
 * One blob being written to a temp file. Any number of readers stream it as it
 * grows; the final byte is released only after the digest is verified, so no
 * client ever receives a complete response with bytes that fail verification.
 */
export class BlobFill extends EventEmitter {
  state: FillState = 'filling';
  error: Error | undefined;
  written = 0;
  private readonly hash: Hash;
  private readers = 0;
  private readHandleClosed = false;

  constructor(
    readonly digest: Digest,
    private readonly files: FillFiles,
    /** Size from the upstream's Content-Length; undefined until known. */
    public expectedSize: number | undefined,
  ) {
    super();
    this.setMaxListeners(0);
    this.hash = createDigester(digest.algorithm);
  }

  /** Bytes a reader may see now: everything but the last byte until verified. */
  get readableLimit(): number {
    if (this.state === 'committed') return this.written;
    const cap = this.expectedSize !== undefined ? this.expectedSize - 1 : this.written - 1;
    return Math.max(0, Math.min(this.written, cap));
  }

  /** The blob's size once known. */
  get size(): number | undefined {
    return this.state === 'committed' ? this.written : this.expectedSize;
  }

  async append(chunk: Buffer): Promise<void> {
    if (this.state !== 'filling') throw new Error(`append to a ${this.state} fill of ${this.digest.value}`);
    if (this.expectedSize !== undefined && this.written + chunk.length > this.expectedSize) {
      throw new SizeMismatchError(this.expectedSize, this.written + chunk.length);
    }
    let offset = 0;
    while (offset < chunk.length) {
      const { bytesWritten } = await this.files.writeHandle.write(chunk, offset, chunk.length - offset, this.written + offset);
      offset += bytesWritten;
    }
    this.hash.update(chunk);
    this.written += chunk.length;
    this.emit('progress');
  }

  /** A Writable over append(), so an upstream body pipes in with backpressure. */
  writable(): Writable {
    return new Writable({
      highWaterMark: 1 << 20,
      write: (chunk: Buffer, _encoding, callback) => {
        this.append(chunk).then(() => callback(), callback);
      },
    });
  }

  /** Verifies, fsyncs and moves the blob into place; `index` runs only after that. */
  async commit(index: () => void): Promise<void> {
    if (this.expectedSize !== undefined && this.written !== this.expectedSize) {
      throw new SizeMismatchError(this.expectedSize, this.written);
    }
    const actual = `${this.digest.algorithm}:${this.hash.digest('hex')}`;
    if (actual !== this.digest.value) throw new DigestMismatchError(this.digest.value, actual, this.written);
    await this.files.writeHandle.sync();
    await this.files.writeHandle.close();
    await this.files.publish();
    index();
    this.state = 'committed';
    this.emit('progress');
    this.emit('settled');
    this.releaseReadHandleIfUnused();
  }

  /** Marks the fill failed: readers abort, and the temp file is removed. */
  async fail(error: Error): Promise<void> {
    if (this.state !== 'filling') return;
    this.state = 'failed';
    this.error = error;
    this.emit('progress');
    this.emit('settled');
    await this.files.writeHandle.close().catch(() => undefined);
    await this.files.discard().catch(() => undefined);
    this.releaseReadHandleIfUnused();
  }

  /** A reader of bytes [start, end] (inclusive; end defaults to the last byte). */
  createReader(start = 0, end?: number): GrowingReader {
    if (this.readHandleClosed) throw new Error(`fill of ${this.digest.value} is no longer readable`);
    this.readers += 1;
    return new GrowingReader(this, this.files.readHandle, start, end, () => {
      this.readers -= 1;
      this.releaseReadHandleIfUnused();
    });
  }

  /** Resolves when the fill is committed, rejects when it failed. */
  settled(): Promise<void> {
    if (this.state === 'committed') return Promise.resolve();
    if (this.state === 'failed') return Promise.reject(this.error);
    return new Promise((resolve, reject) =>
      this.once('settled', () => (this.state === 'committed' ? resolve() : reject(this.error))),
    );
  }

  private releaseReadHandleIfUnused(): void {
    if (this.state === 'filling' || this.readers > 0 || this.readHandleClosed) return;
    this.readHandleClosed = true;
    this.files.readHandle.close().catch(() => undefined);
  }
}
