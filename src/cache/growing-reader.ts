import { Readable } from 'node:stream';
import type { BlobFill } from './blob-fill.js';

const CHUNK = 256 * 1024;

/**
 * Streams a byte range of a blob that is still being filled: takes what the
 * fill has, then waits for more. Reading is pulled by the consumer, so a slow
 * client never slows the fill or buffers memory. A reader the fill hands over
 * to the store goes on from the stored object.
 */
export class GrowingReader extends Readable {
  /** The next byte this reader will send. */
  position: number;
  private busy = false;
  private unsubscribe: (() => void) | undefined;
  private stored: Readable | undefined;

  constructor(
    private readonly fill: BlobFill,
    start: number,
    private readonly end: number | undefined,
    private readonly onClose: () => void,
  ) {
    super({ highWaterMark: CHUNK });
    this.position = start;
  }

  override _read(): void {
    if (this.stored) {
      this.stored.resume();
      return;
    }
    if (!this.busy) void this.pump();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.unsubscribe?.();
    this.stored?.destroy();
    this.onClose();
    callback(error);
  }

  /** Waits for the fill to change; one subscription per reader at most. */
  private park(): void {
    this.unsubscribe?.();
    this.unsubscribe = this.fill.subscribe(() => {
      this.unsubscribe?.();
      this.unsubscribe = undefined;
      if (!this.busy && !this.destroyed) void this.pump();
    });
  }

  private async pump(): Promise<void> {
    this.busy = true;
    try {
      // Bounded: each pass either pushes bytes, ends, fails, hands over or parks.
      for (;;) {
        if (this.destroyed) return;
        const next = await this.fill.next(this.position, this.end, CHUNK);
        if (this.destroyed) {
          if ('handover' in next) next.handover.destroy();
          return;
        }
        if ('error' in next) return void this.destroy(next.error);
        if ('end' in next) return void this.push(null);
        if ('wait' in next) return this.park();
        if ('handover' in next) return this.follow(next.handover);
        this.position += next.bytes.length;
        this.fill.readerMoved();
        if (!this.push(next.bytes)) return;
      }
    } catch (err) {
      this.destroy(err as Error);
    } finally {
      this.busy = false;
    }
  }

  /** Goes on from the store's stream, with backpressure both ways. */
  private follow(stream: Readable): void {
    this.stored = stream;
    stream.on('data', (chunk: Buffer) => {
      this.position += chunk.length;
      if (!this.push(chunk)) stream.pause();
    });
    stream.once('end', () => this.push(null));
    stream.once('error', (err) => this.destroy(err));
  }
}
