import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { BlobFill } from './blob-fill.js';

const CHUNK = 256 * 1024;

/**
 * Streams a byte range of a blob that is still being filled: reads what is on
 * disk, then waits for the fill to write more. Reading is pulled by the
 * consumer, so a slow client never slows the fill or buffers memory.
 */
export class GrowingReader extends Readable {
  /** The next byte this reader will send. */
  position: number;
  private busy = false;

  constructor(
    private readonly fill: BlobFill,
    private readonly handle: FileHandle,
    start: number,
    private readonly end: number | undefined,
    private readonly onClose: () => void,
  ) {
    super({ highWaterMark: CHUNK });
    this.position = start;
  }

  override _read(): void {
    if (!this.busy) void this.pump();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.fill.off('progress', this.wake);
    this.onClose();
    callback(error);
  }

  private readonly wake = (): void => {
    if (!this.busy && !this.destroyed) void this.pump();
  };

  /** Waits for the fill to move; one listener per reader at most. */
  private park(): void {
    this.fill.off('progress', this.wake);
    this.fill.once('progress', this.wake);
  }

  private async pump(): Promise<void> {
    this.busy = true;
    try {
      // Bounded: each pass either pushes bytes, ends, fails, or parks on 'progress'.
      for (;;) {
        if (this.destroyed) return;
        if (this.fill.state === 'failed' && !this.fill.verified) {
          this.destroy(this.fill.error ?? new Error('fill failed'));
          return;
        }
        const last = this.end ?? (this.fill.verified ? this.fill.written - 1 : Number.POSITIVE_INFINITY);
        if (this.position > last) {
          this.push(null);
          return;
        }
        // A bounded range of an unverified blob holds back its own last byte too: no complete 206 of unchecked bytes.
        const rangeCap = this.end !== undefined && !this.fill.verified ? this.end : last + 1;
        const available = Math.min(this.fill.readableLimit, rangeCap) - this.position;
        if (available <= 0) {
          this.park();
          return;
        }
        const max = Math.min(available, CHUNK);
        let chunk = this.fill.inMemoryAt(this.position, max);
        if (chunk === undefined || chunk.length === 0) {
          if (this.position < this.fill.diskBytes) {
            const buffer = Buffer.allocUnsafe(Math.min(max, this.fill.diskBytes - this.position));
            const { bytesRead } = await this.handle.read(buffer, 0, buffer.length, this.position);
            chunk = bytesRead === buffer.length ? buffer : buffer.subarray(0, bytesRead);
          } else if (this.fill.spill) {
            // The disk filled up and these bytes already left memory.
            this.destroy(new Error(`fell behind a fill that could not be cached (${this.fill.digest.value})`));
            return;
          } else {
            chunk = Buffer.alloc(0);
          }
        }
        if (this.destroyed) return;
        if (chunk.length === 0) {
          this.park();
          return;
        }
        this.position += chunk.length;
        this.fill.advanced();
        if (!this.push(chunk)) return;
      }
    } catch (err) {
      this.destroy(err as Error);
    } finally {
      this.busy = false;
    }
  }
}
